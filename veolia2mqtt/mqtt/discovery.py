"""Home Assistant MQTT discovery, pure: payloads for both modes and the removal messages.

One function, :func:`components`, describes every entity of a meter; ``device`` mode sends
them together under ``components`` (HA 2024.12+), ``entity`` mode sends one message per
entity (older HA, openHAB). Full key names only, never abbreviations, and no ``None`` value in
any payload (``home-assistant.md`` §3).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.topics import (
    BRIDGE_PROBLEM,
    BRIDGE_SLUG,
    PREFIX,
    Metric,
    bridge_device_discovery_topic,
    bridge_entity_discovery_topic,
    bridge_state_topic,
    device_discovery_topic,
    device_id,
    entity_discovery_topic,
    meter_slug,
    refresh_topic,
    state_topic,
    status_topic,
    unique_id,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from veolia2mqtt.config import MeterOverride
    from veolia2mqtt.meter import Meter

DiscoveryMode = Literal["device", "entity"]
"""``mqtt.discovery``: one message per meter, or one per entity."""

LITRE: Final = "L"
"""Litres, as HA's ``water`` device class spells it (never ``l`` or ``litres``)."""
CUBIC_METRE: Final = "m\u00b3"
"""Cubic metres with U+00B3; ``m3`` is rejected by HA 2025.7+."""
MANUFACTURER: Final = "Veolia"
DEFAULT_MODEL: Final = "Compteur d'eau"
PAYLOAD_ONLINE: Final = "online"
PAYLOAD_OFFLINE: Final = "offline"
DISCOVERY_QOS: Final = 1
_NAME_SEPARATORS: Final = " \t-\u2013\u2014:_/|\u00b7,."


class Platform(StrEnum):
    """HA entity platforms the project uses."""

    SENSOR = "sensor"
    BUTTON = "button"
    BINARY_SENSOR = "binary_sensor"


class DeviceClass(StrEnum):
    """HA device classes the project uses."""

    WATER = "water"
    DATE = "date"
    TIMESTAMP = "timestamp"
    PROBLEM = "problem"


class StateClass(StrEnum):
    """HA state classes; ``water`` allows only these two (never ``measurement``)."""

    TOTAL = "total"
    TOTAL_INCREASING = "total_increasing"


class EntityCategory(StrEnum):
    """HA entity categories; sensors may not be ``config``, so only this one is used."""

    DIAGNOSTIC = "diagnostic"


DEFAULT_NAMES: Final[Mapping[Metric, str]] = MappingProxyType(
    {
        Metric.DAILY_CONSUMPTION: "Consommation du jour",
        Metric.BILLED_VOLUME: "Consommation facturée",
        Metric.INDEX: "Index",
        Metric.READING_DATE: "Date du relevé",
        Metric.RELIABILITY: "Fiabilité du relevé",
        Metric.LAST_SYNC: "Dernière synchronisation",
        Metric.REFRESH: "Rafraîchir",
    }
)
"""The French names of the Jeedom plugin this project replaces; HA and Jeedom share them."""

PLATFORMS: Final[Mapping[Metric, Platform]] = MappingProxyType(
    {metric: Platform.BUTTON if metric is Metric.REFRESH else Platform.SENSOR for metric in Metric}
)
"""The HA platform of each metric."""

BRIDGE_NAME: Final = "veolia2mqtt"
BRIDGE_MODEL: Final = "Passerelle Veolia Eau vers MQTT"
BRIDGE_PROBLEM_NAME: Final = "Problème"


def default_device_name(meter: Meter) -> str:
    """``Compteur d'eau <numero_compteur>``."""
    return f"Compteur d'eau {meter.number}"


def device_name(meter: Meter, override: MeterOverride) -> str:
    """The configured device name, or the default one when none (or a blank one) is set."""
    name = (override.name or "").strip()
    return name or default_device_name(meter)


def _strip_device_prefix(name: str, device: str) -> str:
    """``name`` without a leading ``device`` (case-insensitive) and the separators after it."""
    if not device or not name.casefold().startswith(device.casefold()):
        return name
    rest = name[len(device) :].lstrip(_NAME_SEPARATORS)
    return rest[:1].upper() + rest[1:]


