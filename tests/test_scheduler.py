"""The scheduler with an injected clock: slots, DST, catch-up, retries, auth block, refresh."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from veolia2mqtt.scheduler import (
    Daemon,
    DaemonExit,
    Outcome,
    Planner,
    Wakeup,
    latest_slot,
    next_slot,
    slot_on,
    slot_time,
)

PARIS = ZoneInfo("Europe/Paris")
SPRING_FORWARD = date(2026, 3, 29)
"""Last Sunday of March 2026: 02:00 CET becomes 03:00 CEST."""
FALL_BACK = date(2026, 10, 25)
"""Last Sunday of October 2026: 03:00 CEST becomes 02:00 CET."""


def paris(day: date, hh: int, mm: int = 0, *, fold: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=PARIS).replace(fold=fold)


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


@dataclass
class FakeClock:
    """A clock the test moves; it answers in UTC (like the daemon's) or in another zone."""

    now: datetime
    zone: ZoneInfo | None = None

    def __call__(self) -> datetime:
        return self.now if self.zone is None else self.now.astimezone(self.zone)

    def advance(self, delta: timedelta) -> None:
        self.now = utc(self.now) + delta


@dataclass
class ScriptedSync:
    """A sync runner that reports the outcomes of a script (then a default) and logs its runs."""

    clock: FakeClock
    default: Outcome = Outcome.NEW_DAY
    script: list[Outcome] = field(default_factory=list)
    runs: list[datetime] = field(default_factory=list)

    def __call__(self) -> Outcome:
        self.runs.append(utc(self.clock.now))
        return self.script.pop(0) if self.script else self.default


def drive(daemon: Daemon, clock: FakeClock, until: datetime, step: timedelta) -> None:
    """Tick the daemon at every ``step`` of the fake clock up to ``until``."""
    while clock.now < until:
        daemon.tick()
        clock.advance(step)


def local_days(runs: list[datetime]) -> list[date]:
    return [r.astimezone(PARIS).date() for r in runs]


# -- slots ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_start", "expected"),
    [
        (time(6, 7), time(6, 5)),
        (time(6, 5), time(6, 5)),
        (time(6, 4, 59), time(6, 0)),
        (time(0, 2), time(0, 0)),
        (time(23, 59, 59), time(23, 55)),
    ],
)
def test_activation_rounds_the_start_down_to_five_minutes(
    local_start: time, expected: time
) -> None:
    started = utc(datetime.combine(date(2026, 6, 1), local_start, tzinfo=PARIS))
    assert slot_time(None, started, PARIS) == expected


def test_configured_sync_time_wins_over_the_start_time() -> None:
    started = utc(paris(date(2026, 6, 1), 6, 7))
    assert slot_time("21:42", started, PARIS) == time(21, 42)
    assert slot_time("00:00", started, PARIS) == time(0, 0)


def test_slot_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    slot = slot_on(SPRING_FORWARD, time(2, 30), PARIS)
    assert slot.astimezone(PARIS).isoformat() == "2026-03-29T03:30:00+02:00"
    assert utc(slot) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_slot_in_the_autumn_fold_is_the_first_occurrence() -> None:
    slot = slot_on(FALL_BACK, time(2, 30), PARIS)
    assert utc(slot) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_latest_and_next_slot_around_the_slot() -> None:
    slot = time(6, 5)
    at_slot = utc(paris(date(2026, 6, 1), 6, 5))
    assert latest_slot(at_slot, slot, PARIS) == at_slot
    assert next_slot(at_slot, slot, PARIS) == utc(paris(date(2026, 6, 2), 6, 5))
    before = at_slot - timedelta(seconds=1)
    assert latest_slot(before, slot, PARIS) == utc(paris(date(2026, 5, 31), 6, 5))
    assert next_slot(before, slot, PARIS) == at_slot


# -- start-up decision ------------------------------------------------------------------------


def test_first_start_syncs_now() -> None:
    now = utc(paris(date(2026, 6, 1), 10, 0))
    planner = Planner(slot=time(6, 5), zone=PARIS)
    assert planner.initial(now, last_success=None, blocked_since=None).due == now


