"""MqttPublisher against a real mosquitto: retained state, reconnects, births, refresh, LWT."""

from __future__ import annotations

import itertools
import os
import pwd
import queue
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.broker import Broker, Collector, free_port, wait_until
from veolia2mqtt.config import MqttSettings
from veolia2mqtt.errors import MqttConnectionError, MqttPublishError
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.mqtt.topics import (
    device_discovery_topic,
    link_discovery_topic,
    link_event_topic,
    refresh_topic,
    state_topic,
    status_topic,
    value_topic,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

BASE = "veolia2mqtt"
PREFIX = "homeassistant"
LINK = "veolia2mqtt_jeedom"
SLUG = "i19fa051732"
STATUS = status_topic(BASE)
BIRTH = f"{PREFIX}/status"
REPO = Path(__file__).resolve().parents[2]
FAST = {"birth_delay_s": (0.05, 0.1), "readback_s": 0.3, "ack_timeout_s": 5.0}

DISCOVERY = Message(device_discovery_topic(PREFIX, SLUG), '{"dev": {"ids": ["m"]}}', retain=True)
LINK_DISCOVERY = Message(link_discovery_topic(LINK, SLUG), '{"id": "i19fa051732"}', retain=True)
STATE = Message(
    state_topic(BASE, SLUG), '{"index": 1234567, "daily_consumption": 312}', retain=True
)
VALUES = (
    Message(value_topic(BASE, SLUG, "daily_consumption"), "312", retain=True),
    Message(value_topic(BASE, SLUG, "index"), "1234567", retain=True),
    Message(value_topic(BASE, SLUG, "reading_date"), "2025-12-14", retain=True),
    Message(link_event_topic(LINK, SLUG, "index"), '{"value": 1234567}', retain=True),
)
ALWAYS = (DISCOVERY, LINK_DISCOVERY, STATE)
EVERYTHING = (*ALWAYS, *VALUES)

pytestmark = pytest.mark.integration

_barrier_ids = itertools.count()

KEEP_USER = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
"""Run as root, mosquitto switches to user ``mosquitto``, which cannot read pytest's tmp_path."""


def settings_for(broker: Broker, **overrides: object) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def publishers() -> Iterator[Callable[..., MqttPublisher]]:
    """Build publishers with fast test timings; every one is stopped after the test."""
    made: list[MqttPublisher] = []

    def make(settings: MqttSettings, **options: object) -> MqttPublisher:
        publisher = MqttPublisher(settings, link_topic=LINK, **{**FAST, **options})  # type: ignore[arg-type]
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.stop()


def barrier(col: Collector) -> None:
    """Round-trip through the broker: everything queued for ``col`` before has now arrived."""
    topic = f"test/barrier/{next(_barrier_ids)}"
    assert col._client is not None
    col._client.publish(topic, "x", qos=1)
    col.wait_for(lambda c: bool(c.on_topic(topic)), 10, f"barrier {topic}")


def snapshot(broker: Broker, **auth: str) -> dict[str, str]:
    """What a fresh subscriber gets as retained messages right now."""
    with Collector(broker.host, broker.port, ("#",), **auth) as col:
        barrier(col)
        return {m.topic: m.payload.decode() for m in col.messages if m.retain}


def poke(
    broker: Broker, messages: list[tuple[str, str, bool]], *, client_id: str = "test-poke"
) -> None:
    """Publish ``(topic, payload, retain)`` from another client, wait for the acks, leave."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(timeout=10)
            assert info.is_published(), f"poke to {topic} not acknowledged"
    finally:
        client.disconnect()
        client.loop_stop()


def expected(messages: tuple[Message, ...]) -> dict[str, str]:
    return {m.topic: m.payload for m in messages}


def holds(view: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(view.get(topic) == payload for topic, payload in wanted.items())


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_fresh_subscriber_sees_every_retained_message(broker, publishers, protocol):
    publisher = publishers(settings_for(broker, protocol=protocol))
    publisher.start()

    assert publisher.publish(EVERYTHING) == len(EVERYTHING)

    view = snapshot(broker)
    assert view == {**expected(EVERYTHING), STATUS: "online"}


def test_first_publish_sends_all_and_an_unchanged_second_publish_sends_nothing(broker, publishers):
    publisher = publishers(settings_for(broker))
    publisher.start()
    before = publisher.sent_count

    first = publisher.publish(EVERYTHING)
    second = publisher.publish(EVERYTHING)
    changed = publisher.publish([*EVERYTHING[:-1], Message(VALUES[-1].topic, "{}", retain=True)])
    live = Message(f"{BASE}/event", "ping", retain=False)
    live_twice = publisher.publish([live]) + publisher.publish([live])

    assert (first, second, changed, live_twice) == (len(EVERYTHING), 0, 1, 2)
    assert publisher.sent_count - before == len(EVERYTHING) + 1 + 2


def test_identical_publish_is_sent_again_after_a_reconnect(broker, publishers):
    publisher = publishers(settings_for(broker))
    publisher.start()
    assert publisher.publish(EVERYTHING) == len(EVERYTHING)
    assert publisher.publish(EVERYTHING) == 0

    broker.restart()
    assert publisher.wait_for_replay(2, 10), "no replay after the broker came back"

    assert publisher.publish(EVERYTHING) == len(EVERYTHING)
    assert snapshot(broker) == {**expected(EVERYTHING), STATUS: "online"}


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_broker_restart_republishes_everything_without_a_publish_call(broker, publishers, protocol):
    publisher = publishers(settings_for(broker, protocol=protocol))
    publisher.start()
    publisher.set_replay(ALWAYS, VALUES)
    publisher.publish(EVERYTHING)
    sent_before = publisher.sent_count

    broker.restart()  # persistence false: every retained message is gone

    wanted = {**expected(EVERYTHING), STATUS: "online"}
    with Collector(broker.host, broker.port, ("#",)) as col:
        col.wait_for(lambda c: holds(c.retained(), wanted), 10, "the re-published topics")
    assert publisher.wait_for_replay(2, 10)
    assert publisher.connect_count == 2
    assert publisher.sent_count - sent_before == 1 + len(EVERYTHING)  # online + everything


def test_values_the_broker_still_holds_are_not_republished_after_a_drop(broker, publishers):
    publisher = publishers(settings_for(broker, client_id="veolia2mqtt-drop"))
    publisher.start()
    publisher.set_replay(ALWAYS, VALUES)
    publisher.publish(EVERYTHING)
    index = VALUES[1]

    with Collector(broker.host, broker.port, ("#",)) as col:
        col.wait_for(lambda c: holds(c.retained(), expected(EVERYTHING)), 10, "first publish")
        sent_before = publisher.sent_count
        # A client with the same id takes the session over: the broker drops our connection
        # but keeps its retained store. The intruder also overwrites one value.
        poke(broker, [(index.topic, "999", True)], client_id="veolia2mqtt-drop")
        assert publisher.wait_for_replay(2, 15), "no replay after the session takeover"
        publisher.publish([Message("test/marker", "m", retain=False)])
        col.wait_for(lambda c: bool(c.on_topic("test/marker")), 10, "marker")

        for message in VALUES:
            if message is not index:
                assert col.on_topic(message.topic) == [message.payload], message.topic
        assert col.on_topic(index.topic) == [index.payload, "999", index.payload]
        for message in ALWAYS:
            assert col.on_topic(message.topic) == [message.payload] * 2, message.topic
    # online + the always messages + the one value the broker no longer held + the marker
    assert publisher.sent_count - sent_before == 1 + len(ALWAYS) + 1 + 1
    assert snapshot(broker)[index.topic] == index.payload


def test_ha_birth_resends_always_only_once_for_two_births(broker, publishers):
    refreshed: queue.Queue[str] = queue.Queue()
    # A fixed 0.5 s delay: the second birth and the refresh behind it arrive well within it.
    publisher = publishers(settings_for(broker), birth_delay_s=(0.5, 0.5), rng=lambda a, _b: a)
    publisher.on_refresh(refreshed.put)
    publisher.start()
    publisher.set_replay(ALWAYS, VALUES)
    publisher.publish(EVERYTHING)

    with Collector(broker.host, broker.port, ("#",)) as col:
        barrier(col)
        # The worker handles events in order: once the refresh is seen, both births are done.
        poke(broker, [(BIRTH, "online", False), (BIRTH, "online", False),
                      (refresh_topic(BASE, SLUG), "1", False)])  # fmt: skip
        assert refreshed.get(timeout=10) == SLUG
        assert publisher.birth_resend_count == 1
        publisher.publish([Message("test/marker", "m", retain=False)])
        col.wait_for(lambda c: bool(c.on_topic("test/marker")), 10, "marker")

        for message in ALWAYS:
            assert col.on_topic(message.topic) == [message.payload] * 2, message.topic
        for message in VALUES:
            assert col.on_topic(message.topic) == [message.payload], message.topic


def test_retained_online_and_offline_births_are_ignored(broker, publishers):
    refreshed: queue.Queue[str] = queue.Queue()
    # A user who made HA's birth retained: it replays on every subscribe.
    poke(broker, [(BIRTH, "online", True)])
    publisher = publishers(settings_for(broker))
    publisher.on_refresh(refreshed.put)
    publisher.start()
    publisher.set_replay(ALWAYS, VALUES)
    publisher.publish(EVERYTHING)
    sent_before = publisher.sent_count

    poke(broker, [(BIRTH, "offline", False), (refresh_topic(BASE, SLUG), "1", False)])

    assert refreshed.get(timeout=10) == SLUG
    assert publisher.birth_resend_count == 0
    assert publisher.sent_count == sent_before


def test_cleared_meter_config_disappears_for_a_fresh_subscriber(broker, publishers):
    publisher = publishers(settings_for(broker))
    publisher.start()
    publisher.publish(EVERYTHING)
    assert DISCOVERY.topic in snapshot(broker)

    cleared = [Message(m.topic, "", retain=True) for m in EVERYTHING]
    assert publisher.publish(cleared) == len(cleared)

    assert snapshot(broker) == {STATUS: "online"}


def test_empty_if_missing_payload_is_not_republished_when_absent(broker, publishers):
    publisher = publishers(settings_for(broker))
    publisher.start()
    cleared = Message(VALUES[0].topic, "", retain=True)
    publisher.set_replay((), (cleared, VALUES[1]))
    sent_before = publisher.sent_count

    broker.restart()

    assert publisher.wait_for_replay(2, 10)
    assert publisher.sent_count - sent_before == 2  # online + the lost index, not the clear
    assert snapshot(broker) == {STATUS: "online", VALUES[1].topic: VALUES[1].payload}


def test_last_will_reads_offline_when_the_process_is_killed(broker):
    code = (
        "import sys\n"
        "from veolia2mqtt.config import MqttSettings\n"
        "from veolia2mqtt.mqtt.publisher import MqttPublisher\n"
        f"p = MqttPublisher(MqttSettings(host={broker.host!r}, port={broker.port}))\n"
        "p.start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with Collector(broker.host, broker.port, (STATUS,)) as col:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        try:
            col.wait_for(lambda c: c.on_topic(STATUS)[-1:] == ["online"], 20, "online")
            proc.kill()
            proc.wait(timeout=10)
            col.wait_for(lambda c: c.on_topic(STATUS)[-1:] == ["offline"], 10, "the will")
        finally:
            proc.kill()
            proc.wait(timeout=10)
            assert proc.stdin is not None
            proc.stdin.close()
    assert snapshot(broker)[STATUS] == "offline"


@pytest.mark.parametrize(("offline_on_stop", "status"), [(True, "offline"), (False, "online")])
def test_clean_stop_publishes_offline_only_in_daemon_mode(broker, offline_on_stop, status):
    publisher = MqttPublisher(
        settings_for(broker), publish_offline_on_stop=offline_on_stop, readback_s=0.3
    )
    publisher.start()
    publisher.publish([STATE])
    with Collector(broker.host, broker.port, ("#",)) as col:
        barrier(col)
        publisher.stop()
        # A fresh connection, accepted after our DISCONNECT was written.
        view = snapshot(broker)
        barrier(col)
        assert col.on_topic(STATUS) == ["online", *(["offline"] if offline_on_stop else [])]
    assert view[STATUS] == status
    assert view[STATE.topic] == STATE.payload
    assert not publisher.connected


def test_refresh_requests_reach_the_callback_with_the_slug(broker, publishers):
    refreshed: queue.Queue[str] = queue.Queue()
    # A retained refresh replays on subscribe and must not trigger a sync.
    poke(broker, [(refresh_topic(BASE, "stale"), "1", True)])
    publisher = publishers(settings_for(broker))
    publisher.on_refresh(refreshed.put)
    publisher.start()

    poke(broker, [
        (refresh_topic(BASE, SLUG), "", False),
        (f"{LINK}/cmd/set/{SLUG}_other", "1", False),
        (f"{LINK}/cmd/set/{SLUG}_refresh", "1", False),
        (refresh_topic(BASE, "second_meter"), "anything", False),
    ])  # fmt: skip

    got = [refreshed.get(timeout=10) for _ in range(3)]
    assert got == [SLUG, SLUG, "second_meter"]
    assert refreshed.empty()


def test_publish_without_a_connection_raises(broker, publishers):
    publisher = publishers(settings_for(broker))
    with pytest.raises(MqttPublishError, match="not connected"):
        publisher.publish([STATE])
    publisher.start()
    broker.stop()
    wait_until(lambda: not publisher.connected, 10, "the publisher to notice")

    with pytest.raises(MqttPublishError, match="not connected"):
        publisher.publish([STATE])


def test_broker_down_at_start_then_up(broker, publishers):
    broker.stop()
    publisher = publishers(settings_for(broker))
    publisher.set_replay(ALWAYS, VALUES)

    publisher.start(require_connection=False)
    assert not publisher.connected
    broker.start()

    assert publisher.wait_for_replay(1, 15), "never connected once the broker came up"
    assert snapshot(broker) == {**expected(EVERYTHING), STATUS: "online"}


def test_connection_refused_is_a_clear_error():
    settings = MqttSettings(host="127.0.0.1", port=free_port())
    publisher = MqttPublisher(settings, connect_timeout_s=2)

    with pytest.raises(MqttConnectionError, match="connection refused") as err:
        publisher.start()

    assert isinstance(err.value.__cause__, ConnectionRefusedError)
    assert not publisher.connected


def test_probe_connects_without_publishing(broker):
    with Collector(broker.host, broker.port, ("#",)) as col:
        MqttPublisher(settings_for(broker), will=False).probe()
        barrier(col)
        assert [m.topic for m in col.messages if not m.topic.startswith("test/")] == []


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    password_file = tmp_path / "passwords"
    subprocess.run([passwd, "-c", "-b", str(password_file), "jean", "s3cret!"], check=True)
    password_file.chmod(0o600)
    conf = f"{KEEP_USER}allow_anonymous false\npassword_file {password_file}\n"
    b = Broker(tmp_path, extra_conf=conf).start()
    try:
        yield b
    finally:
        b.kill()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_password_broker(password_broker, publishers, protocol):
    good = settings_for(password_broker, protocol=protocol, username="jean", password="s3cret!")
    publisher = publishers(good)
    publisher.start()
    assert publisher.publish([STATE]) == 1
    assert snapshot(password_broker, username="jean", password="s3cret!")[STATE.topic]

    anonymous = publishers(settings_for(password_broker, protocol=protocol, client_id="anon"))
    with pytest.raises(MqttConnectionError, match=r"mqtt\.username") as err:
        anonymous.start()
    assert "refused" in str(err.value)

    wrong = settings_for(
        password_broker, protocol=protocol, client_id="wrong", username="jean", password="nope!"
    )
    with pytest.raises(MqttConnectionError, match="refused the username/password") as err:
        publishers(wrong).start()
    assert "nope!" not in str(err.value)
    assert "s3cret!" not in str(err.value)


def test_unacknowledged_publish_raises_after_the_timeout(broker):
    assert broker._proc is not None
    with MqttPublisher(settings_for(broker), ack_timeout_s=0.5, readback_s=0.3) as publisher:
        broker._proc.send_signal(signal.SIGSTOP)  # the broker stops answering, TCP stays up
        try:
            with pytest.raises(MqttPublishError, match="did not acknowledge") as err:
                publisher.publish([STATE])
        finally:
            broker._proc.send_signal(signal.SIGCONT)
        assert STATE.topic in str(err.value)
        assert publisher.publish([STATE]) == 1  # resent: the failed one never counted as held
