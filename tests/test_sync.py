"""SyncService against the simulator, with the dry-run console and with a real broker."""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.helpers.broker import Broker, Collector, retained_snapshot, wait_until
from veolia2mqtt.cli import DryRunPublisher
from veolia2mqtt.config import Settings
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.scheduler import Outcome
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import SyncService, credentials_fingerprint
from veolia2mqtt.veolia.client import VeoliaClient
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from veolia2mqtt.mqtt.messages import Publisher

TODAY = date(2026, 6, 15)
HOUSE = "I19FA051732"
GARDEN = "I21FA104733"
GARDEN_ID = 4718204
SLUGS = {HOUSE: "i19fa051732", GARDEN: "i21fa104733"}
BASE = "veolia2mqtt"
PREFIX = "homeassistant"
VALUE_KEYS = ("daily_consumption", "billed_volume", "index", "reading_date", "reliability")
FAST = {"birth_delay_s": (0.05, 0.1), "readback_s": 0.3, "ack_timeout_s": 5.0}


def settings_for(tmp_path: Path, port: int = 1883, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "veolia": {
            "email": "jean.dupont@example.fr",
            "password": "s3cret!",
            "client_id": "3kghade1fg54739kj8pkbova8j",
            "auth_url": "https://sim.invalid",
            "api_url": "https://sim.invalid",
        },
        "mqtt": {"host": "127.0.0.1", "port": port},
        "state_dir": str(tmp_path / "state"),
    }
    data.update(extra)
    return Settings(**data)


@dataclass
class Rig:
    """One process's wiring: simulator (no sockets), state store, client, publisher, service."""

    sim: Simulator
    settings: Settings
    publisher: Publisher
    store: StateStore = field(init=False)
    client: VeoliaClient = field(init=False)
    service: SyncService = field(init=False)
    pauses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = StateStore(self.settings.state_dir)
        self.store.load()
        session = requests.Session()
        session.mount("https://", self.sim.adapter())
        veolia = self.settings.veolia
        self.client = VeoliaClient(
            veolia.endpoints,
            email=veolia.email or "",
            password=veolia.password,
            token_store=self.store,
            session=session,
            sleep=lambda _s: None,
            clock=lambda: self.sim.now().timestamp(),
        )
        self.service = SyncService(
            self.client,
            self.publisher,
            self.store,
            self.settings,
            version="1.0.0",
            clock=lambda: self.sim.now().astimezone(UTC),
            fingerprint=credentials_fingerprint(self.settings, self.store.salt()),
            pause=self.pauses.append,
        )


class Console:
    """A DryRunPublisher whose printed lines the test reads back."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.publisher = DryRunPublisher(self.out)
        self._read = 0

    def lines(self) -> list[tuple[str, str, str]]:
        """Every (topic, retain, payload) printed since the last call."""
        text = self.out.getvalue()
        new, self._read = text[self._read :], len(text)
        out = []
        for line in new.splitlines():
            topic, retain, payload = line.split(" ", 2)
            out.append((topic, retain, payload))
        return out


def demo_sim(today: date = TODAY, scenario: Scenario | None = None) -> Simulator:
    return Simulator(scenario or Scenario.demo(today=today))


def assert_truth(retained: dict[str, str], sim: Simulator, numbers: tuple[str, ...]) -> None:
    """The retained state JSON and per-value topics equal the simulator's truth."""
    for number in numbers:
        slug = SLUGS[number]
        latest = sim.expected_latest(number)
        assert latest is not None
        billed = sim.expected_billed_m3(number)
        state = json.loads(retained[f"{BASE}/{slug}/state"])
        expected = {
            "daily_consumption": latest["litre"],
            "billed_volume": billed,
            "index": latest["index"],
            "reading_date": latest["date"].isoformat(),  # type: ignore[attr-defined]
            "reliability": latest["fiabilite"],
        }
        assert {k: state[k] for k in VALUE_KEYS} == expected, number
        for key, value in expected.items():
            assert retained[f"{BASE}/{slug}/{key}"] == str(value), f"{number} {key}"
        assert state["reading_day_start"].startswith(str(expected["reading_date"]))
        assert state["last_sync"] is not None
        assert retained[f"{BASE}/{slug}/last_sync"] == state["last_sync"]


# -- dry-run console --------------------------------------------------------------------------


