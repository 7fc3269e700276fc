"""The project's exception tree.

Everything raised on purpose descends from :class:`Veolia2MqttError`::

    Veolia2MqttError
    ├── ConfigError                      bad configuration (exit 2)
    ├── StateError                       state_dir unreadable or unwritable
    ├── MqttError                        broker-side failures
    │   ├── MqttConnectionError          cannot connect, refused, TLS failure
    │   └── MqttPublishError             a publish was not acknowledged in time
    └── VeoliaError                      (veolia2mqtt.veolia.errors) Veolia-side failures
        ├── VeoliaAuthError              credentials refused (exit 3), never retried
        │   └── VeoliaChallengeError     Cognito asks for a verification code (exit 3)
        ├── VeoliaConnectionError        transient: timeout, 5xx, 429, HTML page, bad JSON
        │   └── VeoliaRateLimitedError   429, carries retry_after_s
        └── VeoliaResponseError          malformed or unexpected answer, 400/404, no contract

Messages never contain a password, a token or the account e-mail.
"""

from __future__ import annotations


class Veolia2MqttError(Exception):
    """Base of every error raised on purpose by veolia2mqtt."""


class ConfigError(Veolia2MqttError):
    """The configuration is invalid; one line per problem, each naming the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StateError(Veolia2MqttError):
    """The state directory cannot be read or written."""


class MqttError(Veolia2MqttError):
    """A broker-side failure."""


class MqttConnectionError(MqttError):
    """The broker cannot be reached, refused the connection or failed TLS."""


class MqttPublishError(MqttError):
    """A publish was not acknowledged by the broker in time."""
