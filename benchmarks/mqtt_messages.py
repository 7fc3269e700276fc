"""6. MQTT messages per sync, counted on the wire by a subscriber to ``#``.

The real ``MqttPublisher`` and ``SyncService`` against a fresh mosquitto and the simulator (3
contracts), wired as the daemon wires them (``prime``, ``start``, ``publish_cleanup``). Phases:

* first sync: an empty ``state_dir`` and an empty broker;
* unchanged sync: one hour later, the same day, Veolia's data unchanged. Each message is
  compared with the last payload the subscriber saw on its topic: *identical* (the target is 0),
  *last_sync only* (the ``last_sync`` topic, or a JSON whose only differences are ``last_sync``
  / ``last_success``), or *changed*;
* Home Assistant birth: ``online`` (not retained) on ``homeassistant/status``; the publisher
  re-sends discovery and states (the birth delay is set to 0 for the benchmark);
* restart: new objects on the same ``state_dir`` (the broker keeps its retained messages): the
  connect replay re-sends discovery and states, and the per-value topics only if missing.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks._common import TODAY, Mosquitto, Section, Watcher, settings_for, wire
from veolia2mqtt.config import Settings
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from benchmarks._common import Seen, Wired

GROUP = "6. MQTT messages per sync (3 meters)"
BASE = "bench"
BIRTH_TOPIC = "homeassistant/status"
_SYNC_FIELDS = frozenset({"last_sync", "last_success"})


def _kind(topic: str) -> str:
    if topic.startswith("homeassistant/"):
        return "discovery"
    if topic == f"{BASE}/status":
        return "status"
    if topic == f"{BASE}/bridge/state":
        return "bridge state"
    if topic.endswith("/state"):
        return "meter state"
    return "value topic"


def _only_sync_changed(topic: str, before: str, after: str) -> bool:
    if topic.endswith("/last_sync"):
        return True
    try:
        old, new = json.loads(before), json.loads(after)
    except ValueError:
        return False
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    return _without_sync(old) == _without_sync(new)


def _without_sync(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _SYNC_FIELDS}


def _classify(history: list[Seen], phase: list[Seen]) -> dict[str, Any]:
    last: dict[str, str] = {}
    for seen in history:
        last[seen.topic] = seen.payload
    identical, sync_only, changed = [], [], []
    phase = [seen for seen in phase if seen.topic != BIRTH_TOPIC]
    for seen in phase:
        before = last.get(seen.topic)
        if before == seen.payload:
            identical.append(seen.topic)
        elif before is not None and _only_sync_changed(seen.topic, before, seen.payload):
            sync_only.append(seen.topic)
        else:
            changed.append(seen.topic)
        last[seen.topic] = seen.payload
    return {
        "total": len(phase),
        "identical": len(identical),
        "last_sync_only": len(sync_only),
        "changed": len(changed),
        "by_kind": dict(Counter(_kind(s.topic) for s in phase)),
        "identical_topics": identical,
        "last_sync_only_topics": sync_only,
    }


def _phase(watcher: Watcher, action: Any, *, quiet_s: float = 0.5) -> tuple[list[Seen], list[Seen]]:
    """Run ``action``; return (everything before it, the messages it caused)."""
    watcher.settle(quiet_s, 10)
    mark = watcher.count()
    history = watcher.since(0)
    action()
    watcher.settle(quiet_s, 20)
    return history, watcher.since(mark)


def _start(sim: Simulator, state_dir: Path, settings: Settings, clock: Any) -> Wired:
    publisher = MqttPublisher(settings.mqtt, birth_delay_s=(0.0, 0.0), readback_s=1.0)
    wired = wire(sim, state_dir, clock=clock, publisher=publisher, settings=settings)
    cleanup = wired.service.prime()
    publisher.start()
    wired.service.publish_cleanup(cleanup)
    if not publisher.wait_for_replay(1, 15):
        msg = "the connect replay did not complete"
        raise TimeoutError(msg)
    return wired


def run(workdir: Path, *, smoke: bool) -> Section:
    del smoke  # one quick case either way
    section = Section("mqtt")
    scenario = Scenario.many(3, today=TODAY)
    state_dir = workdir / "mqtt-state"
    phases: dict[str, dict[str, Any]] = {}
    with (
        Simulator(scenario) as sim,
        Mosquitto(workdir) as broker,
        Watcher(broker.host, broker.port, ("#",)) as watcher,
    ):
        config = settings_for(sim, state_dir, mqtt_port=broker.port, base_topic=BASE)
        settings = Settings(**config)
        wired = _start(sim, state_dir, settings, sim.now)
        publisher = wired.publisher
        assert isinstance(publisher, MqttPublisher)
        try:
            history, seen = _phase(watcher, wired.service.run_once)
            phases["first sync"] = _classify(history, seen)

            sim.advance(timedelta(hours=1))
            history, seen = _phase(watcher, wired.service.run_once)
            phases["unchanged sync"] = _classify(history, seen)

            def birth() -> None:
                _publish(broker.host, broker.port, BIRTH_TOPIC, "online")
                if not publisher.wait_for_birth_resend(1, 15):
                    msg = "no re-send after the Home Assistant birth"
                    raise TimeoutError(msg)

            history, seen = _phase(watcher, birth)
            phases["after HA birth"] = _classify(history, seen)
        finally:
            publisher.stop()
            wired.client.close()

        restarted: list[Wired] = []

        def restart() -> None:
            restarted.append(_start(sim, state_dir, settings, sim.now))

        watcher.settle(0.5, 10)
        history, seen = _phase(watcher, restart, quiet_s=1.5)
        phases["restart (replay)"] = _classify(history, seen)
        for again in restarted:
            again.publisher.stop()
            again.client.close()

    unchanged = phases["unchanged sync"]
    section.add(
        "mqtt.first_sync",
        GROUP,
        "first sync",
        phases["first sync"]["total"],
        "messages",
        note=_kinds(phases["first sync"]),
    )
    section.add(
        "mqtt.unchanged.identical",
        GROUP,
        "unchanged sync: identical payloads re-published",
        unchanged["identical"],
        "messages",
        target="0",
        passed=unchanged["identical"] == 0,
        note=f"{unchanged['total']} sent in all",
    )
    section.add(
        "mqtt.unchanged.last_sync_only",
        GROUP,
        "unchanged sync: changed only by last_sync",
        unchanged["last_sync_only"],
        "messages",
        note=f"other changes: {unchanged['changed']}",
    )
    section.add(
        "mqtt.birth",
        GROUP,
        "after an HA birth message",
        phases["after HA birth"]["total"],
        "messages",
        note=_kinds(phases["after HA birth"]),
    )
    section.add(
        "mqtt.restart",
        GROUP,
        "restart, broker kept its retained messages",
        phases["restart (replay)"]["total"],
        "messages",
        note=_kinds(phases["restart (replay)"]),
    )
    section.details = {"meters": len(scenario.contracts), "phases": phases}
    return section


def _kinds(phase: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(phase["by_kind"].items()))


def _publish(host: str, port: int, topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ha")
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=False)
        info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
