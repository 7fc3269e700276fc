"""VeoliaClient against the simulator over real HTTP (veolia-protocol.md §2, §3, §6)."""

from __future__ import annotations

import http.server
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

import pytest
import requests
from pydantic import SecretStr

from tests.helpers.broker import free_port
from veolia2mqtt.errors import StateError
from veolia2mqtt.meter import DailyReading, MeterValues, update_values
from veolia2mqtt.tokens import CachedToken
from veolia2mqtt.veolia import client as client_module
from veolia2mqtt.veolia.client import VeoliaClient
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
    Contract,
    FailedMeter,
    MeterData,
    account_key,
)
from veolia2mqtt.veolia.portals import resolve_portal
from veolia2mqtt.veolia.simulator import ContractSpec, Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

EMAIL = "jean.dupont@example.fr"
PASSWORD = "s3cret!"
CLIENT_ID = "3kghade1fg54739kj8pkbova8j"
REFRESH = "eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0.refresh-opaque"
MID_MONTH = date(2026, 6, 15)
SECOND_OF_MONTH = date(2026, 6, 2)
SECOND_OF_JANUARY = date(2026, 1, 2)


# -- helpers -------------------------------------------------------------------------------


class RecordingSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class MemoryStore:
    """A TokenStore in memory; ``saves`` lists every save, ``None`` for a drop."""

    token: CachedToken | None = None
    saves: list[CachedToken | None] = field(default_factory=list)
    loads: int = 0

    def load_token(self) -> CachedToken | None:
        self.loads += 1
        return self.token

    def save_token(self, token: CachedToken | None) -> None:
        self.saves.append(token)
        self.token = token


def spec(number: int, **overrides: object) -> ContractSpec:
    """A contract started long ago, so that no period is skipped for its start."""
    values: dict[str, object] = {
        "id_abonnement": 4718203 + number,
        "numero_compteur": f"I19FA0517{number:02d}",
        "numero_pds": f"003KQ{number:02d}",
        "date_debut_abonnement": date(2019, 3, 14),
    }
    values.update(overrides)
    return ContractSpec(**values)  # type: ignore[arg-type]


def scenario(
    today: date, contracts: int | tuple[ContractSpec, ...] = 1, **overrides: object
) -> Scenario:
    specs = tuple(spec(n) for n in range(contracts)) if isinstance(contracts, int) else contracts
    values: dict[str, object] = {
        "email": EMAIL,
        "password": PASSWORD,
        "client_id": CLIENT_ID,
        "contracts": specs,
        "today": today,
        "refresh_token": REFRESH,
    }
    values.update(overrides)
    return Scenario(**values)  # type: ignore[arg-type]


@pytest.fixture
def start_sim() -> Iterator[Callable[[Scenario], Simulator]]:
    """Starts simulators and stops them all at the end of the test."""
    running: list[Simulator] = []

    def start(scn: Scenario) -> Simulator:
        sim = Simulator(scn)
        sim.__enter__()
        running.append(sim)
        return sim

    yield start
    for sim in running:
        sim.__exit__(None, None, None)


@pytest.fixture
def sim(start_sim: Callable[[Scenario], Simulator]) -> Simulator:
    return start_sim(scenario(MID_MONTH, contracts=2))


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def make_client(
    sim: Simulator,
    sleep: RecordingSleep | None = None,
    *,
    email: str = EMAIL,
    password: str | None = PASSWORD,
    refresh_token: str | None = None,
    store: MemoryStore | None = None,
    client_id: str = CLIENT_ID,
    timeout_s: float = 5,
    clock: Callable[[], float] | None = None,
    rng: Callable[[], float] = lambda: 0.5,
    session: requests.Session | None = None,
) -> VeoliaClient:
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=client_id, auth_url=sim.auth_url, api_url=sim.api_url
    )
    return VeoliaClient(
        endpoints,
        email=email,
        password=None if password is None else SecretStr(password),
        refresh_token=None if refresh_token is None else SecretStr(refresh_token),
        timeout_s=timeout_s,
        token_store=store,
        session=session,
        sleep=sleep if sleep is not None else RecordingSleep(),
        clock=clock or (lambda: sim_epoch(sim)),
        rng=rng,
    )


def sim_epoch(sim: Simulator) -> float:
    """The simulator's current time, so that token expiry is judged on the same clock."""
    now = sim.now()
    return now.timestamp()


def counts(sim: Simulator) -> dict[str, int]:
    return {key: value for key, value in sim.stats().items() if value}


def total(sim: Simulator) -> int:
    return sum(sim.stats().values())


def values_of(data: MeterData, today: date) -> MeterValues:
    return update_values(None, data.daily, data.monthly, today=today).values


def assert_matches_simulator(sim: Simulator, data: MeterData, today: date) -> None:
    values = values_of(data, today)
    expected = sim.expected_latest(data.meter.number)
    assert values.reading_date == expected["date"]
    assert values.daily_consumption_l == expected["litre"]
    assert values.index_l == expected["index"]
    assert values.reliability == expected["fiabilite"]
    assert values.billed_volume_m3 == sim.expected_billed_m3(data.meter.number)


