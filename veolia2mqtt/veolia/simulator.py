"""A deterministic stand-in for Veolia's Cognito pool and backend (``veolia-protocol.md`` §7).

One core, :meth:`Simulator.handle`, answers any request of the protocol, whatever host it was sent
to: Cognito calls are ``POST /`` told apart by ``X-Amz-Target``, backend and refcommunes calls by
their paths. Two front ends feed it: a loopback HTTP server (:meth:`Simulator.start`, for ``--demo``
and end-to-end tests) and a ``requests`` transport adapter (:meth:`Simulator.adapter`, no sockets).

The data is generated from a :class:`Scenario`: daily litres come from a stable hash of
(seed, contract, date), so the same scenario always serves the same series. Tests inject faults
(:meth:`Simulator.fail`), move the clock, and read the counters, the request log and the truth
helpers (:meth:`Simulator.expected_latest`, :meth:`Simulator.expected_billed_m3`).
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import hashlib
import io
import json
import logging
import re
import secrets
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Final, Literal, Self, cast
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    import requests

__all__ = [
    "FAULTS",
    "ROUTE_KEYS",
    "ContractSpec",
    "LoggedRequest",
    "MissingTimeoutError",
    "Scenario",
    "Simulator",
]

_LOGGER = logging.getLogger(__name__)

Nesting = Literal["abonnements", "tiers", "contacts", "mixed"]
"""How ``espace-client`` nests the contracts; ``mixed`` puts 3 per tiers and 3 tiers per contact."""
IndexConvention = Literal["start_of_day", "end_of_day"]

ROUTE_KEYS: Final = (
    "cognito:USER_PASSWORD_AUTH",
    "cognito:REFRESH_TOKEN_AUTH",
    "cognito:RespondToAuthChallenge",
    "espace-client",
    "facturation",
    "journalieres",
    "mensuelles",
    "alertes",
    "plan",
    "communes-nationales",
)
"""The per-route counter keys of §7.6, in the order :meth:`Simulator.stats` returns them."""

FAULTS: Final = frozenset(
    {
        "wrong_password",
        "unknown_user",
        "password_attempts_exceeded",
        "cognito_throttled",
        "challenge",
        "token_expired",
        "rate_limited",
        "http_500",
        "http_502",
        "slow",
        "maintenance_html",
        "malformed_json",
        "empty",
        "duplicate_day",
        "decreasing_index",
    }
)
"""The fault names of §7.5 accepted by :meth:`Simulator.fail`."""

_AMZ_JSON: Final = "application/x-amz-json-1.1"
_JSON: Final = "application/json"
_HTML: Final = "text/html; charset=utf-8"
_TARGET_PREFIX: Final = "AWSCognitoIdentityProviderService."
_PASSWORD_FLOW: Final = "USER_PASSWORD_AUTH"  # noqa: S105 - an AuthFlow name, not a password
_REFRESH_FLOW: Final = "REFRESH_TOKEN_AUTH"
_TYPE_FRONT: Final = "WEB_ORDINATEUR"
_MALFORMED_BODY: Final = b'[{"date_releve": "2026-06-01",'
_MAINTENANCE_BODY: Final = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    b"<body><h1>Site en cours de maintenance</h1></body></html>"
)
_GATEWAY_BODY: Final = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
_HASH_SCALE: Final = float(1 << 64)
_POLL_S: Final = 0.05
_DEFAULT_DELAY_S: Final = 20.0
"""A ``slow`` fault's default delay: beyond the client's 15 s timeout."""
_JOIN_TIMEOUT_S: Final = 5.0

_COGNITO_LOGIN: Final = frozenset({"cognito:USER_PASSWORD_AUTH", "cognito:REFRESH_TOKEN_AUTH"})
_COGNITO_ROUTES: Final = frozenset(k for k in ROUTE_KEYS if k.startswith("cognito:"))
_AUTH_ROUTES: Final = frozenset(
    {"espace-client", "facturation", "journalieres", "mensuelles", "alertes", "plan"}
)
_POST_FAULTS: Final = frozenset({"empty", "duplicate_day", "decreasing_index"})
"""Faults that reshape a successful answer rather than replace it."""
_FAULT_ROUTES: Final[dict[str, frozenset[str] | None]] = {
    "wrong_password": _COGNITO_LOGIN,
    "unknown_user": _COGNITO_LOGIN,
    "password_attempts_exceeded": _COGNITO_LOGIN,
    "cognito_throttled": _COGNITO_ROUTES,
    "challenge": frozenset({"cognito:USER_PASSWORD_AUTH"}),
    "token_expired": _AUTH_ROUTES,
    "empty": frozenset({"espace-client", "journalieres", "mensuelles", "communes-nationales"}),
    "duplicate_day": frozenset({"journalieres", "mensuelles"}),
    "decreasing_index": frozenset({"journalieres"}),
}
"""Where each fault can apply; a fault not listed applies to every route."""
_FAULT_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "challenge": frozenset({"challenge_name"}),
    "rate_limited": frozenset({"retry_after"}),
    "slow": frozenset({"delay_s"}),
    "http_502": frozenset({"body"}),
    "decreasing_index": frozenset({"amount_l"}),
}
_OPTION_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "challenge_name": lambda v: v in {"SMS_MFA", "EMAIL_OTP"},
    "retry_after": lambda v: v is None or (isinstance(v, str | int) and not isinstance(v, bool)),
    "delay_s": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
    "body": lambda v: v in {"html", "empty"},
    "amount_l": lambda v: isinstance(v, int) and not isinstance(v, bool),
}
_FAULTS_WITH_STATUS: Final = frozenset({"token_expired", "maintenance_html"})

_ROUTE_PATTERNS: Final = (
    (re.compile(r"/espace-client"), "espace-client"),
    (re.compile(r"/abonnements/(?P<id>[^/]+)/facturation"), "facturation"),
    (re.compile(r"/abonnements/(?P<id>[^/]+)/facturation/mensualisation/plan"), "plan"),
    (re.compile(r"/consommations/(?P<id>[^/]+)/journalieres"), "journalieres"),
    (re.compile(r"/consommations/(?P<id>[^/]+)/mensuelles"), "mensuelles"),
    (re.compile(r"/alertes/(?P<pds>[^/]+)"), "alertes"),
    (re.compile(r"/communes-nationales"), "communes-nationales"),
)
_YEAR_RE: Final = re.compile(r"\d{4}")
_MONTH_RE: Final = re.compile(r"\d{1,2}")

_COMMUNES: Final = (
    {
        "numero_commune": 34172,
        "numero_quartier": 0,
        "libelle": "MONTPELLIER",
        "code_insee": "34172",
        "code_postal": "34000",
        "url_redirection": "https://www.eau.veolia.fr/",
        "type_commune": "NON_REDIRIGE",
    },
    {
        "numero_commune": 42904,
        "numero_quartier": 0,
        "libelle": "PIBRAC",
        "code_insee": "31417",
        "code_postal": "31820",
        "url_redirection": "https://eaudetm.monespace.eau.veolia.fr?numero_commune=42904&numero_quartier=0",
        "type_commune": "REDIRIGE",
    },
    {
        "numero_commune": 29019,
        "numero_quartier": 0,
        "libelle": "BREST",
        "code_insee": "29019",
        "code_postal": "29200",
        "url_redirection": "",
        "type_commune": "NON_DESSERVIE",
    },
    {
        "numero_commune": 66136,
        "numero_quartier": 0,
        "libelle": "PERPIGNAN",
        "code_insee": "66136",
        "code_postal": "66000",
        "url_redirection": "https://www.ea-pm.fr?numero_commune=66136&numero_quartier=0",
        "type_commune": "EN_MAINTENANCE",
    },
)
"""The small refcommunes table: one town per ``type_commune``."""


class MissingTimeoutError(AssertionError):
    """A request reached the ``requests`` adapter without a timeout (style rule 5)."""


class _AbandonedError(Exception):
    """The caller gave up during a ``slow`` fault: no answer is sent."""


@dataclass(frozen=True)
class ContractSpec:
    """One contract of the simulated account and how its data is generated (§7.4)."""

    id_abonnement: int
    numero_compteur: str
    numero_pds: str
    date_debut_abonnement: date
    start_index_l: int = 500_000
    mean_daily_l: int = 150
    lag_days: int = 2
    """Rows exist up to today minus this many days (at least one: never a row for today)."""
    telemetry: bool = True
    """``False``: every series is ``[]``, like a meter without remote reading."""
    estimated_runs: tuple[tuple[date, date], ...] = ()
    """Inclusive date ranges whose rows are flagged ``ESTIME``."""
    gaps: tuple[date, ...] = ()
    """Days whose row is omitted; their litres still count."""
    replaced_on: date | None = None
    """The meter is replaced under the same serial: from this day the index restarts."""
    replacement_index_l: int = 0
    """The new meter's index on ``replaced_on`` (start of day), e.g. a few litres."""
    alerts: bool = True
    """``False``: ``/alertes`` answers 204."""
    payment_plan: bool = True
    """``False``: the ``mensualisation/plan`` answers 204."""
    adresse_de_branchement: str = "12 RUE DES LILAS 34000 MONTPELLIER"
    emplacement_compteur: str = "REGARD EXTERIEUR"
    libelle_contrat: str = "EAU POTABLE ET ASSAINISSEMENT"
    statut: str = "ACTIF"

    def __post_init__(self) -> None:
        """Reject settings that cannot generate a series."""
        if (
            self.mean_daily_l < 0
            or self.start_index_l < 0
            or self.lag_days < 0
            or self.replacement_index_l < 0
        ):
            msg = f"contract {self.id_abonnement}: negative litres or lag"
            raise ValueError(msg)
        for first, last in self.estimated_runs:
            if last < first:
                msg = f"contract {self.id_abonnement}: estimated run ends before it starts"
                raise ValueError(msg)


