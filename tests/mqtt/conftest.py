"""Shared inputs of the builder tests and the golden-file fixture.

Golden files live in ``tests/golden/``. ``UPDATE_GOLDEN=1 pytest tests/mqtt`` rewrites the
snapshot files (``golden_*.json``); review the diff against the specs before committing.
The ``spec_*.json`` files are copied verbatim from the shared specs and are never rewritten.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from veolia2mqtt.config import MeterOverride
from veolia2mqtt.meter import Meter, MeterValues

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from veolia2mqtt.mqtt.messages import Message

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
PARIS = ZoneInfo("Europe/Paris")
PORTAL_URL = "https://www.eau.veolia.fr/"
METER = Meter("I19FA051732")
SPEC_OVERRIDE = MeterOverride(name="Compteur maison", area="Garage", description="Regard extérieur")
"""The config of home-assistant.md §3.1 and jeedom.md §6."""
SPEC_VALUES = MeterValues(
    reading_date=date(2025, 12, 14),
    daily_consumption_l=312.0,
    index_l=1234567.0,
    reliability="MESURE",
    billed_volume_m3=9.7,
    billing_period_start=date(2025, 12, 1),
)
"""The values of home-assistant.md §2."""
SPEC_LAST_SYNC = datetime(2025, 12, 16, 6, 5, 12, tzinfo=PARIS)


def load_json(name: str) -> object:
    return json.loads((GOLDEN_DIR / name).read_text(encoding="utf-8"))


def messages_as_data(messages: Sequence[Message], *, parse: bool = True) -> list[dict[str, object]]:
    """Messages as JSON-ready dicts; payloads parsed when ``parse`` and not empty."""
    return [
        {
            "topic": m.topic,
            "retain": m.retain,
            "qos": m.qos,
            "payload": json.loads(m.payload) if parse and m.payload else m.payload,
        }
        for m in messages
    ]


@pytest.fixture
def golden() -> Callable[..., None]:
    """``golden(name, messages, parse=True)``: compare with (or rewrite) ``golden_<name>.json``."""

    def check(name: str, messages: Sequence[Message], *, parse: bool = True) -> None:
        path = GOLDEN_DIR / f"golden_{name}.json"
        data = messages_as_data(messages, parse=parse)
        if UPDATE:
            GOLDEN_DIR.mkdir(exist_ok=True)
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
        assert path.is_file(), f"{path.name} is missing: run UPDATE_GOLDEN=1 pytest tests/mqtt"
        assert data == json.loads(path.read_text(encoding="utf-8")), f"{path.name} differs"

    return check