def test_restart_after_todays_sync_waits_for_the_next_slot() -> None:
    now = utc(paris(date(2026, 6, 1), 10, 0))
    planner = Planner(slot=time(6, 5), zone=PARIS)
    synced = utc(paris(date(2026, 6, 1), 6, 5))
    decision = planner.initial(now, last_success=synced, blocked_since=None)
    assert decision.due == utc(paris(date(2026, 6, 2), 6, 5))


def test_restart_after_yesterdays_sync_catches_up_now() -> None:
    now = utc(paris(date(2026, 6, 1), 10, 0))
    planner = Planner(slot=time(6, 5), zone=PARIS)
    synced = utc(paris(date(2026, 5, 31), 6, 5))
    assert planner.initial(now, last_success=synced, blocked_since=None).due == now


def test_restart_later_the_same_day_without_sync_time_does_not_sync_again() -> None:
    # sync.time null: the slot follows each start. A restart at 18:02 after the 06:05 sync
    # must not count 18:00 as a slot that the morning sync missed.
    morning = utc(paris(date(2026, 6, 1), 6, 7))
    first = Planner(slot=slot_time(None, morning, PARIS), zone=PARIS, pinned=False)
    assert first.initial(morning, last_success=None, blocked_since=None).due == morning
    evening = utc(paris(date(2026, 6, 1), 18, 2))
    again = Planner(slot=slot_time(None, evening, PARIS), zone=PARIS, pinned=False)
    decision = again.initial(evening, last_success=morning, blocked_since=None)
    assert decision.due > evening
    assert decision.due == utc(paris(date(2026, 6, 2), 18, 0))
    # The next morning's restart finds yesterday's sync and syncs at once.
    tomorrow = utc(paris(date(2026, 6, 2), 6, 7))
    third = Planner(slot=slot_time(None, tomorrow, PARIS), zone=PARIS, pinned=False)
    assert third.initial(tomorrow, last_success=morning, blocked_since=None).due == tomorrow


def test_restart_while_credentials_are_refused_waits_for_the_next_slot() -> None:
    now = utc(paris(date(2026, 6, 1), 10, 0))
    planner = Planner(slot=time(6, 5), zone=PARIS)
    refused = utc(paris(date(2026, 6, 1), 6, 5))
    decision = planner.initial(now, last_success=None, blocked_since=refused)
    assert decision.due == utc(paris(date(2026, 6, 2), 6, 5))
    # A refusal from before the latest slot no longer blocks.
    old = utc(paris(date(2026, 5, 31), 6, 5))
    assert planner.initial(now, last_success=None, blocked_since=old).due == now


# -- after a sync -----------------------------------------------------------------------------


def test_transient_failures_back_off_5_15_45_then_hourly() -> None:
    slot = time(6, 5)
    planner = Planner(slot=slot, zone=PARIS)
    now = utc(paris(date(2026, 6, 1), 6, 5))
    delays = []
    for _ in range(6):
        due = planner.after(Outcome.TRANSIENT, now).due
        delays.append(due - now)
        now = due
    assert delays == [timedelta(minutes=m) for m in (5, 15, 45, 60, 60, 60)]


def test_transient_retries_never_go_past_the_next_slot() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    late = utc(paris(date(2026, 6, 2), 6, 1))
    assert planner.after(Outcome.TRANSIENT, late).due == utc(paris(date(2026, 6, 2), 6, 5))


def test_back_off_starts_again_at_the_next_slot() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    start = now = utc(paris(date(2026, 6, 1), 6, 5))
    while True:
        due = planner.after(Outcome.TRANSIENT, now).due
        assert due - start < timedelta(days=2), "the retries never reached the next slot"
        if due.astimezone(PARIS).time() == time(6, 5):
            break
        now = due
    assert due == start + timedelta(days=1)
    # Veolia was down all day; at the next day's slot it fails again: first retry in 5 min.
    at_slot = due
    assert planner.after(Outcome.TRANSIENT, at_slot).due - at_slot == timedelta(minutes=5)


