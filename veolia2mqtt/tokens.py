"""The cached Cognito access token, shared by the Veolia client and the state store. Pure.

The client decides when a token is usable; the daemon's :class:`~veolia2mqtt.state.StateStore`
keeps it between runs (file mode 0600). Neither the password nor a refresh token is ever part
of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CachedToken:
    """An access token with what it is valid for; the daemon persists it between runs."""

    access_token: str = field(repr=False)
    expires_at: float
    """When Cognito stops accepting it, in UTC epoch seconds (issue time + ``ExpiresIn``)."""
    client_id: str
    auth_url: str
    account: str = field(repr=False)
    """A hash of the e-mail it was issued to, never the e-mail itself."""


class TokenStore(Protocol):
    """Where the client keeps its access token between runs (``state.py`` in the daemon)."""

    def load_token(self) -> CachedToken | None:
        """The saved token, or ``None`` when there is none or it cannot be read."""

    def save_token(self, token: CachedToken | None) -> None:
        """Save ``token``; ``None`` drops the saved one."""