def entity_name(metric: Metric, meter: Meter, override: MeterOverride) -> tuple[str, str | None]:
    """The entity name of ``metric`` and a warning for the caller to log, if any.

    HA builds the friendly name as device name + entity name and raises a repair when the
    entity name starts with the device name (``home-assistant.md`` §5). Such a prefix is
    stripped; when nothing is left the default name is used (stripped the same way).
    """
    device = device_name(meter, override)
    configured = (override.command(metric).name or "").strip()
    default = DEFAULT_NAMES[metric]
    for candidate in (configured, default):
        if not candidate:
            continue
        name = _strip_device_prefix(candidate, device)
        if name == candidate and candidate == (configured or default):
            return name, None
        if name:
            return name, (
                f"meter {meter.number}: the name {(configured or default)!r} of {metric.value} "
                f"starts with the device name {device!r}; {name!r} is used"
            )
    # Two last resorts with different first letters: the device name can prefix only one.
    fallbacks = (metric.value, f"{PREFIX} {metric.value}")
    name = next(f for f in fallbacks if not f.casefold().startswith(device.casefold()))
    return name, (
        f"meter {meter.number}: every name of {metric.value} starts with the device name "
        f"{device!r}; {name!r} is used"
    )


def naming_notes(meter: Meter, override: MeterOverride) -> tuple[str, ...]:
    """Warnings about configured names that had to be changed, for the caller to log."""
    notes = (entity_name(metric, meter, override)[1] for metric in Metric)
    return tuple(note for note in notes if note is not None)


def _sensor_details(metric: Metric) -> dict[str, object]:
    """Device class, state class, unit and last reset of a sensor (§4 of the guide)."""
    state_value = f"{{{{ value_json.{metric.value} }}}}"
    match metric:
        case Metric.DAILY_CONSUMPTION:
            return {
                "value_template": state_value,
                "device_class": DeviceClass.WATER.value,
                "state_class": StateClass.TOTAL.value,
                "unit_of_measurement": LITRE,
                "suggested_display_precision": 0,
                "last_reset_value_template": "{{ value_json.reading_day_start or '' }}",
            }
        case Metric.BILLED_VOLUME:
            return {
                "value_template": state_value,
                "device_class": DeviceClass.WATER.value,
                "state_class": StateClass.TOTAL.value,
                "unit_of_measurement": CUBIC_METRE,
                "last_reset_value_template": "{{ value_json.billing_period_start or '' }}",
            }
        case Metric.INDEX:
            return {
                "value_template": state_value,
                "device_class": DeviceClass.WATER.value,
                "state_class": StateClass.TOTAL_INCREASING.value,
                "unit_of_measurement": LITRE,
                "suggested_display_precision": 0,
            }
        case Metric.READING_DATE:
            return {"value_template": state_value, "device_class": DeviceClass.DATE.value}
        case Metric.LAST_SYNC:
            return {
                "value_template": state_value,
                "device_class": DeviceClass.TIMESTAMP.value,
                "entity_category": EntityCategory.DIAGNOSTIC.value,
            }
        case _:
            # reliability: no device class, since `enum` would reject any unlisted Veolia value.
            return {"value_template": state_value}


def component(
    metric: Metric, meter: Meter, override: MeterOverride, *, base_topic: str
) -> dict[str, object]:
    """The discovery dict of one entity, with ``platform`` (device-mode form)."""
    slug = meter_slug(meter.number)
    platform = PLATFORMS[metric]
    object_id = unique_id(slug, metric.value)
    command = override.command(metric)
    entity: dict[str, object] = {
        "platform": platform.value,
        "unique_id": object_id,
        "object_id": object_id,
        "default_entity_id": f"{platform.value}.{object_id}",
        "name": entity_name(metric, meter, override)[0],
    }
    if platform is Platform.BUTTON:
        entity["command_topic"] = refresh_topic(base_topic, slug)
        entity["entity_category"] = EntityCategory.DIAGNOSTIC.value
    else:
        entity["state_topic"] = state_topic(base_topic, slug)
        entity.update(_sensor_details(metric))
    entity["enabled_by_default"] = command.enabled
    entity["visible_by_default"] = override.visible and command.visible
    return entity


