"""The process under faults: ``python -m veolia2mqtt`` in a subprocess, stopped by a signal.

SIGTERM in the middle of a slow Veolia request with a broker up is proven by
``tests/integration/test_daemon.py::test_sigterm_during_a_slow_veolia_request``; these add the
cases where the process has nobody to say goodbye to, or is interrupted twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import Collector, free_port, wait_until
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.helpers.broker import Broker

STOP_LIMIT_S = 5.0
STATUS = "veolia2mqtt/status"


@pytest.fixture
def live_sim() -> Iterator[Simulator]:
    """The simulator on the real clock, as the process sees it."""
    with Simulator(Scenario()) as simulator:
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, host: str, port: int) -> Path:
    scenario = sim.scenario
    data = {
        "veolia": {
            "email": scenario.email,
            "password": scenario.password,
            "client_id": scenario.client_id,
            "auth_url": sim.auth_url,
            "api_url": sim.api_url,
            "timeout_s": 20,
        },
        "mqtt": {"host": host, "port": port},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


class Process:
    """The daemon in a subprocess, its log in a file."""

    def __init__(self, config: Path) -> None:
        self.log = config.parent / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VEOLIA2MQTT_")}
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "veolia2mqtt", "--config", str(config)],
                stdout=sink,
                stderr=sink,
                env=env,
                cwd=config.parent,
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 20) -> None:
        wait_until(lambda: needle in self.text(), timeout_s, f"{needle!r} in the daemon log")

    def signal(self, signum: int) -> tuple[int, float]:
        sent = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=15)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    made: list[Process] = []
    yield made
    for process in made:
        process.kill()


def test_sigterm_while_the_broker_is_unreachable(tmp_path, live_sim, processes):
    # Nothing listens on the port: paho keeps retrying in the background.
    config = write_config(tmp_path, live_sim, "127.0.0.1", free_port())
    process = Process(config)
    processes.append(process)
    process.wait_log("Sync failed while publishing to the broker")
    code, took = process.signal(signal.SIGTERM)
    assert code == 0, process.text()
    assert took < STOP_LIMIT_S, f"stopped {took:.1f} s after SIGTERM"
    assert "Traceback" not in process.text()


@pytest.mark.integration
def test_a_second_signal_during_the_stop_still_exits_cleanly(
    tmp_path, live_sim, broker: Broker, processes
):
    live_sim.fail("journalieres", fault="slow", times=None, delay_s=30)
    config = write_config(tmp_path, live_sim, broker.host, broker.port)
    with Collector(broker.host, broker.port, (STATUS,)) as col:
        process = Process(config)
        processes.append(process)
        col.wait_for(lambda c: c.retained().get(STATUS) == "online", 15, "online")
        wait_until(lambda: live_sim.in_flight > 0, 15, "the slow request")
        process.proc.send_signal(signal.SIGTERM)
        code, took = process.signal(signal.SIGINT)  # an impatient second Ctrl-C
        assert code == 0, process.text()
        assert took < STOP_LIMIT_S
        col.wait_for(lambda c: c.retained().get(STATUS) == "offline", 5, "offline")
    assert "Traceback" not in process.text()
