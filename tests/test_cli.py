"""The command line of interface.md: flags, commands, output formats and exit codes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from paho.mqtt import publish

from tests.helpers.broker import Broker, Collector, retained_snapshot, wait_until
from veolia2mqtt import __version__, scheduler
from veolia2mqtt.cli import _config_watch, main
from veolia2mqtt.config import load_settings
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import credentials_fingerprint
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "s3cret!"
EMAIL = "jean.dupont@example.fr"
BASE = "veolia2mqtt"
SLUGS = ("i19fa051732", "i21fa104733")
VALUE_KEYS = ("daily_consumption", "billed_volume", "index", "reading_date", "reliability")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def log_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """Run ``main(argv)`` in-process; logging and signal handlers are put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("urllib3").level)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    try:
        yield run
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("urllib3").setLevel(saved[2])
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers, "handlers leaked"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The simulator's HTTP server with a normal (password-checking) account."""
    with Simulator(Scenario()) as simulator:
        yield simulator


def write_config(
    tmp_path: Path, sim: Simulator | None = None, broker: Broker | None = None, **extra: Any
) -> Path:
    data: dict[str, Any] = {"state_dir": str(tmp_path / "state")}
    if sim is not None:
        data["veolia"] = {
            "email": EMAIL,
            "password": PASSWORD,
            "client_id": sim.scenario.client_id,
            "auth_url": sim.auth_url,
            "api_url": sim.api_url,
            "timeout_s": 5,
        }
    if broker is not None:
        data["mqtt"] = {"host": broker.host, "port": broker.port}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    # JSON is YAML: no YAML library needed to write the file.
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def parse_dry_run(out: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    for line in out.splitlines():
        topic, retain, payload = line.split(" ", 2)
        assert retain == "retain=true", line
        topics[topic] = payload
    return topics


def assert_truth(topics: dict[str, str], sim: Simulator) -> None:
    for contract in sim.scenario.contracts:
        number = contract.numero_compteur
        slug = number.lower()
        latest = sim.expected_latest(number)
        assert latest is not None
        state = json.loads(topics[f"{BASE}/{slug}/state"])
        assert state["daily_consumption"] == latest["litre"]
        assert state["index"] == latest["index"]
        assert state["reading_date"] == latest["date"].isoformat()  # type: ignore[attr-defined]
        assert state["reliability"] == latest["fiabilite"]
        assert state["billed_volume"] == sim.expected_billed_m3(number)
        for key in VALUE_KEYS:
            assert topics[f"{BASE}/{slug}/{key}"] == str(state[key])


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err
    assert "Traceback" not in result.out


# -- --version, --help, usage -----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"veolia2mqtt {__version__}"


def test_help_names_every_flag_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in (
        "--config",
        "--once",
        "--dry-run",
        "--demo",
        "--log-level",
        "--log-format",
        "--version",
        "check",
        "clear-discovery",
        "health",
    ):
        assert word in text


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--onse"])
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_python_dash_m_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "veolia2mqtt", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"veolia2mqtt {__version__}")


# -- configuration errors: exit 2, the field named, no traceback ------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"mqtt": {"prot": 1}}, "mqtt.prot: unknown key"),
        ({"mqtt": {"port": 99999}}, "mqtt.port"),
        ({"sync": {"time": "25:00"}}, "sync.time"),
        ({"sync": {"timezone": "Mars/Olympus"}}, "sync.timezone"),
        ({"veolia": {"portal": "nowhere.example"}}, "veolia.portal"),
        ({"state_dirr": "x"}, "state_dirr: unknown key"),
    ],
)
def test_configuration_error_exits_2_naming_the_field(
    cli: Callable[..., Result], tmp_path: Path, extra: dict[str, Any], field: str
) -> None:
    extra = dict(extra)
    veolia = {"email": EMAIL, "password": PASSWORD, **extra.pop("veolia", {})}
    config = write_config(tmp_path, veolia=veolia, **extra)
    result = cli("--config", str(config), "--once", "--dry-run")
    assert result.code == 2
    assert field in result.err
    no_traceback(result)
    assert PASSWORD not in result.err