# -- no simulator needed -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("soon", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert client_module._retry_after(value, 1_000.0) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert client_module._retry_after(later, now.timestamp()) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert client_module._retry_after(earlier, now.timestamp()) == 0.0


class _Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_redirects_are_not_followed_and_retried_then_fail(
    redirecting_url: str, sleep: RecordingSleep
) -> None:
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=CLIENT_ID, auth_url=redirecting_url, api_url=redirecting_url
    )
    client = VeoliaClient(
        endpoints, email=EMAIL, password=SecretStr(PASSWORD), sleep=sleep, rng=lambda: 0.5
    )
    with client, pytest.raises(VeoliaConnectionError, match="redirect") as caught:
        client.login()
    assert caught.value.status_code == 302
    assert client.request_count == 4
    assert sleep.calls == [1.0, 2.0, 4.0]


def test_connection_refused_is_transient(sleep: RecordingSleep) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    endpoints = resolve_portal("eau.veolia.fr", client_id=CLIENT_ID, auth_url=url, api_url=url)
    with (
        VeoliaClient(endpoints, email=EMAIL, password=SecretStr(PASSWORD), sleep=sleep) as client,
        pytest.raises(VeoliaConnectionError, match="connection failed") as caught,
    ):
        client.login()
    assert len(sleep.calls) == 3
    assert client.request_count == 4
    assert PASSWORD not in str(caught.value)


def test_no_password_fails_without_a_request() -> None:
    endpoints = resolve_portal("eau.veolia.fr")
    client = VeoliaClient(endpoints, email=EMAIL, password=None)
    with pytest.raises(VeoliaAuthError, match=r"veolia\.password"):
        client.login()
    assert client.request_count == 0
    assert EMAIL not in repr(client)


@pytest.mark.parametrize(
    ("rng", "expected"),
    [(0.0, [0.5, 1.0, 2.0]), (0.5, [1.0, 2.0, 4.0]), (0.999, [1.499, 2.998, 5.996])],
)
def test_backoff_jitter_stays_within_half(
    redirecting_url: str, rng: float, expected: list[float]
) -> None:
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=CLIENT_ID, auth_url=redirecting_url, api_url=redirecting_url
    )
    sleep = RecordingSleep()
    client = VeoliaClient(
        endpoints, email=EMAIL, password=SecretStr(PASSWORD), sleep=sleep, rng=lambda: rng
    )
    with client, pytest.raises(VeoliaConnectionError):
        client.login()
    assert sleep.calls == pytest.approx(expected)


# -- login and tokens ----------------------------------------------------------------------


def test_login_once_then_reuse(sim: Simulator) -> None:
    with make_client(sim) as client:
        client.login()
        client.login()
        assert client.login_count == 1
        client.login(force=True)
        assert client.login_count == 2
    # The forced re-login renews with the refresh token of the first sign-in: one password use.
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 1, "cognito:REFRESH_TOKEN_AUTH": 1}


def test_a_refused_session_refresh_token_falls_back_to_one_password_login(sim: Simulator) -> None:
    with make_client(sim) as client:
        client.login()
        sim.fail("cognito:REFRESH_TOKEN_AUTH", fault="wrong_password")
        client.login(force=True)
        assert client.login_count == 3
        client.login(force=True)  # the new password sign-in brought a new refresh token
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 2, "cognito:REFRESH_TOKEN_AUTH": 2}


def test_headers_follow_the_protocol(sim: Simulator) -> None:
    seen: list[requests.PreparedRequest] = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda response, *args, **kwargs: seen.append(response.request)
    )
    with session, make_client(sim, session=session) as client:
        client.contracts()
    cognito, backend = seen
    assert cognito.method == "POST"
    assert cognito.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert cognito.headers["X-Amz-Target"] == "AWSCognitoIdentityProviderService.InitiateAuth"
    assert backend.method == "GET"
    assert backend.headers["Authorization"].startswith("Bearer ")
    assert backend.url is not None
    assert backend.url.endswith("/espace-client?type-front=WEB_ORDINATEUR")
    for request in (cognito, backend):
        assert request.headers["Accept"] == "*/*"
        assert request.headers["User-Agent"].startswith("Mozilla/5.0 (X11; Linux x86_64)")
    assert isinstance(cognito.body, bytes)
    assert b"SECRET_HASH" not in cognito.body


def test_injected_session_is_not_closed(sim: Simulator) -> None:
    session = requests.Session()
    with make_client(sim, session=session) as client:
        client.login()
    # Still usable: the client did not close a session it does not own.
    assert session.post(sim.auth_url, timeout=5).status_code == 400
    session.close()


def test_token_is_saved_and_reused_by_the_next_client(sim: Simulator) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as first:
        first.fetch_all(today=MID_MONTH)
    assert first.login_count == 1
    assert isinstance(store.token, CachedToken)
    assert store.token.account == account_key(EMAIL)
    assert store.token.client_id == CLIENT_ID
    assert store.token.auth_url == sim.auth_url.rstrip("/")
    assert store.token.expires_at == pytest.approx(sim_epoch(sim) + 3600, abs=5)
    sim.reset()
    with make_client(sim, store=store) as second:
        second.fetch_all(today=MID_MONTH)
    assert second.login_count == 0
    assert "cognito:USER_PASSWORD_AUTH" not in counts(sim)