def test_first_sync_publishes_the_simulator_truth(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    report = rig.service.run_once()
    assert report.outcome is Outcome.NEW_DAY
    assert (report.meters_ok, report.meters_failed, report.new_days) == (2, 0, 2)
    printed = console.lines()
    assert all(retain == "retain=true" for _t, retain, _p in printed)
    assert_truth({t: p for t, _r, p in printed}, sim, (HOUSE, GARDEN))
    bridge = json.loads({t: p for t, _r, p in printed}[f"{BASE}/bridge/state"])
    assert bridge["status"] == "ok"
    assert bridge["error"] is None
    assert bridge["last_success"] == bridge["last_sync"]


def test_unchanged_second_sync_resends_only_what_carries_last_sync(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    first = rig.service.run_once()
    first_topics = [t for t, _r, _p in console.lines()]
    sim.advance(timedelta(minutes=20))
    second = rig.service.run_once()
    resent = sorted(t for t, _r, _p in console.lines())
    # The demo publishes two days late: nothing newer, the scheduler decides what that means.
    assert second.outcome is Outcome.NO_NEW_DAY
    assert second.new_days == 0
    assert resent == sorted(
        [
            f"{BASE}/bridge/state",
            f"{BASE}/i19fa051732/state",
            f"{BASE}/i19fa051732/last_sync",
            f"{BASE}/i21fa104733/state",
            f"{BASE}/i21fa104733/last_sync",
        ]
    ), resent
    print(f"demo scenario: first sync {first.sent} messages, unchanged second sync {second.sent}")
    assert (first.sent, second.sent) == (len(first_topics), 5)


def test_a_new_day_resends_only_the_values_that_changed(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    rig.service.run_once()
    console.lines()
    sim.advance(timedelta(days=1))
    report = rig.service.run_once()
    assert report.new_days == 2
    printed = {t: p for t, _r, p in console.lines()}
    for slug in SLUGS.values():
        assert f"{BASE}/{slug}/reading_date" in printed
        assert f"{BASE}/{slug}/index" in printed
        # Measured both days: the reliability topic did not change, so it is not re-sent.
        assert f"{BASE}/{slug}/reliability" not in printed
        assert f"{PREFIX}/device/veolia2mqtt_{slug}/config" not in printed
    # What a broker holds now: the first sync's topics overlaid with the second's.
    held = {m.topic: m.payload for m in rig.service._replay(None)[1]}
    held.update(printed)
    assert_truth(held, sim, (HOUSE, GARDEN))


def test_a_failed_meter_does_not_stop_the_others(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    sim.fail("journalieres", fault="http_500", times=None, contract=GARDEN_ID)
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    report = rig.service.run_once()
    assert report.outcome is Outcome.TRANSIENT
    assert (report.meters_ok, report.meters_failed) == (1, 1)
    printed = {t: p for t, _r, p in console.lines()}
    assert_truth(printed, sim, (HOUSE,))
    assert not any(t.startswith(f"{BASE}/i21fa104733/") for t in printed)
    bridge = json.loads(printed[f"{BASE}/bridge/state"])
    assert bridge["status"] == "error"
    assert "1 meter(s) failed" in bridge["error"]["what"]
    assert "journalieres" in bridge["error"]["what"]
    assert bridge["error"]["since"] is not None
    assert "retries" in bridge["error"]["action"]
    assert bridge["last_success"] is None
    # The failed sync is not a success: a restart syncs again.
    assert rig.store.last_sync() is None
    sim.clear_faults()
    sim.advance(timedelta(minutes=5))
    assert rig.service.run_once().outcome is Outcome.NEW_DAY
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert (bridge["status"], bridge["error"]) == ("ok", None)


def test_veolia_down_is_transient_and_shown_on_the_bridge(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    sim.fail("espace-client", fault="maintenance_html", times=None)
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    report = rig.service.run_once()
    assert report.outcome is Outcome.TRANSIENT
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert bridge["status"] == "error"
    assert "reading the Veolia account" in bridge["error"]["what"]


@pytest.mark.parametrize(
    ("fault", "options", "hint"),
    [
        ("wrong_password", {}, "veolia.password"),
        ("challenge", {"challenge_name": "SMS_MFA"}, "verification code"),
    ],
)
def test_refused_login_blocks_and_tells_what_to_do(
    tmp_path: Path, fault: str, options: dict[str, object], hint: str
) -> None:
    sim, console = demo_sim(), Console()
    sim.fail("cognito:USER_PASSWORD_AUTH", fault=fault, times=None, **options)
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    report = rig.service.run_once()
    assert report.outcome is Outcome.AUTH_REFUSED
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 1
    printed = {t: p for t, _r, p in console.lines()}
    bridge = json.loads(printed[f"{BASE}/bridge/state"])
    assert bridge["status"] == "auth_failed"
    assert bridge["error"]["what"] == "Veolia refused the login"
    assert hint in bridge["error"]["action"]
    assert "next daily slot" in bridge["error"]["action"]
    assert "s3cret!" not in json.dumps(bridge)
    assert "jean.dupont" not in json.dumps(bridge)
    # The block is on disk, with the fingerprint of the refused configuration.
    block = StateStore(rig.settings.state_dir).auth_block()
    assert block is not None
    assert block.fingerprint == rig.service._fingerprint
    assert block.fingerprint == credentials_fingerprint(rig.settings, rig.store.salt())


def test_a_login_that_works_lifts_the_block_even_if_a_meter_fails(tmp_path: Path) -> None:
    sim = demo_sim()
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=1)
    settings = settings_for(tmp_path)
    rig = Rig(sim, settings, Console().publisher)
    assert rig.service.run_once().outcome is Outcome.AUTH_REFUSED
    sim.fail("journalieres", fault="http_500", times=None, contract=GARDEN_ID)
    sim.advance(timedelta(days=1))
    assert rig.service.run_once().outcome is Outcome.TRANSIENT
    assert StateStore(settings.state_dir).auth_block() is None
    console = Console()
    Rig(sim, settings, console.publisher).service.prime()
    console.publisher.start()
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert bridge["status"] == "error", bridge
    assert "1 meter(s) failed" in bridge["error"]["what"]


def test_restart_while_blocked_still_shows_the_refusal(tmp_path: Path) -> None:
    sim = demo_sim()
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    settings = settings_for(tmp_path)
    Rig(sim, settings, Console().publisher).service.run_once()
    console = Console()
    again = Rig(sim, settings, console.publisher)
    again.service.prime()
    console.publisher.start()
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert bridge["status"] == "auth_failed", bridge
    assert "veolia.password" in bridge["error"]["action"]


def test_restart_after_a_failed_sync_still_shows_the_error(tmp_path: Path) -> None:
    sim = demo_sim()
    sim.fail("espace-client", fault="http_502", times=None)
    settings = settings_for(tmp_path)
    Rig(sim, settings, Console().publisher).service.run_once()
    console = Console()
    Rig(sim, settings, console.publisher).service.prime()
    console.publisher.start()
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert bridge["status"] == "error"
    assert "HTTP 502" in bridge["error"]["what"]
    assert bridge["error"]["since"] is not None
    assert bridge["last_sync"] == bridge["error"]["since"]


def test_a_changed_password_lifts_the_block_on_the_bridge(tmp_path: Path) -> None:
    sim = demo_sim()
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    Rig(sim, settings_for(tmp_path), Console().publisher).service.run_once()
    fixed = settings_for(
        tmp_path,
        veolia={**settings_for(tmp_path).veolia.model_dump(mode="json"), "password": "n3w"},
    )
    console = Console()
    Rig(sim, fixed, console.publisher).service.prime()
    console.publisher.start()
    bridge = json.loads({t: p for t, _r, p in console.lines()}[f"{BASE}/bridge/state"])
    assert (bridge["status"], bridge["error"]) == ("starting", None)


def test_fingerprint_changes_with_the_credentials_only(tmp_path: Path) -> None:
    salt = b"0123456789abcdef"
    base = settings_for(tmp_path)
    same = settings_for(tmp_path, mqtt={"host": "elsewhere", "port": 1884})
    other = settings_for(
        tmp_path,
        veolia={**base.veolia.model_dump(mode="json"), "password": "n3w-s3cret"},
    )
    fingerprint = credentials_fingerprint(base, salt)
    assert credentials_fingerprint(same, salt) == fingerprint
    assert credentials_fingerprint(other, salt) != fingerprint
    assert credentials_fingerprint(base, b"another salt....") != fingerprint
    assert "s3cret" not in fingerprint


def test_disabled_meter_is_cleared_at_start_up(tmp_path: Path) -> None:
    sim = demo_sim()
    Rig(sim, settings_for(tmp_path), Console().publisher).service.run_once()
    console = Console()
    disabled = settings_for(tmp_path, meters={GARDEN: {"enabled": False}})
    rig = Rig(sim, disabled, console.publisher)
    cleanup = rig.service.prime()
    cleared = {m.topic for m in cleanup if m.payload == ""}
    assert f"{PREFIX}/device/veolia2mqtt_i21fa104733/config" in cleared
    assert f"{BASE}/i21fa104733/state" in cleared
    assert f"{BASE}/i21fa104733/index" in cleared
    assert all(m.retain for m in cleanup)
    assert not any("i19fa051732" in t for t in cleared)
    assert rig.service.publish_cleanup(cleanup) == len(cleanup)
    report = rig.service.run_once()
    assert report.meters_ok == 1
    printed = console.lines()
    assert not any("i21fa104733" in t and p for t, _r, p in printed)
    assert GARDEN not in rig.store.all_values()


def test_disabled_meter_is_cleared_even_when_the_start_up_clean_up_failed(tmp_path: Path) -> None:
    sim = demo_sim()
    Rig(sim, settings_for(tmp_path), Console().publisher).service.run_once()
    console = Console()
    rig = Rig(sim, settings_for(tmp_path, meters={GARDEN: {"enabled": False}}), console.publisher)
    cleanup = rig.service.prime()
    assert cleanup  # ... but the broker was down: publish_cleanup() was never called.
    rig.service.run_once()
    cleared = {t for t, _r, p in console.lines() if p == ""}
    assert f"{PREFIX}/device/veolia2mqtt_i21fa104733/config" in cleared
    assert f"{BASE}/i21fa104733/state" in cleared


def test_meter_leaving_the_account_is_cleared(tmp_path: Path) -> None:
    sim = demo_sim()
    Rig(sim, settings_for(tmp_path), Console().publisher).service.run_once()
    house_only = Scenario.demo(today=TODAY)
    house_only = Scenario(
        contracts=house_only.contracts[:1], today=TODAY, accept_any_credentials=True
    )
    console = Console()
    rig = Rig(demo_sim(scenario=house_only), settings_for(tmp_path), console.publisher)
    report = rig.service.run_once()
    assert report.outcome is Outcome.NO_NEW_DAY
    printed = console.lines()
    cleared = {t for t, _r, p in printed if p == ""}
    assert f"{PREFIX}/device/veolia2mqtt_i21fa104733/config" in cleared
    assert f"{BASE}/i21fa104733/state" in cleared
    assert f"{BASE}/i21fa104733/daily_consumption" in cleared
    # Clearing comes before anything else in the batch.
    payloads = [p for _t, _r, p in printed]
    assert payloads.index("") < min(i for i, p in enumerate(payloads) if p)
    assert set(rig.store.all_values()) == {HOUSE}


def test_index_never_decreases_across_syncs(tmp_path: Path) -> None:
    sim, console = demo_sim(), Console()
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    rig.service.run_once()
    before = rig.store.values(HOUSE)
    assert before is not None
    sim.advance(timedelta(days=1))
    sim.fail("journalieres", fault="decreasing_index", times=None, amount_l=5000)
    rig.service.run_once()
    after = rig.store.values(HOUSE)
    assert after is not None
    assert after.index_l is not None
    assert before.index_l is not None
    assert after.index_l >= before.index_l


# -- real broker ------------------------------------------------------------------------------


@pytest.fixture
def mqtt_rig(tmp_path: Path, broker: Broker) -> Iterator[tuple[Rig, MqttPublisher]]:
    settings = settings_for(tmp_path, port=broker.port)
    publisher = MqttPublisher(settings.mqtt, **FAST)  # type: ignore[arg-type]
    rig = Rig(demo_sim(), settings, publisher)
    try:
        yield rig, publisher
    finally:
        publisher.stop()


def republications(messages: list[Any]) -> list[str]:
    """Topics that received a payload identical to the one they already held."""
    last: dict[str, bytes] = {}
    same = []
    for msg in messages:
        if last.get(msg.topic) == msg.payload:
            same.append(msg.topic)
        last[msg.topic] = msg.payload
    return same


@pytest.mark.integration
def test_broker_holds_the_truth_and_an_unchanged_sync_repeats_nothing(
    mqtt_rig: tuple[Rig, MqttPublisher], broker: Broker
) -> None:
    rig, publisher = mqtt_rig
    with Collector(broker.host, broker.port, (f"{BASE}/#", f"{PREFIX}/#")) as col:
        rig.service.publish_cleanup(rig.service.prime())
        publisher.start()
        first = rig.service.run_once()
        col.wait_for(lambda c: f"{BASE}/bridge/state" in c.retained(), what="the bridge state")
        assert first.outcome is Outcome.NEW_DAY
        held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
        assert_truth(held, rig.sim, (HOUSE, GARDEN))
        assert json.loads(held[f"{BASE}/bridge/state"])["status"] == "ok"
        assert held[f"{BASE}/status"] == "online"
        count = len(col.messages)
        rig.sim.advance(timedelta(minutes=20))
        second = rig.service.run_once()
        wait_until(lambda: len(col.messages) >= count + second.sent, 5, "the second sync")
        again = [m.topic for m in col.messages[count:]]
        print(
            f"broker: first sync sent {first.sent}, unchanged second sync sent {second.sent}: "
            f"{sorted(again)}"
        )
        assert republications(list(col.messages)) == []
        assert sorted(again) == sorted(
            [
                f"{BASE}/bridge/state",
                f"{BASE}/i19fa051732/state",
                f"{BASE}/i19fa051732/last_sync",
                f"{BASE}/i21fa104733/state",
                f"{BASE}/i21fa104733/last_sync",
            ]
        )


@pytest.mark.integration
def test_broker_clears_a_disabled_and_a_departed_meter(tmp_path: Path, broker: Broker) -> None:
    settings = settings_for(tmp_path, port=broker.port)
    first = MqttPublisher(settings.mqtt, **FAST)  # type: ignore[arg-type]
    rig = Rig(demo_sim(), settings, first)
    rig.service.prime()
    first.start()
    rig.service.run_once()
    first.stop()
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert f"{PREFIX}/device/veolia2mqtt_i21fa104733/config" in held

    disabled = settings_for(tmp_path, port=broker.port, meters={GARDEN: {"enabled": False}})
    second = MqttPublisher(disabled.mqtt, **FAST)  # type: ignore[arg-type]
    rig2 = Rig(demo_sim(), disabled, second)
    cleanup = rig2.service.prime()
    second.start()
    try:
        rig2.service.publish_cleanup(cleanup)
        rig2.service.run_once()
    finally:
        second.stop()
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert not [t for t in held if "i21fa104733" in t], held
    assert_truth(held, rig2.sim, (HOUSE,))

    # Now the house meter leaves the account (a garden-only account).
    garden_only = Scenario(
        contracts=Scenario.demo(today=TODAY).contracts[1:], today=TODAY, accept_any_credentials=True
    )
    third = MqttPublisher(settings.mqtt, **FAST)  # type: ignore[arg-type]
    rig3 = Rig(demo_sim(scenario=garden_only), settings, third)
    cleanup = rig3.service.prime()
    third.start()
    try:
        rig3.service.publish_cleanup(cleanup)
        rig3.service.run_once()
    finally:
        third.stop()
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert not [t for t in held if "i19fa051732" in t], held
    assert_truth(held, rig3.sim, (GARDEN,))


@pytest.mark.integration
def test_broker_down_during_the_sync_then_back_gets_the_values(
    tmp_path: Path, broker: Broker
) -> None:
    broker.stop()
    settings = settings_for(tmp_path, port=broker.port)
    publisher = MqttPublisher(settings.mqtt, **FAST)  # type: ignore[arg-type]
    rig = Rig(demo_sim(), settings, publisher)
    rig.service.prime()
    publisher.start(require_connection=False)
    try:
        report = rig.service.run_once()
        assert report.outcome is Outcome.TRANSIENT
        assert rig.store.last_sync() is None
        broker.start()
        assert publisher.wait_connected(10)

        def arrived() -> bool:
            held = retained_snapshot(broker.host, broker.port, settle_s=0.2)
            return f"{BASE}/i19fa051732/index" in held

        wait_until(arrived, 10, "the values after the broker came back")
        held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
        assert_truth(held, rig.sim, (HOUSE, GARDEN))
    finally:
        publisher.stop()


def test_clear_everything_lists_every_retained_topic(tmp_path: Path) -> None:
    sim = demo_sim()
    rig = Rig(sim, settings_for(tmp_path), Console().publisher)
    rig.service.run_once()
    messages = rig.service.clear_everything()
    assert all(m.payload == "" and m.retain for m in messages)
    topics = {m.topic for m in messages}
    for slug in SLUGS.values():
        assert f"{PREFIX}/device/veolia2mqtt_{slug}/config" in topics
        assert f"{BASE}/{slug}/state" in topics
        assert f"{BASE}/{slug}/last_sync" in topics
    assert f"{BASE}/bridge/state" in topics
    assert f"{PREFIX}/device/veolia2mqtt_bridge/config" in topics
    assert rig.store.all_values() == {}


def test_message_dataclass_is_what_the_console_prints() -> None:
    out = io.StringIO()
    console = DryRunPublisher(out)
    sent = console.publish(
        [
            Message("a/b", "1", retain=True),
            Message("a/b", "1", retain=True),
            Message("c", "", retain=False),
        ]
    )
    assert sent == 2
    assert out.getvalue().splitlines() == ["a/b retain=true 1", "c retain=false "]


def test_entity_mode_and_jeedom_link_resend_only_last_sync_bearing_messages(
    tmp_path: Path,
) -> None:
    sim, console = demo_sim(), Console()
    settings = settings_for(
        tmp_path, mqtt={"discovery": "entity"}, jeedom={"mqtt2_link_topic": "v2m_jeedom"}
    )
    rig = Rig(sim, settings, console.publisher)
    first = rig.service.run_once()
    topics = [t for t, _r, _p in console.lines()]
    assert len(topics) == len(set(topics)) == first.sent
    assert f"{PREFIX}/sensor/veolia2mqtt_i19fa051732/index/config" in topics
    assert f"{PREFIX}/button/veolia2mqtt_i19fa051732/refresh/config" in topics
    assert "v2m_jeedom/discovery/eqLogic/i19fa051732" in topics
    sim.advance(timedelta(minutes=20))
    second = rig.service.run_once()
    resent = sorted(t for t, _r, _p in console.lines())
    print(f"entity mode + Jeedom link: first sync {first.sent}, unchanged second {second.sent}")
    assert all(t.endswith(("/state", "last_sync")) for t in resent), resent
    assert second.sent == 7, resent


def test_a_new_jeedom_link_equipment_gets_its_discovery_before_its_values(
    tmp_path: Path,
) -> None:
    sim, console = demo_sim(), Console()
    settings = settings_for(tmp_path, jeedom={"mqtt2_link_topic": "v2m_jeedom"})
    rig = Rig(sim, settings, console.publisher)
    rig.service.run_once()
    topics = [t for t, _r, _p in console.lines()]
    discoveries = [i for i, t in enumerate(topics) if t.startswith("v2m_jeedom/discovery/")]
    events = [i for i, t in enumerate(topics) if t.startswith("v2m_jeedom/cmd/event/")]
    assert discoveries, topics
    assert events, topics
    assert max(discoveries) < min(events)
    # MQTT Manager merges 0.3 s windows: the values wait until the equipment exists.
    assert rig.pauses == [1.5]
    sim.advance(timedelta(minutes=20))
    rig.service.run_once()
    assert rig.pauses == [1.5], "an unchanged discovery needs no pause"


def test_switching_to_entity_mode_clears_the_device_discovery(tmp_path: Path) -> None:
    sim = demo_sim()
    Rig(sim, settings_for(tmp_path), Console().publisher).service.run_once()
    console = Console()
    rig = Rig(sim, settings_for(tmp_path, mqtt={"discovery": "entity"}), console.publisher)
    cleared = {m.topic for m in rig.service.prime() if m.payload == ""}
    assert f"{PREFIX}/device/veolia2mqtt_i19fa051732/config" in cleared
    assert f"{PREFIX}/device/veolia2mqtt_bridge/config" in cleared
    assert not any("/sensor/" in t for t in cleared)


def test_switching_to_device_mode_migrates_the_entities_first(tmp_path: Path) -> None:
    sim = demo_sim()
    entity = settings_for(tmp_path, mqtt={"discovery": "entity"})
    Rig(sim, entity, Console().publisher).service.run_once()
    console = Console()
    rig = Rig(sim, settings_for(tmp_path), console.publisher)
    cleanup = rig.service.prime()
    console.publisher.start()  # the connect replay
    rig.service.publish_cleanup(cleanup)
    printed = console.lines()
    old = f"{PREFIX}/sensor/veolia2mqtt_i19fa051732/index/config"
    device = f"{PREFIX}/device/veolia2mqtt_i19fa051732/config"
    order = [(t, p) for t, _r, p in printed if t in {old, device}]
    # HA's procedure: flag the old topics, publish the device config, then clear the old topics.
    assert order == [
        (old, '{"migrate_discovery": true}'),
        (device, order[1][1]),
        (old, ""),
    ], order
    assert json.loads(order[1][1])["components"]["index"]["unique_id"].endswith("_index")
    # Once done, a reconnect replays the device config only.
    console.publisher.start()
    assert all(p != '{"migrate_discovery": true}' for _t, _r, p in console.lines())


class _ReplayAtPublish(DryRunPublisher):
    """Remembers the replay in force each time a batch is published."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.seen: list[dict[str, str]] = []

    def publish(self, messages: Sequence[Message]) -> int:
        self.seen.append({m.topic: m.payload for m in self._always})
        return super().publish(messages)


def test_the_replay_holds_the_new_picture_before_the_publish(tmp_path: Path) -> None:
    # A Home Assistant birth handled during the publish must re-send the new state, not the old.
    sim = demo_sim()
    publisher = _ReplayAtPublish()
    rig = Rig(sim, settings_for(tmp_path), publisher)
    rig.service.run_once()
    sim.advance(timedelta(days=1))
    rig.service.run_once()
    replay = publisher.seen[-1]
    state = json.loads(replay[f"{BASE}/i19fa051732/state"])
    latest = sim.expected_latest(HOUSE)
    assert latest is not None
    assert state["reading_date"] == latest["date"].isoformat()  # type: ignore[attr-defined]
    assert json.loads(replay[f"{BASE}/bridge/state"])["status"] == "ok"
    assert json.loads(replay[f"{BASE}/bridge/state"])["last_success"] == state["last_sync"]


def test_a_dormant_meter_does_not_start_the_hourly_catch_up(tmp_path: Path) -> None:
    base = Scenario.demo(today=TODAY)
    silent = dataclasses.replace(base.contracts[0], lag_days=10)
    scenario = dataclasses.replace(base, contracts=(silent,))
    sim = demo_sim(scenario=scenario)
    rig = Rig(sim, settings_for(tmp_path), Console().publisher)
    assert rig.service.run_once().outcome is Outcome.NEW_DAY
    sim.advance(timedelta(minutes=20))
    second = rig.service.run_once()
    assert second.new_days == 0
    # Ten days without data: wait for the daily slot rather than sync every hour until 22:00.
    assert second.outcome is Outcome.NEW_DAY


def test_a_meter_two_days_behind_starts_the_catch_up(tmp_path: Path) -> None:
    base = Scenario.demo(today=TODAY)
    late = dataclasses.replace(base.contracts[0], lag_days=3)
    sim = demo_sim(scenario=dataclasses.replace(base, contracts=(late,)))
    rig = Rig(sim, settings_for(tmp_path), Console().publisher)
    rig.service.run_once()
    sim.advance(timedelta(minutes=20))
    assert rig.service.run_once().outcome is Outcome.NO_NEW_DAY


def test_discovery_digests_are_kept_and_a_rename_is_noticed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = demo_sim()
    rig = Rig(sim, settings_for(tmp_path), Console().publisher)
    rig.service.run_once()
    device = f"{PREFIX}/device/veolia2mqtt_i19fa051732/config"
    first = rig.store.digests()[device]
    renamed = settings_for(tmp_path, meters={HOUSE: {"name": "Maison"}})
    rig = Rig(sim, renamed, Console().publisher)
    with caplog.at_level("INFO", logger="veolia2mqtt.sync"):
        rig.service.run_once()
    assert rig.store.digests()[device] != first
    assert f"Discovery published for {device}" in caplog.text
    assert (
        f"Discovery published for {PREFIX}/device/veolia2mqtt_i21fa104733/config" not in caplog.text
    )


def test_a_command_name_repeating_the_meter_name_is_stripped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        tmp_path,
        meters={HOUSE: {"name": "Maison", "commands": {"index": {"name": "Maison Index"}}}},
    )
    console = Console()
    rig = Rig(demo_sim(), settings, console.publisher)
    with caplog.at_level("WARNING", logger="veolia2mqtt.sync"):
        rig.service.prime()
    assert "'Maison Index' of index starts with the device name 'Maison'" in caplog.text
    rig.service.run_once()
    device = json.loads(
        {t: p for t, _r, p in console.lines()}[f"{PREFIX}/device/veolia2mqtt_i19fa051732/config"]
    )
    assert device["components"]["index"]["name"] == "Index"
