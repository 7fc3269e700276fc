"""When to sync: the daily slot, catch-up, retries, the auth block and refresh requests.

:class:`Planner` holds every time decision and reads no clock of its own, so DST days, catch-up
and back-off are tested with plain datetimes. :func:`run_daemon` drives it with a
``schedule.Scheduler`` that ticks the planner, and waits on an event so that SIGTERM and
refresh requests take effect at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

import schedule

if TYPE_CHECKING:
    from collections.abc import Callable
    from zoneinfo import ZoneInfo

_LOGGER = logging.getLogger(__name__)

SLOT_ROUNDING_MIN: Final = 5
CATCH_UP_INTERVAL: Final = timedelta(hours=1)
CATCH_UP_UNTIL: Final = time(22, 0)
RETRY_DELAYS: Final = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=45))
RETRY_DELAY_AFTER: Final = timedelta(hours=1)
REFRESH_MIN_INTERVAL: Final = timedelta(minutes=15)
HOUSEKEEPING_S: Final = 30
MAX_IDLE_S: Final = 60.0


class Outcome(StrEnum):
    """How a sync attempt ended, as far as scheduling cares."""

    NEW_DAY = "new_day"
    """Success, and a newer reading day was published (or nothing is stale)."""
    NO_NEW_DAY = "no_new_day"
    """Success, but Veolia has not published a newer day yet: catch up hourly."""
    TRANSIENT = "transient"
    """Veolia or the broker failed in a way worth retrying today."""
    AUTH_REFUSED = "auth_refused"
    """Credentials refused or a challenge: no new login before the next slot or a config change."""


def slot_time(configured: str | None, started: datetime, zone: ZoneInfo) -> time:
    """The daily slot: ``sync.time``, else the start time rounded down to 5 minutes."""
    if configured is not None:
        hours, minutes = configured.split(":")
        return time(int(hours), int(minutes))
    local = started.astimezone(zone)
    return time(local.hour, local.minute - local.minute % SLOT_ROUNDING_MIN)


def slot_on(day: date, slot: time, zone: ZoneInfo) -> datetime:
    """The slot of ``day`` as an aware datetime; a slot inside a DST gap moves forward."""
    naive_local = datetime.combine(day, slot, tzinfo=zone)
    # A round trip through UTC normalises a non-existent local time (spring gap) forward and
    # picks the first of two ambiguous ones (autumn), so every day has exactly one slot.
    return naive_local.astimezone(UTC).astimezone(zone)


def latest_slot(now: datetime, slot: time, zone: ZoneInfo) -> datetime:
    """The latest slot at or before ``now``."""
    # Compared in UTC: aware datetimes that share a tzinfo compare by wall time, which is
    # wrong inside the autumn fold.
    now = now.astimezone(UTC)
    today = now.astimezone(zone).date()
    candidate = slot_on(today, slot, zone)
    if candidate > now:
        candidate = slot_on(today - timedelta(days=1), slot, zone)
    return candidate


def next_slot(now: datetime, slot: time, zone: ZoneInfo) -> datetime:
    """The first slot strictly after ``now``."""
    now = now.astimezone(UTC)
    today = now.astimezone(zone).date()
    candidate = slot_on(today, slot, zone)
    if candidate <= now:
        candidate = slot_on(today + timedelta(days=1), slot, zone)
    return candidate


@dataclass(frozen=True, slots=True)
class Decision:
    """When the next sync is due and why (for the log)."""

    due: datetime
    reason: str


class Planner:
    """Every scheduling decision of the daemon; pure apart from its own small state.

    Args:
        slot: the daily slot, local time.
        zone: the time zone of ``slot``.
        pinned: ``False`` when the slot is the start time rounded down (``sync.time`` null):
            the slot then moves with every restart, so at start-up only a sync already done
            today counts, not one since "today's slot", which was only set a moment ago.
    """

    def __init__(self, *, slot: time, zone: ZoneInfo, pinned: bool = True) -> None:
        self.slot = slot
        self.zone = zone
        self.pinned = pinned
        self._failures = 0
        self._last_refresh: datetime | None = None
        self.next: Decision | None = None

    def _set(self, due: datetime, reason: str) -> Decision:
        self.next = Decision(due, reason)
        return self.next

    def initial(
        self, now: datetime, *, last_success: datetime | None, blocked_since: datetime | None
    ) -> Decision:
        """At start-up: sync now only if the last success is older than the latest slot."""
        now = now.astimezone(UTC)
        latest = latest_slot(now, self.slot, self.zone)
        if not self.pinned:
            midnight = datetime.combine(now.astimezone(self.zone).date(), time(0), self.zone)
            latest = midnight.astimezone(UTC)
        if blocked_since is not None:
            retry = self._after_refusal(blocked_since)
            if retry > now:
                return self._set(retry, "credentials were refused: waiting for the next day's slot")
        if last_success is None or last_success < latest:
            return self._set(now, "no successful sync since the latest slot")
        return self._set(next_slot(now, self.slot, self.zone), "already synced since the slot")

    def _after_refusal(self, refused_at: datetime) -> datetime:
        """The first slot on a later local day: at most one login attempt a day when refused.

        A start-up sync refused before the day's slot must not try again at that slot.
        """
        upcoming = next_slot(refused_at.astimezone(UTC), self.slot, self.zone)
        day = refused_at.astimezone(self.zone).date()
        if upcoming.astimezone(self.zone).date() == day:
            upcoming = slot_on(day + timedelta(days=1), self.slot, self.zone).astimezone(UTC)
        return upcoming

    def after(self, outcome: Outcome, now: datetime, *, refresh: bool = False) -> Decision:
        """The next due time after a sync attempt that ended with ``outcome`` at ``now``.

        ``refresh``: the attempt was a refresh request. One that finds no newer day keeps the
        plan: where the zone publishes two days late, the day's data is already in, and an
        hourly catch-up until 22:00 would only repeat the same answer.
        """
        now = now.astimezone(UTC)
        upcoming = next_slot(now, self.slot, self.zone)
        kept = self.next
        if refresh and outcome is Outcome.NO_NEW_DAY and kept is not None and kept.due > now:
            return kept
        if outcome is Outcome.AUTH_REFUSED:
            self._failures = 0
            retry = self._after_refusal(now)
            return self._set(retry, "credentials refused: waiting for the next day's slot")
        if outcome is Outcome.TRANSIENT:
            delay = (
                RETRY_DELAYS[self._failures]
                if self._failures < len(RETRY_DELAYS)
                else RETRY_DELAY_AFTER
            )
            self._failures += 1
            retry = now + delay
            if retry >= upcoming:
                # Each slot starts a fresh back-off: its first retry is again 5 minutes away.
                self._failures = 0
                return self._set(upcoming, "transient failure: next slot")
            return self._set(retry, f"transient failure: retry in {delay}")
        self._failures = 0
        if outcome is Outcome.NO_NEW_DAY:
            local = now.astimezone(self.zone)
            limit = datetime.combine(local.date(), CATCH_UP_UNTIL, tzinfo=self.zone)
            retry = now + CATCH_UP_INTERVAL
            if retry <= limit and retry < upcoming:
                return self._set(retry, "no new day published yet: catch-up in 1 h")
        return self._set(upcoming, "synced: next slot")

    def refresh_allowed(self, now: datetime) -> bool:
        """Whether a refresh request may sync now (at most one every 15 minutes)."""
        now = now.astimezone(UTC)
        if self._last_refresh is not None and now - self._last_refresh < REFRESH_MIN_INTERVAL:
            return False
        self._last_refresh = now
        return True


class SyncRunner(Protocol):
    """What the daemon runs: one sync attempt that reports how it ended."""

    def __call__(self) -> Outcome:
        """Run one sync; never raises."""
        ...


class Wakeup:
    """Stop and refresh signals for the daemon loop; safe to use from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._refreshes: list[str] = []

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stopping = True
        self._event.set()

    def reset(self) -> None:
        """Forget a previous :meth:`stop` (the daemon reloads its configuration)."""
        self._stopping = False
        self._event.clear()

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def refresh(self, slug: str) -> None:
        """Queue a refresh request for a meter (called from the MQTT thread)."""
        with self._lock:
            self._refreshes.append(slug)
        self._event.set()

    def take_refreshes(self) -> list[str]:
        """The refresh requests queued since the last call."""
        with self._lock:
            taken, self._refreshes = self._refreshes, []
        return taken

    def wait(self, timeout_s: float) -> None:
        """Sleep until woken or ``timeout_s`` passes."""
        self._event.wait(timeout_s)
        self._event.clear()


