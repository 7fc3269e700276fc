"""State builders: the JSON HA reads, the per-value topics, the bridge state."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mqtt.conftest import METER, PARIS, SPEC_LAST_SYNC, SPEC_VALUES, load_json
from veolia2mqtt.meter import MeterValues
from veolia2mqtt.mqtt.messages import (
    BridgeError,
    BridgeStatus,
    Message,
    build_bridge_state,
    build_last_sync_message,
    build_state_message,
    build_state_messages,
    build_value_messages,
    clear_meter_states,
    format_number,
    format_timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Callable

BASE = "veolia2mqtt"


def state(values: MeterValues, last_sync: datetime | None = SPEC_LAST_SYNC) -> dict[str, object]:
    message = build_state_message(METER, values, base_topic=BASE, last_sync=last_sync, zone=PARIS)
    assert message.topic == "veolia2mqtt/i19fa051732/state"
    assert message.retain is True
    assert message.qos == 1
    payload = json.loads(message.payload)
    assert isinstance(payload, dict)
    return payload


def test_message_is_frozen() -> None:
    message = Message("t", "p", retain=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.payload = "q"  # type: ignore[misc]


def test_state_matches_the_spec_exactly() -> None:
    """home-assistant.md §2, key order included."""
    message = build_state_message(
        METER, SPEC_VALUES, base_topic=BASE, last_sync=SPEC_LAST_SYNC, zone=PARIS
    )
    expected = load_json("spec_ha_state.json")
    assert json.loads(message.payload) == expected
    assert json.dumps(json.loads(message.payload)) == json.dumps(expected)
    assert '"daily_consumption": 312,' in message.payload
    assert '"index": 1234567,' in message.payload


def test_golden_state(golden: Callable[..., None]) -> None:
    golden(
        "state",
        build_state_messages(
            METER, SPEC_VALUES, base_topic=BASE, last_sync=SPEC_LAST_SYNC, zone=PARIS
        ),
        parse=False,
    )


def test_unknown_is_null_never_zero() -> None:
    payload = state(MeterValues(), last_sync=None)
    assert payload == {
        "daily_consumption": None,
        "billed_volume": None,
        "index": None,
        "reading_date": None,
        "reliability": None,
        "reading_day_start": None,
        "billing_period_start": None,
        "last_sync": None,
    }


def test_a_zero_day_stays_a_zero() -> None:
    values = dataclasses.replace(SPEC_VALUES, daily_consumption_l=0.0)
    assert state(values)["daily_consumption"] == 0
    by_topic = {m.topic: m.payload for m in build_value_messages(METER, values, base_topic=BASE)}
    assert by_topic["veolia2mqtt/i19fa051732/daily_consumption"] == "0"


def test_blank_reliability_is_unknown() -> None:
    values = dataclasses.replace(SPEC_VALUES, reliability="  ")
    assert state(values)["reliability"] is None
    topics = {m.topic for m in build_value_messages(METER, values, base_topic=BASE)}
    assert "veolia2mqtt/i19fa051732/reliability" not in topics


def test_day_starts_carry_the_local_offset() -> None:
    summer = MeterValues(reading_date=date(2025, 7, 1), billing_period_start=date(2025, 7, 1))
    payload = state(summer)
    assert payload["reading_day_start"] == "2025-07-01T00:00:00+02:00"
    assert payload["billing_period_start"] == "2025-07-01T00:00:00+02:00"
    winter = state(SPEC_VALUES)
    assert winter["reading_day_start"] == "2025-12-14T00:00:00+01:00"


def test_last_sync_is_converted_to_the_zone() -> None:
    utc = datetime(2025, 12, 16, 5, 5, 12, tzinfo=UTC)
    assert state(SPEC_VALUES, last_sync=utc)["last_sync"] == "2025-12-16T06:05:12+01:00"
    microseconds = utc.replace(microsecond=123456)
    assert state(SPEC_VALUES, last_sync=microseconds)["last_sync"] == "2025-12-16T06:05:12+01:00"


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 12, 16, 6, 5, 12)  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive"):
        build_state_message(METER, SPEC_VALUES, base_topic=BASE, last_sync=naive, zone=PARIS)
    with pytest.raises(ValueError, match="naive"):
        build_last_sync_message(METER, base_topic=BASE, last_sync=naive)


def test_value_messages_match_jeedom_contract() -> None:
    messages = build_value_messages(METER, SPEC_VALUES, base_topic=BASE)
    assert [(m.topic, m.payload) for m in messages] == [
        ("veolia2mqtt/i19fa051732/daily_consumption", "312"),
        ("veolia2mqtt/i19fa051732/billed_volume", "9.7"),
        ("veolia2mqtt/i19fa051732/index", "1234567"),
        ("veolia2mqtt/i19fa051732/reading_date", "2025-12-14"),
        ("veolia2mqtt/i19fa051732/reliability", "MESURE"),
    ]
    assert all(m.retain and m.qos == 1 for m in messages)


def test_golden_values(golden: Callable[..., None]) -> None:
    golden("values", build_value_messages(METER, SPEC_VALUES, base_topic=BASE), parse=False)


def test_missing_values_are_not_published() -> None:
    assert build_value_messages(METER, MeterValues(), base_topic=BASE) == []
    only_billed = MeterValues(billed_volume_m3=9.7, billing_period_start=date(2025, 12, 1))
    messages = build_value_messages(METER, only_billed, base_topic=BASE)
    assert [(m.topic, m.payload) for m in messages] == [
        ("veolia2mqtt/i19fa051732/billed_volume", "9.7")
    ]


@given(
    st.builds(
        MeterValues,
        reading_date=st.none() | st.dates(),
        daily_consumption_l=st.none() | st.floats(0, 1e6),
        index_l=st.none() | st.floats(0, 1e10),
        reliability=st.none() | st.text(max_size=10),
        billed_volume_m3=st.none() | st.floats(0, 1e4),
    )
)
def test_per_value_payloads_are_never_empty_null_or_exponent(values: MeterValues) -> None:
    for message in build_value_messages(METER, values, base_topic=BASE):
        assert message.payload.strip()
        assert message.payload not in {"null", "None", "nan"}
        metric = message.topic.rsplit("/", 1)[-1]
        if metric in {"daily_consumption", "billed_volume", "index"}:
            assert "e" not in message.payload.lower()
            assert float(message.payload) >= 0


def test_last_sync_message() -> None:
    message = build_last_sync_message(METER, base_topic=BASE, last_sync=SPEC_LAST_SYNC)
    assert message == Message(
        "veolia2mqtt/i19fa051732/last_sync", "2025-12-16T06:05:12+01:00", retain=True
    )
    utc = build_last_sync_message(
        METER, base_topic=BASE, last_sync=SPEC_LAST_SYNC.astimezone(UTC), zone=PARIS
    )
    assert utc == message


def test_state_messages_order() -> None:
    messages = build_state_messages(
        METER, SPEC_VALUES, base_topic=BASE, last_sync=SPEC_LAST_SYNC, zone=PARIS
    )
    assert [m.topic.rsplit("/", 1)[-1] for m in messages] == [
        "state",
        "daily_consumption",
        "billed_volume",
        "index",
        "reading_date",
        "reliability",
        "last_sync",
    ]
    without = build_state_messages(METER, SPEC_VALUES, base_topic=BASE, last_sync=None, zone=PARIS)
    assert len(without) == 6


def test_clear_meter_states() -> None:
    messages = clear_meter_states("i19fa051732", base_topic=BASE)
    published = build_state_messages(
        METER, SPEC_VALUES, base_topic=BASE, last_sync=SPEC_LAST_SYNC, zone=PARIS
    )
    assert [m.topic for m in messages] == [m.topic for m in published]
    assert all(m.payload == "" and m.retain for m in messages)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (143.0, "143"),
        (143, "143"),
        (9.7, "9.7"),
        (0.1 + 0.2, "0.3"),
        (0.0, "0"),
        (-0.0, "0"),
        (1e-7, "0"),
        (0.0015, "0.002"),
        (1234567.0, "1234567"),
        (12345678901.0, "12345678901"),
        (-3.5, "-3.5"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_number_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        format_number(value)


@given(st.floats(-1e12, 1e12))
def test_format_number_round_trips_to_the_thousandth(value: float) -> None:
    text = format_number(value)
    assert "e" not in text.lower()
    assert "," not in text
    assert not text.endswith(".0")
    assert math.isclose(float(text), value, abs_tol=0.0005 + abs(value) * 1e-15)


def test_format_timestamp() -> None:
    moment = datetime(2025, 12, 16, 6, 5, 12, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2025-12-16T06:05:12+01:00"
    assert format_timestamp(moment, UTC) == "2025-12-16T05:05:12+00:00"


def test_bridge_state_ok(golden: Callable[..., None]) -> None:
    message = build_bridge_state(
        base_topic=BASE,
        version="1.0.0",
        status=BridgeStatus.OK,
        last_sync=SPEC_LAST_SYNC,
        last_success=SPEC_LAST_SYNC,
        error=None,
    )
    assert message.topic == "veolia2mqtt/bridge/state"
    assert message.retain is True
    assert json.loads(message.payload) == {
        "version": "1.0.0",
        "status": "ok",
        "last_sync": "2025-12-16T06:05:12+01:00",
        "last_success": "2025-12-16T06:05:12+01:00",
        "error": None,
    }
    golden("bridge_state_ok", [message])


def test_bridge_state_error(golden: Callable[..., None]) -> None:
    error = BridgeError(
        what="Veolia refused the login",
        since=datetime(2025, 12, 15, 6, 5, tzinfo=UTC),
        action="Check veolia.email and veolia.password, then restart veolia2mqtt.",
    )
    message = build_bridge_state(
        base_topic=BASE,
        version="1.0.0",
        status="auth_failed",
        last_sync=SPEC_LAST_SYNC,
        last_success=None,
        error=error,
        zone=PARIS,
    )
    payload = json.loads(message.payload)
    assert payload["status"] == "auth_failed"
    assert payload["last_success"] is None
    assert payload["error"] == {
        "what": "Veolia refused the login",
        "since": "2025-12-15T07:05:00+01:00",
        "action": "Check veolia.email and veolia.password, then restart veolia2mqtt.",
    }
    golden("bridge_state_auth_failed", [message])


def test_bridge_state_starting_has_nulls() -> None:
    message = build_bridge_state(
        base_topic=BASE,
        version="1.0.0",
        status=BridgeStatus.STARTING,
        last_sync=None,
        last_success=None,
        error=None,
    )
    assert json.loads(message.payload)["last_sync"] is None


def test_bridge_state_refuses_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="broken"):
        build_bridge_state(
            base_topic=BASE,
            version="1",
            status="broken",
            last_sync=None,
            last_success=None,
            error=None,
        )