def components(
    meter: Meter, override: MeterOverride, *, base_topic: str
) -> dict[Metric, dict[str, object]]:
    """Every entity of ``meter``, keyed by metric in the default order (``home-assistant.md`` §3.1).

    Names come from ``commands.<metric>.name`` (see :func:`entity_name`), ``visible_by_default``
    is the meter's ``visible`` AND the command's, and a disabled command is still published with
    ``enabled_by_default: false``.
    """
    return {metric: component(metric, meter, override, base_topic=base_topic) for metric in Metric}


def device_payload(
    meter: Meter, override: MeterOverride, *, portal_url: str, include_serial: bool
) -> dict[str, object]:
    """The ``device`` block; ``serial_number`` only where HA knows it (device mode)."""
    device: dict[str, object] = {
        "identifiers": [device_id(meter_slug(meter.number))],
        "name": device_name(meter, override),
        "manufacturer": MANUFACTURER,
        "model": (override.description or "").strip() or DEFAULT_MODEL,
    }
    if include_serial:
        device["serial_number"] = meter.number
    area = (override.area or "").strip()
    if area:
        device["suggested_area"] = area
    device["configuration_url"] = portal_url
    return device


def origin_payload(sw_version: str) -> dict[str, object]:
    """The ``origin`` block; HA drops the whole config without ``origin.name``."""
    return {"name": PREFIX, "sw_version": sw_version}


def _availability_full(base_topic: str) -> list[dict[str, object]]:
    return [
        {
            "topic": status_topic(base_topic),
            "payload_available": PAYLOAD_ONLINE,
            "payload_not_available": PAYLOAD_OFFLINE,
        }
    ]


def _availability_short(base_topic: str) -> list[dict[str, object]]:
    # HA's defaults are "online" / "offline", which is what the daemon publishes.
    return [{"topic": status_topic(base_topic)}]