@pytest.mark.parametrize(
    "foreign",
    [
        {"account": account_key("someone.else@example.fr")},
        {"client_id": "19bjc8ldefie683n889iiubjc8"},
        {"auth_url": "https://cognito-idp.eu-west-3.amazonaws.com"},
        {"expires_at": -1.0},
    ],
    ids=["account", "client_id", "auth_url", "expired"],
)
def test_foreign_or_expired_cached_token_is_ignored(
    sim: Simulator, foreign: dict[str, object]
) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as first:
        first.login()
    assert store.token is not None
    values = {
        "access_token": store.token.access_token,
        "expires_at": store.token.expires_at,
        "client_id": store.token.client_id,
        "auth_url": store.token.auth_url,
        "account": store.token.account,
    }
    values.update(foreign)
    if values["expires_at"] == -1.0:
        values["expires_at"] = sim_epoch(sim) + 59  # inside the last minute: not used
    store.token = CachedToken(**values)  # type: ignore[arg-type]
    with make_client(sim, store=store) as second:
        second.contracts()
    assert second.login_count == 1


class BrokenStore:
    """A store whose disk is gone: the sync goes on without reuse."""

    def __init__(self) -> None:
        self.attempts = 0

    def load_token(self) -> CachedToken | None:
        self.attempts += 1
        msg = "state_dir unreadable"
        raise StateError(msg)

    def save_token(self, token: CachedToken | None) -> None:
        self.attempts += 1
        msg = "state_dir unwritable"
        raise StateError(msg)


def test_a_broken_store_does_not_stop_the_sync(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore()
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=CLIENT_ID, auth_url=sim.auth_url, api_url=sim.api_url
    )
    with VeoliaClient(
        endpoints,
        email=EMAIL,
        password=SecretStr(PASSWORD),
        token_store=store,
        clock=lambda: sim_epoch(sim),
    ) as client:
        results = client.fetch_all(today=MID_MONTH)
    assert all(isinstance(r, MeterData) for r in results)
    assert store.attempts == 2
    assert "unreadable" in caplog.text
    assert "unwritable" in caplog.text


def test_cognito_400_without_an_error_type_is_a_response_error(
    sim: Simulator, sleep: RecordingSleep
) -> None:
    sim.fail("cognito", status=400)
    with make_client(sim, sleep) as client, pytest.raises(VeoliaResponseError) as caught:
        client.login()
    assert caught.value.status_code == 400
    assert "Bad Request" in str(caught.value)
    assert sleep.calls == []


def test_token_expiry_mid_life_logs_in_again(sim: Simulator) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as client:
        client.contracts()
        sim.advance(timedelta(seconds=3600 - 61))
        client.contracts()
        assert client.login_count == 1
        sim.advance(timedelta(seconds=2))
        client.contracts()
        assert client.login_count == 2


@pytest.mark.parametrize("status", [401, 403])
def test_expired_token_gets_one_relogin_and_one_retry(sim: Simulator, status: int) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as client:
        client.login()
        sim.fail("espace-client", fault="token_expired", status=status)
        contracts = client.contracts()
    assert len(contracts) == 2
    assert client.login_count == 2
    assert store.saves[1] is None  # dropped on the refusal, before the new login was saved
    assert isinstance(store.saves[-1], CachedToken)
    assert counts(sim) == {
        "cognito:USER_PASSWORD_AUTH": 1,
        "cognito:REFRESH_TOKEN_AUTH": 1,
        "espace-client": 2,
    }


@pytest.mark.parametrize("status", [401, 403])
def test_a_second_refusal_fails(sim: Simulator, status: int) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as client:
        sim.fail("espace-client", fault="token_expired", status=status, times=2)
        with pytest.raises(VeoliaResponseError) as caught:
            client.contracts()
    assert caught.value.status_code == status
    assert not isinstance(caught.value, VeoliaAuthError)
    assert client.login_count == 2
    assert store.token is None


def test_revoked_tokens_are_replaced(sim: Simulator) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as client:
        first = client.fetch_all(today=MID_MONTH)
        sim.revoke_tokens()
        second = client.fetch_all(today=MID_MONTH)
    assert client.login_count == 2
    assert all(isinstance(r, MeterData) for r in [*first, *second])
    assert first == second


def test_a_revoked_cached_token_from_the_store_is_replaced(sim: Simulator) -> None:
    store = MemoryStore()
    with make_client(sim, store=store) as first:
        first.login()
    sim.revoke_tokens()
    with make_client(sim, store=store) as second:
        results = second.fetch_all(today=MID_MONTH)
    assert second.login_count == 1
    assert all(isinstance(r, MeterData) for r in results)


def test_refresh_token_login(sim: Simulator) -> None:
    with make_client(sim, password=None, refresh_token=REFRESH) as client:
        results = client.fetch_all(today=MID_MONTH)
    assert all(isinstance(r, MeterData) for r in results)
    stats = counts(sim)
    assert stats["cognito:REFRESH_TOKEN_AUTH"] == 1
    assert "cognito:USER_PASSWORD_AUTH" not in stats


