"""The portal table of ``veolia-protocol.md`` §1: which Cognito app and backend each portal uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_PORTAL: Final = "eau.veolia.fr"
COGNITO_URL: Final = "https://cognito-idp.eu-west-3.amazonaws.com"
_SIRIUS: Final = "https://prd-ael-sirius-backend.istefr.fr"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one portal's account logs in and reads its data."""

    portal: str
    client_id: str
    auth_url: str
    api_url: str

    @property
    def portal_url(self) -> str:
        """The customer site, for links shown to the user."""
        host = "www.eau.veolia.fr" if self.portal == DEFAULT_PORTAL else self.portal
        return f"https://{host}/"


PORTALS: Final[dict[str, tuple[str, str]]] = {
    "eau.veolia.fr": ("3kghade1fg54739kj8pkbova8j", _SIRIUS),
    "eaudetm.monespace.eau.veolia.fr": ("19bjc8ldefie683n889iiubjc8", _SIRIUS),
    "atlantic-eau.monespace.eau.veolia.fr": ("91a3v5b3pef8cjbb3s0pdrnm2", _SIRIUS),
    "www.ea-pm.fr": ("54e8dri103e65defj6p67eolli", "https://prd-ael-sirius-pmm-backend.istefr.fr"),
}


def resolve_portal(
    portal: str,
    *,
    client_id: str | None = None,
    auth_url: str | None = None,
    api_url: str | None = None,
) -> Endpoints:
    """The endpoints of ``portal``, with the explicit overrides applied.

    Raises:
        ValueError: the portal is not in the table and ``client_id`` and ``api_url`` are not
            both given.
    """
    host = portal.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    known = PORTALS.get(host) or PORTALS.get(host.removeprefix("www."))
    if known is None and (client_id is None or api_url is None):
        choices = ", ".join(PORTALS)
        msg = f"unknown portal {host!r}: use one of {choices}, or set client_id and api_url"
        raise ValueError(msg)
    default_client, default_api = known or ("", "")
    return Endpoints(
        portal=host,
        client_id=client_id or default_client,
        auth_url=(auth_url or COGNITO_URL).rstrip("/"),
        api_url=(api_url or default_api).rstrip("/"),
    )