def test_missing_credentials_exit_2(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("--config", str(write_config(tmp_path)), "--once", "--dry-run")
    assert result.code == 2
    assert "veolia.email" in result.err
    assert "veolia.password" in result.err
    no_traceback(result)


def test_missing_config_file_exit_2(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("--config", str(tmp_path / "nope.yaml"), "--once", "--dry-run")
    assert result.code == 2
    assert "nope.yaml" in result.err
    no_traceback(result)


def test_bad_environment_variable_exit_2(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, veolia={"email": EMAIL, "password": PASSWORD})
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PORT", "not-a-port")
    result = cli("--config", str(config), "check")
    assert result.code == 2
    assert "mqtt.port" in result.err
    no_traceback(result)


def test_configuration_error_through_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, veolia={"email": EMAIL, "password": PASSWORD}, mqtt={"x": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEOLIA2MQTT_")}
    done = subprocess.run(
        [sys.executable, "-m", "veolia2mqtt", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    assert "mqtt.x: unknown key" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- --demo --once --dry-run, logging formats ---------------------------------------------------


def test_demo_once_dry_run_prints_one_message_per_line(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("--demo", "--once", "--dry-run")
    assert result.code == 0, result.err
    topics = parse_dry_run(result.out)
    with Simulator(Scenario.demo()) as truth:
        assert_truth(topics, truth)
    for slug in SLUGS:
        assert f"homeassistant/device/veolia2mqtt_{slug}/config" in topics
        assert f"{BASE}/{slug}/last_sync" in topics
    assert json.loads(topics[f"{BASE}/bridge/state"])["status"] == "ok"
    assert "homeassistant/device/veolia2mqtt_bridge/config" in topics
    assert list(tmp_path.iterdir()) == [], "the demo wrote into the working directory"


def test_log_format_json_gives_json_lines(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("--demo", "--once", "--dry-run", "--log-format", "json", "--log-level", "debug")
    assert result.code == 0
    entries = [json.loads(line) for line in result.log_lines()]
    assert entries
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["level"] == "DEBUG" for e in entries)
    assert any(e["message"].startswith("Sync done") for e in entries)


def test_log_format_from_the_config_file(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, log={"format": "json", "level": "warning"})
    result = cli("--config", str(config), "--demo", "--once", "--dry-run")
    assert result.code == 0
    assert all(json.loads(line)["level"] != "INFO" for line in result.log_lines())


def test_log_level_warning_hides_info(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("--demo", "--once", "--dry-run", "--log-level", "WARNING")
    assert result.code == 0
    assert " INFO " not in result.err
    assert result.out


# -- Veolia answers: exit 3 on refused credentials, 1 otherwise --------------------------------


def test_refused_password_exits_3(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator
) -> None:
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    result = cli("--config", str(write_config(tmp_path, sim)), "--once", "--dry-run")
    assert result.code == 3
    assert "veolia.password" in result.err
    assert PASSWORD not in result.err + result.out
    assert EMAIL not in result.err + result.out
    no_traceback(result)
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 1


def test_challenge_exits_3(cli: Callable[..., Result], tmp_path: Path, sim: Simulator) -> None:
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="challenge", times=None, challenge_name="SMS_MFA")
    result = cli("--config", str(write_config(tmp_path, sim)), "--once", "--dry-run")
    assert result.code == 3
    assert "verification code" in result.err


def test_refused_password_in_check_exits_3(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator
) -> None:
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    result = cli("--config", str(write_config(tmp_path, sim)), "check")
    assert result.code == 3
    assert "configuration: OK" in result.out
    assert "veolia login" not in result.out
    no_traceback(result)


def test_veolia_failure_exits_1(cli: Callable[..., Result], tmp_path: Path, sim: Simulator) -> None:
    sim.fail("espace-client", status=404, times=None)
    result = cli("--config", str(write_config(tmp_path, sim)), "--once", "--dry-run")
    assert result.code == 1
    assert "espace-client" in result.err
    no_traceback(result)


def test_a_failed_meter_makes_once_exit_1(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator
) -> None:
    sim.fail("facturation", status=404, times=None, contract=4718204)
    result = cli("--config", str(write_config(tmp_path, sim)), "--once", "--dry-run")
    assert result.code == 1
    topics = parse_dry_run(result.out)
    assert f"{BASE}/i19fa051732/index" in topics
    assert json.loads(topics[f"{BASE}/bridge/state"])["status"] == "error"


def test_dry_run_prints_everything_and_leaves_state_dir_alone(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    first = cli("--config", str(config), "--once", "--dry-run")
    second = cli("--config", str(config), "--once", "--dry-run")
    assert first.code == second.code == 0
    # Nothing was published, so the second dry run prints every message again.
    assert parse_dry_run(first.out).keys() == parse_dry_run(second.out).keys()
    assert_truth(parse_dry_run(second.out), sim)
    state = tmp_path / "state"
    assert not (state / "state.json").exists()
    assert not (state / "token.json").exists()


# -- health -------------------------------------------------------------------------------------


def test_health_follows_the_heartbeat(cli: Callable[..., Result], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli("--config", str(config), "health").code == 1
    store = StateStore(tmp_path / "state")
    store.touch_heartbeat()
    fresh = cli("--config", str(config), "health")
    assert fresh.code == 0
    assert "healthy" in fresh.out
    old = time.time() - 3600
    os.utime(tmp_path / "state" / "heartbeat", (old, old))
    stale = cli("--config", str(config), "health")
    assert stale.code == 1
    assert "unhealthy" in stale.out


# -- with a real broker -------------------------------------------------------------------------


@pytest.mark.integration
def test_check_logs_in_lists_meters_tests_the_broker_and_publishes_nothing(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    config = write_config(tmp_path, sim, broker, meters={"I21FA104733": {"enabled": False}})
    with Collector(broker.host, broker.port) as col:
        result = cli("--config", str(config), "check")
        assert result.code == 0, result.err
        assert "veolia login: OK" in result.out
        assert "meter: I19FA051732 (enabled)" in result.out
        assert "meter: I21FA104733 (disabled)" in result.out
        assert f"broker: OK (127.0.0.1:{broker.port})" in result.out
        assert sim.stats()["espace-client"] == 1
        assert sim.stats()["journalieres"] == 0
        assert col.messages == []
    assert retained_snapshot(broker.host, broker.port, settle_s=0.2) == {}


@pytest.mark.integration
def test_check_logs_in_even_with_a_cached_token(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    config = write_config(tmp_path, sim, broker)
    assert cli("--config", str(config), "check").code == 0
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    assert cli("--config", str(config), "check").code == 3


@pytest.mark.integration
def test_check_with_the_broker_down_exits_1(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    broker.stop()
    result = cli("--config", str(write_config(tmp_path, sim, broker)), "check")
    assert result.code == 1
    assert "veolia login: OK" in result.out
    assert f"127.0.0.1:{broker.port}" in result.err
    no_traceback(result)


@pytest.mark.integration
def test_once_publishes_the_truth_then_clear_discovery_empties_it(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    config = write_config(tmp_path, sim, broker)
    result = cli("--config", str(config), "--once")
    assert result.code == 0, result.err
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert_truth(held, sim)
    assert held[f"{BASE}/status"] == "online"
    assert "homeassistant/device/veolia2mqtt_i19fa051732/config" in held

    cleared = cli("--config", str(config), "clear-discovery")
    assert cleared.code == 0, cleared.err
    assert "cleared" in cleared.out
    left = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert left == {}, left


@pytest.mark.integration
def test_three_once_runs_in_a_day_log_in_once(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    config = write_config(tmp_path, sim, broker)
    for _ in range(3):
        assert cli("--config", str(config), "--once").code == 0
    logins = sim.stats()["cognito:USER_PASSWORD_AUTH"]
    print(f"--once x3 in one day: {logins} login(s)")
    assert logins == 1, f"3 runs logged in {logins} times"


@pytest.mark.integration
def test_once_with_the_broker_down_exits_1(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    broker.stop()
    result = cli("--config", str(write_config(tmp_path, sim, broker)), "--once")
    assert result.code == 1
    assert "connection refused" in result.err
    no_traceback(result)


def test_sigterm_during_once_exits_non_zero_at_once(tmp_path: Path, sim: Simulator) -> None:
    sim.fail("journalieres", fault="slow", times=None, delay_s=30)
    config = write_config(tmp_path, sim)
    proc = subprocess.Popen(
        [sys.executable, "-m", "veolia2mqtt", "--config", str(config), "--once", "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: sim.in_flight > 0, 15, "the slow request")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert code == 1
    assert elapsed < 5, f"exited {elapsed:.1f} s after SIGTERM"


# -- configuration reload while the credentials are refused -------------------------------------


def test_config_watch_reports_changed_credentials_only(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim)
    settings = load_settings(config)
    fingerprint = credentials_fingerprint(settings, StateStore(settings.state_dir).salt())
    changed = _config_watch(str(config), settings, fingerprint)
    assert not changed()

    def rewrite(**extra: Any) -> None:
        stamp = config.stat().st_mtime + 10
        write_config(tmp_path, sim, **extra)
        os.utime(config, (stamp, stamp))

    rewrite(log={"level": "DEBUG"})
    assert not changed(), "a change that keeps the credentials is no reason to log in again"
    rewrite(veolia={"password": "new"})
    assert changed()


@pytest.mark.integration
def test_daemon_reloads_when_refused_credentials_are_fixed(
    cli: Callable[..., Result],
    tmp_path: Path,
    sim: Simulator,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler, "HOUSEKEEPING_S", 0.1)
    config = write_config(tmp_path, sim, broker, veolia={"password": "typo"})
    failures: list[BaseException] = []

    def operator() -> None:
        try:
            wait_until(lambda: StateStore(tmp_path / "state").auth_block() is not None, 15, "block")
            stamp = config.stat().st_mtime + 10
            write_config(tmp_path, sim, broker)
            os.utime(config, (stamp, stamp))
            wait_until(lambda: StateStore(tmp_path / "state").last_sync() is not None, 15, "sync")
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            failures.append(err)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=operator)
    helper.start()
    result = cli("--config", str(config))
    helper.join(20)
    assert not failures, failures
    assert result.code == 0, result.err
    assert "reloading" in result.err
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 2
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert_truth(held, sim)
    assert held[f"{BASE}/status"] == "offline"


class _SyncDone(logging.Handler):
    """Sets an event when the sync logs its summary (attached below the root: main() keeps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Sync done"):
            self.done.set()


def test_dry_run_daemon_prints_the_sync_and_stops_on_sigterm(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    watcher = _SyncDone()
    sync_logger = logging.getLogger("veolia2mqtt.sync")
    sync_logger.addHandler(watcher)

    def stop_after_the_sync() -> None:
        watcher.done.wait(15)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=stop_after_the_sync)
    helper.start()
    try:
        result = cli("--demo", "--dry-run")
    finally:
        helper.join(20)
        sync_logger.removeHandler(watcher)
    assert watcher.done.is_set()
    assert result.code == 0, result.err
    topics = parse_dry_run(result.out)
    assert json.loads(topics[f"{BASE}/bridge/state"])["status"] == "ok"
    assert "Received SIGTERM" in result.err


@pytest.mark.integration
def test_once_after_a_refused_login_does_not_log_in_again_until_the_config_changes(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    config = write_config(tmp_path, sim, broker)
    codes = [cli("--config", str(config), "--once").code for _ in range(3)]
    assert codes == [3, 3, 3]
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 1, (
        "an hourly cron must not lock the account"
    )
    config = write_config(tmp_path, sim, broker, veolia={"password": "a-new-password"})
    assert cli("--config", str(config), "--once").code == 3
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 2, "a changed password is tried at once"


@pytest.mark.integration
def test_clear_discovery_finds_what_a_lost_state_dir_forgot(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    config = write_config(tmp_path, sim, broker)
    assert cli("--config", str(config), "--once").code == 0
    # Someone else's retained topics must survive the clean-up.
    publish.single(
        "homeassistant/sensor/other_device/temp/config",
        "{}",
        retain=True,
        hostname=broker.host,
        port=broker.port,
    )
    shutil.rmtree(tmp_path / "state")
    assert cli("--config", str(config), "clear-discovery").code == 0
    left = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    assert left == {"homeassistant/sensor/other_device/temp/config": "{}"}, left


@pytest.mark.integration
def test_a_new_base_topic_clears_what_the_old_one_left(
    cli: Callable[..., Result], tmp_path: Path, sim: Simulator, broker: Broker
) -> None:
    old = write_config(tmp_path, sim, broker)
    assert cli("--config", str(old), "--once").code == 0
    new = write_config(tmp_path, sim, broker, mqtt={"base_topic": "water"})
    assert cli("--config", str(new), "--once").code == 0
    held = retained_snapshot(broker.host, broker.port, settle_s=0.3)
    leftovers = sorted(t for t in held if t.startswith(f"{BASE}/"))
    assert leftovers == [], leftovers
    assert "water/i19fa051732/index" in held
