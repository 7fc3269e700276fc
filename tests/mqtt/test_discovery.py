"""Home Assistant discovery builders: exact payloads, overrides, removal and change detection."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.mqtt.conftest import METER, PORTAL_URL, SPEC_OVERRIDE, load_json
from veolia2mqtt.config import CommandOverride, MeterOverride
from veolia2mqtt.meter import Meter
from veolia2mqtt.mqtt.discovery import (
    CUBIC_METRE,
    DEFAULT_NAMES,
    LITRE,
    DiscoveryMode,
    build_bridge_discovery,
    build_discovery,
    clear_bridge_discovery,
    clear_discovery,
    components,
    device_payload,
    discovery_digest,
    entity_name,
    migrate_to_device,
    naming_notes,
)
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.topics import Metric

if TYPE_CHECKING:
    from collections.abc import Callable

BASE = "veolia2mqtt"
PREFIX = "homeassistant"
OVERRIDES = MeterOverride(
    name="Compteur maison",
    area="Garage",
    description="Regard extérieur",
    visible=True,
    commands={
        Metric.DAILY_CONSUMPTION: CommandOverride(name="Compteur maison - Conso hier"),
        Metric.BILLED_VOLUME: CommandOverride(name="Facturé", enabled=False),
        Metric.RELIABILITY: CommandOverride(visible=False),
        Metric.INDEX: CommandOverride(name="Compteur maison"),
        Metric.REFRESH: CommandOverride(order=1, name="Mettre à jour"),
    },
)
"""A config with every kind of command override, including names that repeat the meter name."""


def build(override: MeterOverride = SPEC_OVERRIDE, mode: DiscoveryMode = "device") -> list[Message]:
    return build_discovery(
        METER,
        override,
        mode=mode,
        discovery_prefix=PREFIX,
        base_topic=BASE,
        sw_version="1.0.0",
        portal_url=PORTAL_URL,
    )


def test_units_are_exactly_what_ha_accepts() -> None:
    assert LITRE == "L"
    assert CUBIC_METRE == "m\u00b3"
    assert CUBIC_METRE.encode() == b"m\xc2\xb3"


def test_default_names_are_the_jeedom_plugin_names() -> None:
    assert dict(DEFAULT_NAMES) == {
        Metric.DAILY_CONSUMPTION: "Consommation du jour",
        Metric.BILLED_VOLUME: "Consommation facturée",
        Metric.INDEX: "Index",
        Metric.READING_DATE: "Date du relevé",
        Metric.RELIABILITY: "Fiabilité du relevé",
        Metric.LAST_SYNC: "Dernière synchronisation",
        Metric.REFRESH: "Rafraîchir",
    }


def test_device_mode_matches_the_spec_exactly() -> None:
    """home-assistant.md §3.1, byte for byte once parsed, key order included."""
    [message] = build()
    assert message.topic == "homeassistant/device/veolia2mqtt_i19fa051732/config"
    assert message.retain is True
    assert message.qos == 1
    expected = load_json("spec_ha_device_mode.json")
    assert json.loads(message.payload) == expected
    assert json.dumps(json.loads(message.payload)) == json.dumps(expected)


def test_entity_mode_index_matches_the_spec_exactly() -> None:
    """home-assistant.md §3.2."""
    messages = {m.topic: m for m in build(mode="entity")}
    message = messages["homeassistant/sensor/veolia2mqtt_i19fa051732/index/config"]
    expected = load_json("spec_ha_entity_mode_index.json")
    assert json.loads(message.payload) == expected
    assert json.dumps(json.loads(message.payload)) == json.dumps(expected)
    assert message.retain is True


def test_entity_mode_reuses_the_device_components() -> None:
    [device_message] = build()
    device_payload_ = json.loads(device_message.payload)
    entity_messages = build(mode="entity")
    assert len(entity_messages) == len(Metric)
    for message in entity_messages:
        payload = json.loads(message.payload)
        metric = message.topic.split("/")[-2]
        component = dict(device_payload_["components"][metric])
        platform = component.pop("platform")
        assert message.topic.split("/")[1] == platform
        for key in ("availability", "qos", "device", "origin"):
            payload.pop(key)
        assert payload == component
    topics = [m.topic for m in entity_messages]
    assert topics[-1] == "homeassistant/button/veolia2mqtt_i19fa051732/refresh/config"


def test_payload_is_utf8_json_with_the_real_superscript() -> None:
    [message] = build()
    assert '"unit_of_measurement": "m³"' in message.payload
    assert "m3" not in message.payload


def test_golden_device_mode_defaults(golden: Callable[..., None]) -> None:
    golden("ha_device_defaults", build(MeterOverride()))


def test_golden_device_mode_overrides(golden: Callable[..., None]) -> None:
    golden("ha_device_overrides", build(OVERRIDES))


def test_golden_entity_mode_defaults(golden: Callable[..., None]) -> None:
    golden("ha_entity_defaults", build(MeterOverride(), mode="entity"))


def test_golden_entity_mode_overrides(golden: Callable[..., None]) -> None:
    golden("ha_entity_overrides", build(OVERRIDES, mode="entity"))


def test_default_device() -> None:
    device = device_payload(
        METER, MeterOverride(), portal_url="https://x.example/", include_serial=False
    )
    assert device == {
        "identifiers": ["veolia2mqtt_i19fa051732"],
        "name": "Compteur d'eau I19FA051732",
        "manufacturer": "Veolia",
        "model": "Compteur d'eau",
        "configuration_url": "https://x.example/",
    }


def test_blank_overrides_fall_back_to_defaults() -> None:
    override = MeterOverride(name="  ", area=" ", description=" ")
    device = device_payload(METER, override, portal_url=PORTAL_URL, include_serial=True)
    assert device["name"] == "Compteur d'eau I19FA051732"
    assert device["model"] == "Compteur d'eau"
    assert "suggested_area" not in device


def test_overrides_reach_the_components() -> None:
    entities = components(METER, OVERRIDES, base_topic=BASE)
    assert list(entities) == list(Metric)
    assert entities[Metric.DAILY_CONSUMPTION]["name"] == "Conso hier"
    assert entities[Metric.BILLED_VOLUME]["name"] == "Facturé"
    assert entities[Metric.BILLED_VOLUME]["enabled_by_default"] is False
    assert entities[Metric.INDEX]["name"] == "Index"
    assert entities[Metric.RELIABILITY]["visible_by_default"] is False
    assert entities[Metric.REFRESH]["name"] == "Mettre à jour"
    assert entities[Metric.INDEX]["enabled_by_default"] is True
    assert "order" not in json.dumps(entities)


def test_invisible_meter_hides_every_entity() -> None:
    entities = components(METER, MeterOverride(visible=False), base_topic=BASE)
    assert {e["visible_by_default"] for e in entities.values()} == {False}
    assert {e["enabled_by_default"] for e in entities.values()} == {True}


@pytest.mark.parametrize(
    ("configured", "expected", "warned"),
    [
        (None, "Index", False),
        ("Relevé", "Relevé", False),
        ("  Relevé  ", "Relevé", False),
        ("Compteur maison index", "Index", True),
        ("compteur MAISON: index", "Index", True),
        ("Compteur maison", "Index", True),
        ("Compteur maison - ", "Index", True),
        ("Maison compteur", "Maison compteur", False),
    ],
)
def test_entity_name_never_starts_with_the_device_name(
    configured: str | None, expected: str, warned: bool
) -> None:
    override = MeterOverride(
        name="Compteur maison", commands={Metric.INDEX: CommandOverride(name=configured)}
    )
    name, note = entity_name(Metric.INDEX, METER, override)
    assert name == expected
    assert (note is not None) == warned
    if note is not None:
        assert "I19FA051732" in note
        assert "index" in note


def test_default_name_colliding_with_the_device_name_is_stripped_too() -> None:
    override = MeterOverride(name="Consommation")
    name, note = entity_name(Metric.DAILY_CONSUMPTION, METER, override)
    assert name == "Du jour"
    assert note is not None
    name, note = entity_name(Metric.INDEX, METER, MeterOverride(name="Index"))
    assert name == "veolia2mqtt index"
    assert note is not None
    name, note = entity_name(Metric.INDEX, METER, MeterOverride(name="Ind"))
    assert name == "Ex"
    assert note is not None
    name, _ = entity_name(Metric.REFRESH, METER, MeterOverride(name="Rafraîchir"))
    assert name == "refresh"


def test_naming_notes_lists_each_changed_name() -> None:
    assert naming_notes(METER, SPEC_OVERRIDE) == ()
    notes = naming_notes(METER, OVERRIDES)
    assert len(notes) == 2
    assert any("daily_consumption" in note for note in notes)
    assert any("'index'" in note or " index " in note for note in notes)


def test_disabled_meter_gets_removal_instead_of_discovery() -> None:
    disabled = MeterOverride(enabled=False, name="Compteur maison")
    assert build(disabled) == clear_discovery("i19fa051732", mode="device", discovery_prefix=PREFIX)
    assert build(disabled, mode="entity") == clear_discovery(
        "i19fa051732", mode="entity", discovery_prefix=PREFIX
    )


def test_clear_discovery_device_mode_is_one_retained_empty_message() -> None:
    assert clear_discovery("i19fa051732", mode="device", discovery_prefix=PREFIX) == [
        Message("homeassistant/device/veolia2mqtt_i19fa051732/config", "", retain=True)
    ]


def test_clear_discovery_entity_mode_covers_every_entity_topic() -> None:
    messages = clear_discovery("i19fa051732", mode="entity", discovery_prefix=PREFIX)
    assert [m.topic for m in messages] == [m.topic for m in build(mode="entity")]
    assert all(m.payload == "" and m.retain for m in messages)
    assert "homeassistant/button/veolia2mqtt_i19fa051732/refresh/config" in {
        m.topic for m in messages
    }


def test_migrate_to_device() -> None:
    messages = migrate_to_device("i19fa051732", discovery_prefix=PREFIX)
    assert [m.topic for m in messages] == [m.topic for m in build(mode="entity")]
    assert {m.payload for m in messages} == {'{"migrate_discovery": true}'}
    assert all(m.retain and m.qos == 1 for m in messages)


def test_digest_ignores_key_order_and_spacing() -> None:
    a = Message("t", '{"a": 1, "b": "m³"}', retain=True)
    b = Message("t", '{"b":"m\\u00b3","a":1}', retain=True)
    c = Message("t", '{"a": 2, "b": "m³"}', retain=True)
    assert discovery_digest(a) == discovery_digest(b)
    assert discovery_digest(a) != discovery_digest(c)
    assert len(discovery_digest(a)) == 64


def test_digest_changes_with_a_name_and_not_otherwise() -> None:
    [one] = build()
    [same] = build()
    [renamed] = build(MeterOverride(name="Autre", area="Garage", description="Regard extérieur"))
    assert discovery_digest(one) == discovery_digest(same)
    assert discovery_digest(one) != discovery_digest(renamed)
    assert discovery_digest(Message("t", "", retain=True)) == discovery_digest(
        Message("u", "", retain=True)
    )


def test_bridge_discovery_device_mode(golden: Callable[..., None]) -> None:
    messages = build_bridge_discovery(
        mode="device", discovery_prefix=PREFIX, base_topic=BASE, sw_version="1.0.0"
    )
    assert [m.topic for m in messages] == ["homeassistant/device/veolia2mqtt_bridge/config"]
    payload = json.loads(messages[0].payload)
    problem = payload["components"]["problem"]
    assert problem["unique_id"] == "veolia2mqtt_bridge_problem"
    assert problem["device_class"] == "problem"
    assert problem["entity_category"] == "diagnostic"
    assert problem["state_topic"] == "veolia2mqtt/bridge/state"
    golden("ha_bridge_device", messages)


def test_bridge_discovery_entity_mode(golden: Callable[..., None]) -> None:
    messages = build_bridge_discovery(
        mode="entity", discovery_prefix=PREFIX, base_topic=BASE, sw_version="1.0.0"
    )
    assert [m.topic for m in messages] == [
        "homeassistant/binary_sensor/veolia2mqtt_bridge/problem/config"
    ]
    assert "platform" not in json.loads(messages[0].payload)
    golden("ha_bridge_entity", messages)


def test_clear_bridge_discovery() -> None:
    for mode in ("device", "entity"):
        [message] = clear_bridge_discovery(mode=mode, discovery_prefix=PREFIX)
        [published] = build_bridge_discovery(
            mode=mode, discovery_prefix=PREFIX, base_topic=BASE, sw_version="1"
        )
        assert message == Message(published.topic, "", retain=True)


def test_odd_meter_numbers_give_legal_topics_and_ids() -> None:
    meter = Meter("AB-12.34/x y")
    [message] = build_discovery(
        meter,
        MeterOverride(),
        mode="device",
        discovery_prefix=PREFIX,
        base_topic=BASE,
        sw_version="1",
        portal_url=PORTAL_URL,
    )
    assert message.topic == "homeassistant/device/veolia2mqtt_ab-12_34_x_y/config"
    payload = json.loads(message.payload)
    assert payload["device"]["serial_number"] == "AB-12.34/x y"
    assert payload["device"]["name"] == "Compteur d'eau AB-12.34/x y"
    assert payload["components"]["index"]["state_topic"] == "veolia2mqtt/ab-12_34_x_y/state"


def test_builders_do_not_mutate_their_inputs() -> None:
    before = OVERRIDES.model_dump()
    entities = components(METER, OVERRIDES, base_topic=BASE)
    entities[Metric.INDEX]["name"] = "changed"
    assert components(METER, OVERRIDES, base_topic=BASE)[Metric.INDEX]["name"] == "Index"
    assert OVERRIDES.model_dump() == before
