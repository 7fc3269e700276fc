"""A 60-day soak: the real stack on a fake clock, random faults from a fixed seed.

From 2026-02-15 to 2026-04-15 (two month ends and the spring DST change), each day draws up to
two faults from the catalogue below and injects them at random times: Veolia failures of
every kind, odd data, refused logins, tokens revoked, a publication lag that grows and shrinks,
broker restarts without persistence, Home Assistant births, refresh presses and process
restarts. A subscriber on '#' sees everything. At the end:

* every new day is published exactly once on the per-value ``reading_date`` topic, every day
  that was the latest at a clean sync was published, and every published day is a real row;
* the index never decreases; no 0 and no value from another day is ever published;
* at most one password sign-in a day, except on days where a fault forced a new token or the
  process restarted (a restart forgets the in-memory refresh token); expired access tokens are
  renewed with the refresh token, never with the password;
* nothing raised; the memory the package holds stays flat (tracemalloc, days 20 to 60);
* the broker holds the simulator's truth.

The figures go to stdout (``pytest -s``) and into ``docs/reliability.md``.
"""

from __future__ import annotations

import gc
import itertools
import logging
import random
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import Collector
from tests.reliability.harness import (
    BASE,
    BIRTH,
    PARIS,
    assert_history,
    assert_truth,
    paris,
    publish_raw,
)
from veolia2mqtt.mqtt.topics import meter_slug, value_topic
from veolia2mqtt.scheduler import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.helpers.broker import Broker
    from tests.reliability.harness import Run, Stack
    from veolia2mqtt.veolia.simulator import Simulator

pytestmark = pytest.mark.slow

SEED = 20260215
DAYS = 60
START = date(2026, 2, 15)
METERS = ("I19FA051732", "I21FA104733")
MEMORY_LIMIT_KIB = 64
"""Growth allowed to the package's own live allocations between day 20 and day 60."""
TRACE_FROM = 5
BASELINE_DAY = 20
OK = {Outcome.NEW_DAY, Outcome.NO_NEW_DAY}


@dataclass
class Ledger:
    """What the soak did and saw, day by day."""

    faults: Counter[str] = field(default_factory=Counter)
    forced_days: set[date] = field(default_factory=set)
    """Days where a fault made a new token necessary (revoked, refused, expired by the server)."""
    data_fault: bool = False
    """A fault that reshapes Veolia's answers is on: a clean sync's truth is not recorded."""
    data_fault_days: set[date] = field(default_factory=set)
    broker_restarts: int = 0
    restore_lag_on: date | None = None
    latest_at_clean_syncs: dict[str, set[date]] = field(default_factory=dict)
    sign_ins: dict[date, list[datetime]] = field(default_factory=dict)
    renewals: int = 0
    restart_days: set[date] = field(default_factory=set)


def _window(kind: str, route: str, **options: object) -> Callable[..., None]:
    """A fault that stays on until the end of the day."""

    def inject(soak: Soak, day: date) -> None:
        soak.sim.fail(route, fault=kind, times=None, **options)
        if kind in {"wrong_password", "challenge"}:
            # The account must authenticate again: the session's refresh token is refused too.
            soak.sim.fail("cognito:REFRESH_TOKEN_AUTH", fault="wrong_password", times=None)
            soak.ledger.forced_days.add(day)
        else:
            soak.ledger.data_fault = True
            soak.ledger.data_fault_days.add(day)

    return inject


