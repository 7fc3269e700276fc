"""4. Start-up: from spawning the process to the first retained meter state on the broker.

A subscriber on ``<base>/+/state`` is connected before the daemon is spawned, so the time is
taken when the broker delivers the message: process start, imports, configuration, broker
connection, login, fetch, build and publish. Median of 5 runs (1 with ``--smoke``):

* ``--demo``: the built-in simulated account (the daemon starts its own simulator);
* a real configuration against the simulator's HTTP server, with an empty ``state_dir``
  (login and full fetch before the first state);
* the same after a restart (``state_dir`` kept): the first state is the replay of the last
  published values, sent on connect before any Veolia request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from benchmarks._common import Mosquitto, Section, Watcher, median, settings_for
from benchmarks._daemon import Daemon, wait_for_message
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from benchmarks._common import Seen

GROUP = "4. Start-up: process start to first retained state"
TARGET_S = 1.5


def _first_state_s(
    workdir: Path,
    name: str,
    config: dict[str, Any],
    watcher: Watcher,
    base: str,
    *flags: str,
    wait_sync: bool = True,
) -> float:
    with Daemon(workdir, name, config, *flags) as daemon:

        def meter_state(seen: Seen) -> bool:
            return (
                seen.at >= daemon.started_at
                and seen.topic.startswith(f"{base}/")
                and seen.topic.endswith("/state")
                and seen.topic != f"{base}/bridge/state"
                and bool(seen.payload)
            )

        seen = wait_for_message(watcher, daemon, meter_state, 60)
        elapsed = seen.at - daemon.started_at
        if not wait_sync:
            return elapsed
        # Let the first sync finish before stopping, so that the restart finds its state.
        wait_for_message(
            watcher,
            daemon,
            lambda m: (
                m.at >= daemon.started_at
                and m.topic == f"{base}/bridge/state"
                and json.loads(m.payload or "{}").get("status") == "ok"
            ),
            60,
        )
    return elapsed


def run(workdir: Path, *, smoke: bool) -> Section:
    section = Section("startup")
    runs = 1 if smoke else 5
    samples: dict[str, list[float]] = {"demo": [], "cold": [], "restart": []}
    with Mosquitto(workdir) as broker, Watcher(broker.host, broker.port, ("#",)) as watcher:
        for i in range(runs):
            base = f"bench_demo_{i}"
            config = {
                "mqtt": {
                    "host": broker.host,
                    "port": broker.port,
                    "base_topic": base,
                    "client_id": f"bench-demo-{i}",
                },
                "log": {"level": "WARNING"},
            }
            samples["demo"].append(
                _first_state_s(workdir, f"demo-{i}", config, watcher, base, "--demo")
            )
        with Simulator(Scenario()) as sim:
            for i in range(runs):
                base = f"bench_real_{i}"
                config = settings_for(
                    sim,
                    workdir / f"startup-state-{i}",
                    mqtt_port=broker.port,
                    base_topic=base,
                    client_id=f"bench-real-{i}",
                )
                samples["cold"].append(_first_state_s(workdir, f"real-{i}", config, watcher, base))
                samples["restart"].append(
                    _first_state_s(workdir, f"restart-{i}", config, watcher, base, wait_sync=False)
                )
    demo, cold, restart = (median(samples[k]) for k in ("demo", "cold", "restart"))
    for key, label, value, target in (
        ("demo", "--demo", demo, True),
        ("cold", "real config, empty state_dir", cold, True),
        ("restart", "real config, restart (state kept)", restart, False),
    ):
        section.add(
            f"startup.{key}",
            GROUP,
            f"{label}, median of {runs}",
            round(value, 3),
            "s",
            target=f"≤ {TARGET_S:g} s" if target else None,
            passed=(value <= TARGET_S) if target else None,
            note="runs: " + ", ".join(f"{s:.2f}" for s in samples[key]),
        )
    section.details = {"samples_s": samples}
    return section
