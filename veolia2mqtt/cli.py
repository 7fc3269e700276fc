"""Command line: argument parsing, logging, wiring, signals and exit codes.

The only module that prints (``--dry-run`` output and the ``check`` report) and the only one
that maps exceptions to exit codes: 0 success, 2 configuration error, 3 Veolia refused the
login, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from pydantic import SecretStr

from veolia2mqtt import __version__
from veolia2mqtt.config import (
    Settings,
    base_topic_is_one_level,
    config_path,
    load_settings,
)
from veolia2mqtt.errors import ConfigError, Veolia2MqttError
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.mqtt.topics import PREFIX as DEVICE_PREFIX
from veolia2mqtt.mqtt.topics import status_topic
from veolia2mqtt.scheduler import Daemon, DaemonExit, Outcome, Planner, Wakeup, slot_time
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import SyncService, credentials_fingerprint, utc_now
from veolia2mqtt.veolia.client import FailedMeter, MeterData, VeoliaClient
from veolia2mqtt.veolia.errors import VeoliaAuthError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from veolia2mqtt.mqtt.messages import Publisher
    from veolia2mqtt.veolia.simulator import Simulator

_LOGGER = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_CONFIG: Final = 2
EXIT_AUTH: Final = 3
STOP_GRACE_S: Final = 1.5
"""How long a signal waits for the worker; then the main thread says goodbye itself (the
contract is offline published and exit within 5 s, even during a 15 s Veolia request)."""
ONCE_AUTH_BLOCK: Final = timedelta(hours=23)
"""After a refused login, ``--once`` does not log in again for this long (same credentials)."""
HEALTHY_HEARTBEAT_S: Final = 600.0
"""A sync in progress does not refresh the heartbeat; a slow Veolia may take minutes."""
COMMANDS: Final = ("check", "clear-discovery", "health")


class DryRunPublisher:
    """Prints every message (topic, retain flag, payload) instead of publishing; no broker."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._seen: dict[str, str] = {}
        self._always: list[Message] = []
        self._lock = threading.Lock()
        self.sent_count = 0

    def start(self) -> None:
        """Print the replay, as a broker connection would publish it."""
        self.publish(self._always)

    def stop(self) -> None:
        """Nothing to disconnect."""
        self._out.flush()

    def publish(self, messages: Sequence[Message]) -> int:
        """Print each message whose payload differs from the last one printed on its topic."""
        sent = 0
        with self._lock:
            for message in messages:
                if self._seen.get(message.topic) == message.payload:
                    continue
                self._seen[message.topic] = message.payload
                retain = "true" if message.retain else "false"
                print(f"{message.topic} retain={retain} {message.payload}", file=self._out)
                sent += 1
            self.sent_count += sent
        return sent

    def set_replay(self, always: Sequence[Message], if_missing: Sequence[Message]) -> None:
        """Kept for :meth:`start`; a console has no reconnects."""
        del if_missing
        self._always = list(always)

    def on_refresh(self, callback: Callable[[str], None]) -> None:
        """A console receives no refresh requests."""
        del callback


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG; ours are free of secrets, but its headers need not show.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veolia2mqtt",
        description="Publish Veolia Eau water meter readings to MQTT (Home Assistant, Jeedom).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=COMMANDS,
        help="check: validate, log in, list meters, test the broker (no publish); "
        "clear-discovery: empty every retained topic veolia2mqtt published; "
        "health: exit 0 when the daemon's heartbeat is fresh",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file (default ./config.yaml)")
    parser.add_argument("--once", action="store_true", help="one sync, then exit")
    parser.add_argument("--dry-run", action="store_true", help="print messages, no broker")
    parser.add_argument("--demo", action="store_true", help="use the built-in simulated account")
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG, INFO, WARNING or ERROR (default: log.level, INFO)",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="text (default) or json lines"
    )
    parser.add_argument("--version", action="version", version=f"veolia2mqtt {__version__}")
    return parser


def _demo_settings(settings: Settings, sim: Simulator, state_dir: Path) -> Settings:
    veolia = settings.veolia.model_copy(
        update={
            "email": sim.scenario.email,
            "password": SecretStr(sim.scenario.password),
            "refresh_token": None,
            "client_id": sim.scenario.client_id,
            "auth_url": sim.auth_url,
            "api_url": sim.api_url,
        }
    )
    return settings.model_copy(update={"veolia": veolia, "state_dir": state_dir})


