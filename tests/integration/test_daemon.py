"""The daemon end to end: `python -m veolia2mqtt` in a subprocess, the simulator, a real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.broker import Broker, Collector, retained_snapshot, wait_until
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE = "veolia2mqtt"
HOUSE_STATE = f"{BASE}/i19fa051732/state"
STATUS = f"{BASE}/status"
BRIDGE = f"{BASE}/bridge/state"
LOGINS = "cognito:USER_PASSWORD_AUTH"
VALUE_KEYS = ("daily_consumption", "billed_volume", "index", "reading_date", "reliability")
STOP_LIMIT_S = 5.0


class Daemon:
    """`python -m veolia2mqtt --config FILE` with its log in a file the test can wait on."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VEOLIA2MQTT_")}
        self.log.write_text("", encoding="utf-8")
        with self.log.open("ab") as sink:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "veolia2mqtt", "--config", str(self.config)],
                stdout=sink,
                stderr=sink,
                env=env,
                cwd=self.config.parent,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def wait_log(self, fragment: str, timeout_s: float = 15, count: int = 1) -> None:
        def seen() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None and self.text().count(fragment) < count:
                msg = f"daemon exited ({self.proc.returncode}) before {fragment!r}:\n{self.text()}"
                raise AssertionError(msg)
            return self.text().count(fragment) >= count

        wait_until(seen, timeout_s, f"{fragment!r} in the daemon log")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_LIMIT_S + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            msg = f"the daemon ignored SIGTERM:\n{self.text()}"
            raise AssertionError(msg) from None
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Scenario()) as simulator:
        yield simulator


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    try:
        yield made
    finally:
        for daemon in made:
            daemon.kill()


def write_config(tmp_path: Path, sim: Simulator, broker: Broker, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "veolia": {
            "email": sim.scenario.email,
            "password": sim.scenario.password,
            "client_id": sim.scenario.client_id,
            "auth_url": sim.auth_url,
            "api_url": sim.api_url,
            "timeout_s": 15,
        },
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"v2m-{tmp_path.name}"},
        "state_dir": str(tmp_path / "state"),
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def assert_truth(held: dict[str, str], sim: Simulator) -> None:
    for contract in sim.scenario.contracts:
        number = contract.numero_compteur
        latest = sim.expected_latest(number)
        assert latest is not None
        state = json.loads(held[f"{BASE}/{number.lower()}/state"])
        assert state["daily_consumption"] == latest["litre"]
        assert state["index"] == latest["index"]
        assert state["reading_date"] == latest["date"].isoformat()  # type: ignore[attr-defined]
        assert state["reliability"] == latest["fiabilite"]
        assert state["billed_volume"] == sim.expected_billed_m3(number)
        for key in VALUE_KEYS:
            assert held[f"{BASE}/{number.lower()}/{key}"] == str(state[key])


