"""``python -m benchmarks [--smoke] [--output FILE] [--only NAMES] [--strict]``.

Runs every measurement, prints a table of figures (with pass/fail against the targets) and
writes them as JSON: to ``--output``, else to ``benchmarks/results/latest.json``. ``--smoke``
runs one quick case of each measurement (well under a minute); CI runs it. The exit status is
1 when a measurement crashed; with ``--strict``, 2 when a target was missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import cpu, logins, memory, mqtt_messages, requests_per_sync, startup
from benchmarks._common import REPO, Figure, Section, mosquitto_binary

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "latest.json"

# (name, group title, needs mosquitto, run)
SECTIONS: list[tuple[str, str, bool, Callable[..., Section]]] = [
    ("requests", requests_per_sync.GROUP, False, requests_per_sync.run),
    ("logins", logins.GROUP, False, logins.run),
    ("memory", memory.GROUP, True, memory.run),
    ("startup", startup.GROUP, True, startup.run),
    ("cpu", cpu.GROUP, False, cpu.run),
    ("mqtt", mqtt_messages.GROUP, True, mqtt_messages.run),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one quick case of each measurement")
    parser.add_argument("--output", metavar="FILE", type=Path, help=f"JSON file ({DEFAULT_OUTPUT})")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated sections: " + ", ".join(name for name, *_ in SECTIONS),
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    return parser


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    text = f"{figure.value:g}" if isinstance(figure.value, float) else str(figure.value)
    return f"{text} {figure.unit}".strip()


def _result(figure: Figure) -> str:
    if figure.passed is None:
        return ""
    return "PASS" if figure.passed else "FAIL"


def render_table(figures: list[Figure]) -> str:
    """The figures as a Markdown table, one group heading row per measurement."""
    lines = ["| measurement | value | target | result | notes |", "|---|---|---|---|---|"]
    group = None
    for figure in figures:
        if figure.group != group:
            group = figure.group
            lines.append(f"| **{group}** | | | | |")
        lines.append(
            f"| {figure.label} | {_value(figure)} | {figure.target or ''} | "
            f"{_result(figure)} | {figure.note} |"
        )
    return "\n".join(lines)


def render_extra(sections: list[Section]) -> str:
    """The detail tables some measurements attach (side-by-side comparisons, profiles)."""
    out: list[str] = []
    for section in sections:
        for table in section.details.get("tables", []):
            out.append(f"\n{table['title']}\n")
            out.append("| " + " | ".join(table["headers"]) + " |")
            out.append("|" + "---|" * len(table["headers"]))
            out.extend("| " + " | ".join(row) + " |" for row in table["rows"])
    return "\n".join(out)


def _meta(smoke: bool) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": smoke,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    wanted = {name.strip() for name in args.only.split(",")} if args.only else None
    if wanted is not None and (unknown := wanted - {name for name, *_ in SECTIONS}):
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    has_broker = mosquitto_binary() is not None
    started = time.perf_counter()
    sections: list[Section] = []
    crashed = False
    with tempfile.TemporaryDirectory(prefix="veolia2mqtt-bench-") as tmp:
        for name, group, needs_broker, run in SECTIONS:
            if wanted is not None and name not in wanted:
                continue
            print(f"== {group}", file=sys.stderr, flush=True)
            workdir = Path(tmp) / name
            workdir.mkdir()
            section_started = time.perf_counter()
            if needs_broker and not has_broker:
                section = Section(name)
                section.add(f"{name}.skipped", group, "skipped: mosquitto not found", None)
            else:
                try:
                    section = run(workdir, smoke=args.smoke)
                except Exception:  # noqa: BLE001 - reported, the other measurements go on
                    crashed = True
                    trace = traceback.format_exc()
                    print(trace, file=sys.stderr)
                    section = Section(name, details={"error": trace})
                    section.add(f"{name}.error", group, "crashed (see stderr / JSON)", None)
            section.seconds = time.perf_counter() - section_started
            sections.append(section)
    figures = [figure for section in sections for figure in section.figures]
    failed = [f for f in figures if f.passed is False]
    passed = [f for f in figures if f.passed is True]
    print(render_table(figures))
    print(render_extra(sections))
    elapsed = time.perf_counter() - started
    print(
        f"\n{len(passed)} target(s) met, {len(failed)} missed; {elapsed:.1f} s "
        f"({'smoke' if args.smoke else 'full'} run)"
    )
    document = {
        "meta": {**_meta(args.smoke), "duration_s": round(elapsed, 1)},
        "targets": {"met": [f.id for f in passed], "missed": [f.id for f in failed]},
        "figures": [figure.as_dict() for figure in figures],
        "sections": {
            s.name: {"seconds": round(s.seconds, 1), "details": s.details} for s in sections
        },
    }
    output = args.output or DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {output}")
    if crashed:
        return 1
    if args.strict and failed:
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