_HOUSE: Final = ContractSpec(
    id_abonnement=4718203,
    numero_compteur="I19FA051732",
    numero_pds="003KQZ7",
    date_debut_abonnement=date(2019, 3, 14),
)
_GARDEN: Final = ContractSpec(
    id_abonnement=4718204,
    numero_compteur="I21FA104733",
    numero_pds="003KQZ8",
    date_debut_abonnement=date(2021, 5, 3),
    start_index_l=120_000,
    mean_daily_l=60,
    emplacement_compteur="JARDIN",
    libelle_contrat="EAU POTABLE ARROSAGE",
)


def _paris_today() -> date:
    return datetime.now(ZoneInfo("Europe/Paris")).date()


@dataclass(frozen=True)
class Scenario:
    """The simulated account: credentials, contracts, data settings and server behaviour."""

    email: str = field(default="jean.dupont@example.fr", repr=False)
    password: str = field(default="s3cret!", repr=False)
    client_id: str = "3kghade1fg54739kj8pkbova8j"
    contracts: tuple[ContractSpec, ...] = (_HOUSE, _GARDEN)
    nesting: Nesting = "abonnements"
    seed: int = 0
    today: date | None = None
    """The fixed "today" (at 12:00) when no clock is injected; ``None``: the real date."""
    timezone: str = "Europe/Paris"
    token_lifetime_s: int = 3600
    expired_status: int = 401
    """401 or 403: what the backend answers an expired, revoked or unknown token."""
    accept_any_credentials: bool = False
    """Any e-mail, password, refresh token and client id is accepted (``--demo``)."""
    index_convention: IndexConvention = "start_of_day"
    refresh_token: str = field(
        default="eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0.c2ltdWxhdGVkLXJlZnJlc2g.opaque",
        repr=False,
    )
    """The refresh token REFRESH_TOKEN_AUTH accepts, returned by every password login."""
    challenge_code: str = "123456"
    """The code RespondToAuthChallenge accepts."""

    def __post_init__(self) -> None:
        """Reject inconsistent scenarios early, with a readable message."""
        ids = [c.id_abonnement for c in self.contracts]
        meters = [c.numero_compteur for c in self.contracts]
        if len(set(ids)) != len(ids) or len(set(meters)) != len(meters):
            msg = "contract ids and meter numbers must be unique"
            raise ValueError(msg)
        if self.expired_status not in {401, 403}:
            msg = "expired_status must be 401 or 403"
            raise ValueError(msg)
        if self.token_lifetime_s <= 0:
            msg = "token_lifetime_s must be positive"
            raise ValueError(msg)
        ZoneInfo(self.timezone)

    @classmethod
    def demo(cls, today: date | None = None) -> Scenario:
        """The ``--demo`` account (§7.1): the two meters of §4.1, lag 2 days, any credentials.

        The house meter has an estimated run (today - 6, today - 5) and a gap (today - 3), the
        shape of the §4.3 sample.
        """
        ref = today or _paris_today()
        house = replace(
            _HOUSE,
            estimated_runs=((ref - timedelta(days=6), ref - timedelta(days=5)),),
            gaps=(ref - timedelta(days=3),),
        )
        return cls(contracts=(house, _GARDEN), today=today, accept_any_credentials=True)

    @classmethod
    def many(
        cls, n: int, *, today: date | None = None, nesting: Nesting = "mixed", seed: int = 0
    ) -> Scenario:
        """An account with ``n`` contracts of about three years each, for benchmarks."""
        if n < 1:
            msg = "n must be at least 1"
            raise ValueError(msg)
        ref = today or _paris_today()
        contracts = tuple(
            ContractSpec(
                id_abonnement=5_000_000 + i,
                numero_compteur=f"SIM{i:07d}",
                numero_pds=f"P{i:07d}",
                date_debut_abonnement=ref - timedelta(days=3 * 365 + i % 28),
                start_index_l=100_000 + 1_000 * (i % 500),
                mean_daily_l=80 + (37 * i) % 200,
                lag_days=1 + i % 3,
            )
            for i in range(n)
        )
        return cls(contracts=contracts, nesting=nesting, today=today, seed=seed)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the simulator answered (or abandoned: ``status`` 0)."""

    method: str
    route: str
    """A key of :data:`ROUTE_KEYS`, another ``cognito:<operation>``, or ``unknown``."""
    path: str
    query: Mapping[str, str]
    time: datetime
    """The simulator's clock when the request arrived."""
    status: int
    before_contract_start: bool = False
    """A series was asked for a period entirely before the contract start."""
    contract: int | None = None