def _veolia_client(settings: Settings, store: StateStore) -> VeoliaClient:
    """The configured client, caching its token in ``store``."""
    veolia = settings.veolia
    return VeoliaClient(
        veolia.endpoints,
        email=veolia.email or "",
        password=veolia.password,
        refresh_token=veolia.refresh_token,
        timeout_s=veolia.timeout_s,
        token_store=store,
    )


class _App:
    """The wired objects of one run."""

    def __init__(self, settings: Settings, *, dry_run: bool, once: bool) -> None:
        self.settings = settings
        self.store = StateStore(settings.state_dir)
        self.store.load()
        self.client = _veolia_client(settings, self.store)
        self.publisher: Publisher = (
            DryRunPublisher()
            if dry_run
            else MqttPublisher(
                settings.mqtt,
                link_topic=settings.jeedom.mqtt2_link_topic,
                publish_offline_on_stop=not once,
            )
        )
        self.fingerprint = credentials_fingerprint(settings, self.store.salt())
        self.service = SyncService(
            self.client,
            self.publisher,
            self.store,
            settings,
            version=__version__,
            fingerprint=self.fingerprint,
        )

    def close(self) -> None:
        self.client.close()


def _interruptible(
    job: Callable[[], int], stop: threading.Event, *, interrupted: int = EXIT_OK
) -> int:
    """Run ``job`` in a worker thread so that a signal can abandon a slow request.

    ``interrupted`` is the exit code when a signal ends the wait before ``job`` returned.
    """
    result: list[int] = []

    def target() -> None:
        try:
            result.append(job())
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            result.append(_exit_code(err))
        finally:
            stop.set()

    worker = threading.Thread(target=target, name="veolia2mqtt-sync", daemon=True)
    worker.start()
    while not stop.wait(0.5):
        pass
    worker.join(STOP_GRACE_S)
    return result[0] if result else interrupted


def _exit_code(err: BaseException) -> int:
    if isinstance(err, ConfigError):
        for problem in err.problems:
            _LOGGER.error("Configuration error: %s", problem)
        return EXIT_CONFIG
    if isinstance(err, VeoliaAuthError):
        _LOGGER.error("Veolia refused the login: %s", err)
        return EXIT_AUTH
    if isinstance(err, Veolia2MqttError):
        _LOGGER.error("%s", err)
        return EXIT_ERROR
    if isinstance(err, KeyboardInterrupt):
        return EXIT_OK
    _LOGGER.error("Unexpected error", exc_info=err)
    return EXIT_ERROR


def _once(app: _App) -> int:
    block = app.store.auth_block()
    if block is not None and block.fingerprint == app.fingerprint:
        retry_at = block.since + ONCE_AUTH_BLOCK
        if utc_now() < retry_at:
            # A cron job calling --once every hour must not walk the account into a lockout.
            _LOGGER.error(
                "Veolia refused these credentials at %s: no new login before %s unless the "
                "configuration changes",
                block.since.astimezone(app.settings.sync.zone).isoformat(timespec="minutes"),
                retry_at.astimezone(app.settings.sync.zone).isoformat(timespec="minutes"),
            )
            return EXIT_AUTH
    cleanup = app.service.prime()
    app.publisher.start()
    try:
        app.service.publish_cleanup(cleanup)
        report = app.service.run_once()
    finally:
        app.publisher.stop()
    if report.outcome is Outcome.AUTH_REFUSED:
        return EXIT_AUTH
    return EXIT_OK if report.outcome in {Outcome.NEW_DAY, Outcome.NO_NEW_DAY} else EXIT_ERROR


