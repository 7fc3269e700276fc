"""5. CPU time of one sync as the account grows: parsing, rules and building; no network.

The raw answers are generated once, by the simulator itself (``Simulator.handle``, no
sockets): one ``/journalieres`` body per month and one ``/mensuelles`` body per year, cut to
the last 30, 90 or 1,095 rows of a meter. Twenty distinct generated meters are reused round-robin
for larger accounts (every meter keeps its own number); the work per row is the same.

Per meter, with ``time.process_time``:

* decode: ``json.loads`` of the bodies (done by the client, listed apart);
* parse: ``models.parse_daily`` / ``parse_monthly`` and ``normalise_*`` (as ``fetch_meter``);
* rules: ``meter.update_values`` from an empty state (the first sync);
* build: every message of a first sync, as ``SyncService`` builds them: discovery (device
  mode), the JSON state, the per-value topics and ``last_sync``; the bridge's once.

The target applies to parse + rules + build. A second figure runs the real
``SyncService.run_once`` (with a reader that decodes and parses the same bodies, a state
store in a temporary directory and a publisher that sends nothing), so that anything the
service adds around the builders shows up. The worst case is profiled with cProfile.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import pstats
import time
import timeit
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as dt_time
from typing import TYPE_CHECKING, Any

from benchmarks._common import TODAY, VERSION, Section, SinkPublisher
from veolia2mqtt.config import Settings
from veolia2mqtt.meter import DailyReading, Meter, update_values
from veolia2mqtt.mqtt.discovery import build_bridge_discovery, build_discovery
from veolia2mqtt.mqtt.messages import build_bridge_state, build_state_messages
from veolia2mqtt.state import StateStore
from veolia2mqtt.sync import SyncService
from veolia2mqtt.veolia import models
from veolia2mqtt.veolia.models import (
    FailedMeter,
    MeterData,
    normalise_daily,
    normalise_monthly,
    parse_daily,
    parse_monthly,
)
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from veolia2mqtt.mqtt.messages import Message

GROUP = "5. CPU of one sync (parse + rules + build, no network)"
POOL = 20
HISTORIES = {"30 days": 30, "90 days": 90, "3 years": 1095}
"""30 days is what a daily sync reads (the current month); 3 years, a history import."""
TARGET_S = 2.0
_TARGET_CASE = (1000, "3 years")


@dataclass(frozen=True)
class RawMeter:
    """The bodies one meter's fetch would return."""

    daily: tuple[bytes, ...]
    """One ``/journalieres`` body per month, oldest first."""
    monthly: tuple[bytes, ...]
    """One ``/mensuelles`` body per year."""
    rows: int


def _cognito_token(sim: Simulator) -> str:
    body = json.dumps(
        {
            "ClientId": sim.scenario.client_id,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": sim.scenario.email, "PASSWORD": sim.scenario.password},
        }
    ).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
    }
    status, _headers, answer = sim.handle("POST", "https://sim.invalid/", headers, body)
    if status != 200:
        msg = f"simulated login failed: HTTP {status}"
        raise RuntimeError(msg)
    return str(json.loads(answer)["AuthenticationResult"]["AccessToken"])


def _get(sim: Simulator, token: str, path: str, query: str) -> Any:
    status, _headers, body = sim.handle(
        "GET", f"https://sim.invalid{path}?{query}", {"Authorization": f"Bearer {token}"}, b""
    )
    if status != 200:
        msg = f"GET {path}: HTTP {status}"
        raise RuntimeError(msg)
    return json.loads(body)


def generate(days: int) -> list[RawMeter]:
    """The raw bodies of ``POOL`` distinct meters, each cut to its last ``days`` rows."""
    scenario = Scenario.many(POOL, today=TODAY)
    sim = Simulator(scenario)
    token = _cognito_token(sim)
    pool: list[RawMeter] = []
    for spec in scenario.contracts:
        common = f"numero-pds={spec.numero_pds}&date-debut-abonnement={spec.date_debut_abonnement}"
        months: list[list[dict[str, Any]]] = []
        year, month = spec.date_debut_abonnement.year, spec.date_debut_abonnement.month
        while (year, month) <= (TODAY.year, TODAY.month):
            path = f"/consommations/{spec.id_abonnement}/journalieres"
            months.append(_get(sim, token, path, f"annee={year}&mois={month}&{common}"))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        rows = [row for month_rows in months for row in month_rows]
        first_kept = rows[-days]["date_releve"]
        kept = [[r for r in m if r["date_releve"] >= first_kept] for m in months]
        first_year = int(first_kept[:4])
        yearly = [
            _get(
                sim,
                token,
                f"/consommations/{spec.id_abonnement}/mensuelles",
                f"annee={y}&{common}",
            )
            for y in range(first_year, TODAY.year + 1)
        ]
        pool.append(
            RawMeter(
                daily=tuple(json.dumps(m).encode() for m in kept if m),
                monthly=tuple(json.dumps(y).encode() for y in yearly),
                rows=sum(len(m) for m in kept),
            )
        )
    return pool


