"""Parsing the API's JSON into typed records (veolia-protocol.md §4, §5, §6.2)."""

from __future__ import annotations

import logging
from dataclasses import FrozenInstanceError
from datetime import date

import pytest

from tests.helpers.fixtures import load_fixture
from veolia2mqtt.meter import DailyReading, Meter, MeterValues, MonthlyReading, update_values
from veolia2mqtt.tokens import CachedToken
from veolia2mqtt.veolia.errors import VeoliaResponseError
from veolia2mqtt.veolia.models import (
    Billing,
    CognitoChallenge,
    CognitoTokens,
    Contract,
    account_key,
    cognito_error_message,
    cognito_error_type,
    normalise_daily,
    normalise_monthly,
    parse_auth,
    parse_billing,
    parse_contracts,
    parse_daily,
    parse_monthly,
)

SAMPLE_DAY = date(2026, 6, 10)


def _row(day: str, litre: object = 100, index: object = 1000, flag: object = "MESURE") -> dict:
    return {
        "date_releve": day,
        "consommation": {"litre": litre, "m3": None},
        "index": {"litre": index, "m3": None},
        "fiabilite_index": flag,
    }


# -- espace-client -------------------------------------------------------------------------


def test_contracts_from_the_sample_keep_ids_and_meters_only() -> None:
    contracts = parse_contracts(load_fixture("espace_client"))
    assert contracts == [
        Contract(id_abonnement="4718203", meter=Meter("I19FA051732")),
        Contract(id_abonnement="4718204", meter=Meter("I21FA104733")),
    ]
    text = repr(contracts)
    for personal in ("LILAS", "MONTPELLIER", "JARDIN", "1002871455", "2004518873"):
        assert personal not in text


@pytest.mark.parametrize("nesting", ["abonnements", "tiers", "contacts"])
def test_contracts_walk_every_contact_and_tiers(nesting: str) -> None:
    one = {"id_abonnement": 1, "numero_compteur": "A1"}
    two = {"id_abonnement": "2", "numero_compteur": "B2"}
    if nesting == "abonnements":
        raw = {"contacts": [{"tiers": [{"abonnements": [one, two]}]}]}
    elif nesting == "tiers":
        raw = {"contacts": [{"tiers": [{"abonnements": [one]}, {"abonnements": [two]}]}]}
    else:
        raw = {
            "contacts": [{"tiers": [{"abonnements": [one]}]}, {"tiers": [{"abonnements": [two]}]}]
        }
    assert [c.id_abonnement for c in parse_contracts(raw)] == ["1", "2"]
    assert [c.meter.number for c in parse_contracts(raw)] == ["A1", "B2"]


def test_a_contract_listed_twice_is_kept_once() -> None:
    item = {"id_abonnement": 7, "numero_compteur": "X"}
    raw = {"contacts": [{"tiers": [{"abonnements": [item]}]}, {"tiers": [{"abonnements": [item]}]}]}
    assert parse_contracts(raw) == [Contract("7", Meter("X"))]


@pytest.mark.parametrize(
    "raw",
    [
        {"contacts": []},
        {},
        {"contacts": None},
        {"contacts": [{"tiers": []}]},
        {"contacts": [{}]},
        {"contacts": [{"tiers": [{"abonnements": []}]}]},
        {"contacts": [{"tiers": [{}]}]},
    ],
)
def test_no_contract_is_an_error(raw: object) -> None:
    with pytest.raises(VeoliaResponseError, match="no contract found on this account"):
        parse_contracts(raw)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"numero_compteur": "A"}, "id_abonnement"),
        ({"id_abonnement": None, "numero_compteur": "A"}, "id_abonnement"),
        ({"id_abonnement": True, "numero_compteur": "A"}, "id_abonnement"),
        ({"id_abonnement": "", "numero_compteur": "A"}, "id_abonnement"),
        ({"id_abonnement": [1], "numero_compteur": "A"}, "id_abonnement"),
        ({"id_abonnement": 1}, "numero_compteur"),
        ({"id_abonnement": 1, "numero_compteur": 12}, "numero_compteur"),
        ("not an object", "abonnements"),
    ],
)
def test_malformed_contract_names_the_field(item: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_contracts({"contacts": [{"tiers": [{"abonnements": [item]}]}]})
    assert caught.value.field == field
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "body"),
        ("text", "body"),
        ({"contacts": {}}, "contacts"),
        ({"contacts": ["x"]}, "contacts"),
        ({"contacts": [{"tiers": "x"}]}, "tiers"),
        ({"contacts": [{"tiers": [3]}]}, "tiers"),
        ({"contacts": [{"tiers": [{"abonnements": {}}]}]}, "abonnements"),
    ],
)
def test_malformed_tree_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_contracts(raw)
    assert caught.value.field == field


