"""Smoke tests of the benchmark harness (``python -m benchmarks``); the full run is not a test."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as bench
from benchmarks import memory, mqtt_messages
from benchmarks._common import Figure, Seen, mosquitto_binary


def test_table_marks_targets_met_and_missed() -> None:
    figures = [
        Figure("a", "1. group", "met", 4, "requests", target="≤ 4", passed=True),
        Figure("b", "1. group", "missed", 3.5, "s", target="< 2 s", passed=False, note="slow"),
        Figure("c", "2. other", "info", None),
    ]
    table = bench.render_table(figures)
    assert "| **1. group** | | | | |" in table
    assert "| met | 4 requests | ≤ 4 | PASS |  |" in table
    assert "| missed | 3.5 s | < 2 s | FAIL | slow |" in table
    assert "| info | - |  |  |  |" in table


def test_unchanged_sync_classification() -> None:
    before = [
        Seen(0.0, "b/m/state", '{"index": 1, "last_sync": "T1"}', retain=False),
        Seen(0.0, "b/m/last_sync", "T1", retain=False),
        Seen(0.0, "b/m/index", "1", retain=False),
    ]
    phase = [
        Seen(1.0, "b/m/state", '{"index": 1, "last_sync": "T2"}', retain=False),
        Seen(1.0, "b/m/last_sync", "T2", retain=False),
        Seen(1.0, "b/m/index", "1", retain=False),
        Seen(1.0, "b/m/index", "2", retain=False),
        Seen(1.0, mqtt_messages.BIRTH_TOPIC, "online", retain=False),
    ]
    result = mqtt_messages._classify(before, phase)
    assert result["total"] == 4
    assert result["identical"] == 1
    assert result["last_sync_only"] == 2
    assert result["changed"] == 1


def test_import_times_are_grouped_by_top_level_package() -> None:
    grouped = memory._by_package(
        {"json": 100.0, "json.decoder": 50.0, "paho.mqtt.client": 300.0, "paho": 10.0}
    )
    assert grouped == {"stdlib (json)": 150.0, "paho": 310.0}


def test_smoke_run_without_broker_sections(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(["--smoke", "--only", "requests,logins,cpu", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| measurement | value | target | result | notes |" in printed
    document = json.loads(out.read_text(encoding="utf-8"))
    figures = {f["id"]: f for f in document["figures"]}
    assert figures["requests.ours.cached.1"]["value"] == 4
    assert figures["requests.ours.cached.1"]["passed"] is True
    assert figures["requests.ours.cold.1"]["value"] == 5
    assert figures["logins.restart_valid_token"]["value"] == 0
    assert figures["cpu.pipeline.worst"]["value"] >= 0
    assert document["meta"]["smoke"] is True
    assert set(document["sections"]) == {"requests", "logins", "cpu"}


def test_unknown_section_is_refused(tmp_path, capsys) -> None:
    assert bench.main(["--only", "nope", "--output", str(tmp_path / "x.json")]) == 2
    assert "unknown section" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_unchanged_sync_republishes_nothing_identical(tmp_path) -> None:
    section = mqtt_messages.run(tmp_path, smoke=True)
    figures = {f.id: f for f in section.figures}
    assert figures["mqtt.unchanged.identical"].value == 0
    assert figures["mqtt.first_sync"].value > 0