@dataclass
class Stages:
    decode: float = 0.0
    parse: float = 0.0
    rules: float = 0.0
    build: float = 0.0
    messages: int = 0

    @property
    def pipeline(self) -> float:
        return self.parse + self.rules + self.build


def _meter_number(i: int) -> str:
    return f"BENCH{i:07d}"


def pipeline(pool: list[RawMeter], meters: int, settings: Settings) -> Stages:
    """Decode, parse, rules and build, each stage timed apart, meter after meter."""
    mqtt = settings.mqtt
    zone = settings.sync.zone
    portal_url = settings.veolia.endpoints.portal_url
    last_sync = datetime.combine(TODAY, dt_time(6), tzinfo=zone)
    clock = time.process_time
    stages = Stages()
    started = clock()
    messages: list[Message] = build_bridge_discovery(
        mode=mqtt.discovery,
        discovery_prefix=mqtt.discovery_prefix,
        base_topic=mqtt.base_topic,
        sw_version=VERSION,
    )
    messages.append(
        build_bridge_state(
            base_topic=mqtt.base_topic,
            version=VERSION,
            status="ok",
            last_sync=last_sync,
            last_success=last_sync,
            error=None,
        )
    )
    stages.build += clock() - started
    for i in range(meters):
        raw = pool[i % POOL]
        meter = Meter(_meter_number(i))
        t0 = clock()
        daily_bodies = [json.loads(body) for body in raw.daily]
        monthly_bodies = [json.loads(body) for body in raw.monthly]
        t1 = clock()
        daily = normalise_daily([row for body in daily_bodies for row in parse_daily(body)])
        monthly = normalise_monthly([row for body in monthly_bodies for row in parse_monthly(body)])
        data = MeterData(meter=meter, daily=daily, monthly=monthly)
        t2 = clock()
        values = update_values(None, data.daily, data.monthly, today=TODAY).values
        t3 = clock()
        override = settings.meter_override(meter.number)
        built = build_discovery(
            meter,
            override,
            mode=mqtt.discovery,
            discovery_prefix=mqtt.discovery_prefix,
            base_topic=mqtt.base_topic,
            sw_version=VERSION,
            portal_url=portal_url,
        )
        built.extend(
            build_state_messages(
                meter, values, base_topic=mqtt.base_topic, last_sync=last_sync, zone=zone
            )
        )
        messages.extend(built)
        t4 = clock()
        stages.decode += t1 - t0
        stages.parse += t2 - t1
        stages.rules += t3 - t2
        stages.build += t4 - t3
    stages.messages = len(messages)
    return stages


class _Reader:
    """An ``AccountReader`` that decodes and parses the pre-generated bodies (no network)."""

    def __init__(self, pool: list[RawMeter], meters: int) -> None:
        self._pool = pool
        self._meters = meters

    def fetch_all(self, *, today: Any) -> list[MeterData | FailedMeter]:
        del today
        out: list[MeterData | FailedMeter] = []
        for i in range(self._meters):
            raw = self._pool[i % POOL]
            daily = [row for body in raw.daily for row in parse_daily(json.loads(body))]
            monthly = [row for body in raw.monthly for row in parse_monthly(json.loads(body))]
            out.append(
                MeterData(
                    meter=Meter(_meter_number(i)),
                    daily=normalise_daily(daily),
                    monthly=normalise_monthly(monthly),
                )
            )
        return out


def full_sync(pool: list[RawMeter], meters: int, settings: Settings, state_dir: Path) -> float:
    """CPU seconds of the real ``SyncService.run_once`` over the same bodies."""
    service = _service(pool, meters, settings, state_dir)
    started = time.process_time()
    report = service.run_once()
    elapsed = time.process_time() - started
    if report.meters_ok != meters:
        msg = f"full sync published {report.meters_ok} of {meters} meters"
        raise RuntimeError(msg)
    return elapsed


