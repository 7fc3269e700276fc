"""The Veolia "Eau" web API: portals, the client, its records and its errors."""

from __future__ import annotations

from veolia2mqtt.tokens import CachedToken, TokenStore
from veolia2mqtt.veolia.client import VeoliaClient
from veolia2mqtt.veolia.errors import (
    VeoliaAuthError,
    VeoliaChallengeError,
    VeoliaConnectionError,
    VeoliaError,
    VeoliaRateLimitedError,
    VeoliaResponseError,
)
from veolia2mqtt.veolia.models import (
    Billing,
    Contract,
    FailedMeter,
    MeterData,
    account_key,
)
from veolia2mqtt.veolia.portals import DEFAULT_PORTAL, PORTALS, Endpoints, resolve_portal

__all__ = [
    "DEFAULT_PORTAL",
    "PORTALS",
    "Billing",
    "CachedToken",
    "Contract",
    "Endpoints",
    "FailedMeter",
    "MeterData",
    "TokenStore",
    "VeoliaAuthError",
    "VeoliaChallengeError",
    "VeoliaClient",
    "VeoliaConnectionError",
    "VeoliaError",
    "VeoliaRateLimitedError",
    "VeoliaResponseError",
    "account_key",
    "resolve_portal",
]
