"""Errors raised by the Veolia client (see the tree in :mod:`veolia2mqtt.errors`)."""

from __future__ import annotations

from veolia2mqtt.errors import Veolia2MqttError


class VeoliaError(Veolia2MqttError):
    """A Veolia-side failure."""


class VeoliaAuthError(VeoliaError):
    """Cognito refused the credentials (or the refresh token). Never retried automatically."""

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        self.error_type = error_type
        super().__init__(message)


class VeoliaChallengeError(VeoliaAuthError):
    """Cognito answered with a challenge (SMS or e-mail code) that veolia2mqtt cannot answer."""

    def __init__(self, message: str, *, challenge_name: str) -> None:
        self.challenge_name = challenge_name
        super().__init__(message, error_type=challenge_name)


class VeoliaConnectionError(VeoliaError):
    """A transient failure: timeout, connection error, 5xx, HTML page, malformed JSON, 429."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class VeoliaRateLimitedError(VeoliaConnectionError):
    """HTTP 429 or Cognito throttling; ``retry_after_s`` is the server's hint when it gave one."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, status_code=429)


class VeoliaResponseError(VeoliaError):
    """A malformed or unexpected answer: a missing field, a 400/404, no contract on the account."""

    def __init__(
        self, message: str, *, status_code: int | None = None, field: str | None = None
    ) -> None:
        self.status_code = status_code
        self.field = field
        super().__init__(message)
