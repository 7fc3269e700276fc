"""Jeedom, pure: the MQTT Manager "Jeedom link" messages and the jMQTT template.

The link (``jeedom.md`` §6) is an undocumented format of the official ``mqtt2`` plugin,
opt-in through ``jeedom.mqtt2_link_topic``: one retained equipment description per meter on
``<link>/discovery/eqLogic/<meter>`` and one retained ``{"value": ...}`` per command on
``<link>/cmd/event/<meter>_<metric>``. Jeedom applies the description only when it creates the
equipment or a command, so later edits made in Jeedom survive a re-publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from veolia2mqtt.mqtt.discovery import CUBIC_METRE, DEFAULT_NAMES, LITRE, device_name
from veolia2mqtt.mqtt.messages import Message, metric_values
from veolia2mqtt.mqtt.topics import (
    Metric,
    link_cmd_id,
    link_discovery_topic,
    link_event_topic,
    meter_slug,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime, tzinfo

    from veolia2mqtt.config import MeterOverride
    from veolia2mqtt.meter import Meter, MeterValues

CATEGORIES: Final = (
    "heating",
    "security",
    "energy",
    "light",
    "opening",
    "automatism",
    "multimedia",
    "default",
)
"""Jeedom's equipment categories, in Jeedom's order."""
DEFAULT_CATEGORY: Final = "energy"
LINK_TIMEOUT_MIN: Final = 2880
"""Jeedom flags the equipment after 48 h without a value; ``last_sync`` changes every sync."""
REAL_EQ_TYPE: Final = "veolia2mqtt"
REFRESH_MESSAGE: Final = "1"
TEMPLATE_NAME: Final = "Veolia2mqtt compteur eau"
"""The jMQTT template's name: ASCII letters, digits and spaces, as jMQTT itself writes."""


class CmdType(StrEnum):
    """Jeedom command types."""

    INFO = "info"
    ACTION = "action"


class SubType(StrEnum):
    """Jeedom command subtypes the project uses."""

    NUMERIC = "numeric"
    STRING = "string"
    OTHER = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """How one metric looks as a Jeedom command by default (``jeedom.md`` §3, §5, §6)."""

    type: CmdType
    sub_type: SubType
    historized: bool
    visible: bool
    order: int
    unit: str | None = None
    repeat_identical: bool = False
    """``repeatEventManagement: always``: a day equal to the previous one still counts."""


COMMANDS: Final[Mapping[Metric, CommandSpec]] = MappingProxyType(
    {
        Metric.DAILY_CONSUMPTION: CommandSpec(
            type=CmdType.INFO,
            sub_type=SubType.NUMERIC,
            unit=LITRE,
            historized=True,
            visible=True,
            order=1,
            repeat_identical=True,
        ),
        Metric.BILLED_VOLUME: CommandSpec(
            type=CmdType.INFO,
            sub_type=SubType.NUMERIC,
            unit=CUBIC_METRE,
            historized=True,
            visible=True,
            order=2,
        ),
        Metric.INDEX: CommandSpec(
            type=CmdType.INFO,
            sub_type=SubType.NUMERIC,
            unit=LITRE,
            historized=True,
            visible=True,
            order=3,
        ),
        Metric.READING_DATE: CommandSpec(
            type=CmdType.INFO, sub_type=SubType.STRING, historized=False, visible=True, order=4
        ),
        Metric.RELIABILITY: CommandSpec(
            type=CmdType.INFO, sub_type=SubType.STRING, historized=False, visible=False, order=5
        ),
        Metric.LAST_SYNC: CommandSpec(
            type=CmdType.INFO, sub_type=SubType.STRING, historized=False, visible=False, order=6
        ),
        Metric.REFRESH: CommandSpec(
            type=CmdType.ACTION, sub_type=SubType.OTHER, historized=False, visible=True, order=7
        ),
    }
)
"""The fixed command set, keyed by metric, in the default order."""


def _flag(value: bool) -> int:
    return 1 if value else 0


def command_name(metric: Metric, override: MeterOverride) -> str:
    """The configured command name, or the default French one."""
    return (override.command(metric).name or "").strip() or DEFAULT_NAMES[metric]


def command_visible(metric: Metric, override: MeterOverride) -> bool:
    """A configured ``visible`` wins; otherwise the Jeedom default (diagnostics hidden)."""
    if metric in override.commands:
        return override.command(metric).visible
    return COMMANDS[metric].visible


def command_order(metric: Metric, override: MeterOverride) -> int:
    """The configured ``order``, or the default position (1 to 7)."""
    order = override.command(metric).order
    return COMMANDS[metric].order if order is None else order


def enabled_commands(override: MeterOverride) -> list[Metric]:
    """The commands sent to Jeedom, sorted by order (ties keep the default order)."""
    metrics = [metric for metric in COMMANDS if override.command(metric).enabled]
    return sorted(
        metrics, key=lambda metric: (command_order(metric, override), COMMANDS[metric].order)
    )


def _link_command(slug: str, metric: Metric, override: MeterOverride) -> dict[str, object]:
    spec = COMMANDS[metric]
    cmd_id = link_cmd_id(slug, metric.value)
    command: dict[str, object] = {
        "id": cmd_id,
        "logicalId": metric.value,
        "name": command_name(metric, override),
        "type": spec.type.value,
        "subType": spec.sub_type.value,
    }
    if spec.unit is not None:
        command["unite"] = spec.unit
    if spec.type is CmdType.INFO:
        command["isHistorized"] = _flag(spec.historized)
    command["isVisible"] = _flag(command_visible(metric, override))
    command["order"] = command_order(metric, override)
    if spec.repeat_identical:
        command["configuration"] = {"repeatEventManagement": "always"}
    if spec.type is CmdType.ACTION:
        command["configuration"] = {"message": REFRESH_MESSAGE}
    return command