# -- facturation ---------------------------------------------------------------------------


def test_billing_from_the_sample_keeps_no_personal_data() -> None:
    billing = parse_billing(load_fixture("facturation"))
    assert billing == Billing(numero_pds="003KQZ7", start=date(2019, 3, 14))
    assert "DUPONT" not in repr(billing)
    assert "0712345678" not in repr(billing)


def test_billing_start_with_a_time_part_keeps_the_date() -> None:
    raw = {"numero_pds": "P", "date_debut_abonnement": "2019-03-14T00:00:00+01:00"}
    assert parse_billing(raw).start == date(2019, 3, 14)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"date_debut_abonnement": "2019-03-14"}, "numero_pds"),
        ({"numero_pds": "", "date_debut_abonnement": "2019-03-14"}, "numero_pds"),
        ({"numero_pds": None, "date_debut_abonnement": "2019-03-14"}, "numero_pds"),
        ({"numero_pds": "P"}, "date_debut_abonnement"),
        ({"numero_pds": "P", "date_debut_abonnement": "14/03/2019"}, "date_debut_abonnement"),
        ({"numero_pds": "P", "date_debut_abonnement": 20190314}, "date_debut_abonnement"),
        ([], "body"),
    ],
)
def test_malformed_billing_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_billing(raw)
    assert caught.value.field == field


# -- journalieres --------------------------------------------------------------------------


def test_daily_sample() -> None:
    rows = parse_daily(load_fixture("journalieres"))
    assert len(rows) == 7
    assert rows[0] == DailyReading(date(2026, 6, 1), 118, 512406, "MESURE")
    assert rows[-1] == DailyReading(date(2026, 6, 8), 143, 513397, "MESURE")
    assert all(isinstance(r.consumption_l, int) and isinstance(r.index_l, int) for r in rows)
    assert [r.reliability for r in rows].count("ESTIME") == 2


def test_daily_sample_gives_the_published_values_of_the_spec() -> None:
    # veolia-protocol.md §6.1: 143, 2026-06-08, MESURE, 513397, 1.134.
    update = update_values(
        None,
        parse_daily(load_fixture("journalieres")),
        parse_monthly(load_fixture("mensuelles")),
        today=SAMPLE_DAY,
    )
    assert update.values.daily_consumption_l == 143
    assert update.values.reading_date == date(2026, 6, 8)
    assert update.values.reliability == "MESURE"
    assert update.values.index_l == 513397
    assert update.values.billed_volume_m3 == 1.134


def test_daily_estimates_keep_the_flat_index() -> None:
    rows = parse_daily(load_fixture("journalieres"))
    estimated = [r for r in rows if r.reliability == "ESTIME"]
    assert [r.index_l for r in estimated] == [512752, 512752]
    assert [r.consumption_l for r in estimated] == [126, 127]


def test_daily_rows_are_deduplicated_last_wins_and_sorted() -> None:
    raw = [
        _row("2026-06-03", 30, 3000),
        _row("2026-06-01", 10, 1000),
        _row("2026-06-03", 40, 3000),
        _row("2026-06-02", 20, 2000),
    ]
    rows = parse_daily(raw)
    assert [r.day.day for r in rows] == [1, 2, 3]
    assert rows[-1].consumption_l == 40


def test_daily_integral_floats_become_int_and_fractions_stay() -> None:
    rows = parse_daily([_row("2026-06-01", 118.0, 512406.0), _row("2026-06-02", 12.5, 7.25)])
    assert rows[0].consumption_l == 118
    assert type(rows[0].consumption_l) is int
    assert type(rows[0].index_l) is int
    assert rows[1].consumption_l == 12.5
    assert rows[1].index_l == 7.25


