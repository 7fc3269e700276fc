"""VeoliaClient: Cognito login, token reuse and the daily fetch plan; the only ``requests`` import.

Every HTTP exchange goes through one choke point that maps library errors and status codes to
:mod:`veolia2mqtt.veolia.errors` (``veolia-protocol.md`` §2, §3, §6.6). Raw JSON is handed to
:mod:`veolia2mqtt.veolia.models` as ``object`` and comes back typed.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from datetime import UTC, date, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, Self, TypeVar
from urllib.parse import quote

import requests

from veolia2mqtt.errors import StateError
from veolia2mqtt.meter import latest_with_data
from veolia2mqtt.tokens import CachedToken, TokenStore
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
    CognitoChallenge,
    CognitoTokens,
    Contract,
    FailedMeter,
    MeterData,
    account_key,
    cognito_error_message,
    cognito_error_type,
    normalise_daily,
    normalise_monthly,
    parse_auth,
    parse_billing,
    parse_contracts,
    parse_daily,
    parse_monthly,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from pydantic import SecretStr

    from veolia2mqtt.meter import DailyReading, MonthlyReading
    from veolia2mqtt.veolia.portals import Endpoints

__all__ = ["CachedToken", "FailedMeter", "MeterData", "TokenStore", "VeoliaClient"]

_LOGGER = logging.getLogger(__name__)

_T = TypeVar("_T")

USER_AGENT: Final = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/140.0.0.0 Safari/537.36"
)
TYPE_FRONT: Final = "WEB_ORDINATEUR"
MAX_RETRIES: Final = 3
"""Retries after the first attempt for a transient failure (§6.6)."""
BACKOFF_BASE_S: Final = 1.0
JITTER: Final = 0.5
MAX_RETRY_AFTER_S: Final = 60.0
"""A ``Retry-After`` longer than this gives up at once: the next sync will try again."""
TOKEN_MARGIN_S: Final = 60.0
"""A token is not used in its last minute, so it cannot expire between check and use."""
RECENT_DAYS: Final = 3
"""The previous month is fetched while it may still hold the latest row (§6.4)."""

_COGNITO_TARGET: Final = "AWSCognitoIdentityProviderService.InitiateAuth"
_CREDENTIALS_REFUSED: Final = frozenset(
    {
        "NotAuthorizedException",
        "UserNotFoundException",
        "PasswordResetRequiredException",
        "UserNotConfirmedException",
    }
)
_THROTTLED: Final = frozenset({"TooManyRequestsException"})
_DECEMBER: Final = 12
_HTTP_OK: Final = 200
_HTTP_NO_CONTENT: Final = 204
_HTTP_REDIRECT: Final = range(300, 400)
_HTTP_CLIENT_ERROR: Final = 400
_HTTP_TOO_MANY: Final = 429
_HTTP_SERVER_ERROR: Final = 500
_TOKEN_REFUSED: Final = frozenset({401, 403})
_MAX_SERVER_TEXT: Final = 200
_HIDDEN: Final = "***"


class _TokenRefusedError(Exception):
    """The backend refused the bearer token (401/403); handled by one forced re-login."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"HTTP {status_code}")


