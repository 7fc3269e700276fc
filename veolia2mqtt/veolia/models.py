"""The API's own records and the parsers that turn raw JSON into typed values; pure.

Raw JSON enters as ``object`` and never leaves this module untyped: the series become
:mod:`veolia2mqtt.meter`'s readings, the account tree becomes :class:`Contract` records and the
billing header becomes :class:`Billing`. No personal data is kept (address, holder, customer
number). A missing required field raises :class:`VeoliaResponseError` naming the field; a row
whose date cannot be read is skipped and logged (``veolia-protocol.md`` §4, §5, §6.2).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import MAXYEAR, date
from itertools import pairwise
from typing import TYPE_CHECKING, Final

from veolia2mqtt.meter import DailyReading, Meter, MonthlyReading
from veolia2mqtt.veolia.errors import VeoliaError, VeoliaResponseError

if TYPE_CHECKING:
    from collections.abc import Iterable

_LOGGER = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN_S: Final = 3600
"""Cognito's access-token lifetime when ``ExpiresIn`` is absent (§2.2)."""

_ISO_DATE_LEN: Final = 10
_LARGEST_INT: Final = 2**53
"""A JSON integer beyond this is no reading: 10**400 would not even convert to a float."""
_DECEMBER: Final = 12


def account_key(email: str) -> str:
    """The account a cached token belongs to: sha256 hex of the lower-cased e-mail."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Contract:
    """One ``abonnements[]`` item: the contract id and its meter."""

    id_abonnement: str
    meter: Meter


@dataclass(frozen=True, slots=True)
class Billing:
    """The part of ``/facturation`` the series calls need."""

    numero_pds: str
    start: date
    """``date_debut_abonnement``: no series period ending before it is ever requested."""


@dataclass(frozen=True, slots=True)
class MeterData:
    """Everything one sync fetched for one meter, normalised (§6.2)."""

    meter: Meter
    daily: tuple[DailyReading, ...]
    monthly: tuple[MonthlyReading, ...]


@dataclass(frozen=True, slots=True)
class FailedMeter:
    """A meter whose fetch failed; the other meters of the account are still synced."""

    meter: Meter
    error: VeoliaError


@dataclass(frozen=True, slots=True)
class CognitoTokens:
    """A successful ``InitiateAuth``."""

    access_token: str = field(repr=False)
    expires_in_s: int
    refresh_token: str | None = field(default=None, repr=False)
    """Returned by a password sign-in; kept in memory only, to renew without the password."""


@dataclass(frozen=True, slots=True)
class CognitoChallenge:
    """``InitiateAuth`` answered with a challenge (SMS or e-mail code) instead of tokens."""

    name: str


def _missing(what: str, name: str, expected: str) -> VeoliaResponseError:
    return VeoliaResponseError(f"{what}: {name} is missing or not {expected}", field=name)


def _number(value: object) -> float | None:
    """A finite JSON number; ``None`` for anything else (``null``, text, booleans)."""
    # Exact types first: json.loads yields plain int and float, and every daily row needs two
    # numbers; the isinstance chain below was the largest cost of parsing (docs/performance.md).
    if type(value) is int:
        return value if -_LARGEST_INT <= value <= _LARGEST_INT else None
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value if -_LARGEST_INT <= value <= _LARGEST_INT else None
    return value if math.isfinite(value) else None


def _litres(value: object) -> float | None:
    """A volume as a number, integral floats as ``int``; ``None`` when it is not a number."""
    number = _number(value)
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: object, what: str, name: str) -> dict[str, object] | None:
    """An optional JSON object: ``None`` when absent, an error when present but not an object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _missing(what, name, "an object")
    return value


