"""One sync: read the account, apply the rules, build the messages, publish, remember.

:class:`SyncService` is the only place that joins the Veolia client, the builders, the
publisher and the state store. Values are remembered only after the broker acknowledged them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final, Protocol

from veolia2mqtt.errors import MqttError, Veolia2MqttError
from veolia2mqtt.meter import Meter, MeterValues, update_values
from veolia2mqtt.mqtt.discovery import (
    build_bridge_discovery,
    build_discovery,
    clear_discovery,
    discovery_digest,
    discovery_topics,
    migrate_to_device,
    naming_notes,
)
from veolia2mqtt.mqtt.jeedom import build_link_discovery, build_link_values, clear_link
from veolia2mqtt.mqtt.messages import (
    BridgeError,
    Message,
    Publisher,
    build_bridge_state,
    build_state_messages,
    clear_meter_states,
)
from veolia2mqtt.mqtt.topics import meter_slug, status_topic
from veolia2mqtt.scheduler import Outcome
from veolia2mqtt.state import AuthBlock, StateStore, SyncAttempt
from veolia2mqtt.veolia.client import FailedMeter, MeterData
from veolia2mqtt.veolia.errors import VeoliaAuthError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from veolia2mqtt.config import MeterOverride, Settings

_LOGGER = logging.getLogger(__name__)

_FINGERPRINT_ROUNDS: Final = 20_000
LINK_DISCOVERY_GAP_S: Final = 1.5
"""Between a new Jeedom link discovery and its values (MQTT Manager merges 0.3 s windows)."""
CATCH_UP_MAX_AGE_DAYS: Final = 7
"""A latest reading older than this no longer triggers the hourly catch-up."""
_RETRY_ACTION: Final = (
    "nothing to do if it is temporary: veolia2mqtt retries at 5, 15 and 45 minutes, "
    "then hourly until the next daily slot"
)


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class AccountReader(Protocol):
    """What the sync needs from the Veolia client."""

    def fetch_all(self, *, today: date) -> list[MeterData | FailedMeter]:
        """Every meter of the account with its readings, or the error that stopped it."""
        ...


def credentials_fingerprint(settings: Settings, salt: bytes) -> str:
    """A salted, slow hash of what decides a login, to notice a configuration change.

    It lets a refused login stay blocked across restarts until the user changes something,
    without keeping the credentials themselves in ``state_dir``.
    """
    veolia = settings.veolia
    parts = [
        veolia.email or "",
        veolia.password.get_secret_value() if veolia.password else "",
        veolia.refresh_token.get_secret_value() if veolia.refresh_token else "",
        veolia.endpoints.client_id,
        veolia.endpoints.auth_url,
    ]
    data = "\x00".join(parts).encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", data, salt, _FINGERPRINT_ROUNDS).hex()


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did."""

    outcome: Outcome
    meters_ok: int = 0
    meters_failed: int = 0
    new_days: int = 0
    sent: int = 0
    error: str | None = None


@dataclass
class _Batch:
    """What one sync found: the messages to send and the values to remember after the acks."""

    messages: list[Message] = field(default_factory=list)
    updates: dict[str, MeterValues] = field(default_factory=dict)
    new_days: int = 0
    stale: bool = False


@dataclass
class _MeterPlan:
    """The messages of one meter, split by how they are replayed."""

    discovery: list[Message] = field(default_factory=list)
    states: list[Message] = field(default_factory=list)
    values: list[Message] = field(default_factory=list)