def _dumps(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _device_message(
    topic: str,
    device: dict[str, object],
    entities: Mapping[str, dict[str, object]],
    *,
    base_topic: str,
    sw_version: str,
) -> Message:
    payload = {
        "device": device,
        "origin": origin_payload(sw_version),
        "availability": _availability_full(base_topic),
        "qos": DISCOVERY_QOS,
        "components": dict(entities),
    }
    return Message(topic, _dumps(payload), retain=True, qos=DISCOVERY_QOS)


def _entity_message(
    topic: str,
    entity: Mapping[str, object],
    device: dict[str, object],
    *,
    base_topic: str,
    sw_version: str,
) -> Message:
    payload = {key: value for key, value in entity.items() if key != "platform"}
    payload["availability"] = _availability_short(base_topic)
    payload["qos"] = DISCOVERY_QOS
    payload["device"] = device
    payload["origin"] = origin_payload(sw_version)
    return Message(topic, _dumps(payload), retain=True, qos=DISCOVERY_QOS)


def build_discovery(
    meter: Meter,
    override: MeterOverride,
    *,
    mode: DiscoveryMode,
    discovery_prefix: str,
    base_topic: str,
    sw_version: str,
    portal_url: str,
) -> list[Message]:
    """The retained discovery of one meter: one message (``device``) or one per entity.

    A disabled meter (``enabled: false``) gets the removal messages of :func:`clear_discovery`
    instead, so discovery is never published for it.
    """
    slug = meter_slug(meter.number)
    if not override.enabled:
        return clear_discovery(slug, mode=mode, discovery_prefix=discovery_prefix)
    entities = components(meter, override, base_topic=base_topic)
    if mode == "device":
        device = device_payload(meter, override, portal_url=portal_url, include_serial=True)
        return [
            _device_message(
                device_discovery_topic(discovery_prefix, slug),
                device,
                {metric.value: entity for metric, entity in entities.items()},
                base_topic=base_topic,
                sw_version=sw_version,
            )
        ]
    # HA learnt device.serial_number in 2024.2, and an unknown device key rejects the entity.
    device = device_payload(meter, override, portal_url=portal_url, include_serial=False)
    return [
        _entity_message(
            entity_discovery_topic(discovery_prefix, PLATFORMS[metric], slug, metric.value),
            entity,
            device,
            base_topic=base_topic,
            sw_version=sw_version,
        )
        for metric, entity in entities.items()
    ]


def discovery_topics(slug: str, *, mode: DiscoveryMode, discovery_prefix: str) -> list[str]:
    """Every discovery topic of one meter in ``mode``."""
    if mode == "device":
        return [device_discovery_topic(discovery_prefix, slug)]
    return [
        entity_discovery_topic(discovery_prefix, PLATFORMS[metric], slug, metric.value)
        for metric in Metric
    ]


def clear_discovery(slug: str, *, mode: DiscoveryMode, discovery_prefix: str) -> list[Message]:
    """Empty retained payloads that remove a meter's device (or each of its entities) from HA."""
    # A non-retained empty publish would leave the retained config on the broker.
    return [
        Message(topic, "", retain=True, qos=DISCOVERY_QOS)
        for topic in discovery_topics(slug, mode=mode, discovery_prefix=discovery_prefix)
    ]


def migrate_to_device(slug: str, *, discovery_prefix: str) -> list[Message]:
    """``{"migrate_discovery": true}`` on each old per-entity topic, before the device config.

    Step 1 of HA's "Migration from single component to device-based discovery"; then publish
    the device config and clear the old topics (``home-assistant.md`` §8.5).
    """
    payload = _dumps({"migrate_discovery": True})
    return [
        Message(topic, payload, retain=True, qos=DISCOVERY_QOS)
        for topic in discovery_topics(slug, mode="entity", discovery_prefix=discovery_prefix)
    ]


def bridge_device_payload(*, sw_version: str) -> dict[str, object]:
    """The daemon's own device; it carries no personal data."""
    return {
        "identifiers": [device_id(BRIDGE_SLUG)],
        "name": BRIDGE_NAME,
        "manufacturer": PREFIX,
        "model": BRIDGE_MODEL,
        "sw_version": sw_version,
    }


def bridge_problem_component(*, base_topic: str) -> dict[str, object]:
    """The ``problem`` binary sensor: on unless ``<base>/bridge/state`` says ``ok`` or ``starting``.

    Any other status, including one a later release adds, reads as a problem.
    """
    object_id = unique_id(BRIDGE_SLUG, BRIDGE_PROBLEM)
    platform = Platform.BINARY_SENSOR.value
    return {
        "platform": platform,
        "unique_id": object_id,
        "object_id": object_id,
        "default_entity_id": f"{platform}.{object_id}",
        "name": BRIDGE_PROBLEM_NAME,
        "state_topic": bridge_state_topic(base_topic),
        "value_template": "{{ 'OFF' if value_json.status in ('ok', 'starting') else 'ON' }}",
        "device_class": DeviceClass.PROBLEM.value,
        "entity_category": EntityCategory.DIAGNOSTIC.value,
        "enabled_by_default": True,
        "visible_by_default": True,
    }


def build_bridge_discovery(
    *, mode: DiscoveryMode, discovery_prefix: str, base_topic: str, sw_version: str
) -> list[Message]:
    """The retained discovery of the bridge device and its problem entity."""
    device = bridge_device_payload(sw_version=sw_version)
    entity = bridge_problem_component(base_topic=base_topic)
    if mode == "device":
        return [
            _device_message(
                bridge_device_discovery_topic(discovery_prefix),
                device,
                {BRIDGE_PROBLEM: entity},
                base_topic=base_topic,
                sw_version=sw_version,
            )
        ]
    return [
        _entity_message(
            bridge_entity_discovery_topic(discovery_prefix),
            entity,
            device,
            base_topic=base_topic,
            sw_version=sw_version,
        )
    ]


def clear_bridge_discovery(*, mode: DiscoveryMode, discovery_prefix: str) -> list[Message]:
    """The empty retained payload that removes the bridge device (or its entity)."""
    topic = (
        bridge_device_discovery_topic(discovery_prefix)
        if mode == "device"
        else bridge_entity_discovery_topic(discovery_prefix)
    )
    return [Message(topic, "", retain=True, qos=DISCOVERY_QOS)]


def discovery_digest(message: Message) -> str:
    """SHA-256 of the payload's canonical JSON (``sort_keys``), to publish only on change.

    An empty (removal) payload hashes as the empty string.
    """
    canonical = ""
    if message.payload:
        canonical = json.dumps(
            json.loads(message.payload), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
