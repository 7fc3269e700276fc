"""Topics of the contract (interface.md), the slug and the ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veolia2mqtt.mqtt import topics
from veolia2mqtt.mqtt.topics import Metric

SEGMENT = re.compile(r"^[a-zA-Z0-9_-]+$")


@pytest.mark.parametrize(
    ("number", "slug"),
    [
        ("I19FA051732", "i19fa051732"),
        ("ab-12.34/X", "ab-12_34_x"),
        ("compteur 1", "compteur_1"),
        ("Été#+", "_t___"),
    ],
)
def test_meter_slug(number: str, slug: str) -> None:
    assert topics.meter_slug(number) == slug


@given(st.text(min_size=1, max_size=40))
def test_slug_is_a_legal_discovery_segment(number: str) -> None:
    slug = topics.meter_slug(number)
    assert re.fullmatch(r"[a-z0-9_-]+", slug)
    assert SEGMENT.match(topics.device_id(slug))


def test_contract_topics() -> None:
    assert topics.status_topic("veolia2mqtt") == "veolia2mqtt/status"
    assert topics.bridge_state_topic("veolia2mqtt") == "veolia2mqtt/bridge/state"
    assert topics.state_topic("veolia2mqtt", "i19fa051732") == "veolia2mqtt/i19fa051732/state"
    assert (
        topics.value_topic("veolia2mqtt", "i19fa051732", "index") == "veolia2mqtt/i19fa051732/index"
    )
    assert topics.refresh_topic("veolia2mqtt", "m") == "veolia2mqtt/m/refresh"
    assert topics.refresh_filter("veolia2mqtt") == "veolia2mqtt/+/refresh"
    assert topics.ha_status_topic("homeassistant") == "homeassistant/status"
    assert (
        topics.device_discovery_topic("homeassistant", "i19fa051732")
        == "homeassistant/device/veolia2mqtt_i19fa051732/config"
    )
    assert (
        topics.entity_discovery_topic("homeassistant", "sensor", "i19fa051732", "index")
        == "homeassistant/sensor/veolia2mqtt_i19fa051732/index/config"
    )
    assert (
        topics.entity_discovery_topic("homeassistant", "button", "i19fa051732", "refresh")
        == "homeassistant/button/veolia2mqtt_i19fa051732/refresh/config"
    )


def test_unique_ids_never_depend_on_names() -> None:
    assert topics.unique_id("i19fa051732", Metric.INDEX) == "veolia2mqtt_i19fa051732_index"
    assert topics.device_id("i19fa051732") == "veolia2mqtt_i19fa051732"


def test_bridge_discovery_topics() -> None:
    assert (
        topics.bridge_device_discovery_topic("homeassistant")
        == "homeassistant/device/veolia2mqtt_bridge/config"
    )
    assert (
        topics.bridge_entity_discovery_topic("homeassistant")
        == "homeassistant/binary_sensor/veolia2mqtt_bridge/problem/config"
    )
    assert topics.unique_id(topics.BRIDGE_SLUG, topics.BRIDGE_PROBLEM) == (
        "veolia2mqtt_bridge_problem"
    )


def test_link_topics() -> None:
    assert (
        topics.link_discovery_topic("veolia2mqtt_jeedom", "i19fa051732")
        == "veolia2mqtt_jeedom/discovery/eqLogic/i19fa051732"
    )
    assert (
        topics.link_event_topic("veolia2mqtt_jeedom", "i19fa051732", "daily_consumption")
        == "veolia2mqtt_jeedom/cmd/event/i19fa051732_daily_consumption"
    )
    assert topics.link_set_filter("l") == "l/cmd/set/+"


@pytest.mark.parametrize(
    ("topic", "slug"),
    [
        ("veolia2mqtt/i19fa051732/refresh", "i19fa051732"),
        ("veolia2mqtt/a/b/refresh", None),
        ("veolia2mqtt//refresh", None),
        ("other/i19fa051732/refresh", None),
        ("veolia2mqtt/i19fa051732/index", None),
    ],
)
def test_slug_from_refresh_topic(topic: str, slug: str | None) -> None:
    assert topics.slug_from_refresh_topic("veolia2mqtt", topic) == slug


@pytest.mark.parametrize(
    ("topic", "slug"),
    [
        ("link/cmd/set/i19fa051732_refresh", "i19fa051732"),
        ("link/cmd/set/_refresh", None),
        ("link/cmd/set/i19fa051732_index", None),
        ("link/cmd/event/i19fa051732_refresh", None),
    ],
)
def test_slug_from_link_set_topic(topic: str, slug: str | None) -> None:
    assert topics.slug_from_link_set_topic("link", topic) == slug


def test_metric_order_is_the_default_display_order() -> None:
    assert [m.value for m in Metric] == [
        "daily_consumption",
        "billed_volume",
        "index",
        "reading_date",
        "reliability",
        "last_sync",
        "refresh",
    ]
    assert tuple(Metric)[:5] == topics.VALUE_METRICS