class SyncService:
    """Runs syncs and keeps the publisher's replay set in step with what was published."""

    def __init__(
        self,
        client: AccountReader,
        publisher: Publisher,
        store: StateStore,
        settings: Settings,
        *,
        version: str,
        clock: Callable[[], datetime] = utc_now,
        fingerprint: str = "",
        pause: Callable[[float], object] = time.sleep,
    ) -> None:
        self._client = client
        self._pause = pause
        self._publisher = publisher
        self._store = store
        self._settings = settings
        self._version = version
        self._clock = clock
        self._fingerprint = fingerprint
        self._zone = settings.sync.zone
        self._failing_since: datetime | None = None
        self._last_error: BridgeError | None = None
        self._status = "starting"
        self._cleanup: list[Message] = []
        self._primed: tuple[list[Message], list[Message]] = ([], [])

    # -- message building -------------------------------------------------------------------

    def _meter_messages(
        self, meter: Meter, values: MeterValues, last_sync: datetime | None
    ) -> _MeterPlan:
        settings = self._settings
        mqtt = settings.mqtt
        override = settings.meter_override(meter.number)
        plan = _MeterPlan()
        plan.discovery = build_discovery(
            meter,
            override,
            mode=mqtt.discovery,
            discovery_prefix=mqtt.discovery_prefix,
            base_topic=mqtt.base_topic,
            sw_version=self._version,
            portal_url=settings.veolia.endpoints.portal_url,
        )
        state, plan.values = self._state_and_values(meter, values, last_sync, override)
        plan.states = [state]
        link = settings.jeedom.mqtt2_link_topic
        if link is not None:
            plan.discovery.append(build_link_discovery(meter, override, link_topic=link))
        return plan

    def _state_and_values(
        self,
        meter: Meter,
        values: MeterValues,
        last_sync: datetime | None,
        override: MeterOverride,
    ) -> tuple[Message, list[Message]]:
        """The JSON state, and the per-value topics (Jeedom link values included)."""
        state, *plain = build_state_messages(
            meter,
            values,
            base_topic=self._settings.mqtt.base_topic,
            last_sync=last_sync,
            zone=self._zone,
        )
        link = self._settings.jeedom.mqtt2_link_topic
        if link is not None:
            plain.extend(
                build_link_values(
                    meter,
                    values,
                    override,
                    link_topic=link,
                    last_sync=None if last_sync is None else last_sync.astimezone(self._zone),
                )
            )
        return state, plain

    def _clear_meter(self, slug: str) -> list[Message]:
        mqtt = self._settings.mqtt
        messages: list[Message] = []
        for mode in ("device", "entity"):
            messages.extend(
                clear_discovery(slug, mode=mode, discovery_prefix=mqtt.discovery_prefix)
            )
        messages.extend(clear_meter_states(slug, base_topic=mqtt.base_topic))
        link = self._settings.jeedom.mqtt2_link_topic
        if link is not None:
            messages.extend(clear_link(slug, link_topic=link))
        return messages

    def _bridge_messages(
        self, last_attempt: datetime | None, *, succeeded: bool = False
    ) -> tuple[list[Message], Message]:
        mqtt = self._settings.mqtt
        discovery = build_bridge_discovery(
            mode=mqtt.discovery,
            discovery_prefix=mqtt.discovery_prefix,
            base_topic=mqtt.base_topic,
            sw_version=self._version,
        )
        last_success = last_attempt if succeeded else self._store.last_sync()
        state = build_bridge_state(
            base_topic=mqtt.base_topic,
            version=self._version,
            status=self._status,
            last_sync=None if last_attempt is None else last_attempt.astimezone(self._zone),
            last_success=None if last_success is None else last_success.astimezone(self._zone),
            error=self._last_error,
        )
        return discovery, state

    def _known_meters(
        self, unpublished: Mapping[str, MeterValues], gone: Collection[str]
    ) -> list[tuple[Meter, MeterValues]]:
        known = {**self._store.all_values(), **unpublished}
        return [
            (Meter(number), values)
            for number, values in sorted(known.items())
            if self._settings.meter_override(number).enabled and number not in gone
        ]

    def _replay(
        self,
        last_attempt: datetime | None,
        unpublished: Mapping[str, MeterValues] | None = None,
        *,
        gone: Collection[str] = (),
        succeeded: bool = False,
    ) -> tuple[list[Message], list[Message]]:
        """The full retained picture: (discovery then states, per-value topics).

        ``unpublished`` holds values read at ``last_attempt`` that the broker has not
        acknowledged yet and ``gone`` the meters being cleared: the picture is then the one
        the sync is about to publish (``succeeded``: a sync without failure).
        """
        unpublished = unpublished or {}
        bridge_discovery, bridge_state = self._bridge_messages(last_attempt, succeeded=succeeded)
        discovery: list[Message] = list(bridge_discovery)
        states: list[Message] = [bridge_state]
        values: list[Message] = []
        for meter, meter_values in self._known_meters(unpublished, gone):
            last_sync = (
                last_attempt
                if meter.number in unpublished
                else self._store.meter_last_sync(meter.number)
            )
            plan = self._meter_messages(meter, meter_values, last_sync)
            discovery.extend(plan.discovery)
            states.extend(plan.states)
            values.extend(plan.values)
        return discovery + states, values

    # -- start-up ---------------------------------------------------------------------------

    def prime(self) -> list[Message]:
        """Prepare the replay from ``state_dir`` and return the clean-up of ghost topics.

        Call it before the publisher starts: its first connect then publishes discovery and the
        last known states without any Veolia request. The returned messages (empty retained
        payloads for topics the current configuration no longer produces) are published once
        the connection is up.
        """
        self._restore_status()
        for number, override in self._settings.meters.items():
            for note in naming_notes(Meter(number), override):
                _LOGGER.warning("%s", note)
        attempt = self._store.last_attempt()
        always, if_missing = self._replay(None if attempt is None else attempt.at)
        # The first connect after a switch from entity to device mode moves the entities, with
        # their settings, to the device (HA's migration: flag, device config, then clearing).
        self._publisher.set_replay([*self._migrations(), *always], if_missing)
        self._primed = (always, if_missing)
        current = {m.topic for m in (*always, *if_missing)}
        current.add(status_topic(self._settings.mqtt.base_topic))
        ghosts: list[Message] = []
        for number in list(self._store.all_values()):
            if not self._settings.meter_override(number).enabled:
                _LOGGER.info("Meter %s is disabled: clearing its retained topics", number)
                ghosts.extend(self._clear_meter(meter_slug(number)))
        stale = sorted(self._store.published_topics() - current)
        ghosts.extend(Message(topic, "", retain=True) for topic in stale)
        # Kept until the broker acknowledged them: when the broker is down at start-up, the
        # first sync that reaches it sends them (the meters are forgotten only then).
        self._cleanup = _unique(ghosts)
        return list(self._cleanup)

    def _migrations(self) -> list[Message]:
        """``migrate_discovery`` flags for meters whose entity-mode topics are still out."""
        mqtt = self._settings.mqtt
        if mqtt.discovery != "device":
            return []
        published = self._store.published_topics()
        messages: list[Message] = []
        for meter, _values in self._known_meters({}, ()):
            slug = meter_slug(meter.number)
            old = discovery_topics(slug, mode="entity", discovery_prefix=mqtt.discovery_prefix)
            if published.intersection(old):
                _LOGGER.info("Meter %s: moving its entities to device discovery", meter.number)
                messages.extend(migrate_to_device(slug, discovery_prefix=mqtt.discovery_prefix))
        return messages

    def _restore_status(self) -> None:
        """Show the last failure again after a restart, the refused login above all."""
        block = self._store.auth_block()
        if block is not None and block.fingerprint == self._fingerprint:
            self._status = "auth_failed"
            self._failing_since = block.since
            self._last_error = BridgeError(
                what="Veolia refused the login",
                since=block.since.astimezone(self._zone),
                action=self._auth_action(block.reason),
            )
            return
        attempt = self._store.last_attempt()
        # A refusal of credentials that have changed since says nothing about the new ones.
        refused_before = block is not None and attempt is not None and attempt.at == block.since
        if attempt is not None and not attempt.ok and not refused_before:
            since = attempt.failing_since or attempt.at
            self._status = "error"
            self._failing_since = since
            self._last_error = BridgeError(
                what=attempt.error or "the last sync failed",
                since=since.astimezone(self._zone),
                action=_RETRY_ACTION,
            )

    def clear_everything(self) -> list[Message]:
        """Empty retained payloads for every topic veolia2mqtt published (``clear-discovery``)."""
        messages: list[Message] = []
        for number in list(self._store.all_values()):
            messages.extend(self._clear_meter(meter_slug(number)))
            self._store.forget_meter(number)
        published = sorted(self._store.published_topics())
        messages.extend(Message(topic, "", retain=True) for topic in published)
        bridge_discovery, bridge_state = self._bridge_messages(None)
        messages.extend(
            Message(m.topic, "", retain=True) for m in [*bridge_discovery, bridge_state]
        )
        cleared = _unique(messages)
        self._store.remove_published_topics(m.topic for m in cleared)
        return cleared

    def publish_cleanup(self, messages: Sequence[Message]) -> int:
        """Publish the ghost clean-up returned by :meth:`prime` and forget those topics.

        Raises:
            MqttPublishError: the broker did not take them; the next sync sends them again.
        """
        if not messages:
            return 0
        sent = self._publisher.publish(messages)
        # The migration flags are done with: a reconnect must not put them back.
        self._publisher.set_replay(*self._primed)
        self._cleanup = []
        self._store.remove_published_topics(m.topic for m in messages)
        self._forget_disabled()
        self._store.flush()
        return sent

    def _forget_disabled(self) -> None:
        for number in list(self._store.all_values()):
            if not self._settings.meter_override(number).enabled:
                self._store.forget_meter(number)

    # -- the sync ---------------------------------------------------------------------------

    def __call__(self) -> Outcome:
        """One sync for the daemon; never raises."""
        try:
            return self.run_once().outcome
        except Exception:
            _LOGGER.exception("Unexpected error during the sync")
            return Outcome.TRANSIENT

    def run_once(self) -> SyncReport:
        """Fetch every meter, publish what changed, remember it once acknowledged."""
        now = self._clock()
        today = now.astimezone(self._zone).date()
        try:
            results = self._client.fetch_all(today=today)
        except VeoliaAuthError as err:
            return self._auth_refused(err, now)
        except Veolia2MqttError as err:
            return self._failed(now, "reading the Veolia account", err)
        # The account was read, so the credentials work, even if a meter fails below.
        self._store.set_auth_block(None)

        fetched = [r for r in results if isinstance(r, MeterData)]
        failed = [r for r in results if isinstance(r, FailedMeter)]
        for miss in failed:
            _LOGGER.warning("Meter %s failed: %s", miss.meter.number, miss.error)
        batch = self._apply(fetched, today, now)
        gone = self._gone_meters(results)
        for number in gone:
            _LOGGER.info("Meter %s is no longer on the account: clearing its topics", number)
            batch.messages.extend(self._clear_meter(meter_slug(number)))
        batch.messages.extend(self._cleanup)

        ok = not failed
        if ok:
            self._status, self._last_error, self._failing_since = "ok", None, None
        else:
            self._note_error(now, f"{len(failed)} meter(s) failed", failed[0].error)
        bridge_discovery, bridge_state = self._bridge_messages(now, succeeded=ok)
        messages = [*bridge_discovery, *batch.messages, bridge_state]
        # Replaced before the publish: a Home Assistant birth handled during or right after it
        # re-sends this picture, not the previous one over the values just published.
        self._publisher.set_replay(*self._replay(now, batch.updates, gone=gone, succeeded=ok))
        try:
            sent = self._publish_in_order(_order(messages))
        except MqttError as err:
            return self._failed(
                now, "publishing to the broker", err, unpublished=batch.updates, gone=gone
            )

        self._cleanup = []
        self._remember(batch.updates, gone, messages, now, all_ok=ok)
        self._publisher.set_replay(*self._replay(now))
        _LOGGER.info(
            "Sync done: %d meter(s) published, %d failed, %d new day(s), %d message(s) sent",
            len(batch.updates),
            len(failed),
            batch.new_days,
            sent,
        )
        if not ok:
            outcome = Outcome.TRANSIENT
        elif batch.new_days == 0 and batch.stale:
            outcome = Outcome.NO_NEW_DAY
        else:
            outcome = Outcome.NEW_DAY
        return SyncReport(
            outcome=outcome,
            meters_ok=len(batch.updates),
            meters_failed=len(failed),
            new_days=batch.new_days,
            sent=sent,
            error=None if ok else str(failed[0].error),
        )

    def _apply(self, fetched: Iterable[MeterData], today: date, now: datetime) -> _Batch:
        """Apply the rules to every fetched meter and collect what to publish."""
        batch = _Batch()
        for data in fetched:
            number = data.meter.number
            previous = self._store.values(number)
            if not self._settings.meter_override(number).enabled:
                if previous is not None:
                    _LOGGER.info("Meter %s is disabled: clearing its retained topics", number)
                    batch.messages.extend(self._clear_meter(meter_slug(number)))
                continue
            update = update_values(previous, data.daily, data.monthly, today=today)
            for note in update.notes:
                _LOGGER.warning("Meter %s: %s", number, note)
            batch.new_days += update.new_day
            reading = update.values.reading_date
            # Catch up only for a meter that has data but not yesterday's yet; a meter silent for
            # more than a week is dormant and waits for the daily slot instead of hourly syncs.
            if (
                not update.new_day
                and reading is not None
                and 1 < (today - reading).days <= CATCH_UP_MAX_AGE_DAYS
            ):
                batch.stale = True
            batch.messages.extend(self._changed_messages(data.meter, previous, update.values, now))
            batch.updates[number] = update.values
        return batch

    def _publish_in_order(self, messages: list[Message]) -> int:
        """Publish; a new Jeedom link equipment gets its discovery well before its values.

        MQTT Manager merges what arrives within 0.3 s: values that land with the discovery of
        an equipment it has not created yet are lost (jeedom.md §6, "Ordering").
        """
        link = self._settings.jeedom.mqtt2_link_topic
        if link is None:
            return self._publisher.publish(messages)
        prefix = f"{link}/discovery/"
        first = [m for m in messages if m.payload and m.topic.startswith(prefix)]
        sent = self._publisher.publish(first) if first else 0
        if sent:
            self._pause(LINK_DISCOVERY_GAP_S)
        rest = [m for m in messages if not (m.payload and m.topic.startswith(prefix))]
        return sent + self._publisher.publish(rest)

    def _changed_messages(
        self, meter: Meter, previous: MeterValues | None, values: MeterValues, now: datetime
    ) -> list[Message]:
        """Discovery and state always (the publisher skips identical ones), values when changed."""
        plan = self._meter_messages(meter, values, now)
        before: set[tuple[str, str]] = set()
        if previous is not None:
            override = self._settings.meter_override(meter.number)
            last_sync = self._store.meter_last_sync(meter.number)
            _, old = self._state_and_values(meter, previous, last_sync, override)
            before = {(m.topic, m.payload) for m in old}
        changed = [m for m in plan.values if (m.topic, m.payload) not in before]
        return plan.discovery + plan.states + changed

    def _gone_meters(self, results: Iterable[MeterData | FailedMeter]) -> list[str]:
        listed = {r.meter.number for r in results}
        if not listed:
            return []
        return sorted(set(self._store.all_values()) - listed)

    def _remember(
        self,
        updates: dict[str, MeterValues],
        gone: list[str],
        messages: list[Message],
        now: datetime,
        *,
        all_ok: bool,
    ) -> None:
        store = self._store
        for number, values in updates.items():
            store.set_values(number, values)
            store.set_meter_last_sync(number, now)
        for number in gone:
            store.forget_meter(number)
        self._forget_disabled()
        # Every retained topic is remembered, so that a change of base_topic, discovery mode or
        # link topic clears what the old configuration left on the broker.
        published = {m.topic for m in messages if m.payload and m.retain}
        published.add(status_topic(self._settings.mqtt.base_topic))
        self._note_discovery_changes(messages)
        cleared = {m.topic for m in messages if not m.payload}
        store.add_published_topics(published)
        store.remove_published_topics(cleared)
        if all_ok:
            store.set_last_sync(now)
        store.set_last_attempt(self._attempt(now, ok=all_ok))
        store.flush()

    def _note_discovery_changes(self, messages: Iterable[Message]) -> None:
        """Keep each discovery payload's digest; a changed one (a rename, a new meter) is logged."""
        prefixes = [f"{self._settings.mqtt.discovery_prefix}/"]
        link = self._settings.jeedom.mqtt2_link_topic
        if link is not None:
            prefixes.append(f"{link}/discovery/")
        digests = self._store.digests()
        for message in messages:
            if not message.payload or not message.topic.startswith(tuple(prefixes)):
                continue
            digest = discovery_digest(message)
            if digests.get(message.topic) != digest:
                _LOGGER.info("Discovery published for %s (new or changed)", message.topic)
                digests[message.topic] = digest
        self._store.set_digests(digests)

    # -- failures ---------------------------------------------------------------------------

    def _note_error(self, now: datetime, what: str, err: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = now
        self._status = "error"
        self._last_error = BridgeError(
            what=f"{what}: {err}",
            since=self._failing_since.astimezone(self._zone),
            action=_RETRY_ACTION,
        )

    def _attempt(self, now: datetime, *, ok: bool) -> SyncAttempt:
        error = self._last_error
        return SyncAttempt(
            at=now,
            ok=ok,
            error=None if ok or error is None else error.what,
            failing_since=None if ok else self._failing_since,
        )

    def _publish_bridge_state(
        self,
        now: datetime,
        unpublished: Mapping[str, MeterValues] | None = None,
        gone: Collection[str] = (),
    ) -> None:
        _, state = self._bridge_messages(now)
        self._publisher.set_replay(*self._replay(now, unpublished, gone=gone))
        try:
            self._publisher.publish([state])
        except MqttError as err:
            _LOGGER.warning("Could not publish the bridge state: %s", err)

    def _failed(
        self,
        now: datetime,
        what: str,
        err: Exception,
        *,
        unpublished: Mapping[str, MeterValues] | None = None,
        gone: Collection[str] = (),
    ) -> SyncReport:
        _LOGGER.error("Sync failed while %s: %s", what, err)
        self._note_error(now, what, err)
        self._store.set_last_attempt(self._attempt(now, ok=False))
        self._store.flush()
        self._publish_bridge_state(now, unpublished, gone)
        return SyncReport(outcome=Outcome.TRANSIENT, error=str(err))

    def _auth_action(self, reason: str) -> str:
        after = (
            "No new login is attempted before the next daily slot or a configuration change, "
            "to protect the account from a lockout."
        )
        if reason in _CHALLENGES:
            portal = self._settings.veolia.endpoints.portal_url
            return (
                f"Veolia asks for a verification code ({reason}): log in once in a browser at "
                f"{portal}, enter the code, or configure veolia.refresh_token; then restart "
                f"veolia2mqtt. {after}"
            )
        return f"Check veolia.email and veolia.password (or veolia.refresh_token). {after}"

    def _auth_refused(self, err: VeoliaAuthError, now: datetime) -> SyncReport:
        _LOGGER.error("Veolia refused the login: %s", err)
        # A challenge's error_type is its name (SMS_MFA, ...): the action depends on it.
        reason = err.error_type or "refused"
        since = self._failing_since or now
        self._failing_since = since
        self._status = "auth_failed"
        self._last_error = BridgeError(
            what="Veolia refused the login",
            since=since.astimezone(self._zone),
            action=self._auth_action(reason),
        )
        self._store.set_auth_block(
            AuthBlock(since=now, reason=reason, fingerprint=self._fingerprint)
        )
        self._store.set_last_attempt(self._attempt(now, ok=False))
        self._store.flush()
        self._publish_bridge_state(now)
        return SyncReport(outcome=Outcome.AUTH_REFUSED, error=str(err))


_CHALLENGES: Final = frozenset({"SMS_MFA", "EMAIL_OTP", "SOFTWARE_TOKEN_MFA", "SELECT_MFA_TYPE"})
"""Cognito challenge names, as kept in the auth block's ``reason``."""


def _unique(messages: Iterable[Message]) -> list[Message]:
    seen: set[str] = set()
    out: list[Message] = []
    for message in messages:
        if message.topic not in seen:
            seen.add(message.topic)
            out.append(message)
    return out


def _order(messages: list[Message]) -> list[Message]:
    """Clearing first, then discovery, then everything else, each group in its own order."""
    clears = [m for m in messages if not m.payload]
    rest = [m for m in messages if m.payload]
    return _unique(clears) + rest