def _service(pool: list[RawMeter], meters: int, settings: Settings, state_dir: Path) -> SyncService:
    store = StateStore(state_dir)
    store.load()
    now = datetime.combine(TODAY, dt_time(6), tzinfo=settings.sync.zone).astimezone(UTC)
    return SyncService(
        _Reader(pool, meters), SinkPublisher(), store, settings, version=VERSION, clock=lambda: now
    )


def profile(
    pool: list[RawMeter], meters: int, settings: Settings, state_dir: Path
) -> list[dict[str, Any]]:
    """The top functions (by own time) of one full sync under cProfile."""
    service = _service(pool, meters, settings, state_dir)
    profiler = cProfile.Profile()
    profiler.enable()
    service.run_once()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    # Stats.stats is the documented raw table, but typeshed does not declare it.
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values())
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in table.items():
        rows.append(
            {
                "function": f"{_short(file)}:{line}({func})",
                "calls": calls,
                "own_s": tottime,
                "cumulative_s": cumtime,
                "own_share": tottime / total if total else 0.0,
                "ours": "veolia2mqtt" in file,
            }
        )
    rows.sort(key=lambda row: -row["own_s"])
    return rows


def _short(file: str) -> str:
    for marker in ("veolia2mqtt/", "benchmarks/", "site-packages/", "lib/python3"):
        if marker in file:
            return file[file.index(marker) :]
    return file


def per_row_costs(raw: RawMeter) -> dict[str, float]:
    """Microseconds per daily row of each parsing step (best of 5), on one meter's bodies.

    ``parse_daily`` builds each ``DailyReading`` (a named tuple) with ``tuple.__new__``; that
    construction is timed here on its own, the same way. ``models._date`` keeps a cache of the
    dates it parsed, shared by every meter (they all have the same days): after the first
    repeat, it is timed on hits, as a daemon's later syncs and every meter but the first run it.
    """
    bodies = [json.loads(body) for body in raw.daily]
    rows = [row for body in bodies for row in body]
    parsed = [reading for body in bodies for reading in parse_daily(body)]
    count = len(rows)

    def best_us(work: Any) -> float:
        return min(timeit.repeat(work, number=3, repeat=5)) / 3 / count * 1e6

    costs = {
        "json.loads": best_us(lambda: [json.loads(body) for body in raw.daily]),
        "parse_daily (whole)": best_us(lambda: [parse_daily(body) for body in bodies]),
        "  tuple.__new__(DailyReading, ...) alone": best_us(
            lambda: [tuple.__new__(DailyReading, r) for r in parsed]
        ),
    }
    # Private helpers of models.py, looked up so that a rename only drops their lines.
    parse_date = getattr(models, "_date", None)
    litres = getattr(models, "_litres", None)
    if parse_date is not None:
        costs["  _date alone"] = best_us(lambda: [parse_date(row["date_releve"]) for row in rows])
    if litres is not None:
        costs["  _litres x2 alone"] = best_us(
            lambda: [
                (litres(row["consommation"]["litre"]), litres(row["index"]["litre"]))
                for row in rows
            ]
        )
    costs["normalise_daily (fetch_meter's)"] = best_us(lambda: normalise_daily(parsed))
    costs["update_values"] = best_us(lambda: update_values(None, parsed, (), today=TODAY))
    return costs