class Soak:
    """The running soak: the stack, the simulator, the broker, the random draws, the ledger."""

    def __init__(self, stack: Stack, sim: Simulator, broker: Broker) -> None:
        self.stack = stack
        self.sim = sim
        self.broker = broker
        self.rng = random.Random(SEED)
        self.ledger = Ledger(latest_at_clean_syncs={number: set() for number in METERS})
        self.first_round: list[tuple[str, int, Callable[[Soak, date], None], bool]] = []
        stack.after_run = self.note_run

    def note_run(self, run: Run) -> None:
        if run.outcome in OK and not self.ledger.data_fault:
            for number in METERS:
                latest = self.sim.expected_latest(number)
                assert latest is not None
                self.ledger.latest_at_clean_syncs[number].add(latest["date"])  # type: ignore[arg-type]

    # -- the catalogue ------------------------------------------------------------------------

    def transient(self, _day: date) -> None:
        rng = self.rng
        route, kind, options = rng.choice(
            [
                ("*", "http_500", {}),
                ("journalieres", "http_502", {"body": "html"}),
                ("*", "http_502", {"body": "empty"}),
                ("*", "rate_limited", {"retry_after": rng.choice(["3", "120", None])}),
                ("journalieres", "slow", {"delay_s": 2.0}),
                ("*", "maintenance_html", {"status": rng.choice([200, 503])}),
                (rng.choice(["mensuelles", "facturation", "espace-client"]), "malformed_json", {}),
                ("cognito", "cognito_throttled", {}),
            ]
        )
        times = rng.randint(1, 4) if kind == "slow" else rng.randint(1, 14)
        self.sim.fail(route, fault=kind, times=times, **options)

    def token(self, day: date) -> None:
        if self.rng.random() < 0.5:
            self.sim.revoke_tokens()
        else:
            route = self.rng.choice(["espace-client", "facturation", "journalieres", "mensuelles"])
            status = self.rng.choice([401, 403])
            self.sim.fail(route, fault="token_expired", status=status, times=1)
        self.ledger.forced_days.add(day)

    def lag(self, day: date) -> None:
        if self.ledger.restore_lag_on is not None:
            return
        lag = self.rng.randint(3, 5)
        for number in METERS:
            self.sim.set_lag(number, lag)
        self.ledger.restore_lag_on = day + timedelta(days=self.rng.randint(1, 3))

    def broker_restart(self, _day: date) -> None:
        publisher = self.stack.publisher
        replays = publisher.replay_count  # type: ignore[attr-defined]
        self.broker.restart()
        assert publisher.wait_for_replay(replays + 1, 15), "no replay after the restart"  # type: ignore[attr-defined]
        self.ledger.broker_restarts += 1

    def birth(self, _day: date) -> None:
        publisher = self.stack.publisher
        resends = publisher.birth_resend_count  # type: ignore[attr-defined]
        publish_raw(self.broker, BIRTH, "online")
        assert publisher.wait_for_birth_resend(resends + 1, 15)  # type: ignore[attr-defined]

    def refresh(self, _day: date) -> None:
        for _ in range(self.rng.randint(1, 5)):
            self.stack.wakeup.refresh(meter_slug(self.rng.choice(METERS)))
        self.stack.tick()

    def restart(self, day: date) -> None:
        self.stack.restart()
        self.ledger.restart_days.add(day)

    def catalogue(self) -> list[tuple[str, int, Callable[[Soak, date], None], bool]]:
        """(name, weight, inject, at the start of the day)."""
        return [
            ("veolia transient", 10, Soak.transient, False),
            ("token revoked or expired", 3, Soak.token, False),
            ("empty series", 2, _window("empty", "journalieres"), True),
            ("empty monthly", 1, _window("empty", "mensuelles"), True),
            ("duplicated day", 2, _window("duplicate_day", "journalieres"), True),
            ("decreasing index", 2, _window("decreasing_index", "journalieres"), True),
            ("wrong password", 1, _window("wrong_password", "cognito:USER_PASSWORD_AUTH"), True),
            ("challenge", 1, _window("challenge", "cognito:USER_PASSWORD_AUTH"), True),
            ("lag grows", 2, Soak.lag, True),
            ("broker restart", 3, Soak.broker_restart, False),
            ("HA birth", 3, Soak.birth, False),
            ("refresh presses", 3, Soak.refresh, False),
            ("process restart", 3, Soak.restart, False),
        ]

    # -- the days -----------------------------------------------------------------------------

    def when(self, day: date, early: bool) -> datetime:
        """Window faults from 00:05; others mostly just before the 06:05 slot, else any time."""
        if early:
            return paris(day, 0, 5)
        if self.rng.random() < 0.6:
            return paris(day, 6, 0)
        return paris(day, self.rng.randint(0, 21), self.rng.choice([0, 20, 40]))

    def day(self, day: date) -> None:
        ledger, stack, rng = self.ledger, self.stack, self.rng
        stack.run_until(paris(day, 0, 1))
        if ledger.restore_lag_on == day:
            for number in METERS:
                self.sim.set_lag(number, 2)
            ledger.restore_lag_on = None
        catalogue = self.catalogue()
        if not self.first_round:  # every fault once, in a random order, then random draws
            self.first_round = rng.sample(catalogue, len(catalogue))
        index = (day - START).days
        if index < len(catalogue):
            drawn = [self.first_round[index]]
        else:
            count = rng.choice([0, 1, 1, 1, 2])
            drawn = rng.choices(catalogue, weights=[w for _, w, _, _ in catalogue], k=count)
        events = sorted((self.when(day, early), name, inject) for name, _, inject, early in drawn)
        for at, name, inject in events:
            stack.run_until(at)
            inject(self, day)
            ledger.faults[name] += 1
        stack.run_until(paris(day, 23, 55))
        self.sim.clear_faults()
        ledger.data_fault = False
        stack.run_until(paris(day, 23, 59))
        ledger.sign_ins[day] = sorted(
            {
                entry.time
                for entry in self.sim.request_log
                if entry.route == "cognito:USER_PASSWORD_AUTH"
                and entry.time.astimezone(PARIS).date() == day
            }
        )
        ledger.renewals += self.sim.stats()["cognito:REFRESH_TOKEN_AUTH"]
        self.sim.reset()  # the request log would grow for 60 days otherwise


