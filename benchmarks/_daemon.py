"""The real daemon (``python -m veolia2mqtt``) in a subprocess, watched from the broker."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Self

from benchmarks._common import clean_env, python, write_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from benchmarks._common import Seen, Watcher


class Daemon:
    """``python -m veolia2mqtt --config <cfg> [flags]``; SIGTERM on exit, bounded waits."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any], *flags: str) -> None:
        self._config = write_config(workdir / f"{name}.yaml", config)
        self._log = workdir / f"{name}.log"
        self._flags = flags
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        """``time.monotonic()`` just before the process was spawned."""
        self.returncode: int | None = None

    def __enter__(self) -> Self:
        cmd = [python(), "-m", "veolia2mqtt", "--config", str(self._config), *self._flags]
        with self._log.open("wb") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=clean_env())
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.returncode = proc.returncode
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self._log.read_text(encoding="utf-8", errors="replace")[-2000:]
            msg = f"the daemon exited with {self.proc.returncode}:\n{tail}"
            raise RuntimeError(msg)

    def log_text(self) -> str:
        try:
            return self._log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def wait_for_message(
    watcher: Watcher, daemon: Daemon, predicate: Callable[[Seen], bool], timeout_s: float
) -> Seen:
    """The first message matching ``predicate``; fails early if the daemon exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return watcher.first(predicate, min(0.5, max(deadline - time.monotonic(), 0.01)))
        except TimeoutError:
            daemon.check_alive()
            if time.monotonic() >= deadline:
                raise
