"""The simulator switches this suite adds: a replaced meter, a lag that changes, the truth
before any lag, and every token handed out (for the leak checks)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from veolia2mqtt.veolia.simulator import ContractSpec, Scenario, Simulator

TODAY = date(2026, 6, 10)
HOUSE = "I19FA051732"


def house(sim: Simulator) -> ContractSpec:
    return sim.scenario.contracts[0]


def test_a_replaced_meter_restarts_its_index_on_the_day():
    base = Scenario(today=TODAY)
    spec = replace(base.contracts[0], replaced_on=date(2026, 6, 5), replacement_index_l=40)
    sim = Simulator(replace(base, contracts=(spec, *base.contracts[1:])))
    rows = {
        r["date_releve"]: r for r in sim.daily_rows(spec.id_abonnement, date(2026, 6, 3), TODAY)
    }
    assert rows["2026-06-04"]["index"]["litre"] > 500_000  # type: ignore[index]
    assert rows["2026-06-05"]["index"]["litre"] == 40  # type: ignore[index]
    june5 = rows["2026-06-05"]["consommation"]["litre"]  # type: ignore[index]
    assert rows["2026-06-06"]["index"]["litre"] == 40 + june5  # type: ignore[index]
    latest = sim.expected_latest(HOUSE)
    assert latest is not None
    assert latest["index"] == rows["2026-06-08"]["index"]["litre"]  # type: ignore[index]


def test_a_replacement_on_the_contract_start_day_changes_nothing():
    base = Scenario(today=TODAY)
    start = base.contracts[0].date_debut_abonnement
    spec = replace(base.contracts[0], replaced_on=start, replacement_index_l=0)
    plain, swapped = Simulator(base), Simulator(replace(base, contracts=(spec,)))
    assert swapped.expected_latest(HOUSE) == plain.expected_latest(HOUSE)


def test_a_negative_replacement_index_is_refused():
    with pytest.raises(ValueError, match="negative"):
        replace(Scenario().contracts[0], replacement_index_l=-1)


def test_set_lag_moves_the_horizon_both_ways():
    sim = Simulator(Scenario(today=TODAY))
    assert sim.expected_latest(HOUSE)["date"] == TODAY - timedelta(days=2)  # type: ignore[index]
    sim.set_lag(HOUSE, 5)
    assert sim.expected_latest(HOUSE)["date"] == TODAY - timedelta(days=5)  # type: ignore[index]
    assert sim.daily_rows(house(sim).id_abonnement, TODAY - timedelta(days=4), TODAY) == []
    sim.set_lag(HOUSE, 1)
    assert sim.expected_latest(HOUSE)["date"] == TODAY - timedelta(days=1)  # type: ignore[index]
    with pytest.raises(ValueError, match="negative"):
        sim.set_lag(HOUSE, -1)
    with pytest.raises(KeyError):
        sim.set_lag("NOPE", 2)


def test_true_row_ignores_the_lag_but_not_the_gaps():
    base = Scenario(today=TODAY)
    spec = replace(base.contracts[0], gaps=(TODAY - timedelta(days=9),))
    sim = Simulator(replace(base, contracts=(spec,)))
    sim.set_lag(HOUSE, 9)
    assert sim.true_row(HOUSE, TODAY - timedelta(days=3)) is not None
    assert sim.true_row(HOUSE, TODAY - timedelta(days=9)) is None
    off = Simulator(replace(base, contracts=(replace(spec, telemetry=False),)))
    assert off.true_row(HOUSE, TODAY - timedelta(days=3)) is None


def test_issued_tokens_lists_every_secret_handed_out():
    sim = Simulator(Scenario(today=TODAY))
    assert sim.issued_tokens() == [sim.scenario.refresh_token]
    body = (
        b'{"ClientId": "3kghade1fg54739kj8pkbova8j", "AuthFlow": "USER_PASSWORD_AUTH",'
        b' "AuthParameters": {"USERNAME": "jean.dupont@example.fr", "PASSWORD": "s3cret!"}}'
    )
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
    }
    status, _, answer = sim.handle("POST", "https://cognito.test/", headers, body)
    assert status == 200
    sim.revoke_tokens()
    issued = sim.issued_tokens()
    assert len(issued) == 3  # access, id, refresh: revoked ones stay listed
    assert all(token.encode() in answer for token in issued)