@pytest.mark.parametrize("bad", [None, "118", True, float("nan"), float("inf"), [1], {}])
def test_daily_row_with_a_non_number_has_no_data(bad: object) -> None:
    rows = parse_daily([_row("2026-06-01", litre=bad), _row("2026-06-02", index=bad)])
    assert [r.has_data for r in rows] == [False, False]
    assert rows[0].consumption_l is None
    assert rows[0].index_l == 1000
    assert rows[1].index_l is None


def test_daily_missing_optional_fields_are_tolerated() -> None:
    rows = parse_daily(
        [
            {"date_releve": "2026-06-01"},
            {"date_releve": "2026-06-02", "consommation": {}, "index": {"litre": 5}},
            {"date_releve": "2026-06-03", "consommation": {"litre": 0}, "index": {"litre": 5}},
            {"date_releve": "2026-06-04", "consommation": None, "index": None, "extra": 1},
        ]
    )
    assert [r.has_data for r in rows] == [False, False, True, False]
    assert rows[2].consumption_l == 0
    assert all(r.reliability is None for r in rows)


def test_daily_unreadable_dates_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rows = parse_daily(
        [
            _row("2026-06-01"),
            _row("01/06/2026"),
            _row("2026-02-30"),
            {"consommation": {"litre": 1}},
            "not a row",
            _row("2026-06-02T00:00:00"),
        ]
    )
    assert [r.day for r in rows] == [date(2026, 6, 1), date(2026, 6, 2)]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert "01/06/2026" in caplog.text


def test_daily_rows_outside_the_month_are_kept() -> None:
    rows = parse_daily([_row("2026-05-31"), _row("2026-06-01")])
    assert [r.day.month for r in rows] == [5, 6]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"date_releve": "2026-06-01"}, "body"),
        ("x", "body"),
        (None, "body"),
        ([{"date_releve": "2026-06-01", "consommation": 118}], "consommation"),
        ([{"date_releve": "2026-06-01", "consommation": [118]}], "consommation"),
        ([{"date_releve": "2026-06-01", "index": "512406"}], "index"),
    ],
)
def test_malformed_daily_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_daily(raw)
    assert caught.value.field == field


def test_daily_empty_month() -> None:
    assert parse_daily([]) == []


def test_decreasing_index_is_parsed_as_is_and_the_rule_ignores_it() -> None:
    raw = [_row("2026-06-07", 100, 513_000), _row("2026-06-08", 143, 512_000)]
    rows = parse_daily(raw)
    assert rows[-1].index_l == 512_000
    previous = MeterValues(reading_date=date(2026, 6, 7), index_l=513_000)
    update = update_values(previous, rows, [], today=SAMPLE_DAY)
    assert update.values.index_l == 513_000
    assert update.values.reading_date == date(2026, 6, 8)
    assert update.values.daily_consumption_l == 143
    assert any("lower" in note for note in update.notes)


# -- mensuelles ----------------------------------------------------------------------------


def test_monthly_sample() -> None:
    rows = parse_monthly(load_fixture("mensuelles"))
    assert [r.month for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1] == MonthlyReading(2026, 6, 1134, 1.134, "ESTIME")
    assert rows[1].m3 == 3.39
    assert type(rows[0].volume_l) is int


def test_monthly_rows_deduplicated_last_wins_and_sorted() -> None:
    raw = [
        {"annee": 2026, "mois": 2, "consommation": {"litre": 2, "m3": 0.002}},
        {"annee": 2025, "mois": 12, "consommation": {"litre": 12, "m3": 0.012}},
        {"annee": 2026, "mois": 2, "consommation": {"litre": 3, "m3": 0.003}},
        {"annee": "2026", "mois": "1", "consommation": {"litre": 1}},
    ]
    rows = parse_monthly(raw)
    assert [(r.year, r.month) for r in rows] == [(2025, 12), (2026, 1), (2026, 2)]
    assert rows[-1].volume_l == 3
    assert rows[1].volume_m3 is None
    assert rows[1].m3 == 0.001


