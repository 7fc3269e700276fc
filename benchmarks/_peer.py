"""The peer: PyPI ``veolia-api-foxace`` (module ``veolia_api``, aiohttp), pointed at a simulator.

Its Cognito URL (``veolia_api.veolia_api.LOGIN_URL``) and its portal table
(``veolia_api.portals.VEOLIA_PORTALS``) are patched for the duration of :func:`pointed_at`, as
``tests/veolia/test_peer.py`` does. The peer reads only the first contract of an account.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import date

    from veolia2mqtt.veolia.simulator import Simulator


def available() -> bool:
    try:
        import veolia_api.veolia_api  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def pointed_at(sim: Simulator) -> Iterator[None]:
    """Point the peer's Cognito URL and default portal at ``sim``; restore them after."""
    from veolia_api import portals, veolia_api  # noqa: PLC0415

    portal = "eau.veolia.fr"
    old_login, old_portal = veolia_api.LOGIN_URL, portals.VEOLIA_PORTALS[portal]  # type: ignore[attr-defined]
    # The peer imports LOGIN_URL into its module namespace without re-exporting it.
    veolia_api.LOGIN_URL = sim.auth_url  # type: ignore[attr-defined]
    portals.VEOLIA_PORTALS[portal] = portals.VeoliaPortal(
        client_id=sim.scenario.client_id, backend_url=sim.api_url.rstrip("/")
    )
    try:
        yield
    finally:
        veolia_api.LOGIN_URL = old_login  # type: ignore[attr-defined]
        portals.VEOLIA_PORTALS[portal] = old_portal


class PeerSession:
    """One peer client object kept alive across calls, like its Home Assistant integration.

    ``age_token(seconds)`` moves the peer's token expiry back to model simulated time: the
    peer reads the real clock (``datetime.now``) to decide whether its token is still valid.
    """

    def __init__(self, sim: Simulator) -> None:
        from veolia_api.veolia_api import VeoliaAPI  # noqa: PLC0415

        self._loop = asyncio.new_event_loop()
        self._api: Any = VeoliaAPI(sim.scenario.email, sim.scenario.password)

    def login_and_fetch(self, start: date, end: date) -> None:
        """What the integration does at start: ``login()`` then ``fetch_all_data``."""

        async def run() -> None:
            await self._api.login()
            await self._api.fetch_all_data(start, end)

        self._loop.run_until_complete(run())

    def fetch(self, start: date, end: date) -> None:
        """A later refresh in the same process: ``fetch_all_data`` (re-logs in if expired)."""
        self._loop.run_until_complete(self._api.fetch_all_data(start, end))

    def age_token(self, seconds: float) -> None:
        self._api.account_data.token_expiration -= seconds

    def close(self) -> None:
        self._loop.run_until_complete(self._api.close())
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