def link_equipment(meter: Meter, override: MeterOverride) -> dict[str, object]:
    """The ``eqLogic`` description of one meter, exactly as ``jeedom_discovery()`` reads it.

    ``id`` equals the last topic segment (the meter slug), otherwise MQTT Manager creates a new
    copy on every message. Optional fields are left out when not configured.
    """
    slug = meter_slug(meter.number)
    equipment: dict[str, object] = {
        "id": slug,
        "logicalId": slug,
        "name": device_name(meter, override),
    }
    area = (override.area or "").strip()
    if area:
        equipment["object_name"] = area
    equipment["isEnable"] = 1
    equipment["isVisible"] = _flag(override.visible)
    equipment["category"] = {override.category or DEFAULT_CATEGORY: 1}
    description = (override.description or "").strip()
    if description:
        equipment["comment"] = description
    equipment["timeout"] = LINK_TIMEOUT_MIN
    equipment["configuration"] = {"real_eqType": REAL_EQ_TYPE}
    equipment["cmds"] = {
        link_cmd_id(slug, metric.value): _link_command(slug, metric, override)
        for metric in enabled_commands(override)
    }
    return equipment


def build_link_discovery(meter: Meter, override: MeterOverride, *, link_topic: str) -> Message:
    """The retained equipment description on ``<link>/discovery/eqLogic/<meter>``.

    A disabled meter gets the empty retained payload that clears it instead; the caller clears
    its values with :func:`clear_link`.
    """
    slug = meter_slug(meter.number)
    topic = link_discovery_topic(link_topic, slug)
    if not override.enabled:
        return Message(topic, "", retain=True)
    return Message(topic, _dumps(link_equipment(meter, override)), retain=True)


def build_link_values(
    meter: Meter,
    values: MeterValues,
    override: MeterOverride,
    *,
    link_topic: str,
    last_sync: datetime | None,
    zone: tzinfo | None = None,
) -> list[Message]:
    """Retained ``{"value": ...}`` messages for the known values of the enabled commands.

    Unknown values are skipped (Jeedom keeps the previous one); so are disabled commands and
    disabled meters.
    """
    if not override.enabled:
        return []
    slug = meter_slug(meter.number)
    known = metric_values(values, last_sync=last_sync, zone=zone)
    return [
        Message(
            link_event_topic(link_topic, slug, metric.value), _dumps({"value": value}), retain=True
        )
        for metric, value in known.items()
        if override.command(metric).enabled
    ]


def link_topics(slug: str, *, link_topic: str) -> list[str]:
    """Every retained topic the link publishes for one meter: discovery, then values."""
    return [
        link_discovery_topic(link_topic, slug),
        *(
            link_event_topic(link_topic, slug, metric.value)
            for metric, spec in COMMANDS.items()
            if spec.type is CmdType.INFO
        ),
    ]


def clear_link(slug: str, *, link_topic: str) -> list[Message]:
    """Empty retained payloads on the link discovery and value topics of one meter.

    MQTT Manager keeps the equipment (the user deletes it), but without this the retained
    description would re-create a deleted equipment at the next restart.
    """
    return [Message(topic, "", retain=True) for topic in link_topics(slug, link_topic=link_topic)]


def _template_command(metric: Metric) -> dict[str, object]:
    spec = COMMANDS[metric]
    command: dict[str, object] = {
        "eqType": "jMQTT",
        "name": DEFAULT_NAMES[metric],
        "type": spec.type.value,
        "subType": spec.sub_type.value,
    }
    if spec.unit is not None:
        command["unite"] = spec.unit
    if spec.type is CmdType.INFO:
        command["isHistorized"] = str(_flag(spec.historized))
    command["isVisible"] = str(_flag(spec.visible))
    command["order"] = str(spec.order)
    configuration: dict[str, str] = {"topic": f"%s/{metric.value}"}
    if spec.repeat_identical:
        configuration["repeatEventManagement"] = "always"
    if spec.type is CmdType.ACTION:
        configuration["request"] = REFRESH_MESSAGE
        configuration["retain"] = "0"
    command["configuration"] = configuration
    return command


def jmqtt_template() -> dict[str, object]:
    """The jMQTT template of ``jeedom.md`` §5 (``contrib/jeedom/jMQTT-veolia2mqtt.json``).

    ``%s`` is the base topic the user enters when applying it (``veolia2mqtt/<meter>``).
    """
    return {
        TEMPLATE_NAME: {
            "name": TEMPLATE_NAME,
            "eqType_name": "jMQTT",
            "configuration": {
                "type": "eqpt",
                "auto_add_cmd": "0",
                "auto_add_topic": "%s/#",
                "Qos": "1",
                "commentaire": (
                    "Compteur d'eau Veolia publié par veolia2mqtt "
                    "(topic de base : veolia2mqtt/<compteur>)"
                ),
            },
            "category": {
                category: "1" if category == DEFAULT_CATEGORY else "0" for category in CATEGORIES
            },
            "commands": [_template_command(metric) for metric in COMMANDS],
        }
    }


def _dumps(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False)