class _Drop(logging.Filter):
    """Keeps no log record (pytest's capture would hold every error's traceback for 60 days)
    and counts the ones that must never happen."""

    def __init__(self) -> None:
        super().__init__()
        self.unexpected: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and (
            "Unexpected" in str(record.msg) or "Scheduled job failed" in str(record.msg)
        ):
            self.unexpected.append(record.getMessage())
        return False


def package_bytes() -> int:
    """Live bytes allocated by the package's own code since tracing began (simulator excluded)."""
    gc.collect()  # uncollected cycles are not held memory
    snapshot = tracemalloc.take_snapshot()
    filters = [
        tracemalloc.Filter(inclusive=True, filename_pattern="*/veolia2mqtt/*"),
        tracemalloc.Filter(inclusive=False, filename_pattern="*/veolia2mqtt/veolia/simulator.py"),
    ]
    return sum(stat.size for stat in snapshot.filter_traces(filters).statistics("filename"))


def test_sixty_days_of_random_faults(make_stack, sim, broker, clock):
    began = time.monotonic()
    drop = _Drop()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(drop)
    try:
        run_soak(make_stack, sim, broker, clock, began)
    finally:
        for handler in handlers:
            handler.removeFilter(drop)
    assert drop.unexpected == []


def run_soak(make_stack, sim, broker, clock, began):
    clock.set(paris(START, 7, 0))
    with Collector(broker.host, broker.port, ("#",)) as watch:
        stack = make_stack(timeout_s=0.3)
        soak = Soak(stack, sim, broker)
        stack.start()
        held_at: dict[int, int] = {}
        for n in range(DAYS):
            if n == TRACE_FROM:
                tracemalloc.start()
            if n == BASELINE_DAY:
                held_at[n] = package_bytes()
            soak.day(START + timedelta(days=n))
        held_at[DAYS] = package_bytes()
        tracemalloc.stop()
        # One clean day more: the broker ends with the truth.
        stack.run_until(paris(START + timedelta(days=DAYS), 12))
        assert stack.runs[-1].outcome is Outcome.NEW_DAY
        assert_truth(broker, sim)
        ledger = soak.ledger

        # Nothing wrong was ever published; the index never went down.
        assert_history(watch, sim, litre_deltas=(0, 10), clamped_ok=True)
        for number in METERS:
            days = [
                date.fromisoformat(p)
                for p in watch.on_topic(value_topic(BASE, meter_slug(number), "reading_date"))
                if p
            ]
            # A broker restart re-asserts the current day (the broker lost it): collapse those.
            repeats = sum(1 for a, b in itertools.pairwise(days) if a == b)
            assert repeats <= ledger.broker_restarts, f"{number}: a day re-published by a sync"
            collapsed = [d for i, d in enumerate(days) if i == 0 or d != days[i - 1]]
            assert collapsed == sorted(set(collapsed)), f"{number}: a day published twice"
            published = set(days)
            missing = ledger.latest_at_clean_syncs[number] - published
            assert not missing, f"{number}: days never published: {sorted(missing)}"
            for day in published:
                assert sim.true_row(number, day) is not None, f"{number}: {day} is no row"
    elapsed = time.monotonic() - began

    # Password sign-ins: one a day at most, unless a fault forced one or the process restarted.
    per_day = {day: len(times) for day, times in ledger.sign_ins.items()}
    explained = ledger.forced_days | ledger.restart_days
    unexplained = {day: n for day, n in per_day.items() if n > 1 and day not in explained}
    assert unexplained == {}, f"more than one password sign-in on an ordinary day: {unexplained}"

    growth_kib = (held_at[DAYS] - held_at[BASELINE_DAY]) / 1024
    outcomes = Counter(r.outcome.value for r in stack.runs)
    total = sum(per_day.values())
    print(
        f"\nsoak: {DAYS} days in {elapsed:.1f} s; {len(stack.runs)} syncs {dict(outcomes)}; "
        f"faults {dict(ledger.faults)}; broker restarts {ledger.broker_restarts}\n"
        f"soak: password sign-ins {total} over {DAYS} days (max {max(per_day.values())} a day; "
        f"{sum(1 for n in per_day.values() if n <= 1)} days with at most one; "
        f"forced days {len(ledger.forced_days)}; restart days {len(ledger.restart_days)}); "
        f"refresh renewals {ledger.renewals}\n"
        f"soak: package memory traced from day {TRACE_FROM}: "
        f"{held_at[BASELINE_DAY] / 1024:.0f} KiB on day {BASELINE_DAY}, "
        f"{held_at[DAYS] / 1024:.0f} KiB on day {DAYS} (growth {growth_kib:+.0f} KiB)"
    )
    assert growth_kib < MEMORY_LIMIT_KIB, f"memory grew by {growth_kib:.0f} KiB"