def test_success_resets_the_back_off() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    now = utc(paris(date(2026, 6, 1), 6, 5))
    for _ in range(3):
        now = planner.after(Outcome.TRANSIENT, now).due
    planner.after(Outcome.NEW_DAY, now)
    assert planner.after(Outcome.TRANSIENT, now).due - now == timedelta(minutes=5)


def test_catch_up_hourly_until_22h_then_the_next_slot() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    now = utc(paris(date(2026, 6, 1), 6, 5))
    tries = [now]
    while True:
        due = planner.after(Outcome.NO_NEW_DAY, now).due
        if due - now != timedelta(hours=1):
            break
        tries.append(due)
        now = due
    local = [t.astimezone(PARIS).strftime("%H:%M") for t in tries]
    assert local[0] == "06:05"
    assert local[-1] == "21:05"
    assert len(tries) == 16
    assert due == utc(paris(date(2026, 6, 2), 6, 5))


def test_catch_up_never_passes_22h_even_when_one_hour_would() -> None:
    planner = Planner(slot=time(21, 30), zone=PARIS)
    at_slot = utc(paris(date(2026, 6, 1), 21, 30))
    assert planner.after(Outcome.NO_NEW_DAY, at_slot).due == utc(paris(date(2026, 6, 2), 21, 30))
    early = Planner(slot=time(20, 59), zone=PARIS)
    at = utc(paris(date(2026, 6, 1), 20, 59))
    assert early.after(Outcome.NO_NEW_DAY, at).due == at + timedelta(hours=1)


def test_refused_credentials_wait_for_the_next_slot() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    now = utc(paris(date(2026, 6, 1), 6, 5))
    assert planner.after(Outcome.AUTH_REFUSED, now).due == utc(paris(date(2026, 6, 2), 6, 5))


def test_refresh_is_allowed_once_every_15_minutes() -> None:
    planner = Planner(slot=time(6, 5), zone=PARIS)
    now = utc(paris(date(2026, 6, 1), 10, 0))
    assert planner.refresh_allowed(now)
    assert not planner.refresh_allowed(now + timedelta(minutes=14, seconds=59))
    assert planner.refresh_allowed(now + timedelta(minutes=15))
    assert not planner.refresh_allowed(now + timedelta(minutes=20))


# -- the daemon loop over simulated days ------------------------------------------------------


def make_daemon(
    start: datetime, slot: time, *, zone_clock: ZoneInfo | None = None, **kwargs: object
) -> tuple[Daemon, FakeClock, ScriptedSync]:
    clock = FakeClock(utc(start), zone_clock)
    sync = ScriptedSync(clock)
    daemon = Daemon(sync, Planner(slot=slot, zone=PARIS), clock=clock, **kwargs)  # type: ignore[arg-type]
    return daemon, clock, sync


@pytest.mark.parametrize("zone_clock", [None, PARIS], ids=["utc-clock", "paris-clock"])
@pytest.mark.parametrize("slot", [time(2, 30), time(2, 0), time(3, 0), time(1, 59), time(6, 5)])
def test_one_sync_a_day_across_both_dst_changes(slot: time, zone_clock: ZoneInfo | None) -> None:
    # Minute by minute over the spring-forward week and the fall-back week of 2026.
    for first, last in (
        (date(2026, 3, 26), date(2026, 4, 1)),
        (date(2026, 10, 22), date(2026, 10, 28)),
    ):
        start = paris(first, 0, 0)
        daemon, clock, sync = make_daemon(start, slot, zone_clock=zone_clock)
        daemon.start(last_success=utc(start), blocked_since=None)
        drive(daemon, clock, utc(paris(last, 23, 59)), timedelta(minutes=1))
        days = local_days(sync.runs)
        expected = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        assert days == expected, f"slot {slot}: runs {[r.isoformat() for r in sync.runs]}"
        for run in sync.runs:
            local = run.astimezone(PARIS)
            due = slot_on(local.date(), slot, PARIS)
            assert run - utc(due) < timedelta(minutes=1), f"late run {local.isoformat()}"