class VeoliaClient:
    """The Veolia "Eau" web API: Cognito login, account discovery, daily and monthly series.

    Nothing is sent before the first call. The access token is reused until one minute before it
    expires and is saved through ``token_store`` so that a restart does not log in again. The
    password and the refresh token are never stored, logged or put in an error message.

    Args:
        endpoints: the portal's client id, Cognito URL and backend URL.
        email: the account e-mail (Cognito ``USERNAME``).
        password: the account password; unused when ``refresh_token`` is given.
        refresh_token: switches the login to ``REFRESH_TOKEN_AUTH`` (challenged accounts).
        timeout_s: connect and read timeout of every request.
        token_store: where the access token survives restarts.
        session: an HTTP session to use; by default the client creates and closes its own.
        sleep: waits between retries (injected so tests never sleep).
        clock: the current time in UTC epoch seconds.
        rng: a float in [0, 1) for the backoff jitter.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        email: str,
        password: SecretStr | None,
        refresh_token: SecretStr | None = None,
        timeout_s: float = 15,
        token_store: TokenStore | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._endpoints = endpoints
        self._email = email
        self._account = account_key(email)
        self._password = password
        self._refresh_token = refresh_token
        self._timeout_s = timeout_s
        self._store = token_store
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._token: CachedToken | None = None
        self._session_refresh: str | None = None
        self._store_read = False
        self.login_count = 0
        """Cognito sign-ins attempted (a reused token counts none)."""
        self.request_count = 0
        """HTTP requests sent, Cognito and retries included."""

    def __repr__(self) -> str:
        """The portal only: never the account or a secret."""
        return f"VeoliaClient(portal={self._endpoints.portal!r})"

    def __enter__(self) -> Self:
        """The client itself; :meth:`close` runs on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the HTTP session if the client created it."""
        self.close()

    def close(self) -> None:
        """Close the HTTP session if the client created it; the client stays usable."""
        if self._owns_session and self._session is not None:
            self._session.close()
            self._session = None

    # -- login and token -------------------------------------------------------------------

    def login(self, *, force: bool = False) -> None:
        """Make sure a valid access token is at hand, signing in to Cognito only if needed.

        Args:
            force: sign in even when a cached token looks valid.

        Raises:
            VeoliaAuthError: the credentials or the refresh token were refused.
            VeoliaChallengeError: Cognito asks for a verification code.
            VeoliaConnectionError: Cognito could not be reached after the retries.
            VeoliaResponseError: Cognito rejected the request itself (client id, parameters).
        """
        if not force and self._valid_token() is not None:
            return
        token = self._sign_in()
        self._token = token
        self._save(token)

    def _valid_token(self) -> CachedToken | None:
        if self._token is None and not self._store_read and self._store is not None:
            self._store_read = True
            try:
                cached = self._store.load_token()
            except StateError as err:
                _LOGGER.warning("Cannot read the cached Veolia token: %s", err)
                cached = None
            if cached is not None and self._usable(cached):
                _LOGGER.debug("Reusing the cached Veolia token")
                self._token = cached
            elif cached is not None:
                _LOGGER.debug("Cached Veolia token ignored: expired or for another account")
        if self._token is not None and not self._usable(self._token):
            self._token = None
        return self._token

    def _usable(self, token: CachedToken) -> bool:
        return (
            token.account == self._account
            and token.client_id == self._endpoints.client_id
            and token.auth_url == self._endpoints.auth_url
            and self._clock() < token.expires_at - TOKEN_MARGIN_S
        )

    def _save(self, token: CachedToken | None) -> None:
        if self._store is None:
            return
        try:
            self._store.save_token(token)
        except StateError as err:
            # The sync itself can go on; only the reuse after a restart is lost.
            _LOGGER.warning("Cannot save the Veolia token: %s", err)

    def _drop_token(self) -> None:
        self._token = None
        self._save(None)

    def _sign_in(self) -> CachedToken:
        if self._refresh_token is None and self._session_refresh is not None:
            # Hourly catch-ups outlive the one-hour access token: renewing with the refresh token
            # of this process's password sign-in keeps the password off the wire (lockouts).
            try:
                return self._initiate(
                    "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": self._session_refresh}
                )
            except VeoliaAuthError:
                _LOGGER.info("The session's refresh token was refused: signing in again")
                self._session_refresh = None
        if self._refresh_token is not None:
            return self._initiate(
                "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": self._refresh_token.get_secret_value()}
            )
        if self._password is None:
            msg = "no password configured: set veolia.password (or veolia.refresh_token)"
            raise VeoliaAuthError(msg)
        return self._initiate(
            "USER_PASSWORD_AUTH",
            {"USERNAME": self._email, "PASSWORD": self._password.get_secret_value()},
        )

    def _initiate(self, flow: str, parameters: dict[str, str]) -> CachedToken:
        """One ``InitiateAuth`` (with the transient retries) turned into a cached token."""
        body = json.dumps(
            {"ClientId": self._endpoints.client_id, "AuthFlow": flow, "AuthParameters": parameters}
        ).encode("utf-8")
        self.login_count += 1
        _LOGGER.info("Logging in to Veolia (%s, %s)", self._endpoints.portal, flow)
        issued_at = self._clock()
        result = self._with_retries("cognito", lambda: self._cognito_attempt(body, flow))
        if isinstance(result, CognitoChallenge):
            portal = self._endpoints.portal_url.rstrip("/")
            msg = (
                f"Veolia asks for a verification code: log in once in a browser at {portal}, "
                f"enter the code, then retry (Cognito challenge {result.name}; "
                "or configure veolia.refresh_token)"
            )
            raise VeoliaChallengeError(msg, challenge_name=result.name)
        if flow == "USER_PASSWORD_AUTH":
            self._session_refresh = result.refresh_token
        _LOGGER.info("Logged in to Veolia; token valid for %d s", result.expires_in_s)
        return CachedToken(
            access_token=result.access_token,
            expires_at=issued_at + result.expires_in_s,
            client_id=self._endpoints.client_id,
            auth_url=self._endpoints.auth_url,
            account=self._account,
        )

    def _cognito_attempt(self, body: bytes, flow: str) -> CognitoTokens | CognitoChallenge:
        route = "cognito"
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": _COGNITO_TARGET,
            "Accept": "*/*",
            "User-Agent": USER_AGENT,
        }
        response = self._exchange(route, "POST", self._endpoints.auth_url, headers, data=body)
        status = response.status_code
        if status == _HTTP_OK:
            return parse_auth(self._json(route, response))
        self._raise_transient(route, response)
        try:
            raw: object = json.loads(response.content)
        except (ValueError, RecursionError):
            raw = None
        error_type = cognito_error_type(raw, response.headers.get("x-amzn-ErrorType"))
        detail = self._scrub(cognito_error_message(raw) or "")
        said = ": ".join(part for part in (error_type, detail) if part) or "no error type"
        if error_type in _THROTTLED:
            msg = f"{route}: Cognito is throttling logins ({said})"
            raise VeoliaRateLimitedError(msg, retry_after_s=None)
        if error_type in _CREDENTIALS_REFUSED:
            if flow == "REFRESH_TOKEN_AUTH":
                msg = (
                    f"Veolia refused the refresh token ({said}): it has expired or is invalid; "
                    "get a new refresh token and set it in veolia.refresh_token"
                )
            else:
                msg = (
                    f"Veolia refused the credentials ({said}): check veolia.email and "
                    "veolia.password; no new attempt before the next sync"
                )
            raise VeoliaAuthError(msg, error_type=error_type)
        msg = (
            f"{route}: Cognito rejected the request (HTTP {status}, {said}): "
            "check veolia.portal / veolia.client_id / veolia.auth_url"
        )
        raise VeoliaResponseError(msg, status_code=status)

    # -- backend -----------------------------------------------------------------------------

    def _get(self, route: str, path: str, params: Mapping[str, str | int] | None = None) -> object:
        """A backend GET with the token; a refused token gets one forced re-login."""
        self.login()
        try:
            return self._with_retries(route, lambda: self._backend_attempt(route, path, params))
        except _TokenRefusedError as refused:
            _LOGGER.info(
                "%s: token refused (HTTP %d): logging in again", route, refused.status_code
            )
        self._drop_token()
        self.login(force=True)
        try:
            return self._with_retries(route, lambda: self._backend_attempt(route, path, params))
        except _TokenRefusedError as refused:
            self._drop_token()
            msg = f"{route}: the backend refused a fresh token (HTTP {refused.status_code})"
            raise VeoliaResponseError(msg, status_code=refused.status_code) from None

    def _backend_attempt(
        self, route: str, path: str, params: Mapping[str, str | int] | None
    ) -> object:
        token = self._token
        if token is None:  # login() just ran; a request never leaves without a token
            raise _TokenRefusedError(401)
        headers = {
            "Authorization": f"Bearer {token.access_token}",
            "Accept": "*/*",
            "User-Agent": USER_AGENT,
        }
        url = f"{self._endpoints.api_url}{path}"
        response = self._exchange(route, "GET", url, headers, params=params)
        status = response.status_code
        if status in _TOKEN_REFUSED:
            raise _TokenRefusedError(status)
        self._raise_transient(route, response)
        if status == _HTTP_NO_CONTENT:
            msg = f"{route}: no content (HTTP 204)"
            raise VeoliaResponseError(msg, status_code=status)
        return self._json(route, response)

    # -- the HTTP choke point ----------------------------------------------------------------

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def _exchange(
        self,
        route: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, str | int] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        """One HTTP attempt; library errors become :class:`VeoliaConnectionError`."""
        self.request_count += 1
        try:
            response = self._http().request(
                method,
                url,
                headers=dict(headers),
                params=dict(params) if params else None,
                data=data,
                timeout=(self._timeout_s, self._timeout_s),
                allow_redirects=False,
            )
        except requests.Timeout as err:
            msg = f"{route}: no answer in {self._timeout_s:g} s"
            raise VeoliaConnectionError(msg) from err
        except requests.RequestException as err:
            msg = f"{route}: connection failed ({type(err).__name__})"
            raise VeoliaConnectionError(msg) from err
        _LOGGER.debug(
            "%s %s: HTTP %d (request id %s)",
            method,
            route,
            response.status_code,
            response.headers.get("x-amzn-RequestId", "-"),
        )
        return response

    def _raise_transient(self, route: str, response: requests.Response) -> None:
        """Raise for the statuses that are retried: 3xx, 429, 5xx; 400/404 for the backend."""
        status = response.status_code
        if status == _HTTP_TOO_MANY:
            retry_after_s = _retry_after(response.headers.get("Retry-After"), self._clock())
            hint = "" if retry_after_s is None else f", retry after {retry_after_s:g} s"
            msg = f"{route}: rate limited (HTTP 429{hint})"
            raise VeoliaRateLimitedError(msg, retry_after_s=retry_after_s)
        if status >= _HTTP_SERVER_ERROR:
            msg = f"{route}: server error (HTTP {status})"
            raise VeoliaConnectionError(msg, status_code=status)
        if status in _HTTP_REDIRECT:
            msg = f"{route}: unexpected redirect (HTTP {status})"
            raise VeoliaConnectionError(msg, status_code=status)
        if route != "cognito" and status >= _HTTP_CLIENT_ERROR:
            msg = f"{route}: request refused (HTTP {status})"
            raise VeoliaResponseError(msg, status_code=status)

    @staticmethod
    def _json(route: str, response: requests.Response) -> object:
        """The body as JSON whatever the content type says; HTML or bad JSON is transient."""
        status = response.status_code
        content_type = response.headers.get("Content-Type", "").lower()
        if "html" in content_type or response.content.lstrip()[:1] == b"<":
            msg = f"{route}: an HTML page instead of JSON (maintenance?), HTTP {status}"
            raise VeoliaConnectionError(msg, status_code=status)
        try:
            value: object = json.loads(response.content)
        # RecursionError: arrays nested thousands deep are valid JSON that json cannot read.
        except (ValueError, RecursionError) as err:
            msg = f"{route}: malformed JSON ({len(response.content)} bytes), HTTP {status}"
            raise VeoliaConnectionError(msg, status_code=status) from err
        return value

    def _with_retries(self, route: str, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt``, retrying transient failures with backoff (§6.6)."""
        retries = 0
        while True:
            try:
                return attempt()
            except VeoliaConnectionError as err:
                if retries >= MAX_RETRIES:
                    _LOGGER.warning("%s: giving up after %d retries: %s", route, retries, err)
                    raise
                delay_s = self._delay_s(route, err, retries)
                retries += 1
                _LOGGER.info(
                    "%s: %s; retry %d/%d in %.1f s", route, err, retries, MAX_RETRIES, delay_s
                )
                self._sleep(delay_s)

    def _delay_s(self, route: str, err: VeoliaConnectionError, retries: int) -> float:
        if isinstance(err, VeoliaRateLimitedError) and err.retry_after_s is not None:
            if err.retry_after_s > MAX_RETRY_AFTER_S:
                _LOGGER.warning(
                    "%s: asked to wait %g s (more than %g s): giving up until the next sync",
                    route,
                    err.retry_after_s,
                    MAX_RETRY_AFTER_S,
                )
                raise err
            return err.retry_after_s
        base_s = BACKOFF_BASE_S * 2.0**retries
        return base_s * (1 - JITTER + 2 * JITTER * self._rng())

    def _scrub(self, text: str) -> str:
        """Server text without any secret of ours, shortened."""
        secrets = [self._email, self._email.lower()]
        if self._password is not None:
            secrets.append(self._password.get_secret_value())
        if self._refresh_token is not None:
            secrets.append(self._refresh_token.get_secret_value())
        if self._token is not None:
            secrets.append(self._token.access_token)
        if self._session_refresh is not None:
            secrets.append(self._session_refresh)
        for secret in secrets:
            if secret:
                text = text.replace(secret, _HIDDEN)
        return text[:_MAX_SERVER_TEXT]

    # -- data ----------------------------------------------------------------------------------

    def contracts(self) -> list[Contract]:
        """Every contract of the account (``/espace-client``).

        Raises:
            VeoliaResponseError: no contract found on this account, or a malformed tree.
        """
        contracts = parse_contracts(
            self._get("espace-client", "/espace-client", {"type-front": TYPE_FRONT})
        )
        _LOGGER.info(
            "Veolia account has %d contract(s): meter(s) %s",
            len(contracts),
            ", ".join(contract.meter.number for contract in contracts),
        )
        return contracts

    def billing(self, contract: Contract) -> Billing:
        """The service point and start date of ``contract`` (``/facturation``)."""
        path = f"/abonnements/{quote(contract.id_abonnement, safe='')}/facturation"
        return parse_billing(self._get("facturation", path))

    def daily(
        self, contract: Contract, billing: Billing, year: int, month: int
    ) -> list[DailyReading]:
        """The daily rows of one month; ``[]`` without a request for a month before the start."""
        if _month_end(year, month) < billing.start:
            return []
        params: dict[str, str | int] = {
            "annee": year,
            "mois": month,
            "numero-pds": billing.numero_pds,
            "date-debut-abonnement": billing.start.isoformat(),
        }
        path = f"/consommations/{quote(contract.id_abonnement, safe='')}/journalieres"
        return parse_daily(self._get("journalieres", path, params))

    def monthly(self, contract: Contract, billing: Billing, year: int) -> list[MonthlyReading]:
        """The monthly rows of one year; ``[]`` without a request for a year before the start."""
        if date(year, _DECEMBER, 31) < billing.start:
            return []
        params: dict[str, str | int] = {
            "annee": year,
            "numero-pds": billing.numero_pds,
            "date-debut-abonnement": billing.start.isoformat(),
        }
        path = f"/consommations/{quote(contract.id_abonnement, safe='')}/mensuelles"
        return parse_monthly(self._get("mensuelles", path, params))

    def fetch_meter(self, contract: Contract, *, today: date) -> MeterData:
        """Billing and the series one daily sync needs, following the fetch plan of §6.4.

        The current month always; the previous month too on the first days of a month or when
        the current month has no row with data from the last few days; the current year of
        monthly rows, and in January the previous year too.
        """
        billing = self.billing(contract)
        current = self.daily(contract, billing, today.year, today.month)
        latest = latest_with_data(current, today=today)
        previous: list[DailyReading] = []
        if (
            today.day <= RECENT_DAYS
            or latest is None
            or latest.day < today - timedelta(days=RECENT_DAYS)
        ):
            year, month = (
                (today.year, today.month - 1) if today.month > 1 else (today.year - 1, _DECEMBER)
            )
            previous = self.daily(contract, billing, year, month)
        years = [today.year - 1, today.year] if today.month == 1 else [today.year]
        monthly = [row for year in years for row in self.monthly(contract, billing, year)]
        return MeterData(
            meter=contract.meter,
            daily=normalise_daily([*previous, *current]),
            monthly=normalise_monthly(monthly),
        )

    def fetch_all(self, *, today: date) -> list[MeterData | FailedMeter]:
        """Every contract's data; one contract's failure does not stop the others.

        Raises:
            VeoliaAuthError: the login was refused (the whole sync stops at once).
            VeoliaError: the account tree could not be read.
        """
        results: list[MeterData | FailedMeter] = []
        for contract in self.contracts():
            try:
                results.append(self.fetch_meter(contract, today=today))
            except VeoliaAuthError:
                raise
            except VeoliaError as err:
                # Returned, not logged: the caller logs it once with the rest of the sync.
                results.append(FailedMeter(meter=contract.meter, error=err))
        return results


def _month_end(year: int, month: int) -> date:
    first_of_next = date(year + 1, 1, 1) if month == _DECEMBER else date(year, month + 1, 1)
    return first_of_next - timedelta(days=1)


def _retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds from now (seconds or an HTTP date); ``None`` if unreadable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if not math.isnan(seconds) else None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