def test_refused_refresh_token_asks_for_a_new_one(sim: Simulator, sleep: RecordingSleep) -> None:
    with (
        make_client(sim, sleep, refresh_token="expired-refresh-token") as client,
        pytest.raises(VeoliaAuthError, match="new refresh token") as caught,
    ):
        client.login()
    assert "expired-refresh-token" not in str(caught.value)
    assert sleep.calls == []
    assert counts(sim) == {"cognito:REFRESH_TOKEN_AUTH": 1}


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ("wrong_password", "NotAuthorizedException"),
        ("unknown_user", "UserNotFoundException"),
        ("password_attempts_exceeded", "NotAuthorizedException"),
    ],
)
def test_refused_credentials_are_never_retried(
    sim: Simulator, sleep: RecordingSleep, fault: str, error_type: str
) -> None:
    sim.fail("cognito", fault=fault)
    with make_client(sim, sleep) as client, pytest.raises(VeoliaAuthError) as caught:
        client.fetch_all(today=MID_MONTH)
    assert caught.value.error_type == error_type
    assert "veolia.password" in str(caught.value)
    assert sleep.calls == []
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 1}


def test_a_wrong_password_is_refused(
    start_sim: Callable[[Scenario], Simulator], sleep: RecordingSleep
) -> None:
    sim = start_sim(scenario(MID_MONTH))
    with (
        make_client(sim, sleep, password="not-it") as client,
        pytest.raises(VeoliaAuthError, match="Incorrect username or password"),
    ):
        client.login()
    with (
        make_client(sim, sleep, email="nobody@example.fr") as client,
        pytest.raises(VeoliaAuthError) as caught,
    ):
        client.login()
    assert caught.value.error_type == "UserNotFoundException"
    assert sleep.calls == []


def test_unknown_client_id_is_a_response_error(sim: Simulator, sleep: RecordingSleep) -> None:
    with (
        make_client(sim, sleep, client_id="unknown") as client,
        pytest.raises(VeoliaResponseError, match="ResourceNotFoundException"),
    ):
        client.login()
    assert sleep.calls == []


@pytest.mark.parametrize("challenge", ["SMS_MFA", "EMAIL_OTP"])
def test_challenge_tells_the_user_what_to_do(
    sim: Simulator, sleep: RecordingSleep, challenge: str
) -> None:
    sim.fail("cognito", fault="challenge", challenge_name=challenge)
    with make_client(sim, sleep) as client, pytest.raises(VeoliaChallengeError) as caught:
        client.login()
    assert caught.value.challenge_name == challenge
    assert isinstance(caught.value, VeoliaAuthError)
    assert str(caught.value).startswith(
        "Veolia asks for a verification code: log in once in a browser at "
        "https://www.eau.veolia.fr, enter the code, then retry"
    )
    assert sleep.calls == []


def test_cognito_throttling_is_transient(sim: Simulator, sleep: RecordingSleep) -> None:
    sim.fail("cognito", fault="cognito_throttled", times=2)
    with make_client(sim, sleep) as client:
        client.login()
    assert sleep.calls == [1.0, 2.0]
    assert client.login_count == 1
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 3}


def test_cognito_throttling_gives_up_after_three_retries(
    sim: Simulator, sleep: RecordingSleep
) -> None:
    sim.fail("cognito", fault="cognito_throttled", times=None)
    with make_client(sim, sleep) as client, pytest.raises(VeoliaRateLimitedError):
        client.login()
    assert sleep.calls == [1.0, 2.0, 4.0]
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 4}


# -- transient backend failures ------------------------------------------------------------


TRANSIENT = [
    ("http_500", {}),
    ("http_502", {}),
    ("http_502", {"body": "empty"}),
    ("maintenance_html", {"status": 200}),
    ("maintenance_html", {"status": 503}),
    ("malformed_json", {}),
]


@pytest.mark.parametrize(("fault", "options"), TRANSIENT)
@pytest.mark.parametrize("route", ["espace-client", "facturation", "journalieres", "mensuelles"])
def test_transient_failures_are_retried(
    sim: Simulator, sleep: RecordingSleep, route: str, fault: str, options: dict[str, object]
) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.reset()
        sim.fail(route, fault=fault, times=2, **options)
        results = client.fetch_all(today=MID_MONTH)
    assert all(isinstance(r, MeterData) for r in results)
    assert sleep.calls == [1.0, 2.0]
    assert total(sim) == 7 + 2


@pytest.mark.parametrize(("fault", "options"), TRANSIENT)
def test_transient_failures_give_up_after_three_retries(
    sim: Simulator, sleep: RecordingSleep, fault: str, options: dict[str, object]
) -> None:
    with make_client(sim, sleep) as client:
        sim.fail("espace-client", fault=fault, times=None, **options)
        with pytest.raises(VeoliaConnectionError) as caught:
            client.fetch_all(today=MID_MONTH)
    assert sleep.calls == [1.0, 2.0, 4.0]
    assert sim.stats()["espace-client"] == 4
    assert "espace-client" in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "options"), [*TRANSIENT, ("rate_limited", {"retry_after": None})]
)
def test_transient_cognito_failures_are_retried(
    sim: Simulator, sleep: RecordingSleep, fault: str, options: dict[str, object]
) -> None:
    sim.fail("cognito", fault=fault, **options)
    with make_client(sim, sleep) as client:
        client.login()
    assert sleep.calls == [1.0]
    assert client.login_count == 1
    assert counts(sim) == {"cognito:USER_PASSWORD_AUTH": 2}