def test_spring_forward_slot_at_0230_fires_at_0330_cest() -> None:
    daemon, clock, sync = make_daemon(paris(SPRING_FORWARD, 0, 0), time(2, 30))
    daemon.start(last_success=utc(paris(SPRING_FORWARD, 0, 0)), blocked_since=None)
    drive(daemon, clock, utc(paris(SPRING_FORWARD, 23, 0)), timedelta(minutes=1))
    assert [r.astimezone(PARIS).isoformat() for r in sync.runs] == ["2026-03-29T03:30:00+02:00"]


def test_fall_back_slot_at_0230_fires_once_at_the_first_0230() -> None:
    daemon, clock, sync = make_daemon(paris(FALL_BACK, 0, 0), time(2, 30))
    daemon.start(last_success=utc(paris(FALL_BACK, 0, 0)), blocked_since=None)
    drive(daemon, clock, utc(paris(FALL_BACK, 23, 0)), timedelta(minutes=1))
    assert [r.astimezone(PARIS).isoformat() for r in sync.runs] == ["2026-10-25T02:30:00+02:00"]


def test_restart_inside_the_autumn_fold_after_the_slot_does_not_sync_again() -> None:
    # 02:15 CET (the second 02:15) is after the 02:30 CEST slot of that night.
    synced = utc(paris(FALL_BACK, 2, 30))
    restart = paris(FALL_BACK, 2, 15, fold=1)
    assert utc(restart) > synced
    for zone_clock in (None, PARIS):
        daemon, clock, sync = make_daemon(restart, time(2, 30), zone_clock=zone_clock)
        decision = daemon.start(last_success=synced, blocked_since=None)
        assert utc(decision.due) == utc(paris(FALL_BACK + timedelta(days=1), 2, 30))
        drive(daemon, clock, utc(paris(FALL_BACK, 23, 0)), timedelta(minutes=1))
        assert sync.runs == []


def test_daemon_catches_up_hourly_then_resumes_the_slot() -> None:
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 5, 0), time(6, 5))
    sync.script = [Outcome.NO_NEW_DAY, Outcome.NO_NEW_DAY, Outcome.NO_NEW_DAY, Outcome.NEW_DAY]
    daemon.start(last_success=utc(paris(day - timedelta(days=1), 6, 5)), blocked_since=None)
    drive(daemon, clock, utc(paris(day + timedelta(days=1), 7, 0)), timedelta(minutes=1))
    local = [r.astimezone(PARIS).strftime("%d %H:%M") for r in sync.runs]
    assert local == ["01 06:05", "01 07:05", "01 08:05", "01 09:05", "02 06:05"]


def test_daemon_retries_transient_failures_within_the_day() -> None:
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 6, 5), time(6, 5))
    sync.default = Outcome.TRANSIENT
    daemon.start(last_success=None, blocked_since=None)
    drive(daemon, clock, utc(paris(day + timedelta(days=1), 6, 11)), timedelta(minutes=1))
    local = [r.astimezone(PARIS).strftime("%d %H:%M") for r in sync.runs]
    assert local[:5] == ["01 06:05", "01 06:10", "01 06:25", "01 07:10", "01 08:10"]
    assert local[-3:] == ["02 05:10", "02 06:05", "02 06:10"]
    assert all(b > a for a, b in zip(sync.runs, sync.runs[1:], strict=False))


def test_daemon_blocked_by_refused_credentials_until_the_next_days_slot() -> None:
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 6, 5), time(6, 5))
    sync.script = [Outcome.AUTH_REFUSED]
    daemon.start(last_success=None, blocked_since=None)
    daemon.tick()
    assert daemon.blocked
    # Refresh requests are ignored while blocked.
    for minutes in (20, 40, 60):
        clock.now = utc(paris(day, 6, 5)) + timedelta(minutes=minutes)
        daemon.wakeup.refresh("i19fa051732")
        daemon.tick()
    drive(daemon, clock, utc(paris(day + timedelta(days=1), 6, 4)), timedelta(minutes=1))
    assert len(sync.runs) == 1
    drive(daemon, clock, utc(paris(day + timedelta(days=1), 6, 10)), timedelta(minutes=1))
    assert len(sync.runs) == 2
    assert not daemon.blocked


