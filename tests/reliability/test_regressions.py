"""One test per defect the reliability suite found, each pinned by the smallest input."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr
from requests.structures import CaseInsensitiveDict

from veolia2mqtt.config import load_settings
from veolia2mqtt.errors import ConfigError
from veolia2mqtt.state import StateStore
from veolia2mqtt.veolia.client import FailedMeter, VeoliaClient
from veolia2mqtt.veolia.errors import VeoliaConnectionError, VeoliaResponseError
from veolia2mqtt.veolia.models import (
    DEFAULT_EXPIRES_IN_S,
    CognitoTokens,
    parse_auth,
    parse_daily,
    parse_monthly,
)
from veolia2mqtt.veolia.portals import resolve_portal
from veolia2mqtt.veolia.simulator import Scenario, Simulator


def test_a_huge_integer_in_a_daily_row_is_no_data():
    # A 400-digit integer is valid JSON; it used to come out as is and crash the builders
    # (float overflow) on every sync while Veolia served it.
    rows = parse_daily(
        [
            {
                "date_releve": "2026-06-01",
                "consommation": {"litre": 10**400},
                "index": {"litre": 5},
            },
            {
                "date_releve": "2026-06-02",
                "consommation": {"litre": 7},
                "index": {"litre": -(10**400)},
            },
        ]
    )
    assert [(r.consumption_l, r.index_l) for r in rows] == [(None, 5), (7, None)]
    assert not any(r.has_data for r in rows)


def test_a_superscript_digit_in_a_monthly_period_skips_the_row():
    # "²".isdigit() is true but int("²") raises ValueError: it escaped parse_monthly.
    rows = parse_monthly(
        [
            {"annee": "²", "mois": 1, "consommation": {"m3": 1.0}},
            {"annee": "2026", "mois": "٣", "consommation": {"m3": 2.0}},  # Arabic-Indic 3
        ]
    )
    assert [(r.year, r.month, r.m3) for r in rows] == [(2026, 3, 2.0)]


def test_a_sub_second_token_lifetime_means_the_default_hour():
    # ExpiresIn 0.5 became a lifetime of 0 s: the client then signed in before every request.
    for lifetime in (0.5, 0.999, 0, -3):
        answer = parse_auth({"AuthenticationResult": {"AccessToken": "t", "ExpiresIn": lifetime}})
        assert isinstance(answer, CognitoTokens)
        assert answer.expires_in_s == DEFAULT_EXPIRES_IN_S
    kept = parse_auth({"AuthenticationResult": {"AccessToken": "t", "ExpiresIn": 1.5}})
    assert isinstance(kept, CognitoTokens)
    assert kept.expires_in_s == 1


DEEP = b"[" * 100_000


@pytest.mark.parametrize(
    ("route", "fault_body"),
    [("journalieres", (200, "application/json")), ("cognito", (400, "application/x-amz-json-1.1"))],
)
def test_json_nested_too_deeply_is_a_veolia_error(route, fault_body):
    # json.loads raises RecursionError, which is no ValueError: it escaped the client.
    status, content_type = fault_body
    sim = Simulator(Scenario(today=date(2026, 6, 10)))
    inner = sim.adapter()

    class Deep(requests.adapters.BaseAdapter):
        def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            is_route = request.method == "POST" if route == "cognito" else route in request.url
            if not is_route:
                return inner.send(request, *args, **kwargs)
            response = requests.Response()
            response.status_code = status
            response.headers = CaseInsensitiveDict({"Content-Type": content_type})
            response.raw = io.BytesIO(DEEP)
            response.request = request
            return response

        def close(self) -> None:
            inner.close()

    session = requests.Session()
    session.mount("https://", Deep())
    client = VeoliaClient(
        resolve_portal(
            "eau.veolia.fr",
            client_id=sim.scenario.client_id,
            auth_url="https://cognito.test",
            api_url="https://backend.test",
        ),
        email=sim.scenario.email,
        password=SecretStr(sim.scenario.password),
        session=session,
        sleep=lambda _s: None,
    )
    if route == "cognito":
        with pytest.raises(VeoliaResponseError, match="no error type"):
            client.login()
    else:
        failed = [
            r for r in client.fetch_all(today=date(2026, 6, 10)) if isinstance(r, FailedMeter)
        ]
        assert failed
        assert all(isinstance(r.error, VeoliaConnectionError) for r in failed)
        assert "malformed JSON" in str(failed[0].error)


def test_a_state_dir_with_a_nul_character_runs_in_memory(caplog):
    # YAML reads state_dir: "a\0b" as a path with a NUL; mkdir raised ValueError out of load().
    store = StateStore(Path("state\0dir"))
    with caplog.at_level(logging.WARNING):
        store.load()
    assert store.in_memory
    assert "cannot be written" in caplog.text
    store.set_last_sync(datetime(2026, 6, 10, tzinfo=UTC))
    store.flush()
    store.touch_heartbeat()
    store.heartbeat_age_s()  # never raises


def _config(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"1: x\n", "1: unknown key"),  # was TypeError: keywords must be strings
        (b"\xff\xfe veolia: {}\n", "not UTF-8 text"),  # was UnicodeDecodeError
        (b"a: " + b"[" * 10_000, "nested too deeply"),  # was RecursionError
        (
            b"mqtt: {tls: {ca_file: " + b"a" * 300 + b"}}\n",
            "mqtt.tls.ca_file: cannot read",
        ),  # OSError
        (b"sync: {timezone: " + b"a" * 300 + b"}\n", "sync.timezone: unknown time zone"),  # OSError
    ],
    ids=["number-key", "not-utf8", "deep", "long-ca-file", "long-timezone"],
)
def test_odd_configuration_files_are_config_errors(tmp_path, content, said):
    with pytest.raises(ConfigError) as err:
        load_settings(_config(tmp_path, content), require_credentials=False)
    assert said in str(err.value)


def test_a_file_secret_that_is_not_utf8_is_a_config_error(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_bytes(b"\xffs3cret")
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", str(secret))
    with pytest.raises(ConfigError, match="is not UTF-8 text") as err:
        load_settings(_config(tmp_path, b""), require_credentials=False)
    assert "s3cret" not in str(err.value)


def test_a_config_path_too_long_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_settings(tmp_path / ("a" * 300), require_credentials=False)
