"""The message type, the publisher protocol and the pure state builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message; an empty retained payload clears a retained topic."""

    topic: str
    payload: str
    retain: bool
    qos: int = 1


class Publisher(Protocol):
    """What the sync needs from a broker connection (MQTT or the dry-run console)."""

    def start(self) -> None:
        """Connect (or open the sink); publish ``online``."""

    def stop(self) -> None:
        """Publish ``offline`` (daemon mode), disconnect and release resources."""

    def publish(self, messages: Sequence[Message]) -> int:
        """Send ``messages`` in order, wait for the acknowledgements, return how many were sent.

        A message whose topic already carries the same payload from this connection is skipped.

        Raises:
            MqttPublishError: a message was not acknowledged in time.
        """
        ...

    def set_replay(self, always: Sequence[Message], if_missing: Sequence[Message]) -> None:
        """What to re-publish after a (re)connect or a Home Assistant birth.

        ``always`` (discovery then states) is re-sent after every connect and birth;
        ``if_missing`` (the per-value topics) only when the broker no longer holds them.
        """

    def on_refresh(self, callback: Callable[[str], None]) -> None:
        """Register the callback that receives a meter slug when a refresh is requested."""