def publish_once(broker: Broker, topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-refresh")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_daemon_publishes_the_truth_serves_refresh_and_stops_on_sigterm(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path, sim, broker)
    with Collector(broker.host, broker.port, (f"{BASE}/#",)) as col:
        daemon = Daemon(config, tmp_path / "daemon.log").start()
        daemons.append(daemon)
        col.wait_for(lambda c: HOUSE_STATE in c.retained(), 15, "the first state")
        startup_s = time.monotonic() - daemon.started
        print(f"start-up to the first retained state on the broker: {startup_s:.2f} s")
        daemon.wait_log("Sync done")
        held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
        assert_truth(held, sim)
        assert held[STATUS] == "online"
        assert json.loads(held[BRIDGE])["status"] == "ok"

        # The container health check sees the heartbeat.
        health = subprocess.run(
            [sys.executable, "-m", "veolia2mqtt", "--config", str(config), "health"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert health.returncode == 0, health.stdout

        # A refresh syncs at once; a second one within 15 minutes is refused.
        publish_once(broker, f"{BASE}/i19fa051732/refresh", "")
        daemon.wait_log("Sync done", count=2)
        publish_once(broker, f"{BASE}/i19fa051732/refresh", "PRESS")
        daemon.wait_log("at most one every 15 minutes")
        assert daemon.text().count("Sync done") == 2

        code, took = daemon.terminate()
        assert code == 0, daemon.text()
        assert took < STOP_LIMIT_S, f"stopped {took:.1f} s after SIGTERM"
        col.wait_for(lambda c: c.retained().get(STATUS) == "offline", 5, "offline")
    assert retained_snapshot(broker.host, broker.port, STATUS, settle_s=0.2)[STATUS] == "offline"
    assert startup_s < 10
    assert "Traceback" not in daemon.text()


def test_restarts_in_one_day_log_in_once(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path, sim, broker)
    per_start = []
    for start in range(3):
        sim.reset()
        daemon = Daemon(config, tmp_path / f"daemon{start}.log").start()
        daemons.append(daemon)
        daemon.wait_log("Next sync")
        if start == 0:
            daemon.wait_log("Sync done")
        else:
            assert "already synced" in daemon.text() or "done today" in daemon.text()
        per_start.append(sim.stats()[LOGINS])
        held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
        assert_truth(held, sim)
        code, _took = daemon.terminate()
        assert code == 0
    print(f"logins per start over 3 starts in one day: {per_start} (total {sum(per_start)})")
    assert per_start == [1, 0, 0]


def test_broker_down_at_start_then_up_gets_the_values(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon]
) -> None:
    broker.stop()
    daemon = Daemon(write_config(tmp_path, sim, broker), tmp_path / "daemon.log").start()
    daemons.append(daemon)
    daemon.wait_log("Sync failed while publishing to the broker")
    broker.start()

    def arrived() -> bool:
        held = retained_snapshot(broker.host, broker.port, settle_s=0.2)
        return f"{BASE}/i21fa104733/index" in held and HOUSE_STATE in held

    wait_until(arrived, 20, "the values once the broker is up")
    assert_truth(retained_snapshot(broker.host, broker.port, settle_s=0.3), sim)
    assert sim.stats()[LOGINS] == 1
    code, took = daemon.terminate()
    assert code == 0
    assert took < STOP_LIMIT_S


def test_sigterm_during_a_slow_veolia_request(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon]
) -> None:
    sim.fail("journalieres", fault="slow", times=None, delay_s=30)
    with Collector(broker.host, broker.port, (STATUS,)) as col:
        daemon = Daemon(write_config(tmp_path, sim, broker), tmp_path / "daemon.log").start()
        daemons.append(daemon)
        col.wait_for(lambda c: c.retained().get(STATUS) == "online", 15, "online")
        wait_until(lambda: sim.in_flight > 0, 15, "the slow request")
        code, took = daemon.terminate()
        print(f"SIGTERM during a slow Veolia request: exit {code} after {took:.2f} s")
        assert code == 0, daemon.text()
        assert took < STOP_LIMIT_S, f"stopped {took:.1f} s after SIGTERM"
        col.wait_for(lambda c: c.retained().get(STATUS) == "offline", 5, "offline")


def test_refused_login_is_not_retried_after_a_restart_until_the_config_changes(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path, sim, broker, veolia={"password": "typo"})
    first = Daemon(config, tmp_path / "first.log").start()
    daemons.append(first)
    first.wait_log("Veolia refused the login")
    first.wait_log("Next sync", count=2)
    bridge = json.loads(retained_snapshot(broker.host, broker.port, BRIDGE, settle_s=0.3)[BRIDGE])
    assert bridge["status"] == "auth_failed"
    assert "veolia.password" in bridge["error"]["action"]
    assert "typo" not in first.text()
    assert first.terminate()[0] == 0
    assert sim.stats()[LOGINS] == 1

    second = Daemon(config, tmp_path / "second.log").start()
    daemons.append(second)
    second.wait_log("credentials were refused")
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert json.loads(held[BRIDGE])["status"] == "auth_failed"
    assert held[STATUS] == "online"
    assert second.terminate()[0] == 0
    assert sim.stats()[LOGINS] == 1, "the restart logged in again"

    config = write_config(tmp_path, sim, broker)  # the password is fixed
    third = Daemon(config, tmp_path / "third.log").start()
    daemons.append(third)
    third.wait_log("Sync done")
    assert sim.stats()[LOGINS] == 2
    assert json.loads(retained_snapshot(broker.host, broker.port, BRIDGE)[BRIDGE])["status"] == "ok"
    assert third.terminate()[0] == 0


@pytest.mark.parametrize("damage", ["corrupt_state", "state_dir_is_a_file"])
def test_damaged_or_unwritable_state_still_publishes_with_one_warning(
    tmp_path: Path, sim: Simulator, broker: Broker, daemons: list[Daemon], damage: str
) -> None:
    config = write_config(tmp_path, sim, broker)
    state = tmp_path / "state"
    if damage == "corrupt_state":
        state.mkdir()
        (state / "state.json").write_bytes(b'{"version": 1, "meters": ')
    else:
        state.write_text("not a directory", encoding="utf-8")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    daemons.append(daemon)
    daemon.wait_log("Sync done")
    assert_truth(retained_snapshot(broker.host, broker.port, settle_s=0.3), sim)
    code, _took = daemon.terminate()
    assert code == 0
    warnings = [line for line in daemon.text().splitlines() if " WARNING " in line]
    assert len(warnings) == 1, warnings
    assert "state" in warnings[0].lower()
    if damage == "corrupt_state":
        assert (state / "state.json.corrupt").exists()
