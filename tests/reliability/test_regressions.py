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
    assert store.heartbeat_age_s() is None
