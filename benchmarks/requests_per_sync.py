"""1. Veolia requests per daily sync, ours and the peer's, counted by the simulator.

Ours: the real ``SyncService.run_once`` (client, state store, builders; a dry-run publisher),
once with an empty ``state_dir`` (a login is needed) and once after a restart 10 minutes later
(new objects on the same ``state_dir``: the token is cached). The physical limit with a cached
token is 1 ``espace-client`` + 3 per contract (``facturation``, ``journalieres``,
``mensuelles``); without one, 1 Cognito login more.

The peer (``veolia-api-foxace``) does the equivalent work against the same simulator: ``login()``
then ``fetch_all_data(first day of the month, today)`` in a new object (cold), then
``fetch_all_data`` again in the same object (warm: the token is in memory; the peer keeps none
across restarts). It reads only the first contract of an account.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from benchmarks import _peer
from benchmarks._common import TODAY, Section, logins, total_requests, wire
from veolia2mqtt.scheduler import Outcome
from veolia2mqtt.veolia.simulator import ROUTE_KEYS, Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

GROUP = "1. Veolia requests per daily sync"


def _ours(sim: Simulator, state_dir: Path) -> dict[str, int]:
    wired = wire(sim, state_dir, clock=sim.now)
    try:
        sim.reset()
        report = wired.service.run_once()
        stats = sim.stats()
    finally:
        wired.client.close()
    if report.outcome not in {Outcome.NEW_DAY, Outcome.NO_NEW_DAY} or report.meters_failed:
        msg = f"our sync failed: {report}"
        raise RuntimeError(msg)
    return stats


def _peer_counts(sim: Simulator) -> tuple[dict[str, int], dict[str, int]]:
    start = TODAY.replace(day=1)
    with _peer.pointed_at(sim), _peer.PeerSession(sim) as peer:
        sim.reset()
        peer.login_and_fetch(start, TODAY)
        cold = sim.stats()
        sim.reset()
        peer.fetch(start, TODAY)
        warm = sim.stats()
    return cold, warm


def _routes(stats: dict[str, int]) -> dict[str, int]:
    return {key: stats[key] for key in ROUTE_KEYS if stats[key]}


def run(workdir: Path, *, smoke: bool) -> Section:
    section = Section("requests")
    sizes = (1,) if smoke else (1, 3, 10)
    peer_ok = _peer.available()
    rows: list[list[str]] = []
    per_case: dict[str, object] = {}
    for n in sizes:
        with Simulator(Scenario.many(n, today=TODAY)) as sim:
            state_dir = workdir / f"requests-{n}"
            cold = _ours(sim, state_dir)
            sim.advance(timedelta(minutes=10))
            cached = _ours(sim, state_dir)
            peer_cold, peer_warm = _peer_counts(sim) if peer_ok else ({}, {})
        limit_cached = 1 + 3 * n
        limit_cold = limit_cached + 1
        ours_cached, ours_cold = total_requests(cached), total_requests(cold)
        section.add(
            f"requests.ours.cached.{n}",
            GROUP,
            f"ours, {n} contract(s), token cached",
            ours_cached,
            "requests",
            target="≤ 4" if n == 1 else None,
            passed=(ours_cached <= 4) if n == 1 else None,
            note=f"limit {limit_cached}, ratio {ours_cached / limit_cached:.2f}; "
            f"logins {logins(cached)}",
        )
        section.add(
            f"requests.ours.cold.{n}",
            GROUP,
            f"ours, {n} contract(s), no token",
            ours_cold,
            "requests",
            note=f"limit {limit_cold}, ratio {ours_cold / limit_cold:.2f}; logins {logins(cold)}",
        )
        if peer_ok:
            section.add(
                f"requests.peer.cold.{n}",
                GROUP,
                f"peer, {n} contract(s), new object",
                total_requests(peer_cold),
                "requests",
                note=f"first contract only; logins {logins(peer_cold)}",
            )
            section.add(
                f"requests.peer.warm.{n}",
                GROUP,
                f"peer, {n} contract(s), token in memory",
                total_requests(peer_warm),
                "requests",
                note=f"first contract only; logins {logins(peer_warm)}",
            )
        peer_cells = (
            [str(total_requests(peer_warm)), str(total_requests(peer_cold)), "1"]
            if peer_ok
            else ["n/a", "n/a", "n/a"]
        )
        rows.append(
            [
                str(n),
                str(limit_cached),
                str(ours_cached),
                f"{ours_cached / limit_cached:.2f}",
                str(ours_cold),
                *peer_cells,
            ]
        )
        per_case[str(n)] = {
            "limit_cached": limit_cached,
            "ours_cached": _routes(cached),
            "ours_cold": _routes(cold),
            "peer_cold": _routes(peer_cold) if peer_ok else None,
            "peer_warm": _routes(peer_warm) if peer_ok else None,
        }
    section.details["by_route"] = per_case
    section.details["tables"] = [
        {
            "title": "Requests per daily sync: ours vs peer (same simulator, same run)",
            "headers": [
                "contracts",
                "limit (cached)",
                "ours cached",
                "ratio",
                "ours no token",
                "peer warm",
                "peer new object",
                "contracts the peer reads",
            ],
            "rows": rows,
        }
    ]
    if not peer_ok:
        section.details["note"] = "veolia-api-foxace is not installed: peer columns skipped"
    return section
