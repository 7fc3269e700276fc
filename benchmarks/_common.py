"""Shared pieces: result figures, a mosquitto process, a retained-message watcher, wiring."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from veolia2mqtt.cli import DryRunPublisher
from veolia2mqtt.config import Settings
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import SyncService
from veolia2mqtt.veolia.client import VeoliaClient
from veolia2mqtt.veolia.portals import resolve_portal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from veolia2mqtt.mqtt.messages import Message, Publisher
    from veolia2mqtt.veolia.simulator import Simulator

REPO: Final = Path(__file__).resolve().parent.parent
TODAY: Final = date(2026, 6, 15)
"""A mid-month day: the fetch plan then needs only the current month (no previous month)."""
VERSION: Final = "bench"


@dataclass
class Figure:
    """One line of the table."""

    id: str
    group: str
    label: str
    value: float | int | str | None
    unit: str = ""
    target: str | None = None
    passed: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Section:
    """What one measurement module returns: its figures and free-form details for the JSON."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` (20 ms steps) until true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s:g} s waiting for {what}"
            raise TimeoutError(msg)
        pause.wait(0.02)


class Mosquitto:
    """A mosquitto process on a free loopback port, no persistence, anonymous access."""

    def __init__(self, workdir: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            msg = "mosquitto is not installed (apt-get install mosquitto; PATH may need /usr/sbin)"
            raise RuntimeError(msg)
        self._binary = binary
        self._workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        conf = self._workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\npersistence false\nallow_anonymous true\n"
            "log_dest stderr\nlog_type error\n",
            encoding="utf-8",
        )
        self._proc = subprocess.Popen(
            [self._binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                msg = f"mosquitto exited with {self._proc.returncode}"
                raise RuntimeError(msg)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(listening, 10, f"mosquitto on port {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None


@dataclass(frozen=True)
class Seen:
    """One message a :class:`Watcher` received."""

    at: float
    """``time.monotonic()`` on arrival."""
    topic: str
    payload: str
    retain: bool


class Watcher:
    """A paho subscriber that timestamps every message under its filters."""

    def __init__(self, host: str, port: int, filters: Sequence[str] = ("#",)) -> None:
        self._host = host
        self._port = port
        self._filters = tuple(filters)
        self._lock = threading.Condition()
        self.messages: list[Seen] = []
        self._client: mqtt.Client | None = None

    def __enter__(self) -> Self:
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{id(self)}")

        def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
            c.subscribe([(topic_filter, 1) for topic_filter in self._filters])

        def on_subscribe(*_args: object) -> None:
            subscribed.set()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            seen = Seen(time.monotonic(), msg.topic, msg.payload.decode("utf-8"), bool(msg.retain))
            with self._lock:
                self.messages.append(seen)
                self._lock.notify_all()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(self._host, self._port, keepalive=30)
        client.loop_start()
        self._client = client
        if not subscribed.wait(10):
            msg = "the watcher did not subscribe within 10 s"
            raise TimeoutError(msg)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def since(self, start: int) -> list[Seen]:
        with self._lock:
            return list(self.messages[start:])

    def first(self, predicate: Callable[[Seen], bool], timeout_s: float) -> Seen:
        """The first message (already received or to come) matching ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for seen in self.messages:
                    if predicate(seen):
                        return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"no matching MQTT message within {timeout_s:g} s"
                    raise TimeoutError(msg)
                self._lock.wait(min(remaining, 0.2))

    def settle(self, quiet_s: float, timeout_s: float) -> None:
        """Wait until no message arrived for ``quiet_s`` since the call (at most ``timeout_s``)."""
        started = time.monotonic()
        deadline = started + timeout_s
        pause = threading.Event()
        while time.monotonic() < deadline:
            with self._lock:
                last = max(self.messages[-1].at if self.messages else 0.0, started)
            if time.monotonic() - last >= quiet_s:
                return
            pause.wait(0.02)


def settings_for(
    sim: Simulator,
    state_dir: Path,
    *,
    mqtt_port: int = 1883,
    base_topic: str = "veolia2mqtt",
    sync_time: str | None = None,
    client_id: str = "veolia2mqtt",
) -> dict[str, Any]:
    """A configuration (as data) pointing at ``sim`` and a broker on ``mqtt_port``."""
    scenario = sim.scenario
    return {
        "veolia": {
            "email": scenario.email,
            "password": scenario.password,
            "client_id": scenario.client_id,
            "auth_url": sim.auth_url,
            "api_url": sim.api_url,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "base_topic": base_topic,
            "client_id": client_id,
        },
        "sync": {"time": sync_time, "timezone": scenario.timezone},
        "state_dir": str(state_dir),
        "log": {"level": "WARNING"},
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the YAML configuration file (JSON is valid YAML)."""
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    """The environment for a child process, without any ``VEOLIA2MQTT_*`` variable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VEOLIA2MQTT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def python() -> str:
    return sys.executable


@dataclass
class Wired:
    """The objects of one (simulated) process: store, client, service."""

    store: StateStore
    client: VeoliaClient
    service: SyncService
    publisher: Publisher


def wire(
    sim: Simulator,
    state_dir: Path,
    *,
    clock: Callable[[], datetime],
    publisher: Publisher | None = None,
    settings: Settings | None = None,
) -> Wired:
    """Fresh objects as ``cli._App`` builds them, with the clock injected everywhere."""
    settings = settings or Settings(**settings_for(sim, state_dir))
    store = StateStore(state_dir, clock=lambda: clock().timestamp())
    store.load()
    scenario = sim.scenario
    endpoints = resolve_portal(
        "eau.veolia.fr", client_id=scenario.client_id, auth_url=sim.auth_url, api_url=sim.api_url
    )
    client = VeoliaClient(
        endpoints,
        email=scenario.email,
        password=SecretStr(scenario.password),
        token_store=store,
        sleep=lambda _s: None,
        clock=lambda: clock().timestamp(),
    )
    sink = publisher or DryRunPublisher(io.StringIO())
    service = SyncService(client, sink, store, settings, version=VERSION, clock=clock)
    return Wired(store=store, client=client, service=service, publisher=sink)


def password_sign_ins(stats: dict[str, int]) -> int:
    """Cognito ``USER_PASSWORD_AUTH`` calls: the password on the wire, what risks a lockout."""
    return stats["cognito:USER_PASSWORD_AUTH"]


def refresh_renewals(stats: dict[str, int]) -> int:
    """Cognito ``REFRESH_TOKEN_AUTH`` calls: an expired access token renewed, no password."""
    return stats["cognito:REFRESH_TOKEN_AUTH"]


def sign_ins_note(stats: dict[str, int]) -> str:
    """Both sign-in figures, as the notes print them."""
    return (
        f"password sign-ins {password_sign_ins(stats)}, refresh renewals {refresh_renewals(stats)}"
    )


def total_requests(stats: dict[str, int]) -> int:
    return sum(stats.values())


class SinkPublisher:
    """Meets the ``Publisher`` protocol and sends nothing: counts messages, no I/O, no format."""

    def __init__(self) -> None:
        self.sent_count = 0
        self.replay_sizes = (0, 0)

    def start(self) -> None:
        """Nothing to connect."""

    def stop(self) -> None:
        """Nothing to disconnect."""

    def publish(self, messages: Sequence[Message]) -> int:
        self.sent_count += len(messages)
        return len(messages)

    def set_replay(self, always: Sequence[Message], if_missing: Sequence[Message]) -> None:
        self.replay_sizes = (len(always), len(if_missing))

    def on_refresh(self, callback: Callable[[str], None]) -> None:
        del callback
