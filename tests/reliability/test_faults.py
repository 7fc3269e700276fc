# ruff: noqa: PLR0917  # pytest passes fixtures positionally
"""Fault injection on the real stack: the daemon survives each fault and nothing is lost.

Every test drives ``SyncService`` + ``VeoliaClient`` + ``MqttPublisher`` + ``StateStore`` +
``Daemon.tick`` on one fake clock against the simulator and a real mosquitto, then asserts
two things: the daemon goes on (its next run is planned; nothing raised), and every retained
value equals the simulator's truth once the fault is gone (:func:`assert_truth`), with nothing
wrong published in between (:func:`assert_history`).

Day 1 (2026-06-10) starts at 07:00, after the 06:05 slot, so the first sync runs at once;
most faults start at day 2's slot.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import Collector, wait_until
from tests.reliability.conftest import START_DAY, with_contracts
from tests.reliability.harness import (
    BASE,
    BIRTH,
    PARIS,
    Stack,
    assert_history,
    assert_truth,
    in_thread,
    paris,
    publish_raw,
    snapshot,
)
from veolia2mqtt.mqtt.publisher import MqttPublisher
from veolia2mqtt.mqtt.topics import bridge_state_topic, meter_slug, refresh_topic, value_topic
from veolia2mqtt.scheduler import Outcome
from veolia2mqtt.state import STATE_FILE, TOKEN_FILE
from veolia2mqtt.veolia.simulator import Scenario

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.helpers.broker import Broker
    from veolia2mqtt.veolia.simulator import Simulator

DAY1 = START_DAY
DAY2 = START_DAY + timedelta(days=1)
DAY3 = START_DAY + timedelta(days=2)
HOUSE = "I19FA051732"
GARDEN = "I21FA104733"
HOUSE_ID = 4718203
OK = {Outcome.NEW_DAY, Outcome.NO_NEW_DAY}


def day_one(make_stack: Callable[..., Stack], **options: object) -> Stack:
    """The daemon started on day 1 at 07:00 and its first sync done."""
    stack = make_stack(**options).start()
    stack.tick()
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY]
    return stack


def just_before_day2_slot(stack: Stack) -> None:
    stack.run_until(paris(DAY2, 6, 0))


def values_of(view: dict[str, str], number: str) -> dict[str, str | None]:
    slug = meter_slug(number)
    keys = ("reading_date", "daily_consumption", "index", "billed_volume")
    return {key: view.get(value_topic(BASE, slug, key)) for key in keys}


def bridge(view: dict[str, str]) -> dict[str, object]:
    return json.loads(view[bridge_state_topic(BASE)])


def still_planned(stack: Stack) -> None:
    """The daemon is alive: a next run is planned, in the future."""
    assert stack.planner.next is not None
    assert stack.planner.next.due > stack.clock.now


# -- the broker ------------------------------------------------------------------------------


def test_broker_down_at_start_up_then_comes_up(make_stack, sim, broker):
    broker.stop()
    stack = make_stack().start(wait_online=False)
    stack.tick()  # Veolia is read; the broker cannot take the messages
    assert [r.outcome for r in stack.runs] == [Outcome.TRANSIENT]
    assert stack.store.last_sync() is None, "nothing may be remembered as published"
    still_planned(stack)

    broker.start()
    stack.wait_online()  # paho reconnects in the background
    with Collector(broker.host, broker.port, ("#",)) as watch:
        stack.run_for(timedelta(minutes=10))  # the retry at +5 min
        assert [r.outcome for r in stack.runs] == [Outcome.TRANSIENT, Outcome.NEW_DAY]
        assert_truth(broker, sim)
        assert_history(watch, sim)
    assert stack.logins == 1, "the retry reuses the token"


def test_broker_restarts_mid_run_without_persistence(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    assert_truth(broker, sim)
    requests_before = sim.stats()

    broker.restart()  # persistence false: every retained message is gone
    assert stack.publisher.wait_for_replay(2, 15), "no replay after the broker came back"
    assert_truth(broker, sim)  # restored from memory, without asking Veolia
    assert sim.stats() == requests_before

    stack.run_until(paris(DAY2, 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY, Outcome.NEW_DAY]
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_broker_hangs_mid_publish_then_resumes(make_stack, sim, broker, watch):
    stack = day_one(make_stack, publisher_options={"ack_timeout_s": 1.0})
    just_before_day2_slot(stack)
    assert broker._proc is not None
    os.kill(broker._proc.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        stack.run_until(paris(DAY2, 6, 5))
    finally:
        os.kill(broker._proc.pid, signal.SIGCONT)
    assert stack.runs[-1].outcome is Outcome.TRANSIENT, "unacknowledged: not remembered"
    assert stack.store.values(HOUSE).reading_date == DAY1 - timedelta(days=2)  # type: ignore[union-attr]
    still_planned(stack)

    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_the_clock_jumps_back_then_forward(make_stack, sim, broker, watch, clock):
    stack = day_one(make_stack)
    clock.set(paris(DAY1, 3, 0))  # NTP pulls the clock 4 hours back
    stack.run_until(paris(DAY1, 5, 0))
    assert len(stack.runs) == 1, "no sync repeated because time went back"
    clock.set(paris(DAY3 + timedelta(days=3), 15, 0))  # a suspended host wakes up days later
    stack.tick()
    assert len(stack.runs) == 2, "one catch-up sync, not one per missed slot"
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    stack.run_until(paris(DAY3 + timedelta(days=4), 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY] * 3
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_home_assistant_birth_during_a_sync(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    stack.clock.set(paris(DAY2, 6, 5))
    sim.fail("journalieres", fault="slow", delay_s=1.5, times=1)  # below the 5 s timeout
    sync, errors = in_thread(stack.tick)
    wait_until(lambda: sim.in_flight > 0, 10, "the sync's first request")

    publish_raw(broker, BIRTH, "online")  # Home Assistant restarts now
    assert stack.publisher.wait_for_birth_resend(1, 10)
    assert sync.is_alive(), "the birth was meant to land during the sync"
    sync.join(15)
    assert not sync.is_alive()
    assert not errors

    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY, Outcome.NEW_DAY]
    assert_truth(broker, sim)
    assert_history(watch, sim)


class _BirthAfterAck(MqttPublisher):
    """Lets a Home Assistant birth be handled right after the sync's publish is acknowledged.

    The OS may schedule the publisher's worker at that moment, before the sync's next line
    (``set_replay``) runs; this subclass makes that interleaving happen every time.
    """

    broker: Broker | None = None

    def publish(self, messages):  # type: ignore[no-untyped-def]
        sent = super().publish(messages)
        if self.broker is not None and len(messages) > 1:
            broker, self.broker = self.broker, None
            publish_raw(broker, BIRTH, "online")
            assert self.wait_for_birth_resend(1, 10)
        return sent


# Found by this suite; fixed in 4624753 (publisher) and 1222be9 (sync).
def test_home_assistant_birth_right_after_the_sync_publish_keeps_the_new_state(
    make_stack, sim, broker
):
    stack = day_one(make_stack, publisher_factory=_BirthAfterAck)
    just_before_day2_slot(stack)
    assert isinstance(stack.publisher, _BirthAfterAck)
    stack.publisher.broker = broker  # armed for the next sync
    stack.run_until(paris(DAY2, 12))
    assert stack.publisher.birth_resend_count == 1
    assert_truth(broker, sim)


# -- Veolia answering badly ------------------------------------------------------------------


def test_rate_limited_with_a_short_retry_after_is_waited_out(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("journalieres", fault="rate_limited", retry_after="7", times=2)
    stack.run_until(paris(DAY2, 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY, Outcome.NEW_DAY]
    assert stack.sleeps == [7.0, 7.0], "Retry-After honoured, within the same sync"
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_rate_limited_with_a_long_retry_after_gives_up_until_the_retry(
    make_stack, sim, broker, watch
):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("*", fault="rate_limited", retry_after="3600", times=None)
    stack.run_until(paris(DAY2, 7, 0))
    failing = stack.runs[1:]
    assert [r.outcome for r in failing] == [Outcome.TRANSIENT] * 3  # 06:05, 06:10, 06:25
    assert stack.sleeps == [], "a wait above 60 s is never slept"
    assert sim.stats()["espace-client"] == 1 + len(failing), "no retry inside a sync"
    held = snapshot(broker)
    assert values_of(held, HOUSE)["reading_date"] == (DAY1 - timedelta(days=2)).isoformat()
    assert bridge(held)["status"] == "error"

    sim.clear_faults()
    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    still_planned(stack)
    assert_truth(broker, sim)
    assert_history(watch, sim)


@pytest.mark.parametrize(
    ("fault", "options"),
    [("http_500", {}), ("http_502", {"body": "html"}), ("http_502", {"body": "empty"})],
    ids=["500", "502-html", "502-empty"],
)
def test_server_errors_are_retried_then_the_daemon_backs_off(
    make_stack, sim, broker, watch, fault, options
):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("*", fault=fault, times=None, **options)
    stack.run_until(paris(DAY2, 9, 30))
    failing = stack.runs[1:]
    assert [r.local.strftime("%H:%M") for r in failing] == [
        "06:05",
        "06:10",
        "06:25",
        "07:10",
        "08:10",
        "09:10",
    ]
    assert {r.outcome for r in failing} == {Outcome.TRANSIENT}
    assert sim.stats()["espace-client"] == 1 + 4 * len(failing), "1 try + 3 retries per sync"
    assert stack.sleeps == [1.0, 2.0, 4.0] * len(failing)
    held = snapshot(broker)
    assert values_of(held, HOUSE)["reading_date"] == (DAY1 - timedelta(days=2)).isoformat()
    error = bridge(held)["error"]
    assert isinstance(error, dict)
    assert "server error" in str(error["what"])
    assert "retries" in str(error["action"])

    sim.clear_faults()
    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_an_answer_slower_than_the_client_timeout(make_stack, sim, broker, watch):
    stack = day_one(make_stack, timeout_s=0.3)
    just_before_day2_slot(stack)
    # The house meter's series hangs for 4 attempts: it fails, the garden meter goes through.
    sim.fail("journalieres", fault="slow", delay_s=3.0, times=4, contract=HOUSE_ID)
    stack.run_until(paris(DAY2, 6, 5))
    assert stack.runs[-1].outcome is Outcome.TRANSIENT
    held = assert_truth(broker, sim, meters=[GARDEN], bridge="error")  # published anyway
    assert values_of(held, HOUSE)["reading_date"] == (DAY1 - timedelta(days=2)).isoformat()

    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


@pytest.mark.parametrize(
    ("status", "said"),
    [(503, "server error (HTTP 503)"), (200, "HTML page instead of JSON")],
    ids=["503", "200"],
)
def test_html_maintenance_page(make_stack, sim, broker, watch, status, said):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("*", fault="maintenance_html", status=status, times=None)
    stack.run_until(paris(DAY2, 8, 0))
    assert {r.outcome for r in stack.runs[1:]} == {Outcome.TRANSIENT}
    error = bridge(snapshot(broker))["error"]
    assert isinstance(error, dict)
    assert said in str(error["what"])

    sim.clear_faults()
    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_malformed_json(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("journalieres", fault="malformed_json", times=None)
    stack.run_until(paris(DAY2, 8, 0))
    assert {r.outcome for r in stack.runs[1:]} == {Outcome.TRANSIENT}
    held = snapshot(broker)
    for number in (HOUSE, GARDEN):
        assert values_of(held, number)["reading_date"] == (DAY1 - timedelta(days=2)).isoformat()

    sim.clear_faults()
    stack.run_until(paris(DAY2, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


@pytest.mark.parametrize("route", ["journalieres", "mensuelles", "espace-client"])
def test_empty_arrays(make_stack, sim, broker, watch, route):
    stack = day_one(make_stack)
    day1_view = snapshot(broker)
    just_before_day2_slot(stack)
    sim.fail(route, fault="empty", times=None)
    stack.run_until(paris(DAY2, 12))
    held = snapshot(broker)
    for number in (HOUSE, GARDEN):
        before, during = values_of(day1_view, number), values_of(held, number)
        assert all(during.values()), f"{route}: a value of {number} was cleared"
        if route != "mensuelles":
            assert during["reading_date"] == before["reading_date"], "no new day invented"
            assert during["index"] == before["index"]
            assert during["daily_consumption"] == before["daily_consumption"]
        else:
            assert during["billed_volume"] == before["billed_volume"], "billed volume kept"
    expected = {
        "journalieres": Outcome.NO_NEW_DAY,  # data late: hourly catch-up
        "mensuelles": Outcome.NEW_DAY,
        "espace-client": Outcome.TRANSIENT,  # "no contract found" is not a removal
    }[route]
    assert stack.runs[1].outcome is expected
    still_planned(stack)

    sim.clear_faults()
    stack.run_until(paris(DAY3, 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


@pytest.mark.parametrize("status", [401, 403])
def test_token_expiry_mid_sync(make_stack, sim, broker, watch, status):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    # After the login and espace-client, the backend says the token has expired.
    sim.fail("facturation", fault="token_expired", status=status, times=1)
    stack.run_until(paris(DAY2, 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY, Outcome.NEW_DAY]
    assert stack.logins == 1, "one password sign-in, on day 1"
    renewals = sim.stats()["cognito:REFRESH_TOKEN_AUTH"]
    assert renewals == 2, "day 2 and the forced re-login renew with the refresh token"
    assert_truth(broker, sim)
    assert_history(watch, sim)


# -- refused credentials ---------------------------------------------------------------------


def logins_per_day(sim: Simulator) -> dict[date, int]:
    days: dict[date, int] = {}
    for entry in sim.request_log:
        if entry.route == "cognito:USER_PASSWORD_AUTH":
            day = entry.time.astimezone(PARIS).date()
            days[day] = days.get(day, 0) + 1
    return days


def refused_week(
    stack: Stack, sim: Simulator, broker: Broker, fault: str, **options: object
) -> dict[str, object]:
    """A week with the login refused: one attempt a day, a refresh and a restart ignored."""
    just_before_day2_slot(stack)
    # The account must authenticate again: the session's refresh token is refused as well.
    sim.fail("cognito:REFRESH_TOKEN_AUTH", fault="wrong_password", times=None)
    sim.fail("cognito:USER_PASSWORD_AUTH", fault=fault, times=None, **options)
    day1_values = values_of(snapshot(broker), HOUSE)
    for offset in range(1, 8):
        day = DAY1 + timedelta(days=offset)
        stack.run_until(paris(day, 12))
        # The user presses "refresh" in Home Assistant: no login while refused.
        stack.wakeup.refresh(meter_slug(HOUSE))
        stack.tick()
        if offset == 3:
            stack.restart()  # a container restart does not try again either
            stack.run_until(paris(day, 13))
    stack.run_until(paris(DAY1 + timedelta(days=8), 0, 0))
    per_day = logins_per_day(sim)
    week = [DAY1 + timedelta(days=n) for n in range(1, 8)]
    assert [per_day.get(day, 0) for day in week] == [1] * 7, per_day
    held = snapshot(broker)
    assert values_of(held, HOUSE) == day1_values, "the last good values stay"
    state = bridge(held)
    assert state["status"] == "auth_failed"
    still_planned(stack)
    return state


def test_wrong_password_logs_in_at_most_once_a_day_for_a_week(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    state = refused_week(stack, sim, broker, "wrong_password")
    error = state["error"]
    assert isinstance(error, dict)
    assert "veolia.password" in str(error["action"])

    sim.clear_faults()
    stack.run_until(paris(DAY1 + timedelta(days=8), 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_challenge_logs_in_at_most_once_a_day_and_says_what_to_do(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    state = refused_week(stack, sim, broker, "challenge", challenge_name="SMS_MFA")
    error = state["error"]
    assert isinstance(error, dict)
    action = str(error["action"])
    assert "verification code" in action
    assert "log in once in a browser at https://www.eau.veolia.fr" in action
    assert "veolia.refresh_token" in action
    assert "restart veolia2mqtt" in action

    sim.clear_faults()
    stack.run_until(paris(DAY1 + timedelta(days=8), 12))
    assert stack.runs[-1].outcome is Outcome.NEW_DAY
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_wrong_password_from_a_start_before_the_slot_tries_once_that_day(
    make_stack, sim, broker, clock
):
    clock.set(paris(DAY1, 5, 0))  # the container starts at 05:00; sync.time is 06:05
    sim.fail("cognito:USER_PASSWORD_AUTH", fault="wrong_password", times=None)
    stack = make_stack().start()
    stack.run_until(paris(DAY3, 23, 0))
    assert set(logins_per_day(sim).values()) == {1}, logins_per_day(sim)


def test_a_catch_up_day_signs_in_with_the_password_once(make_stack, sim, broker):
    stack = day_one(make_stack)
    stack.run_until(paris(DAY2, 0, 0))
    for number in (HOUSE, GARDEN):
        sim.set_lag(number, 3)  # nothing new today: catch-up every hour until 22:00
    stack.run_until(paris(DAY2, 23, 0))
    assert len(stack.runs_on(DAY2)) == 16
    # The 1 h token never lasts from one hourly catch-up to the next: it is renewed with the
    # refresh token of the day-1 sign-in, and the password stays off the wire.
    assert logins_per_day(sim).get(DAY2, 0) == 0
    assert sim.stats()["cognito:REFRESH_TOKEN_AUTH"] == 16


# -- odd data --------------------------------------------------------------------------------


def test_duplicated_day(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    just_before_day2_slot(stack)
    sim.fail("journalieres", fault="duplicate_day", times=None)
    stack.run_until(paris(DAY2, 12))
    held = snapshot(broker)
    row = sim.true_row(HOUSE, DAY2 - timedelta(days=2))
    assert row is not None
    # The last copy wins (protocol §6.2): what Veolia said last, never a sum or a 0.
    assert values_of(held, HOUSE)["daily_consumption"] == str(row["consommation"]["litre"] + 10)  # type: ignore[index]

    sim.clear_faults()
    stack.run_until(paris(DAY3, 12))
    assert_truth(broker, sim)
    assert_history(watch, sim, litre_deltas=(0, 10))
    days = watch.on_topic(value_topic(BASE, meter_slug(HOUSE), "reading_date"))
    assert days == sorted(set(days)), "each new day published exactly once"


def test_decreasing_index(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    day1 = values_of(snapshot(broker), HOUSE)
    just_before_day2_slot(stack)
    sim.fail("journalieres", fault="decreasing_index", amount_l=1000, times=None)
    stack.run_until(paris(DAY2, 12))
    held = values_of(snapshot(broker), HOUSE)
    assert held["index"] == day1["index"], "a lower index is never published"
    assert held["reading_date"] == (DAY2 - timedelta(days=2)).isoformat(), "the day still moves"

    sim.clear_faults()
    stack.run_until(paris(DAY3, 12))
    assert_truth(broker, sim)
    assert_history(watch, sim, clamped_ok=True)


@pytest.mark.parametrize(
    "scenario",
    # The house meter is swapped on June 12 (published on the 14th): the index restarts at 37 L.
    [with_contracts(Scenario(), replaced_on=date(2026, 6, 12), replacement_index_l=37)],
    ids=["replaced-on-june-12"],
)
def test_index_reset_to_near_zero_publishes_the_new_meter(make_stack, sim, broker, watch, scenario):
    stack = day_one(make_stack)
    stack.run_until(paris(date(2026, 6, 13), 12))
    old = values_of(snapshot(broker), HOUSE)["index"]
    assert old is not None
    assert float(old) > 500_000

    stack.run_until(paris(date(2026, 6, 14), 12))  # first low day (June 12): kept, pending
    held = values_of(snapshot(broker), HOUSE)
    assert held["index"] == old
    assert held["reading_date"] == "2026-06-12"
    pending = stack.store.values(HOUSE)
    assert pending is not None
    assert pending.pending_reset is not None

    stack.restart()  # the pending reset survives a restart (it lives in state_dir)
    stack.run_until(paris(date(2026, 6, 15), 12))  # June 13 confirms: the new series
    assert_truth(broker, sim)
    assert float(values_of(snapshot(broker), HOUSE)["index"] or 0) < 1000
    stack.run_until(paris(date(2026, 6, 17), 12))  # and it goes on, not clamped
    assert_truth(broker, sim)
    assert_history(watch, sim, allow_reset=True)


# -- the state directory ---------------------------------------------------------------------


def test_unwritable_state_dir(make_stack, sim, broker, watch, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where state_dir's parent should be\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        stack = day_one(make_stack, state_dir=blocker / "state")
    assert stack.store.in_memory
    assert "cannot be written" in caplog.text
    stack.run_until(paris(DAY3 + timedelta(days=1), 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY] * 4
    assert stack.logins == 1, "one password sign-in; the tokens are kept in memory"
    assert sim.stats()["cognito:REFRESH_TOKEN_AUTH"] == 3, "one renewal a day after day 1"
    assert_truth(broker, sim)
    assert_history(watch, sim)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe garbage",
        b'{"version": 1, "meters": {"I19FA051732": {"val',
        b'{"version": 1, "meters": {"I19FA051732": {"values": {"index_l": "lots"}}}}',
        b'{"version": 1, "meters": {"I19FA051732": {"values": {"index_l": 1e999}}}}',
        b'{"version": 1, "meters": {"I19FA051732": {"values": {"index_l": NaN}}}}',
        b'{"version": 1, "last_sync": 1' + b"0" * 400 + b"}",
        b'{"version": 1, "meters": {"I19FA051732": {"values": {"index_l": 1' + b"0" * 400 + b"}}}}",
        b"[" * 100_000,
    ],
    ids=["binary", "truncated", "wrong-type", "infinite", "nan", "huge-time", "huge-int", "deep"],
)
def test_corrupt_state_file(make_stack, sim, broker, watch, tmp_path, caplog, content):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(content)
    (state_dir / TOKEN_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        stack = day_one(make_stack, state_dir=state_dir)
    assert "unusable" in caplog.text
    stack.run_until(paris(DAY2, 12))
    assert [r.outcome for r in stack.runs] == [Outcome.NEW_DAY] * 2
    assert_truth(broker, sim)
    assert_history(watch, sim)


# -- time --------------------------------------------------------------------------------------


def test_dst_days_one_sync_a_day(make_stack, sim, broker, watch, clock):
    # A 02:30 slot falls in the spring gap and twice in the autumn fold of 2026.
    stack = None
    for first, last in (
        (date(2026, 3, 26), date(2026, 4, 1)),
        (date(2026, 10, 22), date(2026, 10, 28)),
    ):
        clock.set(paris(first, 3, 0))
        if stack is None:
            stack = make_stack(sync_time="02:30").start()
        stack.step_until(paris(last, 23, 59), timedelta(minutes=1))
        for n in range((last - first).days + 1):
            day = first + timedelta(days=n)
            runs = stack.runs_on(day)
            assert len(runs) == 1, f"{day}: {[r.local.isoformat() for r in runs]}"
            assert runs[0].outcome is Outcome.NEW_DAY
        assert_truth(broker, sim)
    assert stack is not None
    spring = [r.local.isoformat() for r in stack.runs_on(date(2026, 3, 29))]
    autumn = [r.local.isoformat() for r in stack.runs_on(date(2026, 10, 25))]
    assert spring == ["2026-03-29T03:30:00+02:00"]
    assert autumn == ["2026-10-25T02:30:00+02:00"]
    days = watch.on_topic(value_topic(BASE, meter_slug(HOUSE), "reading_date"))
    assert days == sorted(set(days)), "each day published exactly once"
    assert_history(watch, sim)


def test_publication_lag_growing_to_five_days(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    published = (DAY1 - timedelta(days=2)).isoformat()
    for offset, lag in ((1, 3), (2, 4), (3, 5)):  # Veolia stops publishing for three days
        day = DAY1 + timedelta(days=offset)
        stack.run_until(paris(day, 0, 0))
        for number in (HOUSE, GARDEN):
            sim.set_lag(number, lag)
        stack.run_until(paris(day, 23, 59))
        runs = stack.runs_on(day)
        # Catch-up every hour from the slot, the last one before 22:00, then the next slot.
        assert [r.local.strftime("%H:%M") for r in runs] == [f"{h:02d}:05" for h in range(6, 22)]
        assert {r.outcome for r in runs} == {Outcome.NO_NEW_DAY}
        held = snapshot(broker)
        for number in (HOUSE, GARDEN):
            assert values_of(held, number)["reading_date"] == published, "reading_date honest"
        assert_truth(broker, sim)
    day5 = DAY1 + timedelta(days=4)
    stack.run_until(paris(day5, 23, 59))  # lag now steady at 5: one new day, no catch-up
    assert [r.outcome for r in stack.runs_on(day5)] == [Outcome.NEW_DAY]
    assert_truth(broker, sim)
    assert_history(watch, sim)


def test_refresh_flood_runs_at_most_one_sync_per_15_minutes(make_stack, sim, broker, watch):
    stack = day_one(make_stack)
    seen: list[str] = []

    def counting(slug: str) -> None:
        seen.append(slug)
        stack.wakeup.refresh(slug)

    stack.publisher.on_refresh(counting)
    topic = refresh_topic(BASE, meter_slug(HOUSE))
    for burst in range(3):
        stack.clock.advance(timedelta(minutes=5))
        for _ in range(10):
            publish_raw(broker, topic, "PRESS")
        wait_until(lambda n=burst: len(seen) == 10 * (n + 1), 10, "the refresh requests")
        stack.tick()
    # 07:05 runs, 07:10 is too soon, 07:15 is too soon (10 min), then 07:20 may run again.
    stack.clock.advance(timedelta(minutes=5))
    publish_raw(broker, topic, "PRESS")
    wait_until(lambda: len(seen) == 31, 10, "the last refresh request")
    stack.tick()
    refreshes = [r.local.strftime("%H:%M") for r in stack.runs[1:]]
    assert refreshes == ["07:05", "07:20"]
    assert stack.logins == 1, "refreshes within the hour reuse the token"
    assert_truth(broker, sim)
    assert_history(watch, sim)
