"""The message type, the publisher protocol and the pure state builders.

The builders read no clock and do no I/O: the caller passes the sync time and the time zone.
Unknown values are ``null`` in the JSON state and absent from the per-value topics, never
``0`` (``interface.md``, ``home-assistant.md`` §2, ``jeedom.md`` §3).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

from veolia2mqtt.mqtt.topics import (
    VALUE_METRICS,
    Metric,
    bridge_state_topic,
    meter_slug,
    state_topic,
    value_topic,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from veolia2mqtt.meter import Meter, MeterValues

NUMBER_DECIMALS: Final = 3
"""Numbers are published to the thousandth: one litre in m³, well below a litre in litres."""


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message; an empty retained payload clears a retained topic."""

    topic: str
    payload: str
    retain: bool
    qos: int = 1


class Publisher(Protocol):
    """What the sync needs from a broker connection (MQTT or the dry-run console)."""

    def start(self) -> None:
        """Connect (or open the sink); publish ``online``."""

    def stop(self) -> None:
        """Publish ``offline`` (daemon mode), disconnect and release resources."""

    def publish(self, messages: Sequence[Message]) -> int:
        """Send ``messages`` in order, wait for the acknowledgements, return how many were sent.

        A message whose topic already carries the same payload from this connection is skipped.

        Raises:
            MqttPublishError: a message was not acknowledged in time.
        """
        ...

    def set_replay(self, always: Sequence[Message], if_missing: Sequence[Message]) -> None:
        """What to re-publish after a (re)connect or a Home Assistant birth.

        ``always`` (discovery then states) is re-sent after every connect and birth;
        ``if_missing`` (the per-value topics) only when the broker no longer holds them.
        """

    def on_refresh(self, callback: Callable[[str], None]) -> None:
        """Register the callback that receives a meter slug when a refresh is requested."""


class BridgeStatus(StrEnum):
    """``status`` of ``<base>/bridge/state``; the HA problem entity is off for ok and starting."""

    STARTING = "starting"
    """No sync has finished since the daemon started."""
    OK = "ok"
    ERROR = "error"
    AUTH_FAILED = "auth_failed"


@dataclass(frozen=True, slots=True)
class BridgeError:
    """The last failure, as shown to the user: what failed, since when, what to do.

    ``what`` and ``action`` are published retained: never put a secret, a token or the account
    e-mail in them.
    """

    what: str
    since: datetime
    action: str


def format_number(value: float) -> str:
    """A plain number: ``.`` decimal, no exponent, no unit, integral values without ``.0``."""
    return str(_json_number(value))


def _json_number(value: float) -> int | float:
    """``value`` rounded to the thousandth, as an ``int`` when integral (``143``, not ``143.0``)."""
    if not math.isfinite(value):
        msg = f"not a finite number: {value!r}"
        raise ValueError(msg)
    rounded = round(float(value), NUMBER_DECIMALS)
    if rounded.is_integer():
        return int(rounded)
    return rounded


