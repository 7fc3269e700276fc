"""The real stack, wired the way ``cli.py`` wires the daemon, driven by one fake clock.

:class:`Stack` joins the simulator (over loopback HTTP or the ``requests`` adapter), the real
``VeoliaClient`` (its sleeps recorded, never slept), ``StateStore``, ``SyncService``, a real
``MqttPublisher`` on a test mosquitto, and ``Daemon`` + ``Planner`` ticked at fake times.
The checks compare what the broker holds with the simulator's truth
(:func:`assert_truth`) and scan every message a subscriber saw during the test for anything
wrong (:func:`assert_history`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import requests
from pydantic import SecretStr

from tests.helpers.broker import Collector
from veolia2mqtt.config import MqttSettings, Settings, SyncSettings, VeoliaSettings
from veolia2mqtt.errors import Veolia2MqttError
from veolia2mqtt.mqtt.messages import format_number
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.mqtt.topics import (
    bridge_state_topic,
    device_discovery_topic,
    meter_slug,
    state_topic,
    status_topic,
    value_topic,
)
from veolia2mqtt.scheduler import Daemon, Outcome, Planner, Wakeup, slot_time
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import SyncService, credentials_fingerprint
from veolia2mqtt.veolia.client import VeoliaClient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from tests.helpers.broker import Broker
    from veolia2mqtt.mqtt.messages import Publisher
    from veolia2mqtt.veolia.simulator import Simulator

PARIS = ZoneInfo("Europe/Paris")
BASE = "veolia2mqtt"
PREFIX = "homeassistant"
BIRTH = f"{PREFIX}/status"
SYNC_TIME = "06:05"
SLOT = time(6, 5)
VALUE_KEYS = ("daily_consumption", "billed_volume", "index", "reading_date", "reliability")
FAST_MQTT: dict[str, Any] = {
    "birth_delay_s": (0.05, 0.1),
    "readback_s": 0.3,
    "ack_timeout_s": 5.0,
    "connect_timeout_s": 5.0,
}
_barriers = itertools.count()


def paris(day: date, hh: int = 12, mm: int = 0) -> datetime:
    """A Paris wall-clock time as an aware UTC datetime (the daemon's clock is UTC)."""
    return datetime.combine(day, time(hh, mm), tzinfo=PARIS).astimezone(UTC)


class FakeClock:
    """The one clock of the stack: UTC datetimes for the daemon, epoch seconds for the rest."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()

    def set(self, when: datetime) -> None:
        self.now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def local(self) -> datetime:
        return self.now.astimezone(PARIS)


@dataclass(frozen=True)
class Run:
    """One sync the daemon ran: when (fake time) and how it ended."""

    at: datetime
    outcome: Outcome

    @property
    def local(self) -> datetime:
        return self.at.astimezone(PARIS)


@dataclass
class Stack:
    """The daemon's objects, built like ``cli._daemon`` builds them, on a fake clock.

    ``transport`` is ``"http"`` (the simulator's loopback server, real sockets and timeouts)
    or ``"adapter"`` (the simulator's ``requests`` adapter, no sockets, timeouts instant).
    """

    sim: Simulator
    broker: Broker | None
    clock: FakeClock
    state_dir: Path
    timeout_s: float = 5.0
    sync_time: str | None = SYNC_TIME
    transport: str = "http"
    mqtt_extra: dict[str, Any] = field(default_factory=dict)
    publisher_factory: Callable[..., Publisher] | None = None
    publisher_options: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    after_run: Callable[[Run], None] | None = None
    """Called after each sync the daemon ran (the soak's ledger)."""

    def __post_init__(self) -> None:
        self.wakeup = Wakeup()
        self.settings = self._settings()
        self._session: requests.Session | None = None
        self.started = False

    # -- wiring -----------------------------------------------------------------------------

    def _settings(self) -> Settings:
        scenario = self.sim.scenario
        if self.transport == "http":
            auth_url, api_url = self.sim.auth_url, self.sim.api_url
        else:
            auth_url, api_url = "https://cognito-idp.sim.test", "https://backend.sim.test"
        mqtt = (
            MqttSettings(host=self.broker.host, port=self.broker.port, **self.mqtt_extra)
            if self.broker is not None
            else MqttSettings()
        )
        return Settings(
            veolia=VeoliaSettings(
                email=scenario.email,
                password=SecretStr(scenario.password),
                client_id=scenario.client_id,
                auth_url=auth_url,
                api_url=api_url,
                timeout_s=self.timeout_s,
            ),
            mqtt=mqtt,
            sync=SyncSettings(time=self.sync_time, timezone="Europe/Paris"),
            state_dir=self.state_dir,
        )

    def start(self, *, wait_online: bool = True) -> Stack:
        """Wire and start everything, as ``cli._daemon`` does; decide the first run."""
        settings = self.settings
        self.store = StateStore(settings.state_dir, clock=self.clock.epoch)
        self.store.load()
        session = None
        if self.transport == "adapter":
            session = requests.Session()
            session.mount("https://", self.sim.adapter())
            self._session = session
        self.client = VeoliaClient(
            settings.veolia.endpoints,
            email=settings.veolia.email or "",
            password=settings.veolia.password,
            timeout_s=settings.veolia.timeout_s,
            token_store=self.store,
            session=session,
            sleep=self.sleeps.append,
            clock=self.clock.epoch,
            rng=lambda: 0.5,
        )
        factory = self.publisher_factory or MqttPublisher
        self.publisher = factory(settings.mqtt, **{**FAST_MQTT, **self.publisher_options})
        self.fingerprint = credentials_fingerprint(settings, self.store.salt())
        self.service = SyncService(
            self.client,
            self.publisher,
            self.store,
            settings,
            version="0.0.0-test",
            clock=self.clock,
            fingerprint=self.fingerprint,
        )
        cleanup = self.service.prime()
        self.publisher.on_refresh(self.wakeup.refresh)
        if isinstance(self.publisher, MqttPublisher):
            self.publisher.start(require_connection=False)
        else:
            self.publisher.start()
        if wait_online:
            self.wait_online()
        with contextlib.suppress(Veolia2MqttError):  # cli._daemon postpones it the same way
            self.service.publish_cleanup(cleanup)
        zone = settings.sync.zone
        self.planner = Planner(
            slot=slot_time(settings.sync.time, self.clock(), zone),
            zone=zone,
            pinned=settings.sync.time is not None,
        )
        block = self.store.auth_block()
        blocked_since = (
            block.since if block is not None and block.fingerprint == self.fingerprint else None
        )
        self.daemon = Daemon(
            self._run_sync,
            self.planner,
            clock=self.clock,
            wakeup=self.wakeup,
            heartbeat=self.store.touch_heartbeat,
        )
        self.daemon.start(last_success=self.store.last_sync(), blocked_since=blocked_since)
        self.started = True
        return self

    def wait_online(self, timeout_s: float = 15) -> None:
        publisher = self.publisher
        assert isinstance(publisher, MqttPublisher)
        assert publisher.wait_connected(timeout_s), "the publisher did not connect"
        assert publisher.wait_for_replay(publisher.connect_count, timeout_s), "no connect replay"

    def _run_sync(self) -> Outcome:
        outcome = self.service()
        run = Run(self.clock(), outcome)
        self.runs.append(run)
        if self.after_run is not None:
            self.after_run(run)
        return outcome

    def stop(self) -> None:
        """Stop like the process does on SIGTERM: ``offline``, disconnect, close the client."""
        if not self.started:
            return
        self.started = False
        self.publisher.stop()
        self.client.close()
        if self._session is not None:
            self._session.close()

    def restart(self) -> Stack:
        """A new process on the same ``state_dir`` and simulator (the daemon restarting)."""
        self.stop()
        self.wakeup = Wakeup()
        return self.start()

    # -- driving the daemon -----------------------------------------------------------------

    def tick(self) -> None:
        self.daemon.tick()

    def run_until(self, until: datetime) -> None:
        """Jump from one due time to the next, ticking at each, up to ``until``."""
        self.daemon.tick()
        while True:
            decision = self.planner.next
            if decision is None or decision.due > until:
                self.clock.set(max(self.clock.now, until))
                self.daemon.tick()
                return
            self.clock.set(max(decision.due, self.clock.now))
            self.daemon.tick()

    def run_for(self, delta: timedelta) -> None:
        self.run_until(self.clock.now + delta)

    def step_until(self, until: datetime, step: timedelta) -> None:
        """Tick at every ``step`` of the clock up to ``until`` (like the real loop's wakes)."""
        while self.clock.now < until:
            self.daemon.tick()
            self.clock.advance(step)

    # -- observations -----------------------------------------------------------------------

    @property
    def logins(self) -> int:
        return self.sim.stats()["cognito:USER_PASSWORD_AUTH"]

    def runs_on(self, day: date) -> list[Run]:
        return [run for run in self.runs if run.local.date() == day]


# -- what the broker holds --------------------------------------------------------------------


def barrier(col: Collector) -> None:
    """Round-trip through the broker: everything queued for ``col`` before has now arrived."""
    topic = f"test/barrier/{next(_barriers)}"
    assert col._client is not None
    col._client.publish(topic, "x", qos=1)
    col.wait_for(lambda c: bool(c.on_topic(topic)), 10, f"barrier {topic}")


def snapshot(broker: Broker) -> dict[str, str]:
    """What a fresh subscriber gets as retained messages right now."""
    with Collector(broker.host, broker.port, ("#",)) as col:
        barrier(col)
        return {m.topic: m.payload.decode() for m in col.messages if m.retain}


def expected_values(sim: Simulator, number: str) -> dict[str, str]:
    """The per-value topics of ``number`` as the simulator's truth says they must read."""
    slug = meter_slug(number)
    latest = sim.expected_latest(number)
    assert latest is not None, f"the simulator has no data for {number}"
    billed = sim.expected_billed_m3(number)
    out = {
        value_topic(BASE, slug, "reading_date"): latest["date"].isoformat(),  # type: ignore[attr-defined]
        value_topic(BASE, slug, "daily_consumption"): format_number(latest["litre"]),  # type: ignore[arg-type]
        value_topic(BASE, slug, "index"): format_number(latest["index"]),  # type: ignore[arg-type]
        value_topic(BASE, slug, "reliability"): str(latest["fiabilite"]),
    }
    if billed is not None:
        out[value_topic(BASE, slug, "billed_volume")] = format_number(billed)
    return out


def assert_truth(
    broker: Broker,
    sim: Simulator,
    *,
    meters: Iterable[str] | None = None,
    bridge: str | None = "ok",
    held: dict[str, str] | None = None,
) -> dict[str, str]:
    """Every retained value equals the simulator's truth; the daemon is online.

    Checks the per-value topics, the JSON state (same values, nothing missing), the device
    discovery, ``<base>/status`` and, unless ``bridge`` is ``None``, the bridge status.
    """
    view = held if held is not None else snapshot(broker)
    numbers = (
        list(meters) if meters is not None else [c.numero_compteur for c in sim.scenario.contracts]
    )
    for number in numbers:
        slug = meter_slug(number)
        wanted = expected_values(sim, number)
        got = {topic: view.get(topic) for topic in wanted}
        assert got == wanted, f"meter {number}: retained values differ from the truth"
        state = json.loads(view[state_topic(BASE, slug)])
        for key in VALUE_KEYS:
            topic = value_topic(BASE, slug, key)
            if topic in wanted:
                assert _plain(state[key]) == wanted[topic], f"{number} state.{key}: {state[key]!r}"
        assert view.get(device_discovery_topic(PREFIX, slug)), f"{number}: discovery missing"
    assert view.get(status_topic(BASE)) == "online"
    if bridge is not None:
        assert json.loads(view[bridge_state_topic(BASE)])["status"] == bridge
    return view


def _plain(value: object) -> str:
    if isinstance(value, str):
        return value
    assert isinstance(value, int | float), value
    return format_number(value)


# -- what was ever published ------------------------------------------------------------------


@dataclass
class History:
    """Every publish on the meter topics, as a subscriber present from the start saw them."""

    col: Collector

    def payloads(self, number: str, key: str) -> list[str]:
        return [p for p in self.col.on_topic(value_topic(BASE, meter_slug(number), key)) if p]

    def states(self, number: str) -> list[dict[str, Any]]:
        return [
            json.loads(p) for p in self.col.on_topic(state_topic(BASE, meter_slug(number))) if p
        ]


def assert_history(
    col: Collector,
    sim: Simulator,
    *,
    allow_reset: bool = False,
    litre_deltas: tuple[int, ...] = (0,),
    clamped_ok: bool = False,
) -> None:
    """Nothing wrong was ever published, on any meter topic, at any moment of the test.

    * ``index`` and ``reading_date`` never go down (one drop allowed with ``allow_reset``);
    * no ``daily_consumption`` of 0, and every state's ``(reading_date, daily_consumption,
      index)`` is the simulator's true row of that date (plus a fault's ``litre_deltas``;
      with ``clamped_ok`` the index may be a kept high-water mark, never above the truth).
    """
    barrier(col)
    history = History(col)
    for spec in sim.scenario.contracts:
        number = spec.numero_compteur
        if not spec.telemetry:
            continue
        indexes = [float(p) for p in history.payloads(number, "index")]
        drops = [i for i in range(1, len(indexes)) if indexes[i] < indexes[i - 1]]
        assert len(drops) <= (1 if allow_reset else 0), f"{number}: index went down: {indexes}"
        days = [date.fromisoformat(p) for p in history.payloads(number, "reading_date")]
        assert days == sorted(days), f"{number}: reading_date went back: {days}"
        assert "0" not in history.payloads(number, "daily_consumption"), f"{number}: a 0 day"
        for state in history.states(number):
            if state["reading_date"] is None:
                assert state["daily_consumption"] is None, state
                assert state["index"] is None, state
                continue
            day = date.fromisoformat(state["reading_date"])
            row = sim.true_row(number, day)
            assert row is not None, f"{number}: {day} published but Veolia has no such row"
            litres = row["consommation"]["litre"]  # type: ignore[index]
            assert state["daily_consumption"] - litres in litre_deltas, (number, day, state)
            true_index = row["index"]["litre"]  # type: ignore[index]
            if clamped_ok:
                # The high-water mark kept instead of a lower index: never above the truth.
                assert state["index"] <= true_index, (number, day, state)
            elif not allow_reset:
                assert state["index"] == true_index, (number, day, state)


def publish_raw(broker: Broker, topic: str, payload: str, *, retain: bool = False) -> None:
    """Publish from another client (Home Assistant, a user) and wait for the broker's ack."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-poke-{next(_barriers)}")
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"publish to {topic} not acknowledged"
    finally:
        client.disconnect()
        client.loop_stop()


def in_thread(job: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``job`` in a thread; its exception (if any) lands in the returned list."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            job()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors
