"""A real mosquitto broker on a free loopback port, which tests can stop, kill and restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout_s: float, what: str, step_s: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s} s waiting for {what}"
            raise AssertionError(msg)
        pause.wait(step_s)


class Broker:
    """A mosquitto process with ``persistence false``, like the one Jeedom's MQTT Manager runs."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra_conf: str = "") -> None:
        if MOSQUITTO is None:
            msg = "mosquitto is not installed"
            raise RuntimeError(msg)
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_conf(self) -> Path:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if "allow_anonymous" not in self.extra_conf:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n", encoding="utf-8")
        return conf

    def start(self, timeout_s: float = 10) -> Self:
        """Start mosquitto and wait until it accepts TCP connections."""
        assert MOSQUITTO is not None
        conf = self._write_conf()
        log = (self.workdir / f"mosquitto-{self.port}.log").open("ab")
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        log.close()

        def listening() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                msg = f"mosquitto exited with {self._proc.returncode}; see {log.name}"
                raise AssertionError(msg)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(listening, timeout_s, f"mosquitto on port {self.port}")
        return self

    def stop(self) -> None:
        """Stop mosquitto cleanly (SIGTERM); retained messages are lost (no persistence)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def kill(self) -> None:
        """Kill mosquitto (SIGKILL)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, with an empty retained store."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None


@dataclass
class Collector:
    """A paho subscriber that records every message it receives, retained ones included."""

    host: str
    port: int
    topics: tuple[str, ...] = ("#",)
    username: str | None = None
    password: str | None = None
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _client: mqtt.Client | None = None

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def __enter__(self) -> Self:
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-collector-{id(self)}")
        if self.username is not None:
            client.username_pw_set(self.username, self.password)

        def on_connect(c, _u, _f, _rc, _p):
            c.subscribe([(t, 1) for t in self.topics])

        def on_subscribe(_c, _u, _mid, _rc, _p):
            subscribed.set()

        def on_message(_c, _u, msg):
            with self._changed:
                self.messages.append(msg)
                self._changed.notify_all()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client
        if not subscribed.wait(10):
            msg = "collector did not subscribe within 10 s"
            raise AssertionError(msg)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def retained(self) -> dict[str, str]:
        """The latest payload seen per topic (retained or live), as text."""
        with self._lock:
            out: dict[str, str] = {}
            for msg in self.messages:
                out[msg.topic] = msg.payload.decode("utf-8")
            return out

    def on_topic(self, topic: str) -> list[str]:
        """Every payload received on ``topic``, in order."""
        with self._lock:
            return [m.payload.decode("utf-8") for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout_s: float = 10, what: str = "messages") -> None:
        """Block until ``predicate(self)`` holds, or fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                self._lock.release()
                try:
                    ok = predicate(self)
                finally:
                    self._lock.acquire()
                if ok:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"timed out after {timeout_s} s waiting for {what}"
                    raise AssertionError(msg)
                self._changed.wait(min(remaining, 0.2))


def retained_snapshot(
    host: str, port: int, topic_filter: str = "#", settle_s: float = 1.0
) -> dict[str, str]:
    """A fresh subscriber's view of the retained messages under ``topic_filter``."""
    with Collector(host, port, (topic_filter,)) as col:
        threading.Event().wait(settle_s)
        return {m.topic: m.payload.decode("utf-8") for m in col.messages if m.retain}
