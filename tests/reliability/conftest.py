"""The reliability suite: every test here is ``reliability``; those that use a broker are
``integration`` too. Fixtures build the simulator, the broker and the wired stack."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import Collector
from tests.reliability.harness import FakeClock, Stack, paris
from veolia2mqtt.veolia.simulator import Scenario, Simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.helpers.broker import Broker

HERE = Path(__file__).resolve().parent
START_DAY = date(2026, 6, 10)
"""A Wednesday mid-month: the plain fetch plan, no month or year boundary."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
            if "broker" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.integration)


@pytest.fixture
def clock() -> FakeClock:
    """Paris 07:00 on the start day, after the 06:05 slot: the first sync runs at once."""
    return FakeClock(paris(START_DAY, 7, 0))


@pytest.fixture
def scenario() -> Scenario:
    """The two meters of the protocol samples; tokens live one hour, as Cognito's do."""
    return Scenario()


@pytest.fixture
def sim(scenario: Scenario, clock: FakeClock) -> Iterator[Simulator]:
    """The simulator over loopback HTTP, on the test's fake clock."""
    with Simulator(scenario, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def watch(broker: Broker) -> Iterator[Collector]:
    """A subscriber on '#' from the very start: it sees everything ever published."""
    with Collector(broker.host, broker.port, ("#",)) as col:
        yield col


@pytest.fixture
def make_stack(
    sim: Simulator, broker: Broker, clock: FakeClock, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """Build stacks on the shared simulator, broker and clock; all stopped at the end."""
    made: list[Stack] = []

    def make(**options: object) -> Stack:
        options.setdefault("state_dir", tmp_path / "state")
        stack = Stack(sim=sim, broker=broker, clock=clock, **options)  # type: ignore[arg-type]
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()


def with_contracts(scenario: Scenario, **changes: object) -> Scenario:
    """The scenario with ``changes`` applied to its first contract (the house meter)."""
    first, *rest = scenario.contracts
    return replace(scenario, contracts=(replace(first, **changes), *rest))  # type: ignore[arg-type]