def _list(value: object, what: str, name: str) -> list[object]:
    """An optional JSON array: empty when absent, an error when present but not an array."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _missing(what, name, "an array")
    return value


def parse_auth(raw: object) -> CognitoTokens | CognitoChallenge:
    """The answer of a 200 ``InitiateAuth`` (§2.2, §2.4).

    Raises:
        VeoliaResponseError: neither tokens nor a challenge.
    """
    what = "Cognito answer"
    if not isinstance(raw, dict):
        raise _missing(what, "body", "an object")
    challenge = raw.get("ChallengeName")
    if isinstance(challenge, str) and challenge:
        return CognitoChallenge(challenge)
    result = _object(raw.get("AuthenticationResult"), what, "AuthenticationResult")
    if result is None:
        raise _missing(what, "AuthenticationResult", "an object")
    token = result.get("AccessToken")
    if not isinstance(token, str) or not token:
        raise _missing(what, "AccessToken", "a string")
    expires = _number(result.get("ExpiresIn"))
    # Below one second int() gives 0: a token never usable, so a login before every request.
    expires_in_s = int(expires) if expires is not None and expires >= 1 else DEFAULT_EXPIRES_IN_S
    refresh = result.get("RefreshToken")
    return CognitoTokens(
        access_token=token,
        expires_in_s=expires_in_s,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
    )


def cognito_error_type(raw: object, header: str | None = None) -> str | None:
    """The ``__type`` of a Cognito error body (or the ``x-amzn-ErrorType`` header), bare.

    ``"com.amazon...#NotAuthorizedException:"`` becomes ``"NotAuthorizedException"``.
    """
    value = raw.get("__type") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        value = header
    if not value:
        return None
    bare = value.rsplit("#", 1)[-1].split(":", 1)[0].strip()
    return bare or None


def cognito_error_message(raw: object) -> str | None:
    """The ``message`` of a Cognito error body, if any."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("message") or raw.get("Message")
    return value if isinstance(value, str) else None


def parse_contracts(raw: object) -> list[Contract]:
    """Every contract of ``/espace-client``: walks ``contacts[*].tiers[*].abonnements[*]``.

    A contract listed twice is kept once.

    Raises:
        VeoliaResponseError: a malformed tree or contract, or no contract at all.
    """
    what = "espace-client"
    if not isinstance(raw, dict):
        raise _missing(what, "body", "an object")
    contracts: dict[str, Contract] = {}
    for i, contact in enumerate(_list(raw.get("contacts"), what, "contacts")):
        where = f"{what} contacts[{i}]"
        if not isinstance(contact, dict):
            raise _missing(where, "contacts", "an object")
        for j, tiers in enumerate(_list(contact.get("tiers"), where, "tiers")):
            where = f"{what} contacts[{i}].tiers[{j}]"
            if not isinstance(tiers, dict):
                raise _missing(where, "tiers", "an object")
            for k, item in enumerate(_list(tiers.get("abonnements"), where, "abonnements")):
                contract = _contract(item, f"{where}.abonnements[{k}]")
                contracts.setdefault(contract.id_abonnement, contract)
    if not contracts:
        msg = "no contract found on this account"
        raise VeoliaResponseError(msg, field="abonnements")
    return list(contracts.values())


def _contract(item: object, where: str) -> Contract:
    if not isinstance(item, dict):
        raise _missing(where, "abonnements", "an object")
    ident = item.get("id_abonnement")
    if isinstance(ident, bool) or not isinstance(ident, int | str) or not str(ident).strip():
        raise _missing(where, "id_abonnement", "an integer or a string")
    number = item.get("numero_compteur")
    if not isinstance(number, str) or not number.strip():
        raise _missing(where, "numero_compteur", "a string")
    return Contract(id_abonnement=str(ident).strip(), meter=Meter(number.strip()))


def parse_billing(raw: object) -> Billing:
    """The identifiers ``/facturation`` gives to the series calls.

    Raises:
        VeoliaResponseError: ``numero_pds`` or ``date_debut_abonnement`` missing or unreadable.
    """
    what = "facturation"
    if not isinstance(raw, dict):
        raise _missing(what, "body", "an object")
    pds = raw.get("numero_pds")
    if isinstance(pds, int) and not isinstance(pds, bool):
        pds = str(pds)
    if not isinstance(pds, str) or not pds.strip():
        raise _missing(what, "numero_pds", "a string")
    start = _date(raw.get("date_debut_abonnement"))
    if start is None:
        raise _missing(what, "date_debut_abonnement", "a YYYY-MM-DD date")
    return Billing(numero_pds=pds.strip(), start=start)


_new_tuple: Final = tuple.__new__
_DATE_CACHE: Final[dict[str, date]] = {}
_DATE_CACHE_MAX: Final = 8192
"""A sync sees the same few hundred dates over and over; parsing them was a hot spot."""


def _date(value: object) -> date | None:
    """A ``YYYY-MM-DD`` date; a time part after the tenth character is dropped."""
    if type(value) is str:
        cached = _DATE_CACHE.get(value)
        if cached is not None:
            return cached
    if not isinstance(value, str) or len(value) < _ISO_DATE_LEN:
        return None
    try:
        day = date.fromisoformat(value[:_ISO_DATE_LEN])
    except ValueError:
        return None
    if len(_DATE_CACHE) >= _DATE_CACHE_MAX:
        _DATE_CACHE.clear()
    _DATE_CACHE[value] = day
    return day


