"""Fuzzing with hypothesis: bad input only ever raises the project's typed errors.

* every Veolia payload (espace-client, facturation, journalieres, mensuelles, Cognito answers
  and errors) with random, missing, wrong-typed and extra fields: the parsers return typed
  records or raise a ``VeoliaError``;
* the same payloads, and random bytes, statuses, content types and ``Retry-After`` headers,
  served to the real client: ``fetch_all`` raises nothing but ``VeoliaError``;
* the publishing rules fed random readings: the index never goes down except by the
  replacement rule, no day is invented;
* ``state.json`` and ``token.json`` with random content: the store starts afresh, never raises;
* the configuration: random YAML, random bytes, random structures, random environment
  variables and ``*_FILE`` secrets: a ``Settings`` or a ``ConfigError``, nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from datetime import date, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from requests.structures import CaseInsensitiveDict

from veolia2mqtt.config import Settings, load_settings
from veolia2mqtt.errors import ConfigError
from veolia2mqtt.meter import (
    DailyReading,
    Meter,
    MeterValues,
    MonthlyReading,
    PendingReset,
    update_values,
)
from veolia2mqtt.mqtt.messages import build_state_messages
from veolia2mqtt.state import STATE_FILE, TOKEN_FILE, StateStore
from veolia2mqtt.veolia.client import VeoliaClient
from veolia2mqtt.veolia.errors import VeoliaError
from veolia2mqtt.veolia.models import (
    Billing,
    CognitoChallenge,
    CognitoTokens,
    Contract,
    cognito_error_message,
    cognito_error_type,
    parse_auth,
    parse_billing,
    parse_contracts,
    parse_daily,
    parse_monthly,
)
from veolia2mqtt.veolia.portals import resolve_portal
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from hypothesis.strategies import SearchStrategy

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TODAY = date(2026, 6, 10)
PARIS = ZoneInfo("Europe/Paris")
_METER = Meter("I19FA051732")

# -- JSON building blocks ----------------------------------------------------------------------

huge_ints = st.sampled_from([10**400, -(10**400), 2**1024, 10**30])
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    huge_ints,
)
odd_texts = st.sampled_from(
    [
        "",
        " ",
        "²",
        "٣",
        "\uff11\uff12",
        "1e3",
        "NaN",
        "-1",
        "0x10",
        "2026-06-08",
        "2026-13-45",
        "\x00",
        "ÿ",
    ]
)
texts = st.one_of(st.text(max_size=12), odd_texts)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
day_texts = st.one_of(
    st.dates(min_value=date(1, 1, 1)).map(date.isoformat),
    st.dates().map(lambda d: f"{d.isoformat()}T00:00:00+02:00"),
    st.dates().map(lambda d: d.strftime("%d/%m/%Y")),
    odd_texts,
)


def shaped(fields: Mapping[str, SearchStrategy[Any]]) -> SearchStrategy[dict[str, Any]]:
    """A dict with each field right, wrong-typed (any JSON) or missing, plus extra fields."""
    optional = {name: st.one_of(strategy, json_values) for name, strategy in fields.items()}
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional=optional),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    )


def body(items: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """An array of ``items`` (some replaced by anything), or anything at all."""
    return st.one_of(st.lists(st.one_of(items, json_values), max_size=6), json_values)


volume = shaped({"litre": numbers, "m3": numbers})
daily_row = shaped(
    {
        "date_releve": day_texts,
        "consommation": volume,
        "index": volume,
        "fiabilite_index": st.sampled_from(["MESURE", "ESTIME"]),
    }
)
monthly_row = shaped(
    {
        "annee": st.one_of(st.integers(-5, 10_000), texts, huge_ints),
        "mois": st.one_of(st.integers(-1, 14), texts),
        "consommation": volume,
        "fiabilite_conso": st.sampled_from(["MESURE", "ESTIME"]),
    }
)
abonnement = shaped(
    {
        "id_abonnement": st.one_of(st.integers(), texts),
        "numero_compteur": texts,
        "adresse_de_branchement": texts,
    }
)
espace_client = shaped(
    {
        "contacts": body(
            shaped({"id_contact": texts, "tiers": body(shaped({"abonnements": body(abonnement)}))})
        )
    }
)
facturation = shaped(
    {"numero_pds": st.one_of(texts, st.integers()), "date_debut_abonnement": day_texts}
)
cognito_ok = shaped(
    {
        "AuthenticationResult": shaped(
            {
                "AccessToken": texts,
                "ExpiresIn": numbers,
                "IdToken": texts,
                "RefreshToken": texts,
                "TokenType": texts,
            }
        ),
        "ChallengeName": st.sampled_from(["SMS_MFA", "EMAIL_OTP", ""]),
        "Session": texts,
    }
)
cognito_error = shaped(
    {
        "__type": st.sampled_from(
            [
                "NotAuthorizedException",
                "com.amazon.coral.service#UserNotFoundException:",
                "TooManyRequestsException",
                "InvalidParameterException",
                "#",
                ":",
            ]
        ),
        "message": texts,
        "Message": texts,
    }
)

# -- parsers -------------------------------------------------------------------------------------


@FUZZ
@given(raw=body(daily_row))
@example(raw=[{"date_releve": "2026-06-01", "consommation": {"litre": 10**400}, "index": {}}])
def test_journalieres_parse_or_raise_a_veolia_error(raw):
    try:
        rows = parse_daily(raw)
    except VeoliaError:
        return
    for row in rows:
        assert isinstance(row, DailyReading)
        for value in (row.consumption_l, row.index_l):
            assert value is None or (isinstance(value, int | float) and math.isfinite(value))
    assert [r.day for r in rows] == sorted({r.day for r in rows})


@FUZZ
@given(raw=body(monthly_row))
@example(raw=[{"annee": "²", "mois": 1}])
@example(raw=[{"annee": 2026, "mois": 1, "consommation": {"m3": 10**400}}])
def test_mensuelles_parse_or_raise_a_veolia_error(raw):
    try:
        rows = parse_monthly(raw)
    except VeoliaError:
        return
    for row in rows:
        assert isinstance(row, MonthlyReading)
        assert 1 <= row.month <= 12
        assert row.m3 is None or math.isfinite(row.m3)


@FUZZ
@given(raw=st.one_of(espace_client, json_values))
def test_espace_client_parse_or_raise_a_veolia_error(raw):
    try:
        contracts = parse_contracts(raw)
    except VeoliaError:
        return
    assert contracts
    for contract in contracts:
        assert isinstance(contract, Contract)
        assert contract.id_abonnement.strip()
        assert contract.meter.number.strip()


@FUZZ
@given(raw=st.one_of(facturation, json_values))
def test_facturation_parse_or_raise_a_veolia_error(raw):
    try:
        billing = parse_billing(raw)
    except VeoliaError:
        return
    assert isinstance(billing, Billing)
    assert billing.numero_pds.strip()


@FUZZ
@given(raw=st.one_of(cognito_ok, json_values))
@example(raw={"AuthenticationResult": {"AccessToken": "x", "ExpiresIn": 10**400}})
def test_cognito_answer_parse_or_raise_a_veolia_error(raw):
    try:
        answer = parse_auth(raw)
    except VeoliaError:
        return
    assert isinstance(answer, CognitoTokens | CognitoChallenge)
    if isinstance(answer, CognitoTokens):
        assert answer.access_token
        assert answer.expires_in_s > 0


@FUZZ
@given(raw=st.one_of(cognito_error, json_values), header=st.one_of(st.none(), texts))
def test_cognito_error_fields_never_raise(raw, header):
    error_type = cognito_error_type(raw, header)
    assert error_type is None or (isinstance(error_type, str) and error_type)
    message = cognito_error_message(raw)
    assert message is None or isinstance(message, str)


# -- the real client over a fuzzed transport ---------------------------------------------------

ROUTES = ("cognito", "espace-client", "facturation", "journalieres", "mensuelles")
PAYLOADS: dict[str, SearchStrategy[Any]] = {
    "cognito": st.one_of(cognito_ok, cognito_error),
    "espace-client": espace_client,
    "facturation": facturation,
    "journalieres": body(daily_row),
    "mensuelles": body(monthly_row),
}
STATUSES = [200, 200, 200, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503]
CONTENT_TYPES = ["application/json", "application/x-amz-json-1.1", "text/html", "", "text/plain"]


def _route_of(request: requests.PreparedRequest) -> str:
    path = request.path_url.split("?")[0]
    if request.method == "POST":
        return "cognito"
    for route in ROUTES[1:]:
        if route in path:
            return route
    return "other"


class FuzzAdapter(requests.adapters.BaseAdapter):
    """Serves one fuzzed answer on one route; the simulator answers everything else."""

    def __init__(self, sim: Simulator, route: str, answer: tuple[int, str, bytes, str | None]):
        super().__init__()
        self._inner = sim.adapter()
        self._route = route
        self._answer = answer

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # type: ignore[no-untyped-def]  # noqa: PLR0917
        assert timeout is not None, "every request has a timeout"
        if _route_of(request) != self._route:
            return self._inner.send(request, stream, timeout, verify, cert, proxies)
        status, content_type, payload, retry_after = self._answer
        response = requests.Response()
        response.status_code = status
        headers = {"Content-Type": content_type} if content_type else {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        response.headers = CaseInsensitiveDict(headers)
        response.raw = io.BytesIO(payload)
        response.reason = HTTPStatus(status).phrase
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        self._inner.close()


@st.composite
def fuzzed_answers(draw: st.DrawFn) -> tuple[str, tuple[int, str, bytes, str | None]]:
    route = draw(st.sampled_from(ROUTES))
    status = draw(st.sampled_from(STATUSES))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    kind = draw(st.sampled_from(["payload", "payload", "bytes", "deep"]))
    if kind == "payload":
        value = draw(PAYLOADS[route])
        payload = json.dumps(value, allow_nan=True).encode()
    elif kind == "bytes":
        payload = draw(st.binary(max_size=64))
    else:
        payload = b"[" * draw(st.integers(1_000, 100_000))
    retry_after = draw(st.one_of(st.none(), texts, st.sampled_from(["1e400", "-5", "nan", "7"])))
    return route, (status, content_type, payload, retry_after)


SIM_SCENARIO = Scenario(today=TODAY)


@FEW
@given(answer=fuzzed_answers())
@example(answer=("journalieres", (200, "application/json", b"[" * 100_000, None)))
@example(answer=("cognito", (400, "application/x-amz-json-1.1", b"[" * 100_000, None)))
def test_the_client_raises_only_veolia_errors(answer):
    route, served = answer
    sim = Simulator(SIM_SCENARIO)
    session = requests.Session()
    session.mount("https://", FuzzAdapter(sim, route, served))
    endpoints = resolve_portal(
        "eau.veolia.fr",
        client_id=SIM_SCENARIO.client_id,
        auth_url="https://cognito.sim.test",
        api_url="https://backend.sim.test",
    )
    sleeps: list[float] = []
    client = VeoliaClient(
        endpoints,
        email=SIM_SCENARIO.email,
        password=SecretStr(SIM_SCENARIO.password),
        session=session,
        sleep=sleeps.append,
        clock=lambda: sim.now().timestamp(),
    )
    outcome: object
    try:
        outcome = client.fetch_all(today=TODAY)
    except VeoliaError as err:
        outcome = err
    if isinstance(outcome, VeoliaError):
        assert str(outcome), "errors are readable"
    else:
        assert isinstance(outcome, list)
        assert all(hasattr(r, "meter") for r in outcome)
    assert all(0 <= s <= 60 for s in sleeps), sleeps


# -- the publishing rules ----------------------------------------------------------------------

litres = st.one_of(st.none(), st.integers(-5_000_000, 5_000_000), st.floats(-1e7, 1e7))


@st.composite
def daily_series(draw: st.DrawFn) -> list[list[DailyReading]]:
    """Syncs over consecutive days, each seeing a few rows (random values, duplicates)."""
    syncs = []
    for n in range(draw(st.integers(1, 8))):
        today = TODAY + timedelta(days=n)
        rows = draw(
            st.lists(
                st.builds(
                    DailyReading,
                    day=st.integers(1, 6).map(lambda back, t=today: t - timedelta(days=back)),
                    consumption_l=litres,
                    index_l=litres,
                    reliability=st.sampled_from([None, "MESURE", "ESTIME"]),
                ),
                max_size=4,
            )
        )
        syncs.append(rows)
    return syncs


@FUZZ
@given(
    syncs=daily_series(),
    start=st.one_of(
        st.none(),
        st.builds(
            MeterValues,
            reading_date=st.one_of(st.none(), st.just(TODAY - timedelta(days=3))),
            index_l=st.one_of(st.none(), st.floats(0, 1e7)),
            pending_reset=st.one_of(
                st.none(),
                st.builds(PendingReset, st.just(TODAY - timedelta(days=4)), st.floats(0, 1e5)),
            ),
        ),
    ),
)
def test_rules_never_lower_the_index_but_by_a_confirmed_replacement(syncs, start):
    previous = start
    for n, rows in enumerate(syncs):
        today = TODAY + timedelta(days=n)
        update = update_values(previous, rows, [], today=today)
        values = update.values
        before = previous or MeterValues()
        if values.reading_date is not None:
            assert values.reading_date < today, "a day is never published before it is over"
            assert before.reading_date is None or values.reading_date >= before.reading_date
            seen = [r for r in rows if r.day == values.reading_date and r.has_data]
            if values.reading_date != before.reading_date:
                assert seen, "the published day comes from a row with data"
                assert values.daily_consumption_l == seen[-1].consumption_l
        if (
            before.index_l is not None
            and values.index_l is not None
            and values.index_l < before.index_l
        ):
            assert any("replaced meter" in note for note in update.notes), (before, values)
            assert values.index_l < before.index_l * 0.1
        build_state_messages(
            _METER, values, base_topic="veolia2mqtt", last_sync=None, zone=PARIS
        )  # every value the rules produce can be published
        previous = values


# -- the state directory -----------------------------------------------------------------------

state_docs = shaped(
    {
        "version": st.one_of(st.just(1), json_values),
        "last_sync": st.one_of(st.just("2026-06-10T05:00:00+00:00"), texts),
        "meters": st.dictionaries(
            texts,
            shaped(
                {
                    "values": shaped(
                        {
                            "reading_date": day_texts,
                            "index_l": numbers,
                            "daily_consumption_l": numbers,
                            "billed_volume_m3": numbers,
                            "pending_reset": shaped({"day": day_texts, "index_l": numbers}),
                        }
                    ),
                    "last_sync": texts,
                }
            ),
            max_size=2,
        ),
        "discovery": shaped({"digests": json_values, "published_topics": json_values}),
        "auth_block": shaped({"since": texts, "reason": texts, "fingerprint": texts}),
        "salt": st.one_of(st.just("00ff"), texts),
    }
)


@FUZZ
@given(
    content=st.one_of(
        state_docs.map(lambda d: json.dumps(d, allow_nan=True).encode()),
        st.binary(max_size=200),
        st.integers(1, 50_000).map(lambda n: b"[" * n),
    ),
    token=st.one_of(
        shaped({"version": st.just(1), "access_token": texts, "expires_at": numbers}).map(
            lambda d: json.dumps(d, allow_nan=True).encode()
        ),
        st.binary(max_size=100),
    ),
)
def test_a_damaged_state_dir_never_stops_the_store(content, token):
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        (state_dir / STATE_FILE).write_bytes(content)
        (state_dir / TOKEN_FILE).write_bytes(token)
        store = StateStore(state_dir)
        store.load()
        for number, values in store.all_values().items():
            assert isinstance(number, str)
            for value in (values.index_l, values.daily_consumption_l, values.billed_volume_m3):
                assert value is None or math.isfinite(value)
            build_state_messages(
                _METER, values, base_topic="veolia2mqtt", last_sync=None, zone=PARIS
            )
        store.last_sync()
        store.auth_block()
        store.load_token()
        store.salt()
        store.set_values("X", MeterValues())
        store.flush()
        assert json.loads((state_dir / STATE_FILE).read_text("utf-8"))["version"] == 1


# -- the configuration -------------------------------------------------------------------------

SECTIONS = {
    "veolia": [
        "email",
        "password",
        "portal",
        "refresh_token",
        "client_id",
        "auth_url",
        "timeout_s",
    ],
    "mqtt": ["host", "port", "username", "password", "protocol", "tls", "base_topic", "discovery"],
    "sync": ["time", "timezone"],
    "jeedom": ["mqtt2_link_topic"],
    "log": ["level", "format"],
    "meters": ["I19FA051732"],
    "state_dir": [],
}
config_values = st.one_of(
    json_values,
    st.sampled_from(["5", "06:05", "Europe/Paris", "device", "3.1.1", "a" * 5000, "../" * 200]),
)
yaml_keys = st.one_of(
    texts, st.integers(), st.none(), st.booleans(), st.sampled_from(list(SECTIONS))
)


@st.composite
def config_docs(draw: st.DrawFn) -> object:
    doc: dict[object, object] = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=4, unique=True)):
        keys = SECTIONS[section]
        if not keys:
            doc[section] = draw(config_values)
            continue
        doc[section] = draw(
            st.one_of(
                st.dictionaries(
                    st.one_of(st.sampled_from(keys), yaml_keys), config_values, max_size=4
                ),
                config_values,
            )
        )
    doc.update(draw(st.dictionaries(yaml_keys, config_values, max_size=2)))
    return doc


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load(text: bytes, env: Mapping[str, str] | None = None) -> Settings | ConfigError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(text)
        with environment(env or {}):
            try:
                return load_settings(path, require_credentials=False)
            except ConfigError as err:
                error = err
    assert error.problems
    assert all(isinstance(p, str) and p for p in error.problems)
    return error


@FUZZ
@given(doc=config_docs())
@example(doc={1: 2})
@example(doc={"mqtt": {"tls": {"ca_file": "a" * 5000}}})
@example(doc={"sync": {"timezone": "a" * 5000}})
def test_config_structures_give_settings_or_a_config_error(doc):
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    load(text)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
@example(text=b"\xff\xfe")
@example(text="[" * 10_000)
@example(text="a: " + "[" * 10_000)
def test_config_text_gives_settings_or_a_config_error(text):
    load(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))


env_names = st.one_of(
    st.sampled_from(
        [
            "VEOLIA2MQTT_MQTT__PORT",
            "VEOLIA2MQTT_MQTT__HOST",
            "VEOLIA2MQTT_MQTT",
            "VEOLIA2MQTT_VEOLIA__TIMEOUT_S",
            "VEOLIA2MQTT_SYNC__TIME",
            "VEOLIA2MQTT_SYNC__TIMEZONE",
            "VEOLIA2MQTT_METERS",
            "VEOLIA2MQTT_METERS__I19FA051732__ENABLED",
            "VEOLIA2MQTT_STATE_DIR",
            "VEOLIA2MQTT_LOG__LEVEL",
            "VEOLIA2MQTT_",
            "VEOLIA2MQTT___",
            "VEOLIA2MQTT_MQTT__TLS__CA_FILE",
        ]
    ),
    st.from_regex(r"VEOLIA2MQTT_[A-Za-z_]{0,20}", fullmatch=True),
)
env_values = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        max_size=40,
    ),
    st.sampled_from(["{}", "[1, 2]", '{"port": "x"}', "1e400", "true", "null", "a" * 5000]),
)


@FUZZ
@given(env=st.dictionaries(env_names, env_values, max_size=3))
def test_environment_gives_settings_or_a_config_error(env):
    load(b"", env)


@FEW
@given(
    key=st.sampled_from(
        [
            "VEOLIA2MQTT_VEOLIA__PASSWORD_FILE",
            "VEOLIA2MQTT_MQTT__PASSWORD_FILE",
            "VEOLIA2MQTT__FILE",
        ]
    ),
    content=st.binary(max_size=40),
)
@example(key="VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", content=b"\xff")
def test_file_secrets_give_settings_or_a_config_error(key, content):
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "secret"
        secret.write_bytes(content)
        result = load(b"", {key: str(secret)})
    if isinstance(result, ConfigError):
        text = "\n".join(result.problems)
        decoded = content.decode("utf-8", "ignore").strip()
        assert len(decoded) < 4 or decoded not in text, "a secret's content is never echoed"


@pytest.mark.parametrize("name", ["a" * 300, "x/" * 3000])
def test_long_paths_in_the_config_are_config_errors(name):
    for doc in ({"mqtt": {"tls": {"ca_file": name}}}, {"sync": {"timezone": name}}):
        assert isinstance(load(json.dumps(doc).encode()), ConfigError)
