"""veolia2mqtt: Veolia Eau water meter readings to MQTT, with Home Assistant discovery."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("veolia2mqtt")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