def test_monthly_unreadable_periods_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    raw = [
        {"annee": 2026, "mois": 13, "consommation": {"litre": 1}},
        {"annee": 2026, "consommation": {"litre": 1}},
        {"annee": None, "mois": 1},
        {"annee": True, "mois": 1},
        {"annee": 2026, "mois": 1.5},
        {"annee": 2026, "mois": 3.0, "consommation": {"litre": None, "m3": "x"}},
        7,
    ]
    rows = parse_monthly(raw)
    assert rows == [MonthlyReading(2026, 3, None, None, None)]
    assert len(caplog.records) == 6


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "body"),
        ([{"annee": 2026, "mois": 1, "consommation": 5}], "consommation"),
    ],
)
def test_malformed_monthly_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_monthly(raw)
    assert caught.value.field == field


def test_normalise_concatenation_of_two_months_last_wins() -> None:
    previous = [DailyReading(date(2026, 5, 31), 1, 10), DailyReading(date(2026, 6, 1), 2, 11)]
    current = [DailyReading(date(2026, 6, 1), 3, 11)]
    rows = normalise_daily([*previous, *current])
    assert rows == (DailyReading(date(2026, 5, 31), 1, 10), DailyReading(date(2026, 6, 1), 3, 11))
    assert normalise_monthly([]) == ()


# -- Cognito -------------------------------------------------------------------------------


def test_auth_sample() -> None:
    tokens = parse_auth(load_fixture("cognito_auth"))
    assert isinstance(tokens, CognitoTokens)
    assert tokens.expires_in_s == 3600
    assert tokens.access_token.startswith("eyJraWQiOiJhYmMifQ")
    assert "eyJ" not in repr(tokens)


@pytest.mark.parametrize("expires", [None, 0, -5, "3600", True])
def test_auth_without_a_usable_expiry_assumes_an_hour(expires: object) -> None:
    raw = {"AuthenticationResult": {"AccessToken": "tok", "ExpiresIn": expires}}
    tokens = parse_auth(raw)
    assert isinstance(tokens, CognitoTokens)
    assert tokens.expires_in_s == 3600


def test_auth_challenge() -> None:
    assert parse_auth(load_fixture("cognito_challenge")) == CognitoChallenge("SMS_MFA")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "AuthenticationResult"),
        ({"AuthenticationResult": None}, "AuthenticationResult"),
        ({"AuthenticationResult": "x"}, "AuthenticationResult"),
        ({"AuthenticationResult": {"ExpiresIn": 3600}}, "AccessToken"),
        ({"AuthenticationResult": {"AccessToken": ""}}, "AccessToken"),
        ([], "body"),
    ],
)
def test_malformed_auth_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(VeoliaResponseError) as caught:
        parse_auth(raw)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("raw", "header", "expected"),
    [
        (load_fixture("cognito_error"), None, "NotAuthorizedException"),
        (
            {"__type": "com.amazonaws.cognito#UserNotFoundException:http://x"},
            None,
            "UserNotFoundException",
        ),
        ({"__type": "TooManyRequestsException:"}, None, "TooManyRequestsException"),
        ({}, "NotAuthorizedException:", "NotAuthorizedException"),
        (None, None, None),
        ({"__type": ""}, None, None),
        ("text", "", None),
    ],
)
def test_cognito_error_type_is_parsed_defensively(
    raw: object, header: str | None, expected: str | None
) -> None:
    assert cognito_error_type(raw, header) == expected


def test_cognito_error_message() -> None:
    assert cognito_error_message(load_fixture("cognito_error")) == "Incorrect username or password."
    assert cognito_error_message({"Message": "m"}) == "m"
    assert cognito_error_message([]) is None


# -- records -------------------------------------------------------------------------------


def test_records_are_frozen_and_the_token_repr_hides_the_secret() -> None:
    token = CachedToken("secret-token", 1.0, "cid", "https://auth", account_key("a@b.fr"))
    assert "secret-token" not in repr(token)
    with pytest.raises(FrozenInstanceError):
        token.expires_at = 2.0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        Contract("1", Meter("A")).id_abonnement = "2"  # type: ignore[misc]


def test_account_key_is_a_hash_of_the_lowercased_email() -> None:
    key = account_key("Jean.Dupont@Example.fr")
    assert key == account_key("jean.dupont@example.fr")
    assert len(key) == 64
    assert "jean" not in key
    assert key != account_key("other@example.fr")