class DaemonExit(StrEnum):
    """Why :meth:`Daemon.run` returned."""

    STOPPED = "stopped"
    CONFIG_CHANGED = "config_changed"


class Daemon:
    """The long-running loop around a :class:`Planner`.

    :meth:`tick` does one step at the injected clock's time, so tests and the soak drive whole
    simulated weeks without waiting; :meth:`run` is the real loop.
    """

    def __init__(
        self,
        sync: SyncRunner,
        planner: Planner,
        *,
        clock: Callable[[], datetime],
        wakeup: Wakeup | None = None,
        heartbeat: Callable[[], None] | None = None,
        config_changed: Callable[[], bool] | None = None,
    ) -> None:
        self.sync = sync
        self.planner = planner
        self.clock = clock
        self.wakeup = wakeup or Wakeup()
        self._heartbeat = heartbeat
        self._config_changed = config_changed
        self.blocked = False
        self.exit = DaemonExit.STOPPED
        self.runs = 0

    def _now(self) -> datetime:
        return self.clock().astimezone(UTC)

    def _local(self, when: datetime) -> str:
        return when.astimezone(self.planner.zone).isoformat(timespec="minutes")

    def start(self, *, last_success: datetime | None, blocked_since: datetime | None) -> Decision:
        """Decide the first run: now if the last success is older than the latest slot."""
        now = self._now()
        decision = self.planner.initial(now, last_success=last_success, blocked_since=blocked_since)
        self.blocked = blocked_since is not None and decision.due > now
        _LOGGER.info("Next sync %s (%s)", self._local(decision.due), decision.reason)
        return decision

    def _run(self, reason: str, *, refresh: bool = False) -> None:
        _LOGGER.info("Sync starting (%s)", reason)
        self.runs += 1
        if self._heartbeat is not None:
            self._heartbeat()
        try:
            outcome = self.sync()
        except Exception:
            # A runner is not supposed to raise; if it does, the due time must still move on,
            # or the loop would call it again at once, forever.
            _LOGGER.exception("Sync failed unexpectedly")
            outcome = Outcome.TRANSIENT
        self.blocked = outcome is Outcome.AUTH_REFUSED
        nxt = self.planner.after(outcome, self._now(), refresh=refresh)
        _LOGGER.info("Next sync %s (%s)", self._local(nxt.due), nxt.reason)

    def housekeeping(self) -> None:
        """Refresh the heartbeat; while blocked, reload when the configuration changed."""
        if self._heartbeat is not None:
            self._heartbeat()
        if self.blocked and self._config_changed is not None and self._config_changed():
            _LOGGER.info("Configuration changed while credentials were refused: reloading")
            self.exit = DaemonExit.CONFIG_CHANGED
            self.wakeup.stop()

    def tick(self) -> None:
        """Serve queued refresh requests, then run the sync if it is due."""
        now = self._now()
        refreshes = self.wakeup.take_refreshes()
        if refreshes:
            meters = ", ".join(sorted(set(refreshes)))
            if self.blocked:
                _LOGGER.warning(
                    "Refresh for %s ignored: credentials were refused; fix the configuration",
                    meters,
                )
            elif self.planner.refresh_allowed(now):
                self._run(f"refresh requested for {meters}", refresh=True)
                return
            else:
                _LOGGER.info("Refresh for %s ignored: at most one every 15 minutes", meters)
        if self.planner.next is not None and now >= self.planner.next.due:
            self._run(self.planner.next.reason)

    def run(self, *, last_success: datetime | None, blocked_since: datetime | None) -> DaemonExit:
        """Loop until stopped; the waits are bounded so SIGTERM takes effect at once."""
        self.start(last_success=last_success, blocked_since=blocked_since)
        runner = schedule.Scheduler()
        runner.every(HOUSEKEEPING_S).seconds.do(_guard(self.housekeeping))
        _guard(self.housekeeping)()
        while not self.wakeup.stopping():
            _guard(self.tick)()
            if self.wakeup.stopping():
                break
            idle = runner.idle_seconds
            # `idle or 60` would be wrong: an idle time of 0.0 is falsy.
            wait_s = MAX_IDLE_S if idle is None else min(max(idle, 0.0), MAX_IDLE_S)
            if self.planner.next is not None:
                due_in = (self.planner.next.due - self._now()).total_seconds()
                wait_s = min(wait_s, max(due_in, 0.0))
            self.wakeup.wait(wait_s)
            runner.run_pending()
        return self.exit


def _guard(job: Callable[[], None]) -> Callable[[], None]:
    """Log a job's exception instead of letting it end the loop (``schedule`` catches none)."""

    def guarded() -> None:
        try:
            job()
        except Exception:
            _LOGGER.exception("Scheduled job failed")

    return guarded
