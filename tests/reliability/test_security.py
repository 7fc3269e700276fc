"""No secret leaks: a week of faults at DEBUG, every log line, error text, payload and file read.

The secrets: the Veolia password and e-mail, every token the simulator's Cognito issued
(access and id tokens, the refresh token) and the broker password. None may appear in a log
line (tracebacks included), an exception's text or repr (with its whole chain), an MQTT topic
or payload, or a file under ``state_dir`` other than the token cache, which holds the current
access token only, in mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import traceback
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import MOSQUITTO, Broker, Collector
from tests.reliability.harness import FakeClock, Stack, paris
from veolia2mqtt.state import STATE_FILE, TOKEN_FILE
from veolia2mqtt.veolia.errors import VeoliaError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from veolia2mqtt.veolia.simulator import Simulator

MQTT_USER = "veolia2mqtt"
MQTT_PASSWORD = "br0ker-S3cret"
KEEP_USER = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
"""Run as root, mosquitto switches to user ``mosquitto``, which cannot read pytest's tmp_path."""
DAY1 = date(2026, 6, 10)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto that wants a username and password."""
    passwd = shutil.which("mosquitto_passwd")
    if MOSQUITTO is None or passwd is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed (.ci/run installs them)")
    password_file = tmp_path / "passwords"
    subprocess.run([passwd, "-c", "-b", str(password_file), MQTT_USER, MQTT_PASSWORD], check=True)
    password_file.chmod(0o600)
    conf = f"{KEEP_USER}allow_anonymous false\npassword_file {password_file}\n"
    broker = Broker(tmp_path, extra_conf=conf).start()
    try:
        yield broker
    finally:
        broker.kill()


class _Keep(logging.Handler):
    """Formats every record the way the CLI does, traceback included, and keeps the text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def error_texts(err: BaseException) -> list[str]:
    """The text, the repr and the formatted traceback of ``err`` and of every error it chains."""
    texts = ["".join(traceback.format_exception(err))]
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.extend((str(current), repr(current)))
        current = current.__cause__ or current.__context__
    return texts


def secrets_of(sim: Simulator) -> list[str]:
    email = sim.scenario.email
    return [
        sim.scenario.password,
        email,
        email.upper(),
        email.split("@")[0],  # the local part alone is personal too
        MQTT_PASSWORD,
        *sim.issued_tokens(),
    ]


def leaks(texts: list[str], secrets: list[str]) -> list[str]:
    return [
        f"{secret[:6]}... in {text[:120]!r}"
        for text in texts
        for secret in secrets
        if secret and secret in text
    ]


@pytest.mark.integration
def test_a_faulty_week_at_debug_leaks_no_secret(
    sim: Simulator, auth_broker: Broker, clock: FakeClock, tmp_path: Path, caplog
):
    root = logging.getLogger()
    keep = _Keep()
    root.addHandler(keep)
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    stack = Stack(
        sim=sim,
        broker=auth_broker,
        clock=clock,
        state_dir=tmp_path / "state",
        mqtt_extra={"username": MQTT_USER, "password": MQTT_PASSWORD},
    )
    watch = Collector(auth_broker.host, auth_broker.port, ("#",), MQTT_USER, MQTT_PASSWORD)
    try:
        with watch:
            stack.start()
            stack.tick()
            week = [
                # (fault route, options): one family of failures per day
                [("facturation", {"fault": "token_expired", "status": 401})],
                [("journalieres", {"fault": "http_500", "times": 4})],
                [("*", {"fault": "rate_limited", "retry_after": "3600", "times": None})],
                [("mensuelles", {"fault": "malformed_json", "times": None})],
                [("*", {"fault": "maintenance_html", "status": 200, "times": None})],
                [("cognito", {"fault": "cognito_throttled", "times": None})],
                [
                    ("cognito:REFRESH_TOKEN_AUTH", {"fault": "wrong_password", "times": None}),
                    ("cognito:USER_PASSWORD_AUTH", {"fault": "wrong_password", "times": None}),
                ],
                [
                    ("cognito:REFRESH_TOKEN_AUTH", {"fault": "wrong_password", "times": None}),
                    ("cognito:USER_PASSWORD_AUTH", {"fault": "challenge", "times": None}),
                ],
                [("espace-client", {"fault": "token_expired", "status": 403, "times": 2})],
            ]
            for offset, faults in enumerate(week, start=1):
                day = DAY1 + timedelta(days=offset)
                stack.run_until(paris(day, 6, 0))
                if offset == 3:
                    sim.revoke_tokens()
                for route, options in faults:
                    sim.fail(route, **options)
                stack.run_until(paris(day, 9, 0))
                # The same faults straight through the client: every error it raises.
                clock.advance(timedelta(hours=2))  # past the token's hour
                try:
                    stack.client.fetch_all(today=day)
                except VeoliaError as err:
                    errors.extend(error_texts(err))
                else:
                    for result in stack.client.fetch_all(today=day):
                        error = getattr(result, "error", None)
                        if error is not None:
                            errors.extend(error_texts(error))
                sim.clear_faults()
                stack.run_until(paris(day, 23, 0))
            stack.run_until(paris(DAY1 + timedelta(days=len(week) + 1), 12, 0))  # a clean day
            payloads = [m.topic for m in watch.messages] + [
                m.payload.decode("utf-8", "replace") for m in watch.messages
            ]
    finally:
        stack.stop()
        root.removeHandler(keep)

    assert len(errors) > 20, "the faults were meant to raise errors"
    assert len(keep.lines) > 500, "DEBUG logging was meant to be on"
    secrets = secrets_of(sim)
    assert len(secrets) > 20, "every login issued tokens to hunt for"
    state_dir = tmp_path / "state"
    files = [p.read_text("utf-8", "replace") for p in state_dir.iterdir() if p.name != TOKEN_FILE]
    assert (state_dir / STATE_FILE).is_file()
    found = {
        "log lines": leaks([*keep.lines, caplog.text], secrets),
        "errors": leaks(errors, secrets),
        "mqtt": leaks(payloads, secrets),
        "state files": leaks(files, secrets),
    }
    print(
        f"\nsecurity: {len(secrets)} secrets hunted in {len(keep.lines)} log lines, "
        f"{len(errors)} error texts, {len(payloads)} MQTT topics and payloads, {len(files)} files: "
        f"{sum(len(v) for v in found.values())} found"
    )
    assert found == {"log lines": [], "errors": [], "mqtt": [], "state files": []}

    # The token cache: the current access token only, readable by its owner only.
    token_file = state_dir / TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    text = token_file.read_text("utf-8")
    current = json.loads(text)["access_token"]
    assert current in sim.issued_tokens()
    assert leaks([text], [s for s in secrets if s != current]) == []


def test_the_hunt_finds_a_planted_secret():
    # The negative control: the same matcher catches a secret when there is one.
    planted = ["Logging in as jean.dupont@example.fr", "Authorization: Bearer eyJabc.def"]
    assert len(leaks(planted, ["jean.dupont@example.fr", "eyJabc.def", "absent"])) == 2