def test_config_change_while_blocked_ends_the_loop() -> None:
    day = date(2026, 6, 1)
    changed = [False]
    daemon, _clock, sync = make_daemon(
        paris(day, 10, 0), time(6, 5), config_changed=lambda: changed[0]
    )
    daemon.start(last_success=None, blocked_since=utc(paris(day, 6, 5)))
    assert daemon.blocked
    daemon.housekeeping()
    assert not daemon.wakeup.stopping()
    changed[0] = True
    daemon.housekeeping()
    assert daemon.wakeup.stopping()
    assert daemon.exit is DaemonExit.CONFIG_CHANGED
    assert sync.runs == []


def test_config_change_is_ignored_when_not_blocked() -> None:
    daemon, _clock, _sync = make_daemon(
        paris(date(2026, 6, 1), 10, 0), time(6, 5), config_changed=lambda: True
    )
    daemon.start(last_success=None, blocked_since=None)
    daemon.housekeeping()
    assert not daemon.wakeup.stopping()


def test_refresh_syncs_now_at_most_once_every_15_minutes() -> None:
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 10, 0), time(6, 5))
    daemon.start(last_success=utc(paris(day, 6, 5)), blocked_since=None)
    requests = [0, 1, 5, 14, 15, 16, 29, 31]
    for minute in range(40):
        if minute in requests:
            daemon.wakeup.refresh("i19fa051732")
            daemon.wakeup.refresh("i21fa104733")
        daemon.tick()
        clock.advance(timedelta(minutes=1))
    local = [r.astimezone(PARIS).strftime("%H:%M") for r in sync.runs]
    assert local == ["10:00", "10:15", "10:31"]


def test_a_refresh_that_finds_no_new_day_does_not_start_a_catch_up() -> None:
    # A zone that publishes two days late: the 06:05 sync brought the day's data; a refresh at
    # 10:00 finds nothing newer, which is no reason to retry every hour until 22:00.
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 6, 5), time(6, 5))
    sync.default = Outcome.NO_NEW_DAY
    sync.script = [Outcome.NEW_DAY]
    daemon.start(last_success=None, blocked_since=None)
    drive(daemon, clock, utc(paris(day, 10, 0)), timedelta(minutes=1))
    daemon.wakeup.refresh("i19fa051732")
    drive(daemon, clock, utc(paris(day + timedelta(days=1), 6, 6)), timedelta(minutes=1))
    local = [r.astimezone(PARIS).strftime("%d %H:%M") for r in sync.runs]
    assert local == ["01 06:05", "01 10:00", "02 06:05"]


def test_a_refresh_during_the_catch_up_keeps_the_catch_up() -> None:
    day = date(2026, 6, 1)
    daemon, clock, sync = make_daemon(paris(day, 6, 5), time(6, 5))
    sync.script = [Outcome.NO_NEW_DAY, Outcome.NO_NEW_DAY, Outcome.NO_NEW_DAY]
    daemon.start(last_success=None, blocked_since=None)
    drive(daemon, clock, utc(paris(day, 6, 30)), timedelta(minutes=1))
    daemon.wakeup.refresh("i19fa051732")
    drive(daemon, clock, utc(paris(day, 9, 0)), timedelta(minutes=1))
    local = [r.astimezone(PARIS).strftime("%H:%M") for r in sync.runs]
    assert local == ["06:05", "06:30", "07:05", "08:05"]


def test_a_sync_that_raises_is_retried_later_not_in_a_busy_loop() -> None:
    day = date(2026, 6, 1)
    clock = FakeClock(utc(paris(day, 6, 5)))
    calls: list[datetime] = []

    def broken() -> Outcome:
        calls.append(clock.now)
        msg = "boom"
        raise RuntimeError(msg)

    daemon = Daemon(broken, Planner(slot=time(6, 5), zone=PARIS), clock=clock)
    daemon.start(last_success=None, blocked_since=None)
    for _ in range(3):
        daemon.tick()
    assert len(calls) == 1
    assert daemon.planner.next is not None
    assert daemon.planner.next.due == clock.now + timedelta(minutes=5)


