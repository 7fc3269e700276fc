"""Home Assistant's discovery rules (home-assistant.md §1-§6) as a checker, run on every payload.

The checker is written from the guide, not from the builders: it encodes what HA accepts
(units per device class, state classes, allowed keys inside device/origin/availability, topic
segments) and the project's own rules (full key names, names never starting with the device
name, diagnostics only where they belong, no personal data). The last tests feed it broken
payloads to prove that it can fail.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mqtt.conftest import METER, PARIS, PORTAL_URL, SPEC_LAST_SYNC, SPEC_VALUES
from veolia2mqtt.config import CommandOverride, MeterOverride, Settings
from veolia2mqtt.meter import Meter
from veolia2mqtt.mqtt.discovery import (
    build_bridge_discovery,
    build_discovery,
    clear_bridge_discovery,
    clear_discovery,
    migrate_to_device,
)
from veolia2mqtt.mqtt.jeedom import build_link_discovery, build_link_values, jmqtt_template
from veolia2mqtt.mqtt.messages import (
    BridgeError,
    BridgeStatus,
    Message,
    build_bridge_state,
    build_state_messages,
)
from veolia2mqtt.mqtt.topics import Metric, meter_slug

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# --- HA's vocabulary (homeassistant/components/sensor/const.py, mqtt/schemas.py) -----------

WATER_UNITS = frozenset({"L", "m\u00b3", "ft\u00b3", "CCF", "gal", "MCF"})
HA_STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
WATER_STATE_CLASSES = frozenset({"total", "total_increasing"})
UNITLESS_DEVICE_CLASSES = frozenset({"date", "timestamp", "enum"})
SENSOR_DEVICE_CLASSES = frozenset({"water", "date", "timestamp"})
BINARY_SENSOR_DEVICE_CLASSES = frozenset({"problem"})
DIAGNOSTIC_OBJECTS = frozenset({"last_sync", "refresh", "problem"})

DEVICE_KEYS = frozenset(
    {
        "identifiers",
        "connections",
        "configuration_url",
        "manufacturer",
        "model",
        "name",
        "serial_number",
        "hw_version",
        "sw_version",
        "suggested_area",
        "via_device",
    }
)
# Entity mode serves HA before 2024.12; serial_number only exists since 2024.2 and an unknown
# device key rejects the whole entity.
ENTITY_MODE_DEVICE_KEYS = DEVICE_KEYS - {"serial_number"}
ORIGIN_KEYS = frozenset({"name", "sw_version", "support_url"})
AVAILABILITY_KEYS = frozenset(
    {"topic", "payload_available", "payload_not_available", "value_template"}
)
DEVICE_ROOT_KEYS = frozenset(
    {"device", "origin", "availability", "availability_mode", "components", "qos", "encoding"}
)
COMMON_ENTITY_KEYS = frozenset(
    {
        "platform",
        "unique_id",
        "object_id",
        "default_entity_id",
        "name",
        "entity_category",
        "enabled_by_default",
        "visible_by_default",
        "availability",
        "availability_mode",
        "qos",
        "device",
        "origin",
        "encoding",
        "icon",
    }
)
PLATFORM_KEYS = {
    "sensor": COMMON_ENTITY_KEYS
    | {
        "state_topic",
        "value_template",
        "device_class",
        "state_class",
        "unit_of_measurement",
        "suggested_display_precision",
        "last_reset_value_template",
        "force_update",
    },
    "button": COMMON_ENTITY_KEYS
    | {"command_topic", "command_template", "payload_press", "retain", "device_class"},
    "binary_sensor": COMMON_ENTITY_KEYS
    | {"state_topic", "value_template", "device_class", "payload_on", "payload_off"},
}
TOPIC_SEGMENT = re.compile(r"^[a-zA-Z0-9_-]+$")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def _nones(value: object, path: str = "") -> Iterator[str]:
    if value is None:
        yield path or "<root>"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nones(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nones(item, f"{path}[{index}]")


def _check_keys(block: object, allowed: frozenset[str], where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: not an object"]
    unknown = sorted(set(block) - allowed)
    return [f"{where}: unknown key {key!r} (HA rejects the config)" for key in unknown]


def _check_origin(origin: object, where: str) -> list[str]:
    problems = _check_keys(origin, ORIGIN_KEYS, f"{where}.origin")
    if (
        not isinstance(origin, dict)
        or not isinstance(origin.get("name"), str)
        or not origin["name"]
    ):
        problems.append(f"{where}.origin.name is required")
    return problems


def _check_device(device: object, where: str, *, entity_mode: bool) -> list[str]:
    allowed = ENTITY_MODE_DEVICE_KEYS if entity_mode else DEVICE_KEYS
    problems = _check_keys(device, allowed, f"{where}.device")
    if not isinstance(device, dict):
        return problems
    identifiers = device.get("identifiers")
    if not isinstance(identifiers, list) or not identifiers:
        problems.append(f"{where}.device.identifiers is required")
    if not isinstance(device.get("name"), str) or not device["name"]:
        problems.append(f"{where}.device.name is required")
    return problems


def _check_availability(availability: object, where: str) -> list[str]:
    if not isinstance(availability, list) or not availability:
        return [f"{where}.availability must be a non-empty list"]
    problems: list[str] = []
    for index, item in enumerate(availability):
        problems += _check_keys(item, AVAILABILITY_KEYS, f"{where}.availability[{index}]")
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            problems.append(f"{where}.availability[{index}].topic is required")
    return problems


def _check_entity(
    entity: dict[str, object], platform: str, object_key: str, device_name: str, where: str
) -> list[str]:
    problems = _check_keys(entity, PLATFORM_KEYS.get(platform, frozenset()), where)
    if platform not in PLATFORM_KEYS:
        problems.append(f"{where}: unknown platform {platform!r}")
    unique = entity.get("unique_id")
    if not isinstance(unique, str) or not unique:
        problems.append(f"{where}: unique_id is required")
    elif not unique.endswith(f"_{object_key}"):
        problems.append(f"{where}: unique_id {unique!r} does not name {object_key!r}")
    object_id = entity.get("object_id")
    if not isinstance(object_id, str) or not object_id:
        problems.append(f"{where}: object_id is required")
    if entity.get("default_entity_id") != f"{platform}.{object_id}":
        problems.append(f"{where}: default_entity_id must be {platform}.{object_id}")
    name = entity.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name is required")
    elif name.casefold().startswith(device_name.casefold()):
        problems.append(f"{where}: name {name!r} starts with the device name {device_name!r}")

    device_class = entity.get("device_class")
    state_class = entity.get("state_class")
    unit = entity.get("unit_of_measurement")
    allowed_classes = (
        SENSOR_DEVICE_CLASSES if platform == "sensor" else BINARY_SENSOR_DEVICE_CLASSES
    )
    if device_class is not None and device_class not in allowed_classes:
        problems.append(f"{where}: device_class {device_class!r} not allowed on {platform}")
    if device_class == "water" and unit not in WATER_UNITS:
        problems.append(f"{where}: unit {unit!r} is not a water unit")
    if unit is not None and device_class != "water":
        problems.append(f"{where}: unit {unit!r} without the water device class")
    if state_class is not None and state_class not in HA_STATE_CLASSES:
        problems.append(f"{where}: unknown state_class {state_class!r}")
    if device_class == "water" and state_class not in WATER_STATE_CLASSES:
        problems.append(f"{where}: water needs total or total_increasing, not {state_class!r}")
    if device_class in UNITLESS_DEVICE_CLASSES and (state_class or unit):
        problems.append(f"{where}: {device_class} takes no state_class or unit")
    if "last_reset_value_template" in entity and state_class != "total":
        problems.append(f"{where}: last_reset_value_template needs state_class total")

    category = entity.get("entity_category")
    if category is not None and category != "diagnostic":
        problems.append(f"{where}: entity_category {category!r} (only diagnostic is allowed)")
    if (category is not None) != (object_key in DIAGNOSTIC_OBJECTS):
        problems.append(f"{where}: entity_category belongs exactly on {sorted(DIAGNOSTIC_OBJECTS)}")

    needed = "command_topic" if platform == "button" else "state_topic"
    if not isinstance(entity.get(needed), str):
        problems.append(f"{where}: {needed} is required")
    for key in ("enabled_by_default", "visible_by_default"):
        if key in entity and not isinstance(entity[key], bool):
            problems.append(f"{where}: {key} must be a boolean")
    precision = entity.get("suggested_display_precision")
    if precision is not None and (not isinstance(precision, int) or precision < 0):
        problems.append(f"{where}: suggested_display_precision must be a natural number")
    return problems


def check_discovery(message: Message) -> list[str]:  # noqa: PLR0911 - one exit per hopeless case
    """Every rule a retained discovery message breaks; an empty list means HA accepts it."""
    topic = message.topic
    problems: list[str] = []
    if not message.retain or message.qos != 1:
        problems.append(f"{topic}: discovery must be retained at QoS 1")
    parts = topic.split("/")
    if parts[-1] != "config" or len(parts) not in {4, 5}:
        return [*problems, f"{topic}: not <prefix>/<component>/<node>[/<object>]/config"]
    problems += [f"{topic}: illegal segment {p!r}" for p in parts if not TOPIC_SEGMENT.match(p)]
    device_mode = parts[1] == "device"
    if device_mode and len(parts) != 4:
        problems.append(f"{topic}: device discovery has no object id")
    if not message.payload:
        return problems
    try:
        payload = json.loads(message.payload)
    except json.JSONDecodeError:
        return [*problems, f"{topic}: payload is not JSON"]
    if not isinstance(payload, dict):
        return [*problems, f"{topic}: payload is not an object"]
    problems += [f"{topic}: null at {path}" for path in _nones(payload)]
    if payload == {"migrate_discovery": True}:
        return problems
    if EMAIL.search(message.payload):
        problems.append(f"{topic}: an e-mail address in the payload")

    if device_mode:
        problems += _check_keys(payload, DEVICE_ROOT_KEYS, topic)
        problems += _check_origin(payload.get("origin"), topic)
        problems += _check_device(payload.get("device"), topic, entity_mode=False)
        problems += _check_availability(payload.get("availability"), topic)
        device_name = str((payload.get("device") or {}).get("name", ""))
        entities = payload.get("components")
        if not isinstance(entities, dict) or not entities:
            return [*problems, f"{topic}: components is required"]
        for key, entity in entities.items():
            where = f"{topic}:components.{key}"
            if not TOPIC_SEGMENT.match(key):
                problems.append(f"{where}: illegal component key")
            if not isinstance(entity, dict) or "platform" not in entity:
                problems.append(f"{where}: platform is required")
                continue
            problems += _check_entity(entity, str(entity["platform"]), key, device_name, where)
        return problems

    platform, object_key = parts[1], parts[-2] if len(parts) == 5 else parts[2]
    if "platform" in payload:
        problems.append(f"{topic}: entity mode takes its platform from the topic")
    problems += _check_origin(payload.get("origin"), topic)
    problems += _check_device(payload.get("device"), topic, entity_mode=True)
    problems += _check_availability(payload.get("availability"), topic)
    device_name = str((payload.get("device") or {}).get("name", ""))
    problems += _check_entity(payload, platform, object_key, device_name, topic)
    return problems


# --- inputs ----------------------------------------------------------------------------------

METERS = (METER, Meter("ab-12.34/X y"), Meter("Compteur"))
COMMAND_VARIANTS: tuple[Callable[[Metric], CommandOverride | None], ...] = (
    lambda _: None,
    lambda _: CommandOverride(enabled=False),
    lambda _: CommandOverride(visible=False),
    lambda m: CommandOverride(name=f"Compteur maison {m.value}"),
    lambda _: CommandOverride(name="Compteur maison"),
    lambda _: CommandOverride(name="Compteur"),
    lambda m: CommandOverride(name=f"Mon {m.value} à moi", order=9, visible=False),
)


def _overrides() -> Iterator[MeterOverride]:
    for name, area, description, visible, variant in itertools.product(
        (None, "Compteur maison", "Index"),
        (None, "Garage"),
        (None, "Regard extérieur"),
        (True, False),
        COMMAND_VARIANTS,
    ):
        commands = {m: c for m in Metric if (c := variant(m)) is not None}
        yield MeterOverride(
            name=name, area=area, description=description, visible=visible, commands=commands
        )


def _all_discovery(meter: Meter, override: MeterOverride) -> Iterator[Message]:
    for mode in ("device", "entity"):
        yield from build_discovery(
            meter,
            override,
            mode=mode,
            discovery_prefix="homeassistant",
            base_topic="veolia2mqtt",
            sw_version="1.0.0",
            portal_url=PORTAL_URL,
        )


def _assert_valid(messages: Iterator[Message] | list[Message]) -> int:
    count = 0
    for message in messages:
        assert check_discovery(message) == [], message.payload
        count += 1
    return count


# --- the builders pass ----------------------------------------------------------------------


def test_every_override_combination_passes() -> None:
    count = 0
    for meter, override in itertools.product(METERS, _overrides()):
        count += _assert_valid(_all_discovery(meter, override))
    assert count == len(METERS) * 3 * 2 * 2 * 2 * len(COMMAND_VARIANTS) * (1 + len(Metric))


def test_every_metric_is_covered_in_both_modes() -> None:
    [device] = build_discovery(
        METER,
        MeterOverride(),
        mode="device",
        discovery_prefix="homeassistant",
        base_topic="veolia2mqtt",
        sw_version="1.0.0",
        portal_url=PORTAL_URL,
    )
    assert set(json.loads(device.payload)["components"]) == {m.value for m in Metric}
    entity_topics = {m.topic.split("/")[-2] for m in _all_discovery(METER, MeterOverride())}
    assert entity_topics == {m.value for m in Metric} | {"veolia2mqtt_i19fa051732"}


def test_bridge_discovery_passes() -> None:
    for mode in ("device", "entity"):
        _assert_valid(
            build_bridge_discovery(
                mode=mode,
                discovery_prefix="homeassistant",
                base_topic="veolia2mqtt",
                sw_version="1.0.0",
            )
        )
        _assert_valid(clear_bridge_discovery(mode=mode, discovery_prefix="homeassistant"))


def test_removal_and_migration_messages_pass() -> None:
    for mode in ("device", "entity"):
        _assert_valid(clear_discovery("ab-12_34_x_y", mode=mode, discovery_prefix="ha"))
        _assert_valid(
            _all_discovery(METER, MeterOverride(enabled=False)),
        )
    _assert_valid(migrate_to_device("i19fa051732", discovery_prefix="homeassistant"))


names = st.none() | st.text(min_size=1, max_size=30)
command_overrides = st.builds(
    CommandOverride,
    name=names,
    visible=st.booleans(),
    enabled=st.booleans(),
    order=st.none() | st.integers(0, 999),
)
meter_overrides = st.builds(
    MeterOverride,
    enabled=st.booleans(),
    name=names,
    area=names,
    description=st.none() | st.text(min_size=1, max_size=60),
    visible=st.booleans(),
    commands=st.dictionaries(st.sampled_from(list(Metric)), command_overrides),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    number=st.text(min_size=1, max_size=20).filter(lambda s: s.strip()),
    override=meter_overrides,
)
def test_any_config_passes(number: str, override: MeterOverride) -> None:
    _assert_valid(_all_discovery(Meter(number), override))


# --- no personal data -------------------------------------------------------------------------


def test_meter_carries_only_its_number() -> None:
    assert [f.name for f in dataclasses.fields(Meter)] == ["number"]


def test_no_personal_data_in_any_payload() -> None:
    secrets = {
        "email": "jean.dupont@example.fr",
        "password": "s3cret-Pa55",
        "contract": "ABO-77889911",
        "pds": "PDS-5544332211",
    }
    config = Settings(
        veolia={"email": secrets["email"], "password": secrets["password"]},
        jeedom={"mqtt2_link_topic": "veolia2mqtt_jeedom"},
        meters={"I19FA051732": {"name": "Compteur maison", "area": "Garage"}},
    )
    override = config.meter_override(METER.number)
    messages: list[Message] = list(_all_discovery(METER, override))
    for mode in ("device", "entity"):
        messages += build_bridge_discovery(
            mode=mode, discovery_prefix="homeassistant", base_topic="veolia2mqtt", sw_version="1"
        )
    messages += build_state_messages(
        METER, SPEC_VALUES, base_topic="veolia2mqtt", last_sync=SPEC_LAST_SYNC, zone=PARIS
    )
    messages.append(build_link_discovery(METER, override, link_topic="veolia2mqtt_jeedom"))
    messages += build_link_values(
        METER, SPEC_VALUES, override, link_topic="veolia2mqtt_jeedom", last_sync=SPEC_LAST_SYNC
    )
    messages.append(
        build_bridge_state(
            base_topic="veolia2mqtt",
            version="1",
            status=BridgeStatus.ERROR,
            last_sync=SPEC_LAST_SYNC,
            last_success=None,
            error=BridgeError("reading the meters", SPEC_LAST_SYNC, "wait for the next slot"),
        )
    )
    text = "\n".join(f"{m.topic} {m.payload}" for m in messages) + json.dumps(jmqtt_template())
    assert not EMAIL.search(text)
    for value in secrets.values():
        assert value not in text
    assert "jean" not in text.lower()


# --- the checker can fail ---------------------------------------------------------------------


def _device_message() -> Message:
    [message] = build_discovery(
        METER,
        MeterOverride(name="Compteur maison"),
        mode="device",
        discovery_prefix="homeassistant",
        base_topic="veolia2mqtt",
        sw_version="1.0.0",
        portal_url=PORTAL_URL,
    )
    return message


def _entity_message(metric: str) -> Message:
    for message in _all_discovery(METER, MeterOverride(name="Compteur maison")):
        if message.topic.split("/")[-2] == metric:
            return message
    raise AssertionError(metric)


def _mutated(message: Message, change: Callable[[dict[str, object]], None]) -> Message:
    payload = copy.deepcopy(json.loads(message.payload))
    change(payload)
    return dataclasses.replace(message, payload=json.dumps(payload, ensure_ascii=False))


def _component(payload: dict[str, object], metric: str) -> dict[str, object]:
    components = payload["components"]
    assert isinstance(components, dict)
    entity = components[metric]
    assert isinstance(entity, dict)
    return entity


BROKEN_DEVICE_PAYLOADS: dict[str, tuple[Callable[[dict[str, object]], None], str]] = {
    "unit m3": (
        lambda p: _component(p, "billed_volume").update(unit_of_measurement="m3"),
        "not a water unit",
    ),
    "unit litres": (
        lambda p: _component(p, "index").update(unit_of_measurement="litres"),
        "not a water unit",
    ),
    "measurement": (
        lambda p: _component(p, "daily_consumption").update(state_class="measurement"),
        "water needs total",
    ),
    "last_reset on total_increasing": (
        lambda p: _component(p, "index").update(
            last_reset_value_template="{{ value_json.reading_day_start }}"
        ),
        "needs state_class total",
    ),
    "origin without name": (lambda p: p.update(origin={"sw_version": "1"}), "origin.name"),
    "no origin": (lambda p: p.pop("origin"), "origin.name"),
    "unknown origin key": (
        lambda p: p.update(origin={"name": "x", "url": "y"}),
        "unknown key 'url'",
    ),
    "unknown device key": (
        lambda p: p["device"].update(mdl="x"),  # type: ignore[attr-defined]
        "unknown key 'mdl'",
    ),
    "unknown availability key": (
        lambda p: p.update(availability=[{"topic": "t", "pl_avail": "online"}]),
        "unknown key 'pl_avail'",
    ),
    "unknown root key": (lambda p: p.update(extra=1), "unknown key 'extra'"),
    "missing unique_id": (lambda p: _component(p, "index").pop("unique_id"), "unique_id"),
    "missing platform": (lambda p: _component(p, "index").pop("platform"), "platform"),
    "abbreviated key": (
        lambda p: _component(p, "index").update(stat_cla="total"),
        "unknown key 'stat_cla'",
    ),
    "null value": (lambda p: _component(p, "index").update(icon=None), "null at"),
    "config category": (
        lambda p: _component(p, "last_sync").update(entity_category="config"),
        "only diagnostic",
    ),
    "diagnostic data entity": (
        lambda p: _component(p, "index").update(entity_category="diagnostic"),
        "belongs exactly",
    ),
    "undiagnostic last_sync": (
        lambda p: _component(p, "last_sync").pop("entity_category"),
        "belongs exactly",
    ),
    "default_entity_id mismatch": (
        lambda p: _component(p, "refresh").update(
            default_entity_id="sensor.veolia2mqtt_i19fa051732_refresh"
        ),
        "default_entity_id",
    ),
    "name starts with device name": (
        lambda p: _component(p, "index").update(name="Compteur maison Index"),
        "starts with the device name",
    ),
    "state_class on a date": (
        lambda p: _component(p, "reading_date").update(state_class="total"),
        "takes no state_class",
    ),
    "unit without device class": (
        lambda p: _component(p, "reliability").update(unit_of_measurement="L"),
        "without the water device class",
    ),
    "e-mail in a name": (
        lambda p: p["device"].update(name="jean.dupont@example.fr"),  # type: ignore[attr-defined]
        "e-mail",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DEVICE_PAYLOADS))
def test_checker_rejects_broken_device_payloads(case: str) -> None:
    change, expected = BROKEN_DEVICE_PAYLOADS[case]
    problems = check_discovery(_mutated(_device_message(), change))
    assert any(expected in problem for problem in problems), problems


def test_checker_rejects_serial_number_in_entity_mode() -> None:
    message = _mutated(
        _entity_message("index"),
        lambda p: p["device"].update(serial_number="I19FA051732"),  # type: ignore[attr-defined]
    )
    assert any("serial_number" in problem for problem in check_discovery(message))


def test_checker_rejects_platform_in_entity_mode() -> None:
    message = _mutated(_entity_message("index"), lambda p: p.update(platform="sensor"))
    assert any("platform" in problem for problem in check_discovery(message))


def test_checker_rejects_missing_origin_name_in_entity_mode() -> None:
    message = _mutated(_entity_message("index"), lambda p: p.update(origin={}))
    assert any("origin.name" in problem for problem in check_discovery(message))


@pytest.mark.parametrize(
    "topic",
    [
        "homeassistant/device/veolia2mqtt_i19fa.051732/config",
        "homeassistant/device/veolia2mqtt compteur/config",
        "homeassistant/sensor/veolia2mqtt_x/index/state",
        "homeassistant/device/veolia2mqtt_x/index/config",
    ],
)
def test_checker_rejects_bad_topics(topic: str) -> None:
    message = dataclasses.replace(_device_message(), topic=topic)
    assert check_discovery(message)


def test_checker_rejects_non_retained_discovery() -> None:
    message = dataclasses.replace(_device_message(), retain=False)
    assert any("retained" in problem for problem in check_discovery(message))
    cleared = Message(_device_message().topic, "", retain=False)
    assert any("retained" in problem for problem in check_discovery(cleared))


def test_checker_accepts_the_pristine_payloads() -> None:
    assert check_discovery(_device_message()) == []
    assert check_discovery(_entity_message("index")) == []
    assert meter_slug(METER.number) in _device_message().topic
