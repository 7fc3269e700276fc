"""One test per defect the reliability suite found, each pinned by the smallest input."""

from __future__ import annotations

from veolia2mqtt.veolia.models import (
    DEFAULT_EXPIRES_IN_S,
    CognitoTokens,
    parse_auth,
    parse_daily,
    parse_monthly,
)


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
