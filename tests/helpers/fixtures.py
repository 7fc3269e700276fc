"""Anonymised API samples from ``tests/fixtures/`` (veolia-protocol.md §4)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load_fixture(name: str) -> object:
    """The parsed JSON of ``tests/fixtures/<name>`` (``.json`` may be left out)."""
    path = FIXTURES / (name if name.endswith(".json") else f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))
