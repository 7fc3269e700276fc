"""2. Cognito sign-ins over a simulated week with three restarts a day.

Two figures everywhere: **password sign-ins** (``USER_PASSWORD_AUTH``, the password on the wire:
what a lockout counts) and **refresh renewals** (``REFRESH_TOKEN_AUTH``: an expired access token
renewed with the refresh token that the process's own password sign-in returned; that refresh
token is kept in memory only, so a restart with an expired access token signs in with the
password again).

One simulator, one ``state_dir``, a simulated clock (``Simulator.set_now`` plus the clock
injected into the sync, the client and the state store). Tokens live 3600 s. Each restart builds
fresh objects (store, client, service) and runs the daemon's own start-up logic:
``scheduler.Daemon`` with ``Planner.initial`` (sync only when the last successful sync is older
than the latest daily slot), then ticks the daemon at each due time until the next restart.
A third week runs one process for the whole week (no restart), with ``sync.time: "06:00"``.

Two configurations: ``sync.time: "06:00"`` and the default ``sync.time: null`` (the slot is the
start time rounded down to 5 minutes; ``Planner(pinned=False)`` then counts any sync done
today at start-up, as ``cli`` wires it).

The peer keeps nothing across restarts: each start is a new ``VeoliaAPI`` object that logs in
and fetches. It is given the same daily refresh at 06:00 while it runs; its token expiry is aged
with the simulated clock (it reads the real clock).

A separate case gives the target figure: a sync at 09:00, then a restart at 09:10 with
``sync.time: "09:05"``, so that the start-up must sync again; it must reuse the cached token
(issued at 09:00, valid until 10:00): 0 password sign-ins and 0 refresh renewals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from benchmarks import _peer
from benchmarks._common import (
    TODAY,
    Section,
    password_sign_ins,
    refresh_renewals,
    settings_for,
    total_requests,
    wire,
)
from veolia2mqtt.config import Settings
from veolia2mqtt.scheduler import Daemon, Planner, slot_time
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from pathlib import Path

GROUP = "2. Sign-ins across a simulated week: password and refresh (3 restarts a day)"
RESTARTS = (time(7, 0), time(13, 0), time(21, 0))
SLOT = "06:00"
RESTART_SLOT = "09:05"


@dataclass
class Clock:
    """The simulated time, shared by the simulator and every injected clock."""

    sim: Simulator
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def move(self, to: datetime) -> None:
        self.now = max(self.now, to)
        self.sim.set_now(self.now)


def _restart_times(days: int, zone: ZoneInfo, restarts: tuple[time, ...]) -> list[datetime]:
    first = TODAY - timedelta(days=days)
    return [
        datetime.combine(first + timedelta(days=d), at, tzinfo=zone)
        for d in range(days)
        for at in restarts
    ]


def _counts(stats: dict[str, int], **extra: int) -> dict[str, int]:
    return {
        "password_sign_ins": password_sign_ins(stats),
        "refresh_renewals": refresh_renewals(stats),
        "requests": total_requests(stats),
        **extra,
    }


def _sign_ins(stats: dict[str, int]) -> int:
    """Cognito sign-ins of either kind: a new access token."""
    return password_sign_ins(stats) + refresh_renewals(stats)


def _week_ours(
    sim: Simulator, state_dir: Path, sync_time: str | None, days: int, *, restart: bool = True
) -> dict[str, int]:
    zone = ZoneInfo(sim.scenario.timezone)
    starts = _restart_times(days, zone, RESTARTS if restart else RESTARTS[:1])
    if not restart:
        starts = starts[:1]
    end = datetime.combine(TODAY, time(0), tzinfo=zone)
    clock = Clock(sim, starts[0])
    sim.set_now(clock.now)
    sim.reset()
    syncs = start_password = 0
    for i, start in enumerate(starts):
        clock.move(start)
        stop_at = starts[i + 1] if i + 1 < len(starts) else end
        settings = Settings(**settings_for(sim, state_dir, sync_time=sync_time))
        wired = wire(sim, state_dir, clock=clock, settings=settings)
        # As cli._daemon builds it.
        planner = Planner(
            slot=slot_time(sync_time, clock.now, zone), zone=zone, pinned=sync_time is not None
        )
        daemon = Daemon(wired.service, planner, clock=clock)
        daemon.start(last_success=wired.store.last_sync(), blocked_since=None)
        while planner.next is not None and planner.next.due < stop_at:
            clock.move(planner.next.due)
            before, password_before = daemon.runs, password_sign_ins(sim.stats())
            daemon.tick()
            if daemon.runs == before:  # a due time that never fires: give up on this process
                break
            if clock.now == start:
                start_password += password_sign_ins(sim.stats()) - password_before
        syncs += daemon.runs
        wired.client.close()
    return _counts(
        sim.stats(), password_at_start_up=start_password, syncs=syncs, starts=len(starts)
    )


def _week_peer(sim: Simulator, days: int) -> dict[str, int]:
    zone = ZoneInfo(sim.scenario.timezone)
    starts = _restart_times(days, zone, RESTARTS)
    end = datetime.combine(TODAY, time(0), tzinfo=zone)
    clock = Clock(sim, starts[0])
    sim.set_now(clock.now)
    sim.reset()
    refresh_at = time.fromisoformat(SLOT)
    syncs = start_password = 0
    with _peer.pointed_at(sim):
        for i, start in enumerate(starts):
            clock.move(start)
            stop_at = starts[i + 1] if i + 1 < len(starts) else end
            with _peer.PeerSession(sim) as peer:
                today = clock.now.astimezone(zone).date()
                password_before = password_sign_ins(sim.stats())
                peer.login_and_fetch(today.replace(day=1), today)
                start_password += password_sign_ins(sim.stats()) - password_before
                syncs += 1
                logged_in_at, aged = clock.now, 0.0
                day = start.date()
                while True:
                    due = datetime.combine(day, refresh_at, tzinfo=zone)
                    if due >= stop_at:
                        break
                    if due > clock.now:
                        clock.move(due)
                        elapsed = (clock.now - logged_in_at).total_seconds()
                        peer.age_token(elapsed - aged)
                        aged = elapsed
                        before = _sign_ins(sim.stats())
                        today = clock.now.astimezone(zone).date()
                        peer.fetch(today.replace(day=1), today)
                        syncs += 1
                        if _sign_ins(sim.stats()) > before:
                            logged_in_at, aged = clock.now, 0.0
                    day += timedelta(days=1)
    return _counts(
        sim.stats(), password_at_start_up=start_password, syncs=syncs, starts=len(starts)
    )


def _restart_with_valid_token(sim: Simulator, state_dir: Path) -> dict[str, int]:
    """A sync at 09:00, then a restart at 09:10 that must sync (``sync.time: "09:05"``)."""
    zone = ZoneInfo(sim.scenario.timezone)
    clock = Clock(sim, datetime.combine(TODAY, time(9, 0), tzinfo=zone))
    sim.set_now(clock.now)
    settings = Settings(**settings_for(sim, state_dir, sync_time=RESTART_SLOT))
    first = wire(sim, state_dir, clock=clock, settings=settings)
    first.service.run_once()
    first.client.close()
    clock.move(clock.now + timedelta(minutes=10))
    sim.reset()
    wired = wire(sim, state_dir, clock=clock, settings=settings)
    planner = Planner(slot=slot_time(RESTART_SLOT, clock.now, zone), zone=zone, pinned=True)
    daemon = Daemon(wired.service, planner, clock=clock)
    daemon.start(last_success=wired.store.last_sync(), blocked_since=None)
    daemon.tick()
    wired.client.close()
    return _counts(sim.stats(), syncs=daemon.runs)


def run(workdir: Path, *, smoke: bool) -> Section:
    section = Section("logins")
    days = 2 if smoke else 7
    scenario = Scenario.many(1, today=TODAY)
    with Simulator(scenario) as sim:
        restart = _restart_with_valid_token(sim, workdir / "logins-restart")
        slot = _week_ours(sim, workdir / "logins-slot", SLOT, days)
        default = _week_ours(sim, workdir / "logins-default", None, days)
        one_process = _week_ours(sim, workdir / "logins-one-process", SLOT, days, restart=False)
        peer = _week_peer(sim, days) if _peer.available() else None
    restart_sign_ins = restart["password_sign_ins"] + restart["refresh_renewals"]
    section.add(
        "logins.restart_valid_token",
        GROUP,
        "restart 10 min after a sync, sync due at start: password + refresh sign-ins",
        restart_sign_ins,
        "sign-ins",
        target="0 (both)",
        passed=restart_sign_ins == 0,
        note=f"password sign-ins {restart['password_sign_ins']}, refresh renewals "
        f"{restart['refresh_renewals']}; {restart['syncs']} sync, {restart['requests']} requests "
        "(token reused)",
    )
    weeks = [
        ("slot", f"ours, {days} days, sync.time {SLOT}", slot),
        ("default", f"ours, {days} days, sync.time null (default)", default),
        (
            "one_process",
            f"ours, {days} days, one process (no restart), sync.time {SLOT}",
            one_process,
        ),
    ]
    if peer is not None:
        weeks.append(("peer", f"peer, {days} days, login at each start + {SLOT} refresh", peer))
    for key, label, week in weeks:
        section.add(
            f"logins.week.{key}",
            GROUP,
            f"{label}: password sign-ins",
            week["password_sign_ins"],
            "password sign-ins",
            note=_note(week),
        )
        section.add(
            f"logins.week.{key}.refresh",
            GROUP,
            f"{label}: refresh renewals",
            week["refresh_renewals"],
            "refresh renewals",
        )
    section.details = {
        "days": days,
        "restarts_local": [t.isoformat("minutes") for t in RESTARTS],
        "token_lifetime_s": scenario.token_lifetime_s,
        "restart_valid_token": restart,
        "ours_slot": slot,
        "ours_default": default,
        "ours_one_process": one_process,
        "peer": peer,
    }
    return section


def _note(week: dict[str, int]) -> str:
    starts = week["starts"]
    return (
        f"{starts} start{'s' if starts != 1 else ''} (password sign-ins at start-up: "
        f"{week['password_at_start_up']}), {week['syncs']} syncs, {week['requests']} requests"
    )
