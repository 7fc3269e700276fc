"""Fidelity: the independent veolia-api-foxace client reads the simulator like our client does.

The peer (PyPI ``veolia-api-foxace``, aiohttp) is pointed at the simulator by patching its Cognito
URL and its portal table. If it and the simulator disagree, the simulator is wrong until shown
otherwise. The peer reads only the first contract of an account.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from veolia2mqtt.meter import update_values
from veolia2mqtt.veolia.client import VeoliaClient
from veolia2mqtt.veolia.models import MeterData, parse_daily, parse_monthly
from veolia2mqtt.veolia.portals import resolve_portal
from veolia2mqtt.veolia.simulator import ContractSpec, Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from veolia_api.model import VeoliaAccountData

peer_api = pytest.importorskip("veolia_api.veolia_api")
peer_portals = pytest.importorskip("veolia_api.portals")
peer_errors = pytest.importorskip("veolia_api.exceptions")

pytestmark = pytest.mark.peer

EMAIL = "jean.dupont@example.fr"
PASSWORD = "s3cret!"
CLIENT_ID = "3kghade1fg54739kj8pkbova8j"
REFRESH = "eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0.peer-refresh"
TODAY = date(2026, 6, 15)


def _scenario(today: date, **overrides: object) -> Scenario:
    values: dict[str, object] = {
        "email": EMAIL,
        "password": PASSWORD,
        "client_id": CLIENT_ID,
        "refresh_token": REFRESH,
        "today": today,
        "contracts": (
            ContractSpec(
                id_abonnement=4718203,
                numero_compteur="I19FA051732",
                numero_pds="003KQZ7",
                date_debut_abonnement=date(2019, 3, 14),
                estimated_runs=((date(2026, 6, 4), date(2026, 6, 5)),),
                gaps=(date(2026, 6, 7),),
            ),
        ),
    }
    values.update(overrides)
    return Scenario(**values)  # type: ignore[arg-type]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    with Simulator(_scenario(TODAY)) as simulator:
        _point_peer_at(monkeypatch, simulator)
        yield simulator


def _point_peer_at(monkeypatch: pytest.MonkeyPatch, sim: Simulator) -> None:
    monkeypatch.setattr(peer_api, "LOGIN_URL", sim.auth_url)
    monkeypatch.setitem(
        peer_portals.VEOLIA_PORTALS,
        "eau.veolia.fr",
        peer_portals.VeoliaPortal(client_id=CLIENT_ID, backend_url=sim.api_url.rstrip("/")),
    )


def _run_peer(
    start: date, end: date, *, password: str = PASSWORD, refresh_token: str | None = None
) -> VeoliaAccountData:
    async def run() -> VeoliaAccountData:
        api = peer_api.VeoliaAPI(EMAIL, password, refresh_token=refresh_token)
        try:
            await api.login()
            await api.fetch_all_data(start, end)
        finally:
            await api.close()
        return api.account_data

    return asyncio.run(run())


def _ours(sim: Simulator, today: date) -> MeterData:
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=CLIENT_ID, auth_url=sim.auth_url, api_url=sim.api_url
    )
    with VeoliaClient(
        endpoints, email=EMAIL, password=SecretStr(PASSWORD), sleep=lambda _s: None
    ) as client:
        (data,) = client.fetch_all(today=today)
    assert isinstance(data, MeterData)
    return data


def _previous_month_start(today: date) -> date:
    return date(today.year, today.month - 1, 1) if today.month > 1 else date(today.year - 1, 12, 1)


@pytest.mark.parametrize("today", [TODAY, date(2026, 6, 1), date(2026, 1, 2)])
def test_peer_and_client_read_the_same_values(monkeypatch: pytest.MonkeyPatch, today: date) -> None:
    with Simulator(_scenario(today)) as sim:
        _point_peer_at(monkeypatch, sim)
        peer = _run_peer(_previous_month_start(today), today)
        ours = _ours(sim, today)

    assert peer.id_abonnement == "4718203"
    assert peer.numero_compteur == ours.meter.number
    assert peer.numero_pds == "003KQZ7"
    assert peer.date_debut_abonnement == "2019-03-14"

    # The peer's raw rows, read by an independent rule: latest row with both numbers.
    raw_daily = peer.daily_consumption or []
    with_data = [
        row
        for row in raw_daily
        if isinstance(row["consommation"]["litre"], int | float)
        and isinstance(row["index"]["litre"], int | float)
        and row["date_releve"] < today.isoformat()
    ]
    peer_latest = max(with_data, key=lambda row: row["date_releve"])
    raw_monthly = peer.monthly_consumption or []
    peer_month = max(raw_monthly, key=lambda row: (row["annee"], row["mois"]))

    values = update_values(None, ours.daily, ours.monthly, today=today).values
    assert values.reading_date is not None
    assert values.reading_date.isoformat() == peer_latest["date_releve"]
    assert values.daily_consumption_l == peer_latest["consommation"]["litre"]
    assert values.index_l == peer_latest["index"]["litre"]
    assert values.reliability == peer_latest["fiabilite_index"]
    assert values.billed_volume_m3 == peer_month["consommation"]["m3"]

    expected = sim.expected_latest(ours.meter.number)
    assert peer_latest["date_releve"] == expected["date"].isoformat()
    assert peer_latest["index"]["litre"] == expected["index"]

    # Same series row for row over the months both fetched.
    peer_daily = parse_daily(raw_daily)
    first = max(ours.daily[0].day, peer_daily[0].day)
    assert [row for row in ours.daily if row.day >= first] == [
        row for row in peer_daily if row.day >= first
    ]
    assert list(ours.monthly) == parse_monthly(raw_monthly)


def test_peer_logs_in_with_the_refresh_token(sim: Simulator) -> None:
    peer = _run_peer(_previous_month_start(TODAY), TODAY, password="", refresh_token=REFRESH)
    assert peer.daily_consumption
    assert sim.stats()["cognito:REFRESH_TOKEN_AUTH"] >= 1
    assert sim.stats().get("cognito:USER_PASSWORD_AUTH", 0) == 0


@pytest.mark.parametrize("status", [401, 403])
def test_peer_recovers_from_an_expired_token(sim: Simulator, status: int) -> None:
    sim.fail("journalieres", fault="token_expired", status=status)
    peer = _run_peer(_previous_month_start(TODAY), TODAY)
    assert peer.daily_consumption
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 2


def test_peer_sees_refused_credentials(sim: Simulator) -> None:
    sim.fail("cognito", fault="wrong_password")
    with pytest.raises(peer_errors.VeoliaAPIInvalidCredentialsError):
        _run_peer(_previous_month_start(TODAY), TODAY)


def test_peer_sees_the_challenge(sim: Simulator) -> None:
    sim.fail("cognito", fault="challenge", challenge_name="SMS_MFA")
    with pytest.raises(peer_errors.VeoliaAPIChallengeError) as caught:
        _run_peer(_previous_month_start(TODAY), TODAY)
    assert caught.value.challenge_name == "SMS_MFA"
