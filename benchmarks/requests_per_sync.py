"""1. Veolia requests per daily sync, ours and the peer's, counted by the simulator.

Ours: the real ``SyncService.run_once`` (client, state store, builders; a dry-run publisher),
three times:

* with an empty ``state_dir``: one password sign-in (``USER_PASSWORD_AUTH``);
* after a restart 10 minutes later (new objects on the same ``state_dir``): the cached access
  token is reused, no sign-in of either kind;
* in the first process again, 2 hours later: its access token has expired, and it is renewed with
  the refresh token that the password sign-in returned (kept in memory): one
  ``REFRESH_TOKEN_AUTH``, no password.

The physical limit with a valid token is 1 ``espace-client`` + 3 per contract (``facturation``,
``journalieres``, ``mensuelles``); without one, 1 Cognito call more (password or refresh).

The peer (``veolia-api-foxace``) does the equivalent work against the same simulator: ``login()``
then ``fetch_all_data(first day of the month, today)`` in a new object (cold), then
``fetch_all_data`` again in the same object (warm: the token is in memory; the peer keeps none
across restarts). It reads only the first contract of an account.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from benchmarks import _peer
from benchmarks._common import (
    TODAY,
    Section,
    password_sign_ins,
    refresh_renewals,
    sign_ins_note,
    total_requests,
    wire,
)
from veolia2mqtt.scheduler import Outcome
from veolia2mqtt.veolia.simulator import ROUTE_KEYS, Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from benchmarks._common import Wired

GROUP = "1. Veolia requests per daily sync"
RENEW_AFTER = timedelta(hours=2)
"""Past the access token's hour: the next sync of the same process renews it."""


def _sync(sim: Simulator, wired: Wired) -> dict[str, int]:
    """One ``run_once``; the simulator's counts for it alone."""
    sim.reset()
    report = wired.service.run_once()
    stats = sim.stats()
    if report.outcome not in {Outcome.NEW_DAY, Outcome.NO_NEW_DAY} or report.meters_failed:
        msg = f"our sync failed: {report}"
        raise RuntimeError(msg)
    return stats


def _ours(sim: Simulator, state_dir: Path) -> tuple[dict[str, int], ...]:
    """(no token, token cached after a restart, token renewed in the first process)."""
    first = wire(sim, state_dir, clock=sim.now)
    try:
        cold = _sync(sim, first)
        sim.advance(timedelta(minutes=10))
        restarted = wire(sim, state_dir, clock=sim.now)
        try:
            cached = _sync(sim, restarted)
        finally:
            restarted.client.close()
        sim.advance(RENEW_AFTER)
        renewed = _sync(sim, first)
    finally:
        first.client.close()
    if password_sign_ins(renewed) or refresh_renewals(renewed) != 1:
        msg = f"the expired token was not renewed with the refresh token: {renewed}"
        raise RuntimeError(msg)
    return cold, cached, renewed


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
            cold, cached, renewed = _ours(sim, workdir / f"requests-{n}")
            peer_cold, peer_warm = _peer_counts(sim) if peer_ok else ({}, {})
        limit_cached = 1 + 3 * n
        limit_cold = limit_cached + 1
        ours_cached, ours_cold = total_requests(cached), total_requests(cold)
        ours_renewed = total_requests(renewed)
        section.add(
            f"requests.ours.cached.{n}",
            GROUP,
            f"ours, {n} contract(s), token cached",
            ours_cached,
            "requests",
            target="≤ 4" if n == 1 else None,
            passed=(ours_cached <= 4) if n == 1 else None,
            note=f"limit {limit_cached}, ratio {ours_cached / limit_cached:.2f}; "
            f"{sign_ins_note(cached)}",
        )
        section.add(
            f"requests.ours.cold.{n}",
            GROUP,
            f"ours, {n} contract(s), no token",
            ours_cold,
            "requests",
            note=f"limit {limit_cold}, ratio {ours_cold / limit_cold:.2f}; {sign_ins_note(cold)}",
        )
        section.add(
            f"requests.ours.renewed.{n}",
            GROUP,
            f"ours, {n} contract(s), token expired in a running process",
            ours_renewed,
            "requests",
            note=f"limit {limit_cold}, ratio {ours_renewed / limit_cold:.2f}; "
            f"{sign_ins_note(renewed)}",
        )
        if peer_ok:
            section.add(
                f"requests.peer.cold.{n}",
                GROUP,
                f"peer, {n} contract(s), new object",
                total_requests(peer_cold),
                "requests",
                note=f"first contract only; {sign_ins_note(peer_cold)}",
            )
            section.add(
                f"requests.peer.warm.{n}",
                GROUP,
                f"peer, {n} contract(s), token in memory",
                total_requests(peer_warm),
                "requests",
                note=f"first contract only; {sign_ins_note(peer_warm)}",
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
                str(ours_renewed),
                *peer_cells,
            ]
        )
        per_case[str(n)] = {
            "limit_cached": limit_cached,
            "ours_cached": _routes(cached),
            "ours_cold": _routes(cold),
            "ours_renewed": _routes(renewed),
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
                "ours no token (password)",
                "ours token renewed (refresh)",
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