def format_timestamp(moment: datetime, zone: tzinfo | None = None) -> str:
    """ISO 8601 to the second with its UTC offset, converted to ``zone`` when given.

    Raises:
        ValueError: ``moment`` is naive (HA rejects naive timestamps).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"a naive datetime cannot be published: {moment.isoformat()}"
        raise ValueError(msg)
    if zone is not None:
        moment = moment.astimezone(zone)
    return moment.isoformat(timespec="seconds")


def _day_start(day: date | None, zone: tzinfo) -> str | None:
    """Local midnight of ``day`` in ``zone``, ISO 8601 with offset."""
    if day is None:
        return None
    return format_timestamp(datetime.combine(day, time.min, tzinfo=zone))


def _text(value: str | None) -> str | None:
    """A text value, ``None`` when missing or blank (a blank payload would clear the topic)."""
    if value is None or not value.strip():
        return None
    return value.strip()


def _values_by_metric(values: MeterValues) -> dict[Metric, int | float | str | None]:
    """The per-value metrics in contract order, typed for JSON; ``None`` when unknown."""
    return {
        Metric.DAILY_CONSUMPTION: _optional_number(values.daily_consumption_l),
        Metric.BILLED_VOLUME: _optional_number(values.billed_volume_m3),
        Metric.INDEX: _optional_number(values.index_l),
        Metric.READING_DATE: (
            values.reading_date.isoformat() if values.reading_date is not None else None
        ),
        Metric.RELIABILITY: _text(values.reliability),
    }


def _optional_number(value: float | None) -> int | float | None:
    return None if value is None else _json_number(value)


def metric_values(
    values: MeterValues, *, last_sync: datetime | None = None, zone: tzinfo | None = None
) -> dict[Metric, int | float | str]:
    """The known values of every value metric (and ``last_sync`` when given), typed for JSON.

    Unknown values are left out: they are never published as ``0``, ``null`` or ``""``.
    """
    known: dict[Metric, int | float | str] = {
        metric: value for metric, value in _values_by_metric(values).items() if value is not None
    }
    if last_sync is not None:
        known[Metric.LAST_SYNC] = format_timestamp(last_sync, zone)
    return known


def build_state_message(
    meter: Meter,
    values: MeterValues,
    *,
    base_topic: str,
    last_sync: datetime | None,
    zone: tzinfo,
) -> Message:
    """``<base>/<meter>/state``: the JSON HA reads, every key present, ``null`` when unknown.

    ``reading_day_start`` and ``billing_period_start`` are local midnights in ``zone`` (they
    feed ``last_reset``); ``last_sync`` is converted to ``zone``.
    """
    state: dict[str, object] = {
        metric.value: value for metric, value in _values_by_metric(values).items()
    }
    state["reading_day_start"] = _day_start(values.reading_date, zone)
    state["billing_period_start"] = _day_start(values.billing_period_start, zone)
    state[Metric.LAST_SYNC.value] = None if last_sync is None else format_timestamp(last_sync, zone)
    slug = meter_slug(meter.number)
    return Message(state_topic(base_topic, slug), _dumps(state), retain=True)


def build_value_messages(meter: Meter, values: MeterValues, *, base_topic: str) -> list[Message]:
    """The retained per-value topics (for Jeedom): plain text, one per known value.

    A value that is ``None`` is not published at all, so the consumer keeps the previous one.
    """
    slug = meter_slug(meter.number)
    return [
        Message(value_topic(base_topic, slug, metric.value), _plain(value), retain=True)
        for metric, value in metric_values(values).items()
    ]


def build_last_sync_message(
    meter: Meter, *, base_topic: str, last_sync: datetime, zone: tzinfo | None = None
) -> Message:
    """``<base>/<meter>/last_sync``: the time of the last successful sync (diagnostic)."""
    slug = meter_slug(meter.number)
    return Message(
        value_topic(base_topic, slug, Metric.LAST_SYNC.value),
        format_timestamp(last_sync, zone),
        retain=True,
    )


def build_state_messages(
    meter: Meter,
    values: MeterValues,
    *,
    base_topic: str,
    last_sync: datetime | None,
    zone: tzinfo,
) -> list[Message]:
    """The JSON state, then the per-value topics, then ``last_sync`` when known."""
    messages = [
        build_state_message(meter, values, base_topic=base_topic, last_sync=last_sync, zone=zone)
    ]
    messages.extend(build_value_messages(meter, values, base_topic=base_topic))
    if last_sync is not None:
        messages.append(
            build_last_sync_message(meter, base_topic=base_topic, last_sync=last_sync, zone=zone)
        )
    return messages


def state_topics(slug: str, *, base_topic: str) -> list[str]:
    """Every retained state topic of one meter: the JSON and each per-value topic."""
    return [
        state_topic(base_topic, slug),
        *(value_topic(base_topic, slug, metric.value) for metric in VALUE_METRICS),
        value_topic(base_topic, slug, Metric.LAST_SYNC.value),
    ]


def clear_meter_states(slug: str, *, base_topic: str) -> list[Message]:
    """Empty retained payloads on the JSON state and every per-value topic of one meter."""
    return [Message(topic, "", retain=True) for topic in state_topics(slug, base_topic=base_topic)]


def build_bridge_state(
    *,
    base_topic: str,
    version: str,
    status: BridgeStatus | str,
    last_sync: datetime | None,
    last_success: datetime | None,
    error: BridgeError | None,
    zone: tzinfo | None = None,
) -> Message:
    """``<base>/bridge/state``: daemon version, last sync result and the last error.

    ``last_sync`` is the last attempt, ``last_success`` the last sync that worked; ``error``
    is ``null`` while everything works.

    Raises:
        ValueError: ``status`` is not a :class:`BridgeStatus` value.
    """

    def moment(value: datetime | None) -> str | None:
        return None if value is None else format_timestamp(value, zone)

    state: dict[str, object] = {
        "version": version,
        "status": BridgeStatus(status).value,
        "last_sync": moment(last_sync),
        "last_success": moment(last_success),
        "error": None
        if error is None
        else {"what": error.what, "since": moment(error.since), "action": error.action},
    }
    return Message(bridge_state_topic(base_topic), _dumps(state), retain=True)


def _plain(value: float | str) -> str:
    return value if isinstance(value, str) else format_number(value)


def _dumps(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False)