def _row_day(value: object, position: int) -> date | None:
    """A daily row's ``date_releve``; ``None`` (logged: the row is skipped) when unreadable."""
    day = _DATE_CACHE.get(value) if type(value) is str else None
    if day is None:
        day = _date(value)
        if day is None:
            _LOGGER.warning(
                "journalieres: row %d has no readable date_releve (%.40r): skipped",
                position,
                value,
            )
    return day


def parse_daily(raw: object) -> list[DailyReading]:
    """The rows of one ``/journalieres`` answer, normalised (de-duplicated, sorted).

    Raises:
        VeoliaResponseError: the body is not an array, or a row's ``consommation`` or
            ``index`` is present but not an object.
    """
    what = "journalieres"
    if not isinstance(raw, list):
        raise _missing(what, "body", "an array")
    rows: list[DailyReading] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            _LOGGER.warning("%s: row %d is not an object: skipped", what, position)
            continue
        day = _row_day(item.get("date_releve"), position)
        if day is None:
            continue
        # The exact-type checks are fast paths for what json.loads yields; the helpers handle
        # (and reject) everything else. This loop dominates a sync's CPU time.
        consumption = item.get("consommation")
        if type(consumption) is not dict:
            consumption = _object(consumption, what, "consommation")
        index = item.get("index")
        if type(index) is not dict:
            index = _object(index, what, "index")
        litres = consumption.get("litre") if consumption else None
        if type(litres) is not int or not -_LARGEST_INT <= litres <= _LARGEST_INT:
            litres = _litres(litres)
        index_l = index.get("litre") if index else None
        if type(index_l) is not int or not -_LARGEST_INT <= index_l <= _LARGEST_INT:
            index_l = _litres(index_l)
        reliability = item.get("fiabilite_index")
        if type(reliability) is not str:
            reliability = None
        # tuple.__new__ builds the named tuple without the Python-level __new__ frame.
        rows.append(_new_tuple(DailyReading, (day, litres, index_l, reliability)))
    return _by_day(rows)


def _month_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    # isdigit() also accepts "²", which int() refuses; isdecimal() is exactly what int() reads.
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_monthly(raw: object) -> list[MonthlyReading]:
    """The rows of one ``/mensuelles`` answer, normalised (de-duplicated, sorted).

    Raises:
        VeoliaResponseError: the body is not an array, or a row's ``consommation`` is present
            but not an object.
    """
    what = "mensuelles"
    if not isinstance(raw, list):
        raise _missing(what, "body", "an array")
    rows: list[MonthlyReading] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            _LOGGER.warning("%s: row %d is not an object: skipped", what, position)
            continue
        year = _month_number(item.get("annee"))
        month = _month_number(item.get("mois"))
        if year is None or month is None or not 1 <= month <= _DECEMBER or not 1 <= year <= MAXYEAR:
            _LOGGER.warning(
                "%s: row %d has no readable annee/mois (%.20r/%.20r): skipped",
                what,
                position,
                item.get("annee"),
                item.get("mois"),
            )
            continue
        consumption = _object(item.get("consommation"), what, "consommation")
        m3 = _number(consumption.get("m3")) if consumption else None
        rows.append(
            MonthlyReading(
                year=year,
                month=month,
                volume_l=_litres(consumption.get("litre")) if consumption else None,
                volume_m3=None if m3 is None else float(m3),
                reliability=_text(item.get("fiabilite_conso")),
            )
        )
    return list(normalise_monthly(rows))


def _by_day(rows: list[DailyReading]) -> list[DailyReading]:
    # Veolia's rows usually come sorted and unique: checking is cheaper than rebuilding.
    if all(earlier[0] < later[0] for earlier, later in pairwise(rows)):
        return rows
    by_day = {row[0]: row for row in rows}  # row[0] is the day; indexing beats the property
    return [by_day[day] for day in sorted(by_day)]


def normalise_daily(rows: Iterable[DailyReading]) -> tuple[DailyReading, ...]:
    """One row per day (the last occurrence wins), ascending (§6.2)."""
    return tuple(_by_day(list(rows)))


def normalise_monthly(rows: Iterable[MonthlyReading]) -> tuple[MonthlyReading, ...]:
    """One row per month (the last occurrence wins), ascending (§6.2)."""
    by_month = {(row.year, row.month): row for row in rows}
    return tuple(by_month[key] for key in sorted(by_month))