def _daemon(app: _App, wakeup: Wakeup, config_changed: Callable[[], bool]) -> DaemonExit:
    settings = app.settings
    cleanup = app.service.prime()
    app.publisher.on_refresh(wakeup.refresh)
    if isinstance(app.publisher, MqttPublisher):
        app.publisher.start(require_connection=False)
    else:
        app.publisher.start()
    try:
        try:
            app.service.publish_cleanup(cleanup)
        except Veolia2MqttError as err:
            _LOGGER.warning("Ghost clean-up postponed: %s", err)
        zone = settings.sync.zone
        planner = Planner(
            slot=slot_time(settings.sync.time, utc_now(), zone),
            zone=zone,
            pinned=settings.sync.time is not None,
        )
        block = app.store.auth_block()
        blocked_since = (
            block.since if block is not None and block.fingerprint == app.fingerprint else None
        )
        daemon = Daemon(
            app.service,
            planner,
            clock=utc_now,
            wakeup=wakeup,
            heartbeat=app.store.touch_heartbeat,
            config_changed=config_changed,
        )
        return daemon.run(last_success=app.store.last_sync(), blocked_since=blocked_since)
    finally:
        app.publisher.stop()


def _check(settings: Settings) -> int:
    out = sys.stdout
    print(f"configuration: OK (portal {settings.veolia.endpoints.portal})", file=out)
    if not base_topic_is_one_level(settings):
        print(
            f"warning: mqtt.base_topic {settings.mqtt.base_topic!r} has several levels; "
            "Jeedom's MQTT Manager needs one",
            file=out,
        )
    store = StateStore(settings.state_dir)
    store.load()
    with _veolia_client(settings, store) as client:
        # Forced: a cached token would say nothing about the configured credentials.
        client.login(force=True)
        print("veolia login: OK", file=out)
        contracts = client.contracts()
        for contract in contracts:
            number = contract.meter.number
            state = "enabled" if settings.meter_override(number).enabled else "disabled"
            print(f"meter: {number} ({state})", file=out)
    probe = MqttPublisher(settings.mqtt, will=False, publish_offline_on_stop=False)
    probe.probe()
    print(f"broker: OK ({settings.mqtt.host}:{settings.mqtt.port})", file=out)
    return EXIT_OK


def _clear_discovery(settings: Settings) -> int:
    store = StateStore(settings.state_dir)
    store.load()
    # No last will: a dropped connection must not leave a retained "offline" behind.
    publisher = MqttPublisher(settings.mqtt, will=False, publish_offline_on_stop=False)
    service = SyncService(
        _NoAccount(), publisher, store, settings, version=__version__, fingerprint=""
    )
    publisher.start()
    try:
        # The connect itself published "online": the status topic is emptied last.
        status = Message(status_topic(settings.mqtt.base_topic), "", retain=True)
        known = service.clear_everything()
        # A lost state_dir forgets what was published: ask the broker what it still holds.
        listed = {m.topic for m in known} | {status.topic}
        found = [
            Message(topic, "", retain=True)
            for topic in publisher.retained_topics(_our_topic_filters(settings))
            if topic not in listed and _is_ours(topic, settings)
        ]
        sent = publisher.publish([*known, *found, status])
    finally:
        publisher.stop()
    store.flush()
    print(f"cleared {sent} retained topic(s)", file=sys.stdout)
    return EXIT_OK


def _our_topic_filters(settings: Settings) -> list[str]:
    prefix, base = settings.mqtt.discovery_prefix, settings.mqtt.base_topic
    filters = [f"{prefix}/+/+/config", f"{prefix}/+/+/+/config", f"{base}/#"]
    link = settings.jeedom.mqtt2_link_topic
    if link is not None:
        filters += [f"{link}/discovery/eqLogic/+", f"{link}/cmd/event/+"]
    return filters


def _is_ours(topic: str, settings: Settings) -> bool:
    """Whether a retained topic found on the broker was published by veolia2mqtt."""
    prefix = f"{settings.mqtt.discovery_prefix}/"
    if topic.startswith(prefix):
        return any(part.startswith(f"{DEVICE_PREFIX}_") for part in topic.split("/")[2:-1])
    return True


class _NoAccount:
    """``clear-discovery`` never reads Veolia."""

    def fetch_all(self, *, today: date) -> list[MeterData | FailedMeter]:
        """No meter: nothing is read."""
        del today
        return []


