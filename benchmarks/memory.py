"""3. Idle resident memory of the real daemon, and the import cost of each dependency.

RSS: ``python -m veolia2mqtt --config <cfg>`` runs against the simulator's HTTP server (in this
process) and a fresh mosquitto. Once the first sync is on the broker (every meter's retained
``state`` and ``bridge/state`` with ``"status": "ok"``) and the broker has been quiet for 1 s,
the daemon's RSS and USS are read with psutil, and its high-water mark from
``/proc/<pid>/status`` (``VmHWM``).

Import footprint: the RSS of a fresh interpreter after importing one module alone
(``/proc/self/status``), for ``veolia2mqtt.cli`` and each heavy dependency.

Imports: ``python -X importtime -c "import veolia2mqtt.cli"`` (what the console script imports
before doing anything), the ``self`` times summed per top-level package; median of 3 runs. The
wall time of the same import inside a fresh interpreter is measured too (median of 5).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]  # types-psutil is not a dev dependency

from benchmarks._common import Mosquitto, Section, Watcher, clean_env, median, python, settings_for
from benchmarks._daemon import Daemon, wait_for_message
from veolia2mqtt.mqtt.topics import meter_slug
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from benchmarks._common import Seen

GROUP = "3. Memory and imports"
RSS_TARGET_MIB = 50.0
MIB = 1024 * 1024


def _proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def idle_rss(workdir: Path) -> dict[str, Any]:
    scenario = Scenario()
    with Simulator(scenario) as sim, Mosquitto(workdir) as broker:
        base = "bench_rss"
        config = settings_for(sim, workdir / "rss-state", mqtt_port=broker.port, base_topic=base)
        slugs = {meter_slug(c.numero_compteur) for c in scenario.contracts}
        with Watcher(broker.host, broker.port, (f"{base}/#",)) as watcher:
            with Daemon(workdir, "rss", config) as daemon:

                def bridge_ok(seen: Seen) -> bool:
                    if seen.topic != f"{base}/bridge/state":
                        return False
                    return bool(json.loads(seen.payload).get("status") == "ok")

                wait_for_message(watcher, daemon, bridge_ok, 60)
                got = {m.topic for m in watcher.since(0) if m.payload}
                missing = {f"{base}/{slug}/state" for slug in slugs} - got
                if missing:
                    msg = f"no retained state for {sorted(missing)}"
                    raise RuntimeError(msg)
                watcher.settle(1.0, 10)
                daemon.check_alive()
                proc = psutil.Process(daemon.pid)
                info = proc.memory_full_info()
                result = {
                    "rss_mib": info.rss / MIB,
                    "uss_mib": info.uss / MIB,
                    "hwm_mib": (_proc_status_kib(daemon.pid, "VmHWM") or 0) / 1024,
                    "threads": proc.num_threads(),
                    "meters": len(slugs),
                }
            result["exit_code"] = daemon.returncode
    return result


def _importtime(module: str) -> dict[str, float]:
    """Self microseconds per imported module, from one ``-X importtime`` run."""
    done = subprocess.run(
        [python(), "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    times: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, _cumulative, name = line.split("|")
        self_us = float(head.removeprefix("import time:").strip())
        times[name.strip()] = times.get(name.strip(), 0.0) + self_us
    return times


def _by_package(times: dict[str, float]) -> dict[str, float]:
    stdlib = sys.stdlib_module_names
    packages: dict[str, float] = {}
    for name, self_us in times.items():
        top = name.split(".")[0]
        key = f"stdlib ({top})" if top in stdlib or top.startswith("_") else top
        packages[key] = packages.get(key, 0.0) + self_us
    return packages


def _wall_s(code: str) -> float:
    """Wall time of a whole ``python -c code`` process: start, run, tear-down."""
    started = time.perf_counter()
    subprocess.run([python(), "-c", code], check=True, env=clean_env())
    return time.perf_counter() - started


_TIMED_IMPORT = (
    "import sys, time\n"
    "started = time.perf_counter()\n"
    "__import__(sys.argv[1])\n"
    "print(time.perf_counter() - started)\n"
)


def _import_s(module: str) -> float:
    """Wall time of ``import module`` inside a fresh interpreter (start and exit excluded)."""
    done = subprocess.run(
        [python(), "-c", _TIMED_IMPORT, module],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    return float(done.stdout.strip())


def imports(*, runs: int) -> dict[str, Any]:
    samples = [_by_package(_importtime("veolia2mqtt.cli")) for _ in range(runs)]
    names = set().union(*samples)
    per_package_ms = {
        name: median([s.get(name, 0.0) for s in samples]) / 1000 for name in sorted(names)
    }
    stdlib_ms = sum(v for k, v in per_package_ms.items() if k.startswith("stdlib"))
    grouped = {k: v for k, v in per_package_ms.items() if not k.startswith("stdlib")}
    grouped["stdlib (all)"] = stdlib_ms
    ours = _importtime("veolia2mqtt.cli")
    own_modules = sorted(
        ((name, us / 1000) for name, us in ours.items() if name.startswith("veolia2mqtt")),
        key=lambda item: -item[1],
    )
    wall_runs = max(runs, 3) + 2
    bare = median([_wall_s("pass") for _ in range(wall_runs)])
    cli = median([_import_s("veolia2mqtt.cli") for _ in range(wall_runs)])
    result: dict[str, Any] = {
        "total_self_ms": sum(grouped.values()),
        "per_package_ms": dict(sorted(grouped.items(), key=lambda item: -item[1])),
        "own_modules_ms": dict(own_modules[:10]),
        "wall_bare_interpreter_s": bare,
        "wall_import_cli_s": cli,
        "wall_runs": wall_runs,
    }
    try:
        peer = _by_package(_importtime("veolia_api.veolia_api"))
    except subprocess.CalledProcessError:
        peer = {}
    if peer:
        result["peer_total_self_ms"] = sum(peer.values()) / 1000
        result["peer_per_package_ms"] = {
            k: v / 1000
            for k, v in sorted(peer.items(), key=lambda item: -item[1])[:10]
            if not k.startswith("stdlib")
        }
    return result


RSS_MODULES = (
    "veolia2mqtt.cli",
    "pydantic_settings",
    "pydantic",
    "requests",
    "paho.mqtt.client",
    "yaml",
    "schedule",
    "importlib.metadata",
    "http.server",
    "veolia_api.veolia_api",
)
_RSS_PROBE = (
    "import re, sys\n"
    "for name in sys.argv[1:]: __import__(name)\n"
    "status = open('/proc/self/status').read()\n"
    "print(re.search(r'VmRSS:\\s+(\\d+)', status).group(1))\n"
)


def _rss_after_import_mib(*modules: str) -> float | None:
    """VmRSS of a fresh interpreter after importing ``modules`` (Linux), in MiB."""
    done = subprocess.run(
        [python(), "-c", _RSS_PROBE, *modules],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        return None
    return int(done.stdout.strip()) / 1024


def import_rss() -> dict[str, float | None]:
    """RSS after importing each module alone, and of a bare interpreter."""
    result: dict[str, float | None] = {"(bare interpreter)": _rss_after_import_mib()}
    for module in RSS_MODULES:
        result[module] = _rss_after_import_mib(module)
    return result


def run(workdir: Path, *, smoke: bool) -> Section:
    section = Section("memory")
    rss = idle_rss(workdir)
    section.add(
        "memory.idle_rss",
        GROUP,
        f"daemon idle RSS after one sync ({rss['meters']} meters)",
        round(rss["rss_mib"], 1),
        "MiB",
        target=f"≤ {RSS_TARGET_MIB:g} MiB",
        passed=rss["rss_mib"] <= RSS_TARGET_MIB,
        note=f"USS {rss['uss_mib']:.1f} MiB, peak {rss['hwm_mib']:.1f} MiB, "
        f"{rss['threads']} threads",
    )
    rss_imports = import_rss() if Path("/proc/self/status").exists() else {}
    cli_rss = rss_imports.get("veolia2mqtt.cli")
    bare_rss = rss_imports.get("(bare interpreter)")
    settings_rss = rss_imports.get("pydantic_settings")
    if cli_rss is not None and bare_rss is not None and settings_rss is not None:
        section.add(
            "memory.import_rss",
            GROUP,
            "RSS after `import veolia2mqtt.cli` only",
            round(cli_rss, 1),
            "MiB",
            note=f"bare interpreter {bare_rss:.1f} MiB; pydantic_settings alone "
            f"{settings_rss:.1f} MiB",
        )
    imp = imports(runs=1 if smoke else 3)
    top = [f"{k} {v:.0f}" for k, v in list(imp["per_package_ms"].items())[:5]]
    section.add(
        "memory.import_self_ms",
        GROUP,
        "import veolia2mqtt.cli, sum of self times",
        round(imp["total_self_ms"]),
        "ms",
        note="top: " + ", ".join(top) + " ms",
    )
    section.add(
        "memory.import_wall_s",
        GROUP,
        "import veolia2mqtt.cli, wall, in a fresh interpreter",
        round(imp["wall_import_cli_s"], 3),
        "s",
        note=f"median of {imp['wall_runs']}; a bare `python -c pass` takes "
        f"{imp['wall_bare_interpreter_s']:.3f} s",
    )
    if "peer_total_self_ms" in imp:
        section.add(
            "memory.peer_import_self_ms",
            GROUP,
            "peer: import veolia_api, sum of self times",
            round(imp["peer_total_self_ms"]),
            "ms",
        )
    rows = [[name, f"{ms:.1f}"] for name, ms in imp["per_package_ms"].items() if ms >= 1.0]
    section.details = {
        "rss": rss,
        "import_rss_mib": rss_imports,
        "imports": imp,
        "tables": [
            {
                "title": "RSS of a fresh interpreter after importing one module alone (MiB)",
                "headers": ["module", "RSS MiB"],
                "rows": [
                    [name, "n/a" if mib is None else f"{mib:.1f}"]
                    for name, mib in rss_imports.items()
                ],
            },
            {
                "title": "Import cost of `import veolia2mqtt.cli` per top-level package (self ms)",
                "headers": ["package", "ms"],
                "rows": rows,
            },
        ],
    }
    return section
