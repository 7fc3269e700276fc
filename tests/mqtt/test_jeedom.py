"""Jeedom: the MQTT Manager link messages and the jMQTT template file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.mqtt.conftest import METER, SPEC_LAST_SYNC, SPEC_OVERRIDE, SPEC_VALUES, load_json
from veolia2mqtt.config import CommandOverride, MeterOverride
from veolia2mqtt.meter import MeterValues
from veolia2mqtt.mqtt.discovery import DEFAULT_NAMES
from veolia2mqtt.mqtt.jeedom import (
    CATEGORIES,
    COMMANDS,
    build_link_discovery,
    build_link_values,
    clear_link,
    jmqtt_template,
    link_equipment,
)
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.topics import Metric

if TYPE_CHECKING:
    from collections.abc import Callable

LINK = "veolia2mqtt_jeedom"
TEMPLATE_FILE = (
    Path(__file__).resolve().parents[2] / "contrib" / "jeedom" / "jMQTT-veolia2mqtt.json"
)
OVERRIDES = MeterOverride(
    name="Eau jardin",
    category="heating",
    visible=False,
    commands={
        Metric.INDEX: CommandOverride(order=1, name="Index général"),
        Metric.DAILY_CONSUMPTION: CommandOverride(order=2),
        Metric.BILLED_VOLUME: CommandOverride(enabled=False),
        Metric.RELIABILITY: CommandOverride(visible=True),
        Metric.READING_DATE: CommandOverride(visible=False),
        Metric.REFRESH: CommandOverride(enabled=False),
    },
)


def discovery_payload(override: MeterOverride) -> dict[str, object]:
    message = build_link_discovery(METER, override, link_topic=LINK)
    assert message.topic == "veolia2mqtt_jeedom/discovery/eqLogic/i19fa051732"
    assert message.retain is True
    assert message.qos == 1
    payload = json.loads(message.payload)
    assert isinstance(payload, dict)
    return payload


def test_link_discovery_matches_the_spec_exactly() -> None:
    """jeedom.md §6, key order included."""
    payload = discovery_payload(SPEC_OVERRIDE)
    expected = load_json("spec_jeedom_link_discovery.json")
    assert payload == expected
    assert json.dumps(payload) == json.dumps(expected)


def test_id_is_the_last_topic_segment() -> None:
    for override in (SPEC_OVERRIDE, OVERRIDES, MeterOverride()):
        message = build_link_discovery(METER, override, link_topic=LINK)
        payload = json.loads(message.payload)
        assert payload["id"] == message.topic.rsplit("/", 1)[-1]
        assert payload["configuration"]["real_eqType"] == "veolia2mqtt"
        assert payload["logicalId"]
        for cmd_id, command in payload["cmds"].items():
            assert command["id"] == cmd_id
            assert cmd_id == f"i19fa051732_{command['logicalId']}"
            assert {"id", "logicalId", "type", "subType"} <= set(command)


def test_golden_link_defaults(golden: Callable[..., None]) -> None:
    golden(
        "jeedom_link_discovery_defaults",
        [build_link_discovery(METER, MeterOverride(), link_topic=LINK)],
    )


def test_golden_link_overrides(golden: Callable[..., None]) -> None:
    golden(
        "jeedom_link_discovery_overrides", [build_link_discovery(METER, OVERRIDES, link_topic=LINK)]
    )


def test_defaults() -> None:
    payload = discovery_payload(MeterOverride())
    assert payload["name"] == "Compteur d'eau I19FA051732"
    assert payload["category"] == {"energy": 1}
    assert payload["isVisible"] == 1
    assert "object_name" not in payload
    assert "comment" not in payload
    assert payload["timeout"] == 2880
    assert list(payload["cmds"]) == [f"i19fa051732_{metric.value}" for metric in Metric]


def test_overrides_order_visibility_and_disabled_commands() -> None:
    payload = discovery_payload(OVERRIDES)
    assert payload["name"] == "Eau jardin"
    assert payload["category"] == {"heating": 1}
    assert payload["isVisible"] == 0
    cmds = payload["cmds"]
    assert list(cmds) == [
        "i19fa051732_index",
        "i19fa051732_daily_consumption",
        "i19fa051732_reading_date",
        "i19fa051732_reliability",
        "i19fa051732_last_sync",
    ]
    assert [c["order"] for c in cmds.values()] == [1, 2, 4, 5, 6]
    assert cmds["i19fa051732_index"]["name"] == "Index général"
    assert cmds["i19fa051732_reliability"]["isVisible"] == 1
    assert cmds["i19fa051732_reading_date"]["isVisible"] == 0
    assert cmds["i19fa051732_last_sync"]["isVisible"] == 0


def test_order_ties_keep_the_default_order() -> None:
    override = MeterOverride(
        commands={
            Metric.LAST_SYNC: CommandOverride(order=1),
            Metric.INDEX: CommandOverride(order=1),
        }
    )
    assert list(link_equipment(METER, override)["cmds"])[:3] == [
        "i19fa051732_daily_consumption",
        "i19fa051732_index",
        "i19fa051732_last_sync",
    ]


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_jeedom_category(category: str) -> None:
    payload = discovery_payload(MeterOverride(category=category))
    assert payload["category"] == {category: 1}


def test_disabled_meter_clears_its_discovery() -> None:
    message = build_link_discovery(METER, MeterOverride(enabled=False), link_topic=LINK)
    assert message == Message("veolia2mqtt_jeedom/discovery/eqLogic/i19fa051732", "", retain=True)


def test_link_values_spec_example() -> None:
    messages = build_link_values(METER, SPEC_VALUES, SPEC_OVERRIDE, link_topic=LINK, last_sync=None)
    by_topic = {m.topic: m.payload for m in messages}
    assert (
        by_topic["veolia2mqtt_jeedom/cmd/event/i19fa051732_daily_consumption"] == '{"value": 312}'
    )
    assert all(m.retain and m.qos == 1 for m in messages)


def test_golden_link_values(golden: Callable[..., None]) -> None:
    golden(
        "jeedom_link_values",
        build_link_values(
            METER, SPEC_VALUES, SPEC_OVERRIDE, link_topic=LINK, last_sync=SPEC_LAST_SYNC
        ),
    )


def test_link_values_skip_unknown_and_disabled() -> None:
    assert (
        build_link_values(METER, MeterValues(), MeterOverride(), link_topic=LINK, last_sync=None)
        == []
    )
    messages = build_link_values(
        METER, SPEC_VALUES, OVERRIDES, link_topic=LINK, last_sync=SPEC_LAST_SYNC
    )
    metrics = [m.topic.rsplit("/", 1)[-1].removeprefix("i19fa051732_") for m in messages]
    assert metrics == ["daily_consumption", "index", "reading_date", "reliability", "last_sync"]
    assert (
        build_link_values(
            METER,
            SPEC_VALUES,
            MeterOverride(enabled=False),
            link_topic=LINK,
            last_sync=SPEC_LAST_SYNC,
        )
        == []
    )


def test_link_value_types() -> None:
    messages = build_link_values(
        METER, SPEC_VALUES, MeterOverride(), link_topic=LINK, last_sync=SPEC_LAST_SYNC
    )
    values = {m.topic.rsplit("_", 1)[-1]: json.loads(m.payload)["value"] for m in messages}
    assert values["consumption"] == 312
    assert isinstance(values["consumption"], int)
    assert values["volume"] == 9.7
    assert values["date"] == "2025-12-14"
    assert values["sync"] == "2025-12-16T06:05:12+01:00"


def test_clear_link() -> None:
    messages = clear_link("i19fa051732", link_topic=LINK)
    assert messages[0] == Message(
        "veolia2mqtt_jeedom/discovery/eqLogic/i19fa051732", "", retain=True
    )
    published = build_link_values(
        METER, SPEC_VALUES, MeterOverride(), link_topic=LINK, last_sync=SPEC_LAST_SYNC
    )
    assert [m.topic for m in messages[1:]] == [m.topic for m in published]
    assert all(m.payload == "" and m.retain for m in messages)


def test_template_file_is_the_spec_and_the_builder_output() -> None:
    """contrib/jeedom/jMQTT-veolia2mqtt.json == jeedom.md §5 == jmqtt_template()."""
    shipped = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    assert shipped == load_json("spec_jmqtt_template.json")
    assert shipped == jmqtt_template()
    assert json.dumps(shipped) == json.dumps(jmqtt_template())


def test_template_agrees_with_the_link_and_the_topics() -> None:
    [(name, template)] = jmqtt_template().items()
    assert re.fullmatch(r"[A-Za-z0-9 ]+", name)
    assert template["name"] == name
    commands = template["commands"]
    assert [c["name"] for c in commands] == [DEFAULT_NAMES[m] for m in Metric]
    assert [c["configuration"]["topic"] for c in commands] == [f"%s/{m.value}" for m in Metric]
    link_cmds = list(link_equipment(METER, MeterOverride())["cmds"].values())
    for tpl, link in zip(commands, link_cmds, strict=True):
        for key in ("name", "type", "subType"):
            assert tpl[key] == link[key]
        assert tpl.get("unite") == link.get("unite")
        assert tpl["isVisible"] == str(link["isVisible"])
        assert tpl["order"] == str(link["order"])
        assert tpl.get("isHistorized") == (
            None if "isHistorized" not in link else str(link["isHistorized"])
        )
    assert set(COMMANDS) == set(Metric)