def run(workdir: Path, *, smoke: bool) -> Section:
    section = Section("cpu")
    sizes = (10,) if smoke else (1, 10, 100, 1000)
    histories = {"90 days": 90} if smoke else HISTORIES
    settings = Settings(
        veolia={"email": "jean.dupont@example.fr", "password": "s3cret!"},
        state_dir=workdir / "cpu-state",
    )
    results: dict[str, dict[str, Any]] = {}
    rows: list[list[str]] = []
    pools: dict[str, list[RawMeter]] = {}
    for history, days in histories.items():
        pools[history] = generate(days)
        for meters in sizes:
            gc.collect()
            stages = pipeline(pools[history], meters, settings)
            gc.collect()
            full = full_sync(pools[history], meters, settings, workdir / f"cpu-{history}-{meters}")
            key = f"{meters} x {history}"
            results[key] = {
                "meters": meters,
                "rows_per_meter": pools[history][0].rows,
                "decode_s": stages.decode,
                "parse_s": stages.parse,
                "rules_s": stages.rules,
                "build_s": stages.build,
                "pipeline_s": stages.pipeline,
                "full_sync_s": full,
                "messages": stages.messages,
            }
            rows.append(
                [
                    key,
                    f"{stages.parse:.3f}",
                    f"{stages.rules:.3f}",
                    f"{stages.build:.3f}",
                    f"{stages.pipeline:.3f}",
                    f"{stages.decode:.3f}",
                    f"{full:.3f}",
                    f"{stages.pipeline / meters * 1e3:.2f}",
                ]
            )
    worst_key = f"{sizes[-1]} x {list(histories)[-1]}"
    worst = results[worst_key]
    is_target = (sizes[-1], list(histories)[-1]) == _TARGET_CASE
    section.add(
        "cpu.pipeline.worst",
        GROUP,
        f"{worst_key}: parse + rules + build",
        round(worst["pipeline_s"], 3),
        "s CPU",
        target=f"< {TARGET_S:g} s" if is_target else None,
        passed=(worst["pipeline_s"] < TARGET_S) if is_target else None,
        note=f"{worst['messages']} messages; decode {worst['decode_s']:.2f} s more",
    )
    section.add(
        "cpu.full_sync.worst",
        GROUP,
        f"{worst_key}: SyncService.run_once (decode included)",
        round(worst["full_sync_s"], 3),
        "s CPU",
        note="state store in a temp dir, publisher that sends nothing",
    )
    scaling = _scaling(results, sizes, histories)
    if scaling:
        section.add(
            "cpu.scaling",
            GROUP,
            "per-meter cost, largest / smallest account",
            round(scaling, 2),
            "x",
            note="1.0 = linear in the number of meters",
        )
    costs = per_row_costs(pools[list(histories)[-1]][0])
    prof = profile(pools[list(histories)[-1]], sizes[-1], settings, workdir / "cpu-profile")
    profiled_s = sum(row["own_s"] for row in prof)
    ours_s = sum(row["own_s"] for row in prof if row["ours"])
    parse_s = sum(row["own_s"] for row in prof if "veolia/models.py" in row["function"])
    section.add(
        "cpu.profile.ours",
        GROUP,
        f"{worst_key} under cProfile: share of time in veolia2mqtt code",
        round(100 * ours_s / profiled_s) if profiled_s else None,
        "%",
        note=f"veolia/models.py (parsing) {100 * parse_s / profiled_s:.0f}%; "
        f"top: {prof[0]['function']}"
        if profiled_s
        else "",
    )
    section.details = {
        "pool": POOL,
        "cases": results,
        "per_row_us": costs,
        "profile_case": worst_key,
        "profile_top": prof[:20],
        "profile_ours_top": [row for row in prof if row["ours"]][:10],
        "tables": [
            {
                "title": "CPU seconds (time.process_time) of one first sync",
                "headers": [
                    "case",
                    "parse",
                    "rules",
                    "build",
                    "parse+rules+build",
                    "json decode",
                    "SyncService.run_once",
                    "ms per meter",
                ],
                "rows": rows,
            },
            {
                "title": "Cost per daily row (µs, best of 5, one meter's bodies)",
                "headers": ["step", "µs per row"],
                "rows": [[step, f"{us:.2f}"] for step, us in costs.items()],
            },
            {
                "title": f"cProfile of SyncService.run_once, {worst_key}: top own time",
                "headers": ["function", "calls", "own s", "cumulative s", "share"],
                "rows": [
                    [
                        row["function"],
                        str(row["calls"]),
                        f"{row['own_s']:.3f}",
                        f"{row['cumulative_s']:.3f}",
                        f"{row['own_share']:.0%}",
                    ]
                    for row in prof[:15]
                ],
            },
        ],
    }
    return section


def _scaling(
    results: dict[str, dict[str, Any]], sizes: tuple[int, ...], histories: dict[str, int]
) -> float | None:
    if len(sizes) < 2:
        return None
    history = list(histories)[-1]
    small, large = results[f"{sizes[1]} x {history}"], results[f"{sizes[-1]} x {history}"]
    per_small = small["pipeline_s"] / small["meters"]
    per_large = large["pipeline_s"] / large["meters"]
    return per_large / per_small if per_small else None