# -- the real loop ----------------------------------------------------------------------------


def test_run_stops_at_once_when_asked() -> None:
    now = datetime.now(UTC)
    ran = threading.Event()

    def sync() -> Outcome:
        ran.set()
        return Outcome.NEW_DAY

    beats: list[int] = []
    daemon = Daemon(
        sync,
        Planner(slot=slot_time(None, now, PARIS), zone=PARIS),
        clock=lambda: datetime.now(UTC),
        heartbeat=lambda: beats.append(1),
    )
    result: list[DaemonExit] = []
    worker = threading.Thread(
        target=lambda: result.append(daemon.run(last_success=None, blocked_since=None))
    )
    worker.start()
    assert ran.wait(5), "the first sync did not run at start"
    daemon.wakeup.stop()
    worker.join(2)
    assert not worker.is_alive(), "run() did not return within 2 s of stop()"
    assert result == [DaemonExit.STOPPED]
    assert beats, "the heartbeat was not touched"


def test_run_serves_a_refresh_at_once() -> None:
    now = datetime.now(UTC)
    runs: list[datetime] = []
    second = threading.Event()

    def sync() -> Outcome:
        runs.append(datetime.now(UTC))
        if len(runs) == 2:
            second.set()
        return Outcome.NEW_DAY

    daemon = Daemon(
        sync, Planner(slot=slot_time(None, now, PARIS), zone=PARIS), clock=lambda: datetime.now(UTC)
    )
    worker = threading.Thread(
        target=daemon.run, kwargs={"last_success": None, "blocked_since": None}
    )
    worker.start()
    try:
        daemon.wakeup.refresh("i19fa051732")
        assert second.wait(5), "the refresh did not trigger a sync"
    finally:
        daemon.wakeup.stop()
        worker.join(2)
    assert not worker.is_alive()


def test_run_returns_config_changed_when_blocked_and_the_config_changes() -> None:
    now = datetime.now(UTC)
    daemon = Daemon(
        lambda: Outcome.NEW_DAY,
        Planner(slot=slot_time(None, now, PARIS), zone=PARIS),
        clock=lambda: datetime.now(UTC),
        config_changed=lambda: True,
    )
    result = daemon.run(last_success=None, blocked_since=now)
    assert result is DaemonExit.CONFIG_CHANGED
    assert daemon.runs == 0


def test_wakeup_reset_forgets_a_stop() -> None:
    wakeup = Wakeup()
    wakeup.stop()
    assert wakeup.stopping()
    wakeup.reset()
    assert not wakeup.stopping()
    wakeup.refresh("a")
    wakeup.refresh("b")
    assert wakeup.take_refreshes() == ["a", "b"]
    assert wakeup.take_refreshes() == []


def test_refused_before_the_slot_waits_for_the_next_days_slot_even_across_a_restart() -> None:
    day = date(2026, 6, 10)
    planner = Planner(slot=time(6, 5), zone=PARIS)
    refused = paris(day, 3, 0)  # the start-up sync, before the day's slot
    after = planner.after(Outcome.AUTH_REFUSED, refused)
    assert after.due == paris(day + timedelta(days=1), 6, 5)
    restarted = Planner(slot=time(6, 5), zone=PARIS)
    decision = restarted.initial(paris(day, 5, 0), last_success=None, blocked_since=refused)
    assert decision.due == paris(day + timedelta(days=1), 6, 5)
    # The next day, the block has run out: the start-up sync tries again.
    later = Planner(slot=time(6, 5), zone=PARIS)
    retry = later.initial(
        paris(day + timedelta(days=1), 7, 0), last_success=None, blocked_since=refused
    )
    assert retry.due == paris(day + timedelta(days=1), 7, 0)
