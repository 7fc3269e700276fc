"""Shared fixtures: a clean environment, a real mosquitto broker."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import MOSQUITTO, Broker

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VEOLIA2MQTT_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("VEOLIA2MQTT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    b = Broker(tmp_path).start()
    try:
        yield b
    finally:
        b.kill()
