"""The Dockerfile's install steps replayed: build the wheel, install it in a fresh venv, run it
as uid 1000 from a directory that user cannot write."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from veolia2mqtt import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
UID = 1000
PIP_TIMEOUT_S = 240
COPIED = ("pyproject.toml", "README.md", "veolia2mqtt")
"""What the Dockerfile's build stage copies before `python -m build --wheel`."""


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions of the final stage, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    found = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]
    last_from = max(i for i, (name, _arg) in enumerate(found) if name == "FROM")
    return found[last_from:]


def test_dockerfile_runs_as_uid_1000_with_volumes_healthcheck_and_entrypoint() -> None:
    final = instructions()
    by_name: dict[str, list[str]] = {}
    for name, arg in final:
        by_name.setdefault(name, []).append(arg)
    assert by_name["USER"][-1].split(":")[0] == str(UID)
    volumes = " ".join(by_name["VOLUME"])
    assert '"/config"' in volumes or " /config" in f" {volumes}"
    assert '"/data"' in volumes or " /data" in f" {volumes}"
    healthcheck = by_name["HEALTHCHECK"][-1]
    assert "veolia2mqtt" in healthcheck
    assert "health" in healthcheck
    assert re.fullmatch(r'\[\s*"veolia2mqtt"\s*\]', by_name["ENTRYPOINT"][-1])
    env = " ".join(by_name["ENV"])
    assert "VEOLIA2MQTT_CONFIG=/config/config.yaml" in env
    assert "VEOLIA2MQTT_STATE_DIR=/data" in env


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A world-readable directory holding a venv with the freshly built wheel installed."""
    top = Path(tempfile.mkdtemp(prefix="veolia2mqtt-install-"))
    top.chmod(0o755)  # uid 1000 must reach the venv
    try:
        src = top / "src"
        src.mkdir()
        for name in COPIED:
            origin = REPO / name
            if origin.is_dir():
                shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, src / name)
        dist = top / "dist"
        build = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        wheels = list(dist.glob("*.whl"))
        assert len(wheels) == 1, wheels
        venv = top / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "-q", str(wheels[0])],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
        assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_wheel_holds_the_package_and_no_tests(installed: Path) -> None:
    (wheel,) = (installed / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "veolia2mqtt/cli.py" in names
    assert "veolia2mqtt/veolia/simulator.py" in names  # --demo needs it
    assert not [n for n in names if n.startswith("tests/")]
    assert wheel.name.startswith(f"veolia2mqtt-{__version__}-")


def run_as_uid_1000(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("switching to uid 1000 needs root")
    tool = shutil.which("setpriv")
    if tool is None:
        pytest.skip("setpriv is not installed")
    cwd = installed / "readonly-cwd"
    cwd.mkdir(exist_ok=True)
    cwd.chmod(0o555)
    env = {
        "PATH": f"{installed / 'venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(cwd),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TZ": "Europe/Paris",
        "LANG": "C.UTF-8",
    }
    probe = subprocess.run(
        [tool, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "touch", "x"],
        cwd=cwd,
        env=env,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert probe.returncode != 0, "uid 1000 can write the working directory"
    return subprocess.run(
        [tool, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "veolia2mqtt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_demo_once_dry_run_as_a_non_root_user_in_a_read_only_directory(installed: Path) -> None:
    done = run_as_uid_1000(installed, "--demo", "--once", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    topics = {line.split(" ", 1)[0] for line in lines}
    assert all(" retain=true " in line for line in lines)
    for slug in ("i19fa051732", "i21fa104733"):
        assert f"veolia2mqtt/{slug}/state" in topics
        assert f"veolia2mqtt/{slug}/index" in topics
        assert f"homeassistant/device/veolia2mqtt_{slug}/config" in topics
    assert "veolia2mqtt/bridge/state" in topics
    assert list((installed / "readonly-cwd").iterdir()) == []


def test_version_and_health_as_a_non_root_user(installed: Path) -> None:
    version = run_as_uid_1000(installed, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"veolia2mqtt {__version__}")
    health = run_as_uid_1000(installed, "health")
    assert health.returncode == 1
    assert "Traceback" not in health.stderr
