"""Every topic of the contract (``interface.md``), the meter slug and the unique ids. Pure."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

_SLUG_RE: Final = re.compile(r"[^a-z0-9_-]")
PREFIX: Final = "veolia2mqtt"
BRIDGE_SLUG: Final = "bridge"
"""The node of the daemon's own device (``veolia2mqtt_bridge``) and of ``<base>/bridge/state``."""
BRIDGE_PROBLEM: Final = "problem"
"""The object id of the bridge's problem entity (``veolia2mqtt_bridge_problem``)."""


class Metric(StrEnum):
    """Metric keys of the contract; the order is the default display order."""

    DAILY_CONSUMPTION = "daily_consumption"
    BILLED_VOLUME = "billed_volume"
    INDEX = "index"
    READING_DATE = "reading_date"
    RELIABILITY = "reliability"
    LAST_SYNC = "last_sync"
    REFRESH = "refresh"


VALUE_METRICS: Final = (
    Metric.DAILY_CONSUMPTION,
    Metric.BILLED_VOLUME,
    Metric.INDEX,
    Metric.READING_DATE,
    Metric.RELIABILITY,
)
"""The metrics that come from a reading (published when the reading changes)."""


def meter_slug(number: str) -> str:
    """``numero_compteur`` lower-cased, every character outside ``[a-z0-9_-]`` made ``_``."""
    return _SLUG_RE.sub("_", number.lower())


def unique_id(slug: str, metric: str) -> str:
    """Entity ``unique_id``: ``veolia2mqtt_<meter>_<metric>``; never depends on a name."""
    return f"{PREFIX}_{slug}_{metric}"


def device_id(slug: str) -> str:
    """Device identifier and discovery node id: ``veolia2mqtt_<meter>``."""
    return f"{PREFIX}_{slug}"


def status_topic(base: str) -> str:
    """``<base>/status``: ``online`` / ``offline`` (last will)."""
    return f"{base}/status"


def bridge_state_topic(base: str) -> str:
    """``<base>/bridge/state``: the daemon's own diagnostics."""
    return f"{base}/bridge/state"


def state_topic(base: str, slug: str) -> str:
    """``<base>/<meter>/state``: the JSON state that Home Assistant reads."""
    return f"{base}/{slug}/state"


def value_topic(base: str, slug: str, metric: str) -> str:
    """``<base>/<meter>/<metric>``: one plain value, for Jeedom and other consumers."""
    return f"{base}/{slug}/{metric}"


def refresh_topic(base: str, slug: str) -> str:
    """``<base>/<meter>/refresh``: subscribed; any payload asks for a sync."""
    return f"{base}/{slug}/refresh"


def refresh_filter(base: str) -> str:
    """The subscription that catches every meter's refresh topic."""
    return f"{base}/+/refresh"


def slug_from_refresh_topic(base: str, topic: str) -> str | None:
    """The meter slug of a refresh topic, or ``None`` when ``topic`` is not one."""
    prefix = f"{base}/"
    if not topic.startswith(prefix) or not topic.endswith("/refresh"):
        return None
    slug = topic[len(prefix) : -len("/refresh")]
    return slug if slug and "/" not in slug else None


def device_discovery_topic(prefix: str, slug: str) -> str:
    """``<prefix>/device/veolia2mqtt_<meter>/config`` (discovery mode ``device``)."""
    return f"{prefix}/device/{device_id(slug)}/config"


def entity_discovery_topic(prefix: str, platform: str, slug: str, metric: str) -> str:
    """``<prefix>/<platform>/veolia2mqtt_<meter>/<metric>/config`` (mode ``entity``)."""
    return f"{prefix}/{platform}/{device_id(slug)}/{metric}/config"


def bridge_device_discovery_topic(prefix: str) -> str:
    """``<prefix>/device/veolia2mqtt_bridge/config``: the bridge device (mode ``device``)."""
    return device_discovery_topic(prefix, BRIDGE_SLUG)


def bridge_entity_discovery_topic(prefix: str) -> str:
    """``<prefix>/binary_sensor/veolia2mqtt_bridge/problem/config`` (mode ``entity``)."""
    return entity_discovery_topic(prefix, "binary_sensor", BRIDGE_SLUG, BRIDGE_PROBLEM)


def ha_status_topic(prefix: str) -> str:
    """Home Assistant's birth topic, ``<prefix>/status``."""
    return f"{prefix}/status"


def link_discovery_topic(link: str, slug: str) -> str:
    """MQTT Manager "Jeedom link" equipment discovery: ``<link>/discovery/eqLogic/<meter>``."""
    return f"{link}/discovery/eqLogic/{slug}"


def link_cmd_id(slug: str, metric: str) -> str:
    """A command id of the Jeedom link, unique across the link topic: ``<meter>_<metric>``."""
    return f"{slug}_{metric}"


def link_event_topic(link: str, slug: str, metric: str) -> str:
    """``<link>/cmd/event/<meter>_<metric>``: one value for the Jeedom link."""
    return f"{link}/cmd/event/{link_cmd_id(slug, metric)}"


def link_set_filter(link: str) -> str:
    """The subscription for Jeedom link actions: ``<link>/cmd/set/+``."""
    return f"{link}/cmd/set/+"


def slug_from_link_set_topic(link: str, topic: str) -> str | None:
    """The meter slug of ``<link>/cmd/set/<meter>_refresh``, or ``None``."""
    prefix = f"{link}/cmd/set/"
    suffix = f"_{Metric.REFRESH.value}"
    if not topic.startswith(prefix) or not topic.endswith(suffix):
        return None
    slug = topic[len(prefix) : -len(suffix)]
    return slug if slug and "/" not in slug else None