def _health(settings: Settings) -> int:
    age = StateStore(settings.state_dir).heartbeat_age_s()
    if age is None or age > HEALTHY_HEARTBEAT_S:
        print("unhealthy: no fresh heartbeat", file=sys.stdout)
        return EXIT_ERROR
    print(f"healthy: heartbeat {age:.0f} s old", file=sys.stdout)
    return EXIT_OK


def _config_watch(path: str | None, settings: Settings, fingerprint: str) -> Callable[[], bool]:
    """True when the credentials in the configuration changed since start."""
    file, _explicit = config_path(path)

    def mtime() -> float:
        try:
            return file.stat().st_mtime
        except OSError:
            return 0.0

    seen = mtime()

    def changed() -> bool:
        nonlocal seen
        current = mtime()
        if current == seen:
            return False
        seen = current
        try:
            fresh = load_settings(path)
        except ConfigError:
            return False
        store = StateStore(settings.state_dir)
        store.load()
        return credentials_fingerprint(fresh, store.salt()) != fingerprint

    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veolia2mqtt`` console script."""
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level or "INFO", args.log_format or "text")
    stop = threading.Event()
    signalled = threading.Event()
    wakeup = Wakeup()

    def on_signal(signum: int, _frame: object) -> None:
        _LOGGER.info("Received %s: stopping", signal.Signals(signum).name)
        signalled.set()
        wakeup.stop()
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(args, stop, wakeup, signalled)
    except BaseException as err:  # noqa: BLE001 - every failure becomes an exit code
        return _exit_code(err)
    finally:
        # main() may run inside another program (the tests): give its handlers back.
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(
    args: argparse.Namespace, stop: threading.Event, wakeup: Wakeup, signalled: threading.Event
) -> int:
    while True:
        settings = load_settings(
            args.config, require_credentials=not args.demo and args.command != "health"
        )
        if args.log_level is None:
            logging.getLogger().setLevel(settings.log.level)
        if args.log_format is None and settings.log.format == "json":
            _setup_logging(args.log_level or settings.log.level, "json")
        if args.command == "health":
            return _health(settings)
        with ExitStack() as stack:
            settings = _isolated(args, settings, stack)
            if args.command == "check":
                return _check(settings)
            if args.command == "clear-discovery":
                return _clear_discovery(settings)
            app = _App(settings, dry_run=args.dry_run, once=args.once)
            stack.callback(app.close)
            if args.once:
                return _interruptible(partial(_once, app), stop, interrupted=EXIT_ERROR)
            code, reload = _run_daemon(args, app, stop, wakeup)
            if not reload or signalled.is_set():
                return code
        stop.clear()
        wakeup.reset()


def _isolated(args: argparse.Namespace, settings: Settings, stack: ExitStack) -> Settings:
    """``settings`` for ``--demo`` (the simulator) and ``--dry-run`` (a throw-away state)."""
    if args.demo:
        # Imported here: the simulator (and http.server) costs 2 MiB that only --demo needs.
        from veolia2mqtt.veolia.simulator import Scenario, Simulator  # noqa: PLC0415

        sim = stack.enter_context(Simulator(Scenario.demo()))
        demo_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        _LOGGER.info("Demo mode: simulated Veolia account at %s", sim.base_url)
        return _demo_settings(settings, sim, demo_dir)
    if args.dry_run and args.command is None:
        # Nothing is published, so nothing may be remembered as published: a dry run starts
        # from an empty state (and prints every message) and leaves state_dir as it was.
        dry_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        _LOGGER.info("Dry run: state_dir is left untouched")
        return settings.model_copy(update={"state_dir": dry_dir})
    return settings


def _run_daemon(
    args: argparse.Namespace, app: _App, stop: threading.Event, wakeup: Wakeup
) -> tuple[int, bool]:
    """Run the daemon; the flag says whether it should start again with a new configuration."""
    watch = _config_watch(args.config, app.settings, app.fingerprint)
    outcome: list[DaemonExit] = []

    def job() -> int:
        outcome.append(_daemon(app, wakeup, watch))
        return EXIT_OK

    code = _interruptible(job, stop)
    if not outcome and isinstance(app.publisher, MqttPublisher):
        # Stopped by a signal while the sync thread was busy: say goodbye anyway.
        app.publisher.stop()
    return code, bool(outcome) and outcome[0] is DaemonExit.CONFIG_CHANGED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