@pytest.mark.parametrize("status", [500, 503, 504])
def test_plain_server_errors_are_transient(
    sim: Simulator, sleep: RecordingSleep, status: int
) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("facturation", status=status)
        results = client.fetch_all(today=MID_MONTH)
    assert all(isinstance(r, MeterData) for r in results)
    assert sleep.calls == [1.0]


@pytest.mark.parametrize("status", [400, 404, 405, 410])
def test_plain_client_errors_fail_that_contract_without_retry(
    sim: Simulator, sleep: RecordingSleep, status: int
) -> None:
    first = sim.scenario.contracts[0]
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("mensuelles", status=status, contract=first.id_abonnement)
        failed, ok = client.fetch_all(today=MID_MONTH)
    assert isinstance(failed, FailedMeter)
    assert isinstance(failed.error, VeoliaResponseError)
    assert failed.error.status_code == status
    assert isinstance(ok, MeterData)
    assert sleep.calls == []


def test_a_slow_answer_times_out_and_is_retried(
    start_sim: Callable[[Scenario], Simulator], sleep: RecordingSleep
) -> None:
    sim = start_sim(scenario(MID_MONTH))
    with make_client(sim, sleep, timeout_s=0.3) as client:
        client.login()
        sim.fail("facturation", fault="slow", delay_s=1.0)
        results = client.fetch_all(today=MID_MONTH)
    assert isinstance(results[0], MeterData)
    assert sleep.calls == [1.0]


