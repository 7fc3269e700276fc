"""One test per defect the reliability suite found, each pinned by the smallest input."""

from __future__ import annotations

from veolia2mqtt.veolia.models import parse_daily


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
