"""The domain, pure: meters, readings, the published values and the rules between them.

``veolia/`` parses the API into these types and ``mqtt/`` formats :class:`MeterValues`;
this module imports neither, so Veolia's JSON and the MQTT topics can change without
touching the rules.

The rules (``veolia-protocol.md`` §6.1):

* ``daily_consumption``, ``reading_date``, ``reliability`` and ``index`` come from the latest
  daily row *with data* (both litres and index are numbers) dated before today. A missing day
  is never turned into 0; when no row has data the previous values are kept.
* A row older than the published ``reading_date`` is never published.
* ``index`` never goes below the published one (the high-water mark). A lower value is
  ignored with a warning, except for a meter replacement, see :func:`update_values`.
* ``billed_volume`` is the m³ of the latest month returned by ``/mensuelles``
  (:func:`billed_volume`, the one place to change if the mapping turns out wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

RESET_RATIO: Final = 0.1
"""An index that falls below this fraction of the high-water mark may be a replaced meter."""


@dataclass(frozen=True, slots=True)
class Meter:
    """One water meter of the account, keyed by its serial number (``numero_compteur``)."""

    number: str


class DailyReading(NamedTuple):
    """One row of ``/journalieres``; litres are ``None`` when Veolia has no data for the day.

    A named tuple rather than a frozen dataclass: a sync may parse a million of these, and a
    tuple is built in half the time.
    """

    day: date
    consumption_l: float | None
    index_l: float | None
    reliability: str | None = None

    @property
    def has_data(self) -> bool:
        """Whether both the consumption and the index are known."""
        return self.consumption_l is not None and self.index_l is not None


@dataclass(frozen=True, slots=True)
class MonthlyReading:
    """One row of ``/mensuelles``."""

    year: int
    month: int
    volume_l: float | None
    volume_m3: float | None
    reliability: str | None = None

    @property
    def period_start(self) -> date:
        """The first day of the month the row covers."""
        return date(self.year, self.month, 1)

    @property
    def m3(self) -> float | None:
        """The volume in m³, from ``m3`` or else from the litres."""
        if self.volume_m3 is not None:
            return self.volume_m3
        if self.volume_l is not None:
            return round(self.volume_l / 1000, 3)
        return None


@dataclass(frozen=True, slots=True)
class PendingReset:
    """A much lower index seen once: accepted as a new meter when a later day confirms it."""

    day: date
    index_l: float


@dataclass(frozen=True, slots=True)
class MeterValues:
    """What is published for one meter; ``None`` means unknown (never published as 0)."""

    reading_date: date | None = None
    daily_consumption_l: float | None = None
    index_l: float | None = None
    reliability: str | None = None
    billed_volume_m3: float | None = None
    billing_period_start: date | None = None
    pending_reset: PendingReset | None = None
    """Internal: a low index waiting for confirmation; never published."""

    @property
    def is_empty(self) -> bool:
        """Whether nothing at all is known yet."""
        return self.reading_date is None and self.billed_volume_m3 is None


@dataclass(frozen=True, slots=True)
class ValuesUpdate:
    """The outcome of one sync for one meter."""

    values: MeterValues
    new_day: bool
    """A reading date newer than the previous one was found."""
    notes: tuple[str, ...] = ()
    """Warnings worth a log line (ignored lower index, stale row, no data)."""


def latest_with_data(daily: Iterable[DailyReading], *, today: date) -> DailyReading | None:
    """The latest row with data dated before ``today``, or ``None``."""
    best: DailyReading | None = None
    best_day: date | None = None
    for row in daily:
        day, litres, index, _reliability = row  # one unpacking: this loop sees every row
        if (
            litres is not None
            and index is not None
            and day < today
            and (best_day is None or day >= best_day)
        ):
            best, best_day = row, day
    return best


def billed_volume(monthly: Iterable[MonthlyReading], *, today: date) -> MonthlyReading | None:
    """The row whose volume is published as ``billed_volume``: the latest month with a volume.

    This is the low-confidence mapping of ``veolia-protocol.md`` §6.1 (open question 3), kept in
    one function so that it can change alone.
    """
    this_month = date(today.year, today.month, 1)
    best: MonthlyReading | None = None
    for row in monthly:
        if row.m3 is None or row.period_start > this_month:
            continue
        if best is None or row.period_start >= best.period_start:
            best = row
    return best


def _next_index(
    previous: MeterValues, row: DailyReading, notes: list[str]
) -> tuple[float | None, PendingReset | None]:
    """The index to publish for ``row`` and the pending reset to remember."""
    high = previous.index_l
    new = row.index_l
    if high is None or new is None or new >= high:
        return new, None
    pending = previous.pending_reset
    if new < high * RESET_RATIO:
        if pending is not None and row.day > pending.day and new >= pending.index_l:
            notes.append(
                f"index fell from {high:g} L to {new:g} L on two reading days in a row: "
                "treated as a replaced meter, the new series is published"
            )
            return new, None
        notes.append(
            f"index {new:g} L on {row.day.isoformat()} is far below the published {high:g} L: "
            "kept the published index; a later day at or above it will confirm a replaced meter"
        )
        return high, PendingReset(row.day, new)
    notes.append(
        f"index {new:g} L on {row.day.isoformat()} is lower than the published {high:g} L: ignored"
    )
    return high, pending


def update_values(
    previous: MeterValues | None,
    daily: Iterable[DailyReading],
    monthly: Iterable[MonthlyReading],
    *,
    today: date,
) -> ValuesUpdate:
    """Apply the publishing rules to one sync's readings.

    ``previous`` is what was last published (kept in ``state_dir``). A meter replaced under the
    same serial shows an index that drops below ``RESET_RATIO`` of the published one: the first
    such day keeps the old index, and when a later day confirms the low series (its index at or
    above the first low one) the new series is published. A smaller drop is always ignored.
    """
    prev = previous or MeterValues()
    notes: list[str] = []
    values = prev
    new_day = False

    row = latest_with_data(daily, today=today)
    if row is None:
        notes.append("no daily row with data yet: previous values kept")
    elif prev.reading_date is not None and row.day < prev.reading_date:
        notes.append(
            f"latest row {row.day.isoformat()} is older than the published "
            f"{prev.reading_date.isoformat()}: not published"
        )
    else:
        index_l, pending = _next_index(prev, row, notes)
        new_day = prev.reading_date is None or row.day > prev.reading_date
        values = replace(
            values,
            reading_date=row.day,
            daily_consumption_l=row.consumption_l,
            index_l=index_l,
            reliability=row.reliability,
            pending_reset=pending,
        )

    month = billed_volume(monthly, today=today)
    if month is not None and (
        prev.billing_period_start is None or month.period_start >= prev.billing_period_start
    ):
        values = replace(values, billed_volume_m3=month.m3, billing_period_start=month.period_start)
    return ValuesUpdate(values=values, new_day=new_day, notes=tuple(notes))