def test_rate_limit_honours_retry_after(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("journalieres", fault="rate_limited", retry_after=7)
        client.fetch_all(today=MID_MONTH)
    assert sleep.calls == [7.0]


def test_rate_limit_honours_an_http_date(sim: Simulator, sleep: RecordingSleep) -> None:
    when = format_datetime(sim.now().astimezone(UTC) + timedelta(seconds=12), usegmt=True)
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("journalieres", fault="rate_limited", retry_after=when)
        client.fetch_all(today=MID_MONTH)
    assert sleep.calls == [12.0]


def test_rate_limit_without_retry_after_backs_off(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("mensuelles", fault="rate_limited", retry_after=None, times=2)
        client.fetch_all(today=MID_MONTH)
    assert sleep.calls == [1.0, 2.0]


def test_rate_limit_counts_as_a_retry(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("espace-client", fault="rate_limited", retry_after=3, times=None)
        with pytest.raises(VeoliaRateLimitedError) as caught:
            client.contracts()
    assert sleep.calls == [3.0, 3.0, 3.0]
    assert caught.value.retry_after_s == 3.0
    assert sim.stats()["espace-client"] == 4


def test_a_long_retry_after_gives_up_at_once(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("espace-client", fault="rate_limited", retry_after=120)
        with pytest.raises(VeoliaRateLimitedError) as caught:
            client.contracts()
    assert caught.value.retry_after_s == 120.0
    assert sleep.calls == []
    assert sim.stats()["espace-client"] == 1


def test_not_found_is_not_retried(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        billing = client.billing(client.contracts()[0])
        with pytest.raises(VeoliaResponseError) as caught:
            client.daily(Contract("999", client.contracts()[0].meter), billing, 2026, 6)
    assert caught.value.status_code == 404
    assert sleep.calls == []


def test_bad_parameter_is_not_retried(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        contract = client.contracts()[0]
        billing = client.billing(contract)
        with pytest.raises(VeoliaResponseError) as caught:
            client.monthly(contract, Billing("WRONG", billing.start), 2026)
    assert caught.value.status_code == 400
    assert sleep.calls == []


def test_no_contract_on_the_account(sim: Simulator, sleep: RecordingSleep) -> None:
    sim.fail("espace-client", fault="empty")
    with (
        make_client(sim, sleep) as client,
        pytest.raises(VeoliaResponseError, match="no contract found on this account"),
    ):
        client.fetch_all(today=MID_MONTH)
    assert sleep.calls == []


# -- one contract failing ------------------------------------------------------------------


def test_one_failing_contract_does_not_stop_the_others(
    sim: Simulator, sleep: RecordingSleep
) -> None:
    broken = sim.scenario.contracts[0]
    sim.fail("facturation", fault="http_500", times=None, contract=broken.id_abonnement)
    with make_client(sim, sleep) as client:
        results = client.fetch_all(today=MID_MONTH)
    failed, ok = results
    assert isinstance(failed, FailedMeter)
    assert failed.meter.number == broken.numero_compteur
    assert isinstance(failed.error, VeoliaConnectionError)
    assert isinstance(ok, MeterData)
    assert_matches_simulator(sim, ok, MID_MONTH)


def test_an_auth_error_stops_the_whole_sync(sim: Simulator, sleep: RecordingSleep) -> None:
    with make_client(sim, sleep) as client:
        client.login()
        sim.fail("facturation", fault="token_expired", status=401)
        sim.fail("cognito", fault="wrong_password", times=None)
        with pytest.raises(VeoliaAuthError):
            client.fetch_all(today=MID_MONTH)
    assert sim.stats()["facturation"] == 1


# -- data and the fetch plan ---------------------------------------------------------------


@pytest.mark.parametrize("nesting", ["abonnements", "tiers", "contacts"])
def test_every_contract_of_every_nesting(
    start_sim: Callable[[Scenario], Simulator], nesting: str
) -> None:
    sim = start_sim(scenario(MID_MONTH, contracts=3, nesting=nesting))
    with make_client(sim) as client:
        results = client.fetch_all(today=MID_MONTH)
    assert [r.meter.number for r in results] == [c.numero_compteur for c in sim.scenario.contracts]
    for result in results:
        assert isinstance(result, MeterData)
        assert_matches_simulator(sim, result, MID_MONTH)
    assert sim.stats()["facturation"] == 3
    assert sim.stats()["espace-client"] == 1


def test_contract_ids_are_strings(sim: Simulator) -> None:
    with make_client(sim) as client:
        contracts = client.contracts()
    assert [c.id_abonnement for c in contracts] == [
        str(c.id_abonnement) for c in sim.scenario.contracts
    ]


def test_demo_values_match_the_simulator(start_sim: Callable[[Scenario], Simulator]) -> None:
    sim = start_sim(Scenario.demo(MID_MONTH))
    with make_client(sim, email="anyone@example.fr", password="anything") as client:
        results = client.fetch_all(today=MID_MONTH)
    assert len(results) == 2
    for result in results:
        assert isinstance(result, MeterData)
        assert_matches_simulator(sim, result, MID_MONTH)


@pytest.mark.parametrize(
    ("today", "contracts", "cached", "expected"),
    [
        (MID_MONTH, 1, True, 4),
        (MID_MONTH, 1, False, 5),
        (MID_MONTH, 2, True, 7),
        (MID_MONTH, 2, False, 8),
        (MID_MONTH, 3, True, 10),
        (MID_MONTH, 3, False, 11),
        (SECOND_OF_MONTH, 1, True, 5),
        (SECOND_OF_MONTH, 1, False, 6),
        (SECOND_OF_MONTH, 3, True, 13),
        (SECOND_OF_MONTH, 3, False, 14),
        (SECOND_OF_JANUARY, 1, True, 6),
        (SECOND_OF_JANUARY, 1, False, 7),
        (SECOND_OF_JANUARY, 2, True, 11),
        (SECOND_OF_JANUARY, 2, False, 12),
        (SECOND_OF_JANUARY, 3, True, 16),
        (SECOND_OF_JANUARY, 3, False, 17),
    ],
)
def test_exact_number_of_requests_per_daily_sync(
    start_sim: Callable[[Scenario], Simulator],
    today: date,
    contracts: int,
    cached: bool,
    expected: int,
) -> None:
    sim = start_sim(scenario(today, contracts=contracts))
    store = MemoryStore()
    if cached:
        with make_client(sim, store=store) as warm:
            warm.login()
        sim.reset()
    with make_client(sim, store=store) as client:
        results = client.fetch_all(today=today)
    assert total(sim) == expected, counts(sim)
    assert client.request_count == expected
    assert client.login_count == (0 if cached else 1)
    assert sim.max_in_flight <= 3
    for result in results:
        assert isinstance(result, MeterData)
        assert_matches_simulator(sim, result, today)


def test_mid_month_plan_per_route(start_sim: Callable[[Scenario], Simulator]) -> None:
    sim = start_sim(scenario(MID_MONTH, contracts=2))
    with make_client(sim) as client:
        client.fetch_all(today=MID_MONTH)
    assert counts(sim) == {
        "cognito:USER_PASSWORD_AUTH": 1,
        "espace-client": 1,
        "facturation": 2,
        "journalieres": 2,
        "mensuelles": 2,
    }


def test_second_of_january_plan_per_route(start_sim: Callable[[Scenario], Simulator]) -> None:
    sim = start_sim(scenario(SECOND_OF_JANUARY, contracts=2))
    with make_client(sim) as client:
        client.fetch_all(today=SECOND_OF_JANUARY)
    assert counts(sim) == {
        "cognito:USER_PASSWORD_AUTH": 1,
        "espace-client": 1,
        "facturation": 2,
        "journalieres": 4,
        "mensuelles": 4,
    }


def test_month_start_fetches_the_previous_month(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    today = date(2026, 6, 1)
    sim = start_sim(scenario(today))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=today)
    assert isinstance(result, MeterData)
    assert sim.stats()["journalieres"] == 2
    assert result.daily
    assert all(row.day.month == 5 for row in result.daily)
    assert_matches_simulator(sim, result, today)


def test_empty_current_month_after_day_three_fetches_the_previous_month(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    today = date(2026, 6, 5)
    sim = start_sim(scenario(today))
    sim.fail("journalieres", fault="empty")
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=today)
    assert isinstance(result, MeterData)
    assert sim.stats()["journalieres"] == 2
    assert max(row.day for row in result.daily).month == 5


def test_a_long_lag_fetches_the_previous_month(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    today = date(2026, 6, 8)
    sim = start_sim(scenario(today, contracts=(spec(0, lag_days=5),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=today)
    assert isinstance(result, MeterData)
    assert sim.stats()["journalieres"] == 2
    assert_matches_simulator(sim, result, today)


@pytest.mark.parametrize(
    ("today", "lag_days", "months"),
    [
        (date(2026, 6, 3), 1, 2),  # day <= 3: always
        (date(2026, 6, 4), 2, 1),  # latest row 06-02 is not older than today - 3
        (date(2026, 6, 4), 3, 1),  # latest row 06-01 == today - 3: not older
        (date(2026, 6, 4), 4, 2),  # current month still empty
        (date(2026, 6, 15), 3, 1),  # latest row 06-12 == today - 3: not older
        (date(2026, 6, 15), 4, 2),  # latest row 06-11 < today - 3
    ],
)
def test_previous_month_boundaries(
    start_sim: Callable[[Scenario], Simulator], today: date, lag_days: int, months: int
) -> None:
    sim = start_sim(scenario(today, contracts=(spec(0, lag_days=lag_days),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=today)
    assert isinstance(result, MeterData)
    assert sim.stats()["journalieres"] == months
    assert_matches_simulator(sim, result, today)


def test_a_meter_without_telemetry_has_no_daily_rows(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    sim = start_sim(scenario(MID_MONTH, contracts=(spec(0, telemetry=False),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=MID_MONTH)
    assert isinstance(result, MeterData)
    assert result.daily == ()
    assert result.monthly == ()
    assert sim.stats()["journalieres"] == 2  # the empty month sends us to the previous one
    assert values_of(result, MID_MONTH).is_empty


def test_periods_before_the_contract_start_are_never_requested(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    start = date(2026, 1, 1)
    sim = start_sim(scenario(SECOND_OF_JANUARY, contracts=(spec(0, date_debut_abonnement=start),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=SECOND_OF_JANUARY)
    assert isinstance(result, MeterData)
    assert counts(sim) == {
        "cognito:USER_PASSWORD_AUTH": 1,
        "espace-client": 1,
        "facturation": 1,
        "journalieres": 1,
        "mensuelles": 1,
    }


def test_a_contract_started_mid_previous_month(
    start_sim: Callable[[Scenario], Simulator],
) -> None:
    today = date(2026, 6, 2)
    sim = start_sim(scenario(today, contracts=(spec(0, date_debut_abonnement=date(2026, 5, 20)),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=today)
    assert isinstance(result, MeterData)
    assert sim.stats()["journalieres"] == 2
    assert min(row.day for row in result.daily) >= date(2026, 5, 20)


def test_estimated_runs_keep_a_flat_index(start_sim: Callable[[Scenario], Simulator]) -> None:
    run = (date(2026, 6, 4), date(2026, 6, 6))
    sim = start_sim(scenario(MID_MONTH, contracts=(spec(0, estimated_runs=(run,)),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=MID_MONTH)
    assert isinstance(result, MeterData)
    estimated = [row for row in result.daily if run[0] <= row.day <= run[1]]
    assert len(estimated) == 3
    assert {row.reliability for row in estimated} == {"ESTIME"}
    assert len({row.index_l for row in estimated}) == 1
    after = next(row for row in result.daily if row.day == run[1] + timedelta(days=1))
    assert after.reliability == "MESURE"
    first = estimated[0]
    assert first.index_l is not None
    assert after.index_l == first.index_l + sum(row.consumption_l or 0 for row in estimated)
    june = next(row for row in result.monthly if row.month == 6)
    assert june.reliability == "ESTIME"


def test_gaps_leave_the_day_out(start_sim: Callable[[Scenario], Simulator]) -> None:
    gap = date(2026, 6, 10)
    sim = start_sim(scenario(MID_MONTH, contracts=(spec(0, gaps=(gap,)),)))
    with make_client(sim) as client:
        (result,) = client.fetch_all(today=MID_MONTH)
    assert isinstance(result, MeterData)
    assert gap not in {row.day for row in result.daily}
    assert_matches_simulator(sim, result, MID_MONTH)


def test_duplicated_last_day_last_wins(sim: Simulator) -> None:
    contract = sim.scenario.contracts[0]
    sim.fail("journalieres", fault="duplicate_day", contract=contract.id_abonnement)
    with make_client(sim) as client:
        results = client.fetch_all(today=MID_MONTH)
    data = next(r for r in results if r.meter.number == contract.numero_compteur)
    assert isinstance(data, MeterData)
    expected = sim.expected_latest(contract.numero_compteur)
    latest = [row for row in data.daily if row.day == expected["date"]]
    assert len(latest) == 1
    assert latest[0].consumption_l == expected["litre"] + 10
    assert latest[0].index_l == expected["index"]


def test_duplicated_last_month_last_wins(sim: Simulator) -> None:
    contract = sim.scenario.contracts[0]
    sim.fail("mensuelles", fault="duplicate_day", contract=contract.id_abonnement)
    with make_client(sim) as client:
        results = client.fetch_all(today=MID_MONTH)
    data = next(r for r in results if r.meter.number == contract.numero_compteur)
    assert isinstance(data, MeterData)
    june = [row for row in data.monthly if (row.year, row.month) == (2026, 6)]
    assert len(june) == 1
    expected_m3 = sim.expected_billed_m3(contract.numero_compteur)
    assert isinstance(expected_m3, float)
    assert june[0].m3 == round(expected_m3 + 0.010, 3)


def test_an_empty_year_leaves_the_billed_volume_unknown(sim: Simulator) -> None:
    sim.fail("mensuelles", fault="empty", times=None)
    with make_client(sim) as client:
        results = client.fetch_all(today=MID_MONTH)
    for result in results:
        assert isinstance(result, MeterData)
        assert result.monthly == ()
        assert values_of(result, MID_MONTH).billed_volume_m3 is None
        assert values_of(result, MID_MONTH).reading_date is not None


def test_the_requests_adapter_front_end_gets_a_timeout_every_time(sim: Simulator) -> None:
    session = requests.Session()
    session.mount("http://", sim.adapter())
    with session, make_client(sim, session=session) as client:
        results = client.fetch_all(today=MID_MONTH)
    assert all(isinstance(r, MeterData) for r in results)
    assert sim.missing_timeouts == 0
    assert total(sim) == 8


def test_decreasing_index_is_parsed_as_is_and_not_published(sim: Simulator) -> None:
    contract = sim.scenario.contracts[0]
    sim.fail(
        "journalieres", fault="decreasing_index", amount_l=1000, contract=contract.id_abonnement
    )
    with make_client(sim) as client:
        results = client.fetch_all(today=MID_MONTH)
    data = next(r for r in results if r.meter.number == contract.numero_compteur)
    assert isinstance(data, MeterData)
    expected = sim.expected_latest(contract.numero_compteur)
    latest = data.daily[-1]
    assert latest.day == expected["date"]
    assert latest.index_l == expected["index"] - 1000
    assert data.daily[-2].index_l is not None
    assert latest.index_l < data.daily[-2].index_l
    published = MeterValues(
        reading_date=data.daily[-2].day, index_l=expected["index"] - expected["litre"]
    )
    update = update_values(published, data.daily, data.monthly, today=MID_MONTH)
    assert update.values.index_l == published.index_l
    assert update.values.reading_date == expected["date"]
    assert any("lower" in note for note in update.notes)


def test_daily_and_monthly_single_calls(sim: Simulator) -> None:
    with make_client(sim) as client:
        contract = client.contracts()[0]
        billing = client.billing(contract)
        daily = client.daily(contract, billing, 2026, 6)
        monthly = client.monthly(contract, billing, 2026)
        assert client.daily(contract, billing, 2019, 2) == []
        assert client.monthly(contract, billing, 2018) == []
    assert billing.start == date(2019, 3, 14)
    assert all(isinstance(row, DailyReading) for row in daily)
    assert [row.month for row in monthly] == [1, 2, 3, 4, 5, 6]
    assert sim.stats()["journalieres"] == 1
    assert sim.stats()["mensuelles"] == 1


# -- secrets -------------------------------------------------------------------------------


def test_no_secret_in_logs_or_errors(
    start_sim: Callable[[Scenario], Simulator],
    sleep: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = start_sim(scenario(MID_MONTH, contracts=2))
    store = MemoryStore()
    errors: list[BaseException] = []
    tokens: set[str] = set()
    with make_client(sim, sleep, store=store) as client:
        client.fetch_all(today=MID_MONTH)
        assert store.token is not None
        tokens.add(store.token.access_token)
        sim.fail("espace-client", fault="token_expired", status=403)
        sim.fail("journalieres", fault="rate_limited", retry_after=1)
        sim.fail("mensuelles", fault="malformed_json")
        sim.fail(
            "facturation",
            fault="http_500",
            times=None,
            contract=sim.scenario.contracts[1].id_abonnement,
        )
        results = client.fetch_all(today=MID_MONTH)
        assert store.token is not None
        tokens.add(store.token.access_token)
        errors.extend(r.error for r in results if isinstance(r, FailedMeter))
        # The session's refresh token is refused first, so the password is tried (and refused).
        sim.fail("cognito:REFRESH_TOKEN_AUTH", fault="wrong_password")
        for fault in ("wrong_password", "challenge", "unknown_user"):
            sim.fail("cognito:USER_PASSWORD_AUTH", fault=fault)
            with pytest.raises(VeoliaAuthError) as caught:
                client.login(force=True)
            errors.append(caught.value)
    with make_client(sim, sleep, password=None, refresh_token="bad-" + REFRESH) as client:
        with pytest.raises(VeoliaAuthError) as caught:
            client.login()
        errors.append(caught.value)
    assert errors
    secrets = [PASSWORD, EMAIL, REFRESH, *tokens]
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(error) for error in errors]
    texts += [repr(error) for error in errors]
    texts += [str(record.exc_text or "") for record in caplog.records]
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret, text)
        assert "jean.dupont" not in text.lower()


def test_errors_are_veolia_errors() -> None:
    assert issubclass(VeoliaChallengeError, VeoliaError)