@dataclass(slots=True)
class _Fault:
    route: str
    kind: str | None
    status: int | None
    remaining: int | None
    contract: int | None
    options: dict[str, object]

    def covers(self, route: str, contract: int | None) -> bool:
        if self.contract is not None and contract != self.contract:
            return False
        if self.route == "*":
            selected = route in _AUTH_ROUTES
        elif self.route == "cognito":
            selected = route.startswith("cognito:")
        else:
            selected = route == self.route
        allowed = _FAULT_ROUTES.get(self.kind or "")
        return selected and (allowed is None or route in allowed)

    def number(self, option: str, default: float) -> float:
        value = self.options.get(option, default)
        if not isinstance(value, int | float):
            msg = f"option {option} must be a number"
            raise TypeError(msg)
        return float(value)


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    route: str
    contract: int | None = None
    payload: dict[str, object] | None = None
    """The parsed JSON body of a Cognito call."""
    before_start: bool = False

    @property
    def is_cognito(self) -> bool:
        return self.route.startswith("cognito:")


@dataclass(slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    data: object = None
    """The JSON value of a successful answer, for the reshaping faults."""


def _json_answer(status: int, data: object, content_type: str = _JSON) -> _Answer:
    body = json.dumps(data, ensure_ascii=False).encode()
    return _Answer(status, {"Content-Type": content_type}, body, data)


def _message(status: int, message: str, content_type: str = _JSON) -> _Answer:
    return _json_answer(status, {"message": message}, content_type)


def _aws_error(error_type: str, message: str) -> _Answer:
    answer = _json_answer(400, {"__type": error_type, "message": message}, _AMZ_JSON)
    answer.headers["x-amzn-ErrorType"] = f"{error_type}:"
    return answer


def _no_content() -> _Answer:
    return _Answer(204, {}, b"")


def _m3(litres: int) -> float:
    return round(litres / 1000, 3)


def _daily_litres(seed: int, id_abonnement: int, day_ordinal: int, mean_l: int) -> int:
    """Litres of one day: a stable hash of (seed, contract, date) scaled to 0.5-1.5 x the mean."""
    key = f"{seed}/{id_abonnement}/{day_ordinal}".encode()
    fraction = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / _HASH_SCALE
    return round(mean_l * (0.5 + fraction))


def _opaque_token(kind: str, serial: int) -> str:
    """A JWT-looking opaque token; clients must never decode it."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"kid":"simulator","alg":"none"}')
    claims = b64(json.dumps({"token_use": kind, "n": serial}).encode())
    return f"{header}.{claims}.{secrets.token_urlsafe(16)}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


class _Series:
    """One contract's generated days, computed lazily from the contract start and cached."""

    def __init__(self, spec: ContractSpec, *, seed: int, convention: IndexConvention) -> None:
        self.spec = spec
        self._seed = seed
        self._end_of_day = convention == "end_of_day"
        self._first = spec.date_debut_abonnement.toordinal()
        self._litres: list[int] = []
        self._cum: list[int] = [0]
        self._gaps = frozenset(spec.gaps)
        self._run_of: dict[date, tuple[date, date]] = {}
        self._run_split: dict[tuple[date, date], tuple[int, int]] = {}
        for first, last in spec.estimated_runs:
            start = max(first, spec.date_debut_abonnement)
            day = start
            while day <= last:
                self._run_of.setdefault(day, (start, last))
                day += timedelta(days=1)

    def _ensure(self, day: date) -> int:
        """Generate the days up to ``day``; return its offset from the contract start."""
        offset = day.toordinal() - self._first
        spec = self.spec
        while len(self._litres) <= offset:
            litres = _daily_litres(
                self._seed, spec.id_abonnement, self._first + len(self._litres), spec.mean_daily_l
            )
            self._litres.append(litres)
            self._cum.append(self._cum[-1] + litres)
        return offset

    def true_litres(self, day: date) -> int:
        """The water really used on ``day``."""
        return self._litres[self._ensure(day)]

    def total(self, first: date, last: date) -> int:
        """The true litres of ``first`` to ``last`` inclusive (both on or after the start)."""
        return self._cum[self._ensure(last) + 1] - self._cum[self._ensure(first)]

    def true_index(self, day: date) -> int:
        """The meter index of ``day`` in the scenario's convention."""
        spec = self.spec
        start, first_index = spec.date_debut_abonnement, spec.start_index_l
        if spec.replaced_on is not None and day >= spec.replaced_on > start:
            start, first_index = spec.replaced_on, spec.replacement_index_l
        if day < start:
            return first_index
        last = day if self._end_of_day else day - timedelta(days=1)
        used = self.total(start, last) if last >= start else 0
        return first_index + used

    def index_after(self, day: date) -> int:
        """The meter reading at the end of ``day``, whatever the convention."""
        return self.true_index(day if self._end_of_day else day + timedelta(days=1))

    def is_estimated(self, day: date) -> bool:
        """Whether the row of ``day`` is flagged ``ESTIME``."""
        return day in self._run_of

    def row(self, day: date) -> dict[str, object] | None:
        """The ``journalieres`` row of ``day``, or ``None`` for a gap or a day before the start."""
        if day < self.spec.date_debut_abonnement or day in self._gaps:
            return None
        run = self._run_of.get(day)
        if run is None:
            litres, index, flag = self.true_litres(day), self.true_index(day), "MESURE"
        else:
            share, last_share = self._split(run)
            litres = last_share if day == run[1] else share
            index, flag = self.true_index(run[0]), "ESTIME"
        return {
            "date_releve": day.isoformat(),
            "consommation": {"litre": litres, "m3": _m3(litres)},
            "index": {"litre": index, "m3": _m3(index)},
            "fiabilite_index": flag,
        }

    def _split(self, run: tuple[date, date]) -> tuple[int, int]:
        """The run's true total spread evenly: (each day, the last day with the remainder)."""
        split = self._run_split.get(run)
        if split is None:
            days = (run[1] - run[0]).days + 1
            total = self.total(*run)
            share = total // days
            split = (share, total - share * (days - 1))
            self._run_split[run] = split
        return split

    def rows(self, first: date, last: date) -> list[dict[str, object]]:
        """The rows of ``first`` to ``last`` inclusive, gaps omitted."""
        out: list[dict[str, object]] = []
        day = max(first, self.spec.date_debut_abonnement)
        while day <= last:
            row = self.row(day)
            if row is not None:
                out.append(row)
            day += timedelta(days=1)
        return out

    def month_rows(self, year: int, horizon: date) -> list[dict[str, object]]:
        """The ``mensuelles`` rows of ``year``: true litres of the published days, gaps included."""
        out: list[dict[str, object]] = []
        start = self.spec.date_debut_abonnement
        for month in range(1, 13):
            first = max(date(year, month, 1), start)
            last = min(_month_end(year, month), horizon)
            if last < first:
                continue
            litres = self.total(first, last)
            estimated = any(
                self.is_estimated(day) and day not in self._gaps
                for day in self._run_of
                if first <= day <= last
            )
            out.append(
                {
                    "annee": year,
                    "mois": month,
                    "consommation": {"litre": litres, "m3": _m3(litres)},
                    "fiabilite_conso": "ESTIME" if estimated else "MESURE",
                }
            )
        return out


class Simulator:
    """The Veolia portal protocol, deterministic, with fault switches and instrumentation.

    Args:
        scenario: the account and its data; :class:`Scenario` defaults when ``None``.
        clock: returns the current aware datetime. Without one the simulator keeps a manual
            clock: ``scenario.today`` at 12:00 in the scenario time zone, or the real time when
            ``scenario.today`` is ``None``; :meth:`set_now` and :meth:`advance` move it.
    """

    def __init__(
        self, scenario: Scenario | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.scenario = scenario or Scenario()
        self._tz = ZoneInfo(self.scenario.timezone)
        self._clock = clock
        self._fixed_now: datetime | None = None
        if self.scenario.today is not None:
            self._fixed_now = datetime.combine(self.scenario.today, dt_time(12), tzinfo=self._tz)
        self._offset = timedelta(0)
        self._lock = threading.RLock()
        self._contracts = {c.id_abonnement: c for c in self.scenario.contracts}
        self._by_meter = {c.numero_compteur: c for c in self.scenario.contracts}
        self._series_cache: dict[int, _Series] = {}
        self._tokens: dict[str, datetime] = {}
        self._sessions: dict[str, str] = {}
        self._serial = 0
        self._issued: list[str] = []
        self._faults: list[_Fault] = []
        self._counters = dict.fromkeys(ROUTE_KEYS, 0)
        self._log: list[LoggedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._missing_timeouts = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve HTTP on a free ``127.0.0.1`` port, in a background thread."""
        if self._server is not None:
            msg = "the simulator is already running"
            raise RuntimeError(msg)
        self._stopping.clear()
        server = _Server(self._serve, self._stopping)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_S},
            name=f"veolia-simulator-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        _LOGGER.debug("Veolia simulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop the HTTP server and close its connections; harmless when not running."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(_JOIN_TIMEOUT_S)
        server.join_handlers(_JOIN_TIMEOUT_S)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        """Start the HTTP server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the HTTP server."""
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._server is None:
            msg = "the simulator is not running: call start() first"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def auth_url(self) -> str:
        """The Cognito URL to configure (the same server: Cognito is ``POST /``)."""
        return self.base_url

    @property
    def api_url(self) -> str:
        """The backend (and refcommunes) URL to configure."""
        return self.base_url

    # -- clock ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's current time (aware)."""
        if self._clock is not None:
            return self._clock()
        with self._lock:
            if self._fixed_now is not None:
                return self._fixed_now
            return datetime.now(self._tz) + self._offset

    def today(self) -> date:
        """Today in the scenario time zone."""
        return self.now().astimezone(self._tz).date()

    def set_now(self, now: datetime) -> None:
        """Fix the manual clock at ``now`` (aware)."""
        if self._clock is not None:
            msg = "the clock is injected: move it instead"
            raise RuntimeError(msg)
        if now.tzinfo is None:
            msg = "now must be timezone-aware"
            raise ValueError(msg)
        with self._lock:
            self._fixed_now = now

    def advance(self, delta: timedelta) -> None:
        """Move the manual clock forward by ``delta``."""
        if self._clock is not None:
            msg = "the clock is injected: move it instead"
            raise RuntimeError(msg)
        with self._lock:
            if self._fixed_now is not None:
                self._fixed_now += delta
            else:
                self._offset += delta

    # -- faults and tokens ------------------------------------------------------------------

    def fail(
        self,
        route: str,
        *,
        status: int | None = None,
        fault: str | None = None,
        times: int | None = 1,
        contract: int | None = None,
        **options: object,
    ) -> None:
        """Make the next ``times`` matching requests fail (``times=None``: all of them).

        Faults that replace the answer fire before any check (token, parameters), like a
        gateway would; ``token_expired`` also revokes the token it was shown. The reshaping
        faults (``empty``, ``duplicate_day``, ``decreasing_index``) wait for a successful answer
        of their route. When several faults match, the oldest fires.

        Args:
            route: a key of :data:`ROUTE_KEYS`, ``"cognito"`` for any Cognito call, or ``"*"``
                for any authenticated backend route.
            status: without ``fault``, answer this status with ``{"message": ...}``; with
                ``token_expired`` (401/403) or ``maintenance_html`` (200/503), its status.
            fault: a name of :data:`FAULTS`.
            times: how many matching requests fail; ``None`` for every one.
            contract: only requests for this ``id_abonnement``.
            **options: ``challenge_name`` (``SMS_MFA``/``EMAIL_OTP``), ``retry_after``
                (seconds, an HTTP date or ``None`` to omit the header), ``delay_s``,
                ``body`` (``html``/``empty`` for ``http_502``), ``amount_l``.

        Raises:
            ValueError: an unknown route, fault or option, or a fault that can never apply
                to the route.
        """
        _check_fault(route, status=status, fault=fault, times=times, options=options)
        with self._lock:
            self._faults.append(_Fault(route, fault, status, times, contract, dict(options)))

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def revoke_tokens(self) -> None:
        """Refuse every access token issued so far."""
        with self._lock:
            self._tokens.clear()

    def issued_tokens(self) -> list[str]:
        """Every secret Cognito handed out: access and id tokens (revoked ones too), refresh token.

        For leak checks: none of them may ever show up in a log line, an error or a payload.
        """
        with self._lock:
            return [*self._issued, self.scenario.refresh_token]

    def set_lag(self, numero_compteur: str, lag_days: int) -> None:
        """Change a contract's publication lag from now on (Veolia publishing late, or catching up).

        Raises:
            KeyError: no contract has this meter number.
            ValueError: a negative lag.
        """
        with self._lock:
            spec = replace(self._by_meter[numero_compteur], lag_days=lag_days)
            self._by_meter[numero_compteur] = spec
            self._contracts[spec.id_abonnement] = spec

    # -- instrumentation --------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Requests received per route key of :data:`ROUTE_KEYS` since the last :meth:`reset`."""
        with self._lock:
            return dict(self._counters)

    def reset(self) -> None:
        """Zero the counters, the request log, ``max_in_flight`` and the timeout violations."""
        with self._lock:
            self._counters = dict.fromkeys(ROUTE_KEYS, 0)
            self._log.clear()
            self._max_in_flight = self._in_flight
            self._missing_timeouts = 0

    @property
    def request_log(self) -> list[LoggedRequest]:
        """A copy of the requests answered since the last :meth:`reset`, in completion order."""
        with self._lock:
            return list(self._log)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests answered at once since the last :meth:`reset`."""
        with self._lock:
            return self._max_in_flight

    @property
    def missing_timeouts(self) -> int:
        """Requests the adapter refused because they had no timeout."""
        with self._lock:
            return self._missing_timeouts

    # -- truth helpers ----------------------------------------------------------------------

    def daily_rows(self, id_abonnement: int, start: date, end: date) -> list[dict[str, object]]:
        """Exactly what ``journalieres`` serves for ``start`` to ``end`` (published days only)."""
        spec = self._contracts[id_abonnement]
        if not spec.telemetry:
            return []
        with self._lock:
            return self._series(spec).rows(start, min(end, self._horizon(spec)))

    def true_row(self, numero_compteur: str, day: date) -> dict[str, object] | None:
        """The ``journalieres`` row of ``day`` before any lag or fault; ``None`` for a gap."""
        spec = self._by_meter[numero_compteur]
        if not spec.telemetry:
            return None
        with self._lock:
            return self._series(spec).row(day)

    def expected_latest(self, numero_compteur: str) -> dict[str, object] | None:
        """The latest published row with data: ``date``, ``litre``, ``index``, ``fiabilite``."""
        spec = self._by_meter[numero_compteur]
        if not spec.telemetry:
            return None
        with self._lock:
            series = self._series(spec)
            day = self._horizon(spec)
            while day >= spec.date_debut_abonnement:
                row = series.row(day)
                if row is not None:
                    consumption = cast("dict[str, int]", row["consommation"])
                    index = cast("dict[str, int]", row["index"])
                    return {
                        "date": day,
                        "litre": consumption["litre"],
                        "index": index["litre"],
                        "fiabilite": row["fiabilite_index"],
                    }
                day -= timedelta(days=1)
        return None

    def expected_billed_m3(self, numero_compteur: str) -> float | None:
        """The m³ of the latest month with data that the fetch plan's ``mensuelles`` serve.

        That is the current year, plus the previous year in January (§6.4); the current month
        is partial.
        """
        spec = self._by_meter[numero_compteur]
        if not spec.telemetry:
            return None
        today = self.today()
        years = [today.year - 1, today.year] if today.month == 1 else [today.year]
        with self._lock:
            series = self._series(spec)
            horizon = self._horizon(spec)
            rows = [row for year in years for row in series.month_rows(year, horizon)]
        if not rows:
            return None
        return cast("dict[str, float]", rows[-1]["consommation"])["m3"]

    # -- front ends -------------------------------------------------------------------------

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: ``(status, headers, body)``. A ``slow`` fault sleeps here."""
        return self._serve(method, url, headers, body, self._pause)

    def adapter(self) -> requests.adapters.BaseAdapter:
        """A ``requests`` transport adapter answering from this simulator, without sockets.

        Mount it on a session (``session.mount("https://", sim.adapter())``). A request without
        a timeout raises :class:`MissingTimeoutError`; a ``slow`` fault whose delay reaches the
        read timeout raises ``requests.exceptions.ReadTimeout`` at once, without waiting.
        """
        # Imported here: only the tests that mount the adapter need requests from this module.
        import requests  # noqa: PLC0415
        from requests.structures import CaseInsensitiveDict  # noqa: PLC0415

        serve = self._serve
        note_missing_timeout = self._note_missing_timeout

        class SimulatorAdapter(requests.adapters.BaseAdapter):
            """Feeds prepared requests to :meth:`Simulator.handle`."""

            # The signature is BaseAdapter.send's, positional parameters included.
            def send(  # noqa: PLR0917
                self,
                request: requests.PreparedRequest,
                stream: bool = False,  # noqa: ARG002
                timeout: float | tuple[float, float] | tuple[float, None] | None = None,
                verify: bool | str = True,  # noqa: ARG002
                cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,  # noqa: ARG002
                proxies: Mapping[str, str] | None = None,  # noqa: ARG002
            ) -> requests.Response:
                read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
                if read_timeout is None or (isinstance(timeout, tuple) and timeout[0] is None):
                    note_missing_timeout()
                    msg = f"{request.method} {request.url} was sent without a timeout"
                    raise MissingTimeoutError(msg)

                def on_delay(delay_s: float) -> None:
                    if delay_s >= read_timeout:
                        raise _AbandonedError

                # Typed bytes, but requests keeps a str body as it was given.
                raw_body: object = request.body
                if isinstance(raw_body, str):
                    raw_body = raw_body.encode()
                body = raw_body if isinstance(raw_body, bytes) else b""
                headers = {k: _text(v) for k, v in request.headers.items()}
                try:
                    status, out_headers, payload = serve(
                        request.method or "GET", request.url or "/", headers, body, on_delay
                    )
                except _AbandonedError:
                    msg = f"simulated read timeout ({read_timeout} s)"
                    raise requests.exceptions.ReadTimeout(msg, request=request) from None
                response = requests.Response()
                response.status_code = status
                response.headers = CaseInsensitiveDict(out_headers)
                response.raw = io.BytesIO(payload)
                response.reason = HTTPStatus(status).phrase
                response.url = request.url or ""
                response.request = request
                response.encoding = requests.utils.get_encoding_from_headers(response.headers)
                return response

            def close(self) -> None:
                """Nothing to release: there are no sockets."""

        return SimulatorAdapter()

    # -- core -------------------------------------------------------------------------------

    def _note_missing_timeout(self) -> None:
        with self._lock:
            self._missing_timeouts += 1

    def _pause(self, delay_s: float) -> None:
        self._stopping.wait(delay_s)

    def _serve(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        on_delay: Callable[[float], None],
    ) -> tuple[int, dict[str, str], bytes]:
        request = self._parse(method.upper(), url, headers, body)
        with self._lock:
            received = self.now()
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if request.route in self._counters:
                self._counters[request.route] += 1
        status = 0
        try:
            answer = self._answer(request, on_delay)
            status = answer.status
            return answer.status, answer.headers, answer.body
        finally:
            entry = LoggedRequest(
                method=request.method,
                route=request.route,
                path=request.path,
                query=request.query,
                time=received,
                status=status,
                before_contract_start=request.before_start,
                contract=request.contract,
            )
            with self._lock:
                self._in_flight -= 1
                self._log.append(entry)
            _LOGGER.debug("%s %s (%s) -> %d", request.method, request.path, request.route, status)

    def _parse(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> _Request:
        parts = urlsplit(url)
        path = parts.path or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        lowered = {k.lower(): v for k, v in headers.items()}
        request = _Request(method, path, query, lowered, body, route="unknown")
        target = lowered.get("x-amz-target")
        if method == "POST" and (path == "/" or target is not None):
            if path != "/":
                return request
            operation = (target or "").removeprefix(_TARGET_PREFIX)
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                payload = json.loads(body.decode())
                if isinstance(payload, dict):
                    request.payload = payload
            if operation == "InitiateAuth" and request.payload is not None:
                flow = request.payload.get("AuthFlow")
                if flow in {_PASSWORD_FLOW, _REFRESH_FLOW}:
                    operation = str(flow)
            request.route = f"cognito:{operation or 'unknown'}"
            return request
        for pattern, route in _ROUTE_PATTERNS:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            request.route = route
            raw_id = query.get("abo_id") if route == "alertes" else match.groupdict().get("id")
            if raw_id is not None and raw_id.isdigit():
                request.contract = int(raw_id)
            break
        return request

    def _answer(self, request: _Request, on_delay: Callable[[float], None]) -> _Answer:
        if request.route == "unknown":
            return _message(404, f"no route for {request.method} {request.path}")
        fault = self._take_fault(request, post=False)
        if fault is not None:
            if fault.kind != "slow":
                return self._fault_answer(fault, request)
            on_delay(fault.number("delay_s", _DEFAULT_DELAY_S))
        answer = self._cognito(request) if request.is_cognito else self._backend(request)
        if answer.status == HTTPStatus.OK and answer.data is not None:
            fault = self._take_fault(request, post=True)
            if fault is not None:
                answer = self._reshape(fault, answer)
        return answer

    def _take_fault(self, request: _Request, *, post: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.kind in _POST_FAULTS) != post:
                    continue
                if not fault.covers(request.route, request.contract):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _fault_answer(self, fault: _Fault, request: _Request) -> _Answer:
        kind = fault.kind
        if kind is None:
            status = cast("int", fault.status)
            content_type = _AMZ_JSON if request.is_cognito else _JSON
            return _message(status, HTTPStatus(status).phrase, content_type)
        if kind in {"wrong_password", "unknown_user", "password_attempts_exceeded"}:
            return _cognito_refusal(kind, refresh=request.route == "cognito:REFRESH_TOKEN_AUTH")
        if kind == "cognito_throttled":
            return _aws_error("TooManyRequestsException", "Too many requests.")
        if kind == "challenge":
            return self._challenge(str(fault.options.get("challenge_name", "SMS_MFA")))
        if kind == "token_expired":
            token = _bearer(request.headers)
            with self._lock:
                self._tokens.pop(token or "", None)
            status = fault.status or self.scenario.expired_status
            return _message(status, "The incoming token has expired")
        return _http_fault(fault, cognito=request.is_cognito)

    def _reshape(self, fault: _Fault, answer: _Answer) -> _Answer:
        data = answer.data
        if fault.kind == "empty":
            return _json_answer(200, {"contacts": []} if isinstance(data, dict) else [])
        if not isinstance(data, list) or not data:
            return answer
        rows = cast("list[dict[str, object]]", list(data))
        last = json.loads(json.dumps(rows[-1]))
        if fault.kind == "duplicate_day":
            litres = last["consommation"]["litre"] + 10
            last["consommation"] = {"litre": litres, "m3": _m3(litres)}
            rows.append(last)
        else:
            index = last["index"]["litre"] - int(fault.number("amount_l", 1000))
            last["index"] = {"litre": index, "m3": _m3(index)}
            rows[-1] = last
        return _json_answer(200, rows)

    # -- Cognito ----------------------------------------------------------------------------

    def _cognito(self, request: _Request) -> _Answer:
        answer = self._cognito_inner(request)
        answer.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return answer

    def _cognito_inner(self, request: _Request) -> _Answer:
        refusal = self._invalid_cognito_call(request)
        if refusal is not None:
            return refusal
        payload = cast("dict[str, object]", request.payload)
        if request.route == "cognito:RespondToAuthChallenge":
            return self._respond_to_challenge(payload)
        params = payload.get("AuthParameters")
        if not isinstance(params, dict):
            return _aws_error(
                "InvalidParameterException", "Missing required parameter AuthParameters"
            )
        if request.route == "cognito:REFRESH_TOKEN_AUTH":
            return self._refresh_auth(params)
        if request.route == "cognito:USER_PASSWORD_AUTH":
            return self._password_auth(params)
        return _aws_error("InvalidParameterException", "Unsupported AuthFlow")

    def _invalid_cognito_call(self, request: _Request) -> _Answer | None:
        """The §7.3 refusal of a malformed Cognito call, or ``None``."""
        operation = request.route.removeprefix("cognito:")
        if operation in {_PASSWORD_FLOW, _REFRESH_FLOW}:
            operation = "InitiateAuth"
        if operation not in {"InitiateAuth", "RespondToAuthChallenge"}:
            target = request.headers.get("x-amz-target", "")
            return _aws_error("UnknownOperationException", f"Unknown operation {target!r}")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _AMZ_JSON:
            return _aws_error("InvalidParameterException", f"Content-Type must be {_AMZ_JSON}")
        if request.payload is None:
            return _aws_error("SerializationException", "The request body is not a JSON object")
        return self._check_client_id(request.payload)

    def _check_client_id(self, payload: Mapping[str, object]) -> _Answer | None:
        client_id = payload.get("ClientId")
        if not isinstance(client_id, str) or not client_id:
            return _aws_error("InvalidParameterException", "Missing required parameter ClientId")
        if client_id != self.scenario.client_id and not self.scenario.accept_any_credentials:
            return _aws_error("ResourceNotFoundException", "User pool client does not exist.")
        return None

    def _refresh_auth(self, params: Mapping[str, object]) -> _Answer:
        token = params.get("REFRESH_TOKEN")
        if not isinstance(token, str) or not token:
            return _aws_error(
                "InvalidParameterException", "Missing required parameter REFRESH_TOKEN"
            )
        if token != self.scenario.refresh_token and not self.scenario.accept_any_credentials:
            return _aws_error("NotAuthorizedException", "Invalid Refresh Token")
        return self._tokens_answer(with_refresh=False)

    def _password_auth(self, params: Mapping[str, object]) -> _Answer:
        username, password = params.get("USERNAME"), params.get("PASSWORD")
        for name, value in (("USERNAME", username), ("PASSWORD", password)):
            if not isinstance(value, str) or not value:
                return _aws_error("InvalidParameterException", f"Missing required parameter {name}")
        if not self.scenario.accept_any_credentials:
            if str(username).casefold() != self.scenario.email.casefold():
                return _aws_error("UserNotFoundException", "User does not exist.")
            if password != self.scenario.password:
                return _aws_error("NotAuthorizedException", "Incorrect username or password.")
        return self._tokens_answer(with_refresh=True)

    def _respond_to_challenge(self, payload: dict[str, object]) -> _Answer:
        name = payload.get("ChallengeName")
        session = payload.get("Session")
        responses = payload.get("ChallengeResponses")
        if name not in {"SMS_MFA", "EMAIL_OTP"} or not isinstance(responses, dict):
            return _aws_error("InvalidParameterException", "Invalid ChallengeName or responses")
        with self._lock:
            expected = self._sessions.get(session) if isinstance(session, str) else None
        if expected != name:
            return _aws_error("NotAuthorizedException", "Invalid session for the user.")
        code = responses.get(f"{name}_CODE")
        if not isinstance(responses.get("USERNAME"), str) or not isinstance(code, str):
            return _aws_error("InvalidParameterException", f"Missing {name}_CODE or USERNAME")
        if code != self.scenario.challenge_code:
            return _aws_error("CodeMismatchException", "Invalid code or auth state for the user.")
        with self._lock:
            self._sessions.pop(cast("str", session), None)
        return self._tokens_answer(with_refresh=True)

    def _challenge(self, name: str) -> _Answer:
        session = base64.b64encode(secrets.token_bytes(48)).decode()
        with self._lock:
            self._sessions[session] = name
        if name == "SMS_MFA":
            params = {
                "CODE_DELIVERY_DELIVERY_MEDIUM": "SMS",
                "CODE_DELIVERY_DESTINATION": "+*******0000",
            }
        else:
            params = {
                "CODE_DELIVERY_DELIVERY_MEDIUM": "EMAIL",
                "CODE_DELIVERY_DESTINATION": "j***@e***",
            }
        body = {"ChallengeName": name, "ChallengeParameters": params, "Session": session}
        return _json_answer(200, body, _AMZ_JSON)

    def _tokens_answer(self, *, with_refresh: bool) -> _Answer:
        lifetime = self.scenario.token_lifetime_s
        with self._lock:
            self._serial += 1
            access = _opaque_token("access", self._serial)
            id_token = _opaque_token("id", self._serial)
            self._tokens[access] = self.now() + timedelta(seconds=lifetime)
            self._issued.extend((access, id_token))
        result: dict[str, object] = {
            "AccessToken": access,
            "ExpiresIn": lifetime,
            "IdToken": id_token,
        }
        if with_refresh:
            result["RefreshToken"] = self.scenario.refresh_token
        result["TokenType"] = "Bearer"
        return _json_answer(
            200, {"AuthenticationResult": result, "ChallengeParameters": {}}, _AMZ_JSON
        )

    # -- backend ----------------------------------------------------------------------------

    def _backend(self, request: _Request) -> _Answer:  # noqa: PLR0911
        if request.method not in {"GET", "HEAD"}:
            return _message(405, "Method Not Allowed")
        if request.route == "communes-nationales":
            return self._communes(request)
        refusal = self._check_token(request)
        if refusal is not None:
            return refusal
        if request.route == "espace-client":
            return self._espace_client(request)
        if request.route == "alertes" and not request.query.get("abo_id", "").isdigit():
            return _message(400, "missing or invalid parameter abo_id")
        spec = self._contracts.get(request.contract) if request.contract is not None else None
        if spec is None:
            return _message(404, "unknown contract")
        if request.route == "facturation":
            return _json_answer(200, self._facturation(spec))
        if request.route == "plan":
            return self._plan(spec)
        if request.route == "alertes":
            return self._alertes(request, spec)
        return self._consumption(request, spec)

    def _check_token(self, request: _Request) -> _Answer | None:
        token = _bearer(request.headers)
        with self._lock:
            expiry = self._tokens.get(token) if token else None
            if expiry is not None and self.now() < expiry:
                return None
        reason = "The incoming token has expired" if expiry is not None else "Unauthorized"
        return _message(self.scenario.expired_status, reason)

    def _series(self, spec: ContractSpec) -> _Series:
        series = self._series_cache.get(spec.id_abonnement)
        if series is None:
            series = _Series(
                spec, seed=self.scenario.seed, convention=self.scenario.index_convention
            )
            self._series_cache[spec.id_abonnement] = series
        return series

    def _horizon(self, spec: ContractSpec) -> date:
        """The last day with a row: today minus the lag, never today itself."""
        return self.today() - timedelta(days=max(spec.lag_days, 1))

    def _espace_client(self, request: _Request) -> _Answer:
        if request.query.get("type-front") != _TYPE_FRONT:
            return _message(400, "invalid parameter type-front")
        contracts = list(self.scenario.contracts)
        nesting = self.scenario.nesting
        groups: list[list[list[ContractSpec]]]
        if nesting == "abonnements":
            groups = [[contracts]] if contracts else []
        elif nesting == "tiers":
            groups = [[[c] for c in contracts]] if contracts else []
        elif nesting == "contacts":
            groups = [[[c]] for c in contracts]
        else:
            per_tiers = [contracts[i : i + 3] for i in range(0, len(contracts), 3)]
            groups = [per_tiers[i : i + 3] for i in range(0, len(per_tiers), 3)]
        tiers_serial = 0
        contacts: list[dict[str, object]] = []
        for contact_no, contact in enumerate(groups):
            tiers: list[dict[str, object]] = []
            for members in contact:
                tiers.append(
                    {
                        "id": str(2004518873 + tiers_serial),
                        "abonnements": [_abonnement(c) for c in members],
                    }
                )
                tiers_serial += 1
            contacts.append({"id_contact": str(1002871455 + contact_no), "tiers": tiers})
        return _json_answer(200, {"contacts": contacts})

    def _facturation(self, spec: ContractSpec) -> dict[str, object]:
        today = self.today()
        quarter_first_month = (today.month - 1) // 3 * 3 + 1
        billed_on = date(today.year, quarter_first_month, 1) - timedelta(days=1)
        start = spec.date_debut_abonnement
        with self._lock:
            if billed_on < start:
                billed_on, index_l = start, spec.start_index_l
            else:
                index_l = self._series(spec).index_after(billed_on)
        return {
            "numero_pds": spec.numero_pds,
            "date_debut_abonnement": start.isoformat(),
            "numero_client": f"07{spec.id_abonnement:08d}"[-10:],
            "titulaire": "M DUPONT JEAN",
            "solde": 0.0,
            "mode_paiement": "PRELEVEMENT",
            "mode_releve": "TELERELEVE" if spec.telemetry else "RELEVE",
            "dernier_index_releve": index_l // 1000,
            "date_index_releve": billed_on.isoformat(),
            "marque": "VEOLIA",
        }

    def _plan(self, spec: ContractSpec) -> _Answer:
        if not spec.payment_plan:
            return _no_content()
        today = self.today()
        debits = []
        for back in (2, 1, 0):
            month_no = today.year * 12 + today.month - 1 - back
            day = date(month_no // 12, month_no % 12 + 1, 15)
            state = "DONE" if day < today else "WAITING"
            debits.append({"date": day.isoformat(), "montant": 38.0, "etat_prelevement": state})
        return _json_answer(200, {"prelevements_echeancier": debits})

    def _alertes(self, request: _Request, spec: ContractSpec) -> _Answer:
        pds = request.path.rsplit("/", 1)[-1]
        if pds != spec.numero_pds:
            return _message(400, "numero_pds does not belong to abo_id")
        if not spec.alerts:
            return _no_content()
        return _json_answer(
            200,
            {
                "seuils": {
                    "journalier": {
                        "valeur": 100,
                        "unite": "L",
                        "moyen_contact": {"souscrit_par_email": True, "souscrit_par_mobile": True},
                    },
                    "mensuel": {
                        "valeur": 5,
                        "unite": "M3",
                        "moyen_contact": {"souscrit_par_email": True, "souscrit_par_mobile": False},
                    },
                }
            },
        )

    def _consumption(self, request: _Request, spec: ContractSpec) -> _Answer:
        daily = request.route == "journalieres"
        period = _series_period(request.query, spec, monthly=daily)
        if isinstance(period, str):
            return _message(400, period)
        year, month = period
        today = self.today()
        if (year, month or 1) > (today.year, today.month if daily else 1):
            return _json_answer(200, [])
        period_end = _month_end(year, month) if month else date(year, 12, 31)
        if period_end < spec.date_debut_abonnement:
            request.before_start = True
            return _json_answer(200, [])
        if not spec.telemetry:
            return _json_answer(200, [])
        with self._lock:
            series, horizon = self._series(spec), self._horizon(spec)
            if month:
                rows = series.rows(date(year, month, 1), min(period_end, horizon))
            else:
                rows = series.month_rows(year, horizon)
        return _json_answer(200, rows)

    def _communes(self, request: _Request) -> _Answer:
        query = request.query.get("q", "").strip().casefold()
        if not query:
            return _message(400, "missing parameter q")
        matches = [
            dict(c)
            for c in _COMMUNES
            if str(c["code_postal"]).startswith(query) or query in str(c["libelle"]).casefold()
        ]
        return _json_answer(200, matches)


def _abonnement(spec: ContractSpec) -> dict[str, object]:
    return {
        "id_abonnement": spec.id_abonnement,
        "numero_compteur": spec.numero_compteur,
        "adresse_de_branchement": spec.adresse_de_branchement,
        "emplacement_compteur": spec.emplacement_compteur,
        "libelle_contrat": spec.libelle_contrat,
        "statut": spec.statut,
    }


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _cognito_refusal(kind: str, *, refresh: bool) -> _Answer:
    if kind == "unknown_user":
        return _aws_error("UserNotFoundException", "User does not exist.")
    if kind == "password_attempts_exceeded":
        return _aws_error("NotAuthorizedException", "Password attempts exceeded")
    message = "Invalid Refresh Token" if refresh else "Incorrect username or password."
    return _aws_error("NotAuthorizedException", message)


def _http_fault(fault: _Fault, *, cognito: bool) -> _Answer:
    """The answer of a fault that any route can suffer."""
    content_type = _AMZ_JSON if cognito else _JSON
    if fault.kind == "rate_limited":
        answer = _message(429, "Too Many Requests", content_type)
        retry_after = fault.options.get("retry_after")
        if retry_after is not None:
            answer.headers["Retry-After"] = str(retry_after)
        return answer
    if fault.kind == "http_500":
        return _message(500, "Internal Server Error", content_type)
    if fault.kind == "http_502":
        if fault.options.get("body", "html") == "empty":
            return _Answer(502, {}, b"")
        return _Answer(502, {"Content-Type": _HTML}, _GATEWAY_BODY)
    if fault.kind == "maintenance_html":
        return _Answer(fault.status or 503, {"Content-Type": _HTML}, _MAINTENANCE_BODY)
    return _Answer(200, {"Content-Type": _JSON}, _MALFORMED_BODY)


def _series_period(
    query: Mapping[str, str], spec: ContractSpec, *, monthly: bool
) -> tuple[int, int | None] | str:
    """``(annee, mois)`` of a series request, or the reason it is a 400."""
    names = ["annee", "numero-pds", "date-debut-abonnement"] + (["mois"] if monthly else [])
    missing = [name for name in names if name not in query]
    if missing:
        return f"missing parameter {missing[0]}"
    raw_year = query["annee"]
    if not _YEAR_RE.fullmatch(raw_year) or int(raw_year) < 1:
        return "invalid parameter annee"
    month: int | None = None
    if monthly:
        raw_month = query["mois"]
        if not _MONTH_RE.fullmatch(raw_month) or not 1 <= int(raw_month) <= 12:  # noqa: PLR2004
            return "invalid parameter mois"
        month = int(raw_month)
    if query["numero-pds"] != spec.numero_pds:
        return "invalid parameter numero-pds"
    if query["date-debut-abonnement"] != spec.date_debut_abonnement.isoformat():
        return "invalid parameter date-debut-abonnement"
    return int(raw_year), month


def _check_fault(
    route: str,
    *,
    status: int | None,
    fault: str | None,
    times: int | None,
    options: Mapping[str, object],
) -> None:
    """Raise ``ValueError`` for a fault that is misspelt or can never fire."""
    if route not in {*ROUTE_KEYS, "cognito", "*"}:
        msg = f"unknown route {route!r}"
        raise ValueError(msg)
    if times is not None and times < 1:
        msg = "times must be at least 1, or None for always"
        raise ValueError(msg)
    if fault is None:
        if status is None or options:
            msg = "give a fault, or a status without options"
            raise ValueError(msg)
        HTTPStatus(status)
        return
    if fault not in FAULTS:
        msg = f"unknown fault {fault!r}"
        raise ValueError(msg)
    if status is not None and fault not in _FAULTS_WITH_STATUS:
        msg = f"fault {fault!r} takes no status"
        raise ValueError(msg)
    _check_options(fault, options)
    allowed = _FAULT_ROUTES.get(fault)
    if allowed is not None and not _covered_routes(route) & allowed:
        msg = f"fault {fault!r} never applies to route {route!r}"
        raise ValueError(msg)


def _check_options(fault: str, options: Mapping[str, object]) -> None:
    unknown = set(options) - _FAULT_OPTIONS.get(fault, frozenset())
    if unknown:
        msg = f"fault {fault!r} takes no option {sorted(unknown)}"
        raise ValueError(msg)
    for name, value in options.items():
        if not _OPTION_CHECKS[name](value):
            msg = f"invalid value {value!r} for option {name}"
            raise ValueError(msg)


def _covered_routes(route: str) -> frozenset[str]:
    """The route keys a fault's ``route`` selector names."""
    if route == "*":
        return _AUTH_ROUTES
    if route == "cognito":
        return _COGNITO_ROUTES
    return frozenset({route})


class _Server(ThreadingHTTPServer):
    """The loopback front end; it tracks its connections so that stop() can close them."""

    daemon_threads = True
    # Idle keep-alive connections would block a join; stop() closes them and joins with a bound.
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        """A client that hangs up mid-answer is routine here: log it quietly."""
        # Called by socketserver from inside its except block.
        _LOGGER.debug("Simulator connection error: %r", sys.exc_info()[1])

    def __init__(
        self,
        serve: Callable[
            [str, str, Mapping[str, str], bytes, Callable[[float], None]],
            tuple[int, dict[str, str], bytes],
        ],
        stopping: threading.Event,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.serve = serve
        self.stopping = stopping
        self._guard = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._handlers: set[threading.Thread] = set()

    def register(self, connection: socket.socket) -> None:
        """Remember a connection being served by the current thread."""
        with self._guard:
            self._connections[connection] = threading.current_thread()
            self._handlers.add(threading.current_thread())

    def unregister(self, connection: socket.socket) -> None:
        """Forget a connection that is closing."""
        with self._guard:
            self._connections.pop(connection, None)
            self._handlers.discard(threading.current_thread())

    def close_connections(self) -> None:
        """Shut down every open connection so that its handler thread ends."""
        with self._guard:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout_s: float) -> None:
        """Wait (bounded) for the handler threads to end."""
        deadline = time.monotonic() + timeout_s
        with self._guard:
            handlers = list(self._handlers)
        for thread in handlers:
            thread.join(max(deadline - time.monotonic(), 0))


class _Handler(BaseHTTPRequestHandler):
    """Turns one HTTP exchange into a :meth:`Simulator.handle` call."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    # Headers and body leave in separate writes: with Nagle, each answer would wait ~40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        """Register the connection with the server."""
        super().setup()
        cast("_Server", self.server).register(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        try:
            super().finish()
        finally:
            cast("_Server", self.server).unregister(self.connection)

    def do_GET(self) -> None:
        """Serve a GET."""
        self._exchange()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._exchange()

    def do_PUT(self) -> None:
        """Serve a PUT."""
        self._exchange()

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._exchange()

    def do_HEAD(self) -> None:
        """Serve a HEAD."""
        self._exchange()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Route http.server's access log to debug logging."""
        _LOGGER.debug("simulator: " + format, *args)  # noqa: G003

    def _exchange(self) -> None:
        server = cast("_Server", self.server)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        host = self.headers.get("Host") or "127.0.0.1"
        headers = dict(self.headers.items())
        try:
            status, out_headers, payload = server.serve(
                self.command, f"http://{host}{self.path}", headers, body, self._wait
            )
        except _AbandonedError:
            self.close_connection = True
            return
        except Exception:
            _LOGGER.exception("Simulator failure on %s %s", self.command, self.path)
            status, out_headers = 500, {"Content-Type": _JSON}
            payload = b'{"message": "simulator failure"}'
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _wait(self, delay_s: float) -> None:
        """Sleep for a ``slow`` fault, but give up as soon as the client hangs up."""
        server = cast("_Server", self.server)
        deadline = time.monotonic() + delay_s
        while (remaining := deadline - time.monotonic()) > 0:
            if server.stopping.is_set():
                raise _AbandonedError
            readable, _, _ = select.select([self.connection], [], [], min(remaining, _POLL_S))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise _AbandonedError from None
                if not peeked:
                    raise _AbandonedError
                server.stopping.wait(min(remaining, _POLL_S))
