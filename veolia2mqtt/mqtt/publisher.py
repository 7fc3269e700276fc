"""MqttPublisher: the only module that imports paho.

Lifecycle (``home-assistant.md`` §7-§8, ``jeedom.md`` §3):

* The last will (``<base>/status`` = ``offline``, QoS 1, retained) is set before connecting.
* On every (re)connect the worker thread publishes ``online`` (retained), subscribes to the
  Home Assistant birth topic, ``<base>/+/refresh`` and ``<link>/cmd/set/+``, re-sends every
  ``always`` message (discovery, then states) and re-asserts only those ``if_missing``
  messages (per-value topics) that the broker no longer holds.
* A non-retained ``online`` on the birth topic re-sends the ``always`` messages after a random
  delay; births arriving during that delay are merged into one re-send.
* ``publish()`` sends QoS 1 messages in order and waits for every acknowledgement. A retained
  message whose topic already carries the same payload on this connection is skipped; the
  per-value topics that the read-back found intact count as carried.

Paho callbacks run on paho's network thread, so they only set events and queue requests; the
work happens on the publisher's own worker thread.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from veolia2mqtt.errors import MqttConnectionError, MqttError, MqttPublishError
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.topics import (
    link_set_filter,
    refresh_filter,
    slug_from_link_set_topic,
    slug_from_refresh_topic,
    status_topic,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage, MQTTMessageInfo
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from veolia2mqtt.config import MqttSettings

_LOGGER = logging.getLogger(__name__)
_PAHO_LOGGER = logging.getLogger(f"{__name__}.paho")

ONLINE: Final = "online"
OFFLINE: Final = "offline"
RECONNECT_MIN_DELAY_S: Final = 1
RECONNECT_MAX_DELAY_S: Final = 60
_POLL_S: Final = 0.5
"""How often the idle worker looks at the stop flag."""
_PROTOCOLS: Final = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}

# CONNACK reason codes as paho reports them for both protocols (MQTT 5 numbering).
_RC_PROTOCOL_VERSION: Final = 132
_RC_CLIENT_ID: Final = 133
_RC_BAD_CREDENTIALS: Final = 134
_RC_NOT_AUTHORIZED: Final = 135
_RC_SERVER_UNAVAILABLE: Final = 136


_CLOSED_DURING_HANDSHAKE: Final = (
    ConnectionResetError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho drops the socket without closing it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _Kind(Enum):
    CONNECTED = "connected"
    BIRTH = "birth"
    REFRESH = "refresh"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class _Event:
    kind: _Kind
    generation: int = 0
    slug: str = ""


class MqttPublisher:
    """Publishes messages to an MQTT broker and keeps them there across reconnects and births.

    Args:
        settings: the ``mqtt`` section of the configuration.
        link_topic: ``jeedom.mqtt2_link_topic``; subscribes to ``<link>/cmd/set/+`` when set.
        will: set the last will (``<base>/status`` = ``offline``).
        publish_offline_on_stop: ``False`` for ``--once``: :meth:`stop` then disconnects
            without ``offline``, so entities stay available between cron runs.
        ack_timeout_s: how long to wait for each publish acknowledgement.
        connect_timeout_s: TCP/TLS connect timeout and how long :meth:`start` waits for CONNACK.
        birth_delay_s: the random delay range before re-sending after a Home Assistant birth.
        rng: draws the birth delay from ``birth_delay_s``; injected for tests.
        readback_s: how long to collect the retained per-value topics after a connect.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        link_topic: str | None = None,
        will: bool = True,
        publish_offline_on_stop: bool = True,
        ack_timeout_s: float = 10,
        connect_timeout_s: float = 10,
        birth_delay_s: tuple[float, float] = (1.0, 5.0),
        rng: Callable[[float, float], float] = random.uniform,
        readback_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._link_topic = link_topic
        self._will = will
        self._publish_offline_on_stop = publish_offline_on_stop
        self._ack_timeout_s = ack_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._birth_delay_s = birth_delay_s
        self._rng = rng
        self._readback_s = readback_s
        self._status_topic = status_topic(settings.base_topic)
        self._where = f"{settings.host}:{settings.port}"

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Serialises batches: a replay's read-back must not race a newer publish of a value.
        self._send_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._events: queue.Queue[_Event] = queue.Queue()
        self._backlog: deque[_Event] = deque()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._online = threading.Event()
        self._refresh_callback: Callable[[str], None] | None = None

        # Guarded by _lock.
        self._always: tuple[Message, ...] = ()
        self._if_missing: tuple[Message, ...] = ()
        self._generation = 0
        self._known: dict[str, str] = {}
        self._first_outcome: MqttConnectionError | None = None
        self._first_outcome_set = False
        self._raise_first_refusal = True
        self._subacks: set[int] = set()
        self._readback_topics: frozenset[str] = frozenset()
        self._readback: dict[str, bytes] = {}
        self._scan_filters: tuple[str, ...] = ()
        self._scan: dict[str, bytes] = {}
        self._sent_count = 0
        self._connect_count = 0
        self._replay_count = 0
        self._birth_resend_count = 0

    # -- public surface -------------------------------------------------------------------

    @property
    def sent_count(self) -> int:
        """Messages published and acknowledged, ``online`` and ``offline`` included."""
        with self._lock:
            return self._sent_count

    @property
    def connect_count(self) -> int:
        """Successful connections (CONNACK accepted) since construction."""
        with self._lock:
            return self._connect_count

    @property
    def replay_count(self) -> int:
        """Connect replays completed (``online``, ``always``, missing ``if_missing``)."""
        with self._lock:
            return self._replay_count

    @property
    def birth_resend_count(self) -> int:
        """Re-sends of ``always`` completed after a Home Assistant birth."""
        with self._lock:
            return self._birth_resend_count

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the current connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected; ``False`` when ``timeout_s`` ran out first."""
        return self._connected.wait(timeout_s)

    def wait_for_replay(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` connect replays have completed; ``False`` on timeout."""
        return self._wait_counter(lambda: self._replay_count >= count, timeout_s)

    def wait_for_birth_resend(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` birth re-sends have completed; ``False`` on timeout."""
        return self._wait_counter(lambda: self._birth_resend_count >= count, timeout_s)

    def set_replay(self, always: Sequence[Message], if_missing: Sequence[Message]) -> None:
        """What to re-publish after a (re)connect (both) or a Home Assistant birth (``always``)."""
        with self._lock:
            self._always = tuple(always)
            self._if_missing = tuple(if_missing)

    def on_refresh(self, callback: Callable[[str], None]) -> None:
        """Register the callback that receives a meter slug when a refresh is requested.

        It runs on the worker thread and should only queue the request.
        """
        self._refresh_callback = callback

    def start(self, *, require_connection: bool = True) -> None:
        """Connect, start paho's loop thread and the worker; publish ``online``.

        Args:
            require_connection: when ``False`` (the daemon), a broker that is down or refuses
                the connection is logged and retried in the background instead of raised.

        Raises:
            MqttConnectionError: the broker cannot be reached, refused the connection, failed
                TLS verification or did not answer in time (only with ``require_connection``).
        """
        if self._client is not None:
            return
        self._stopping.clear()
        self._events = queue.Queue()
        self._backlog.clear()
        client = self._new_client(raise_first_refusal=require_connection)
        self._worker = threading.Thread(target=self._run, name="veolia2mqtt-mqtt", daemon=True)
        self._worker.start()
        host, port, keepalive = self._settings.host, self._settings.port, self._settings.keepalive_s
        try:
            client.connect(host, port, keepalive)
        except (OSError, ValueError) as err:
            error = self._socket_error(err)
            if require_connection:
                self._shutdown(loop_started=False)
                raise error from err
            _LOGGER.warning("%s; retrying in the background", error)
            client.connect_async(host, port, keepalive)
        client.loop_start()
        if require_connection:
            self._await_connack()
            if not self._online.wait(self._ack_timeout_s):
                self._shutdown(loop_started=True)
                msg = f"the broker at {self._where} did not acknowledge '{ONLINE}' in time"
                raise MqttConnectionError(msg)

    def probe(self) -> None:
        """Connect, wait for the broker to accept, disconnect; publish nothing (``check``).

        Raises:
            MqttConnectionError: as :meth:`start` does.
        """
        if self._client is not None:
            return
        client = self._new_client(raise_first_refusal=True)
        try:
            client.connect(self._settings.host, self._settings.port, self._settings.keepalive_s)
        except (OSError, ValueError) as err:
            self._shutdown(loop_started=False)
            raise self._socket_error(err) from err
        client.loop_start()
        self._await_connack()
        self._shutdown(loop_started=True)

    def retained_topics(self, filters: Sequence[str], *, settle_s: float = 2.0) -> list[str]:
        """The topics under ``filters`` on which the broker holds a retained message.

        Used by ``clear-discovery`` to find what a lost ``state_dir`` no longer remembers. The
        broker sends retained messages right after the subscription; ``settle_s`` bounds the
        wait for them.

        Raises:
            MqttPublishError: not connected, or the subscription was not acknowledged.
        """
        with self._changed:
            self._scan = {}
            self._scan_filters = tuple(filters)
        try:
            self._subscribe(list(filters))
            self._stopping.wait(settle_s)
            with self._changed:
                found = sorted(self._scan)
        finally:
            with self._changed:
                self._scan_filters = ()
                self._scan = {}
            client = self._client
            if client is not None:
                client.unsubscribe(list(filters))
        return found

    def stop(self) -> None:
        """Publish ``offline`` (unless disabled), disconnect and stop both threads."""
        if self._client is None:
            return
        self._stopping.set()
        self._join_worker()
        if self._publish_offline_on_stop and self.connected:
            if self._send_lock.acquire(timeout=self._ack_timeout_s):
                try:
                    self._send([Message(self._status_topic, OFFLINE, retain=True)], force=True)
                except MqttError as err:
                    _LOGGER.warning("Could not publish %s before stopping: %s", OFFLINE, err)
                finally:
                    self._send_lock.release()
            else:
                _LOGGER.warning("Stopping without %s: a publish is still in progress", OFFLINE)
        self._shutdown(loop_started=True)

    def __enter__(self) -> Self:
        """Start with a required connection."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop."""
        self.stop()

    def publish(self, messages: Sequence[Message]) -> int:
        """Send ``messages`` in order, wait for the acknowledgements, return how many were sent.

        A retained message whose topic already carries the same payload, acknowledged on the
        current connection, is skipped.

        Raises:
            MqttPublishError: not connected, or a message was not acknowledged in time.
        """
        with self._send_lock:
            if not self.connected:
                msg = f"not connected to the broker at {self._where}"
                raise MqttPublishError(msg)
            return self._send(messages, force=False)

    # -- client setup and teardown --------------------------------------------------------

    def _new_client(self, *, raise_first_refusal: bool) -> mqtt.Client:
        """A fresh client, not connected yet, whose first CONNACK is still to come."""
        with self._lock:
            self._first_outcome = None
            self._first_outcome_set = False
        self._raise_first_refusal = raise_first_refusal
        self._client = self._make_client()
        return self._client

    def _make_client(self) -> mqtt.Client:
        settings = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=_PROTOCOLS[settings.protocol],
        )
        client.on_log = self._on_log
        client.connect_timeout = self._connect_timeout_s
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.tls.enabled:
            client.tls_set_context(self._tls_context())
            if settings.tls.insecure:
                client.tls_insecure_set(value=True)
        if self._will:
            client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """What ``tls_set(ca_certs, certfile, keyfile)`` builds, with sockets closed on failure."""
        tls = self._settings.tls
        try:
            # Verifies the chain and the host name; the system CAs when no ca_file is given.
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.certfile is not None:
                context.load_cert_chain(tls.certfile, tls.keyfile)
        except (OSError, ValueError) as err:
            msg = f"cannot load the TLS certificates (mqtt.tls): {err}"
            raise MqttConnectionError(msg) from err
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslsocket_class = _ClosingSSLSocket
        return context

    def _await_connack(self) -> None:
        deadline = time.monotonic() + self._connect_timeout_s
        with self._changed:
            while not self._first_outcome_set:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            outcome, decided = self._first_outcome, self._first_outcome_set
        if not decided:
            outcome = MqttConnectionError(
                f"the broker at {self._where} accepted TCP but did not answer the MQTT "
                f"connection within {self._connect_timeout_s:g} s"
            )
        if outcome is not None:
            self._shutdown(loop_started=True)
            raise outcome

    def _join_worker(self) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            self._events.put(_Event(_Kind.STOP))
            worker.join(timeout=self._ack_timeout_s + self._readback_s + _POLL_S)
            if worker.is_alive():
                _LOGGER.warning("The MQTT worker did not stop in time")
        self._worker = None

    def _shutdown(self, *, loop_started: bool) -> None:
        self._stopping.set()
        self._join_worker()
        client = self._client
        self._client = None
        if client is None:
            return
        client.disconnect()
        if loop_started:
            # paho's loop_stop() joins without a bound; it returns once the DISCONNECT is
            # written or the reconnect wait notices the disconnect (at most ~1 s).
            stopper = threading.Thread(target=client.loop_stop, name="paho-loop-stop", daemon=True)
            stopper.start()
            stopper.join(timeout=self._connect_timeout_s + 1)
            if stopper.is_alive():
                _LOGGER.warning("paho's network thread did not stop in time")
        self._connected.clear()
        self._online.clear()

    # -- paho callbacks (paho's thread: set events, queue requests, nothing more) ---------

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            error = self._refusal_error(reason_code)
            with self._changed:
                first = not self._first_outcome_set
                if first:
                    self._first_outcome, self._first_outcome_set = error, True
                    self._changed.notify_all()
            if not (first and self._raise_first_refusal):
                # start() raises the first refusal itself; later ones happen in the background.
                _LOGGER.error("%s; retrying", error)
            return
        with self._changed:
            self._generation += 1
            self._connect_count += 1
            self._known.clear()
            generation = self._generation
            if not self._first_outcome_set:
                self._first_outcome_set = True
            self._changed.notify_all()
        _LOGGER.info("Connected to the MQTT broker at %s", self._where)
        self._connected.set()
        self._events.put(_Event(_Kind.CONNECTED, generation=generation))

    def _on_log(self, _client: mqtt.Client, _userdata: object, _level: int, text: str) -> None:
        # paho reports socket errors at ERROR level on every retry; the callbacks above
        # already log what matters once, so paho's own lines are debugging detail.
        _PAHO_LOGGER.debug("%s", text)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        if not self._stopping.is_set():
            _LOGGER.warning("Cannot reach the MQTT broker at %s; retrying", self._where)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._online.clear()
        with self._changed:
            if not self._first_outcome_set:
                self._first_outcome_set = True
                self._first_outcome = self._closed_early_error()
            self._changed.notify_all()
        if was_connected and not self._stopping.is_set():
            _LOGGER.warning(
                "Lost the connection to the MQTT broker at %s (%s); reconnecting",
                self._where,
                reason_code,
            )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        with self._changed:
            self._subacks.add(mid)
            self._changed.notify_all()
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            _LOGGER.warning("The broker refused a subscription: %s", ", ".join(refused))

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: MQTTMessage) -> None:
        topic = msg.topic
        with self._changed:
            if self._scan_filters and any(
                mqtt.topic_matches_sub(pattern, topic) for pattern in self._scan_filters
            ):
                if msg.retain and msg.payload:
                    self._scan[topic] = bytes(msg.payload)
                return
            if topic in self._readback_topics:
                if msg.retain:
                    self._readback[topic] = bytes(msg.payload)
                    self._changed.notify_all()
                return
        if msg.retain:
            # A retained birth or refresh replays on every subscribe; only live ones count.
            return
        if topic == self._settings.birth_topic:
            if msg.payload == ONLINE.encode():
                self._events.put(_Event(_Kind.BIRTH))
            return
        slug = slug_from_refresh_topic(self._settings.base_topic, topic)
        if slug is None and self._link_topic is not None:
            slug = slug_from_link_set_topic(self._link_topic, topic)
        if slug is not None:
            self._events.put(_Event(_Kind.REFRESH, slug=slug))

    # -- worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            event = self._next_event(_POLL_S)
            if event is None:
                continue
            try:
                if event.kind is _Kind.CONNECTED:
                    self._replay_after_connect(event.generation)
                elif event.kind is _Kind.BIRTH:
                    self._resend_after_birth()
                elif event.kind is _Kind.REFRESH:
                    self._request_refresh(event.slug)
            except MqttError as err:
                _LOGGER.warning("MQTT %s handling failed: %s", event.kind.value, err)
            except Exception:
                _LOGGER.exception("Unexpected error while handling MQTT %s", event.kind.value)

    def _next_event(self, timeout_s: float) -> _Event | None:
        if self._backlog:
            return self._backlog.popleft()
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _replay_after_connect(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a newer connection has its own event queued
        with self._send_lock:
            # Read the replay under the send lock: a sync that publishes and then calls
            # set_replay holds it, so the picture sent here is never older than the broker's.
            with self._lock:
                always, if_missing = self._always, self._if_missing
            self._send([Message(self._status_topic, ONLINE, retain=True)], force=True)
            self._online.set()
            filters = [self._settings.birth_topic, refresh_filter(self._settings.base_topic)]
            if self._link_topic is not None:
                filters.append(link_set_filter(self._link_topic))
            self._subscribe(filters)
            self._send(always, force=True)
            self._restore_missing(if_missing, generation)
        with self._changed:
            self._replay_count += 1
            self._changed.notify_all()
        _LOGGER.debug("Replayed %d always and %d if-missing messages", len(always), len(if_missing))

    def _resend_after_birth(self) -> None:
        low, high = self._birth_delay_s
        # Home Assistant announces itself before its discovery handler is ready.
        if self._stopping.wait(self._rng(low, high)):
            return
        merged, connect_pending = 0, False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.kind is _Kind.BIRTH:
                merged += 1
                continue
            connect_pending = connect_pending or event.kind is _Kind.CONNECTED
            self._backlog.append(event)
        if not connect_pending:
            with self._send_lock:
                with self._lock:
                    always = self._always
                self._send(always, force=True)
            _LOGGER.info(
                "Home Assistant came online: re-sent %d messages (%d births merged)",
                len(always),
                merged + 1,
            )
        with self._changed:
            self._birth_resend_count += 1
            self._changed.notify_all()

    def _request_refresh(self, slug: str) -> None:
        callback = self._refresh_callback
        if callback is None:
            _LOGGER.info("Refresh requested for meter %s, but nobody listens", slug)
            return
        callback(slug)

    def _subscribe(self, filters: Sequence[str]) -> None:
        client = self._require_client()
        rc, mid = client.subscribe([(topic_filter, 1) for topic_filter in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            msg = f"cannot subscribe to {', '.join(filters)}: {mqtt.error_string(rc)}"
            raise MqttPublishError(msg)
        deadline = time.monotonic() + self._ack_timeout_s
        with self._changed:
            while mid not in self._subacks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"the broker did not acknowledge the subscription to {filters[0]} in time"
                    raise MqttPublishError(msg)
                self._changed.wait(remaining)
            self._subacks.discard(mid)

    def _restore_missing(self, messages: Sequence[Message], generation: int) -> None:
        """Re-publish the ``messages`` whose retained copy the broker lost or changed."""
        wanted = {message.topic: message for message in messages}
        if not wanted:
            return
        with self._changed:
            self._readback = {}
            self._readback_topics = frozenset(wanted)
        try:
            self._subscribe(list(wanted))
            deadline = time.monotonic() + self._readback_s
            with self._changed:
                while len(self._readback) < len(wanted) and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                held = dict(self._readback)
        finally:
            with self._changed:
                self._readback_topics = frozenset()
                self._readback = {}
            client = self._client
            if client is not None:
                client.unsubscribe(list(wanted))
        missing = []
        with self._lock:
            for topic, message in wanted.items():
                payload = held.get(topic)
                # An empty retained payload means "no retained message": absence is the goal.
                if payload == message.payload.encode() or (payload is None and not message.payload):
                    if generation == self._generation:
                        self._known[topic] = message.payload
                else:
                    missing.append(message)
        if missing:
            _LOGGER.info("Re-publishing %d value topics the broker no longer held", len(missing))
        self._send(missing, force=True)

    # -- sending --------------------------------------------------------------------------

    def _send(self, messages: Sequence[Message], *, force: bool) -> int:
        """Publish in order, then wait for each acknowledgement; caller holds ``_send_lock``."""
        client = self._require_client()
        with self._lock:
            generation = self._generation
            known = dict(self._known)
        pending: list[tuple[Message, MQTTMessageInfo]] = []
        skipped: list[Message] = []
        for message in messages:
            if not force and message.retain and known.get(message.topic) == message.payload:
                skipped.append(message)
                continue
            try:
                info = client.publish(
                    message.topic, message.payload, qos=message.qos, retain=message.retain
                )
            except ValueError as err:
                msg = f"cannot publish to {message.topic!r}: {err}"
                raise MqttPublishError(msg) from err
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                msg = f"cannot publish to {message.topic}: {mqtt.error_string(info.rc)}"
                raise MqttPublishError(msg)
            if message.retain:
                known[message.topic] = message.payload
            pending.append((message, info))
        sent = 0
        for message, info in pending:
            self._await_ack(message, info)
            sent += 1
            with self._lock:
                self._sent_count += 1
                if message.retain and generation == self._generation:
                    self._known[message.topic] = message.payload
        with self._lock:
            reconnected = generation != self._generation
        if skipped and reconnected:
            # Skipped against the previous connection's cache; the new one may lack them.
            sent += self._send(skipped, force=True)
        return sent

    def _await_ack(self, message: Message, info: MQTTMessageInfo) -> None:
        try:
            info.wait_for_publish(timeout=self._ack_timeout_s)
            published = info.is_published()
        except (RuntimeError, ValueError) as err:
            msg = f"publish to {message.topic} failed: {err}"
            raise MqttPublishError(msg) from err
        if not published:
            msg = (
                f"the broker at {self._where} did not acknowledge {message.topic} "
                f"within {self._ack_timeout_s:g} s"
            )
            raise MqttPublishError(msg)

    def _require_client(self) -> mqtt.Client:
        client = self._client
        if client is None:
            msg = "the MQTT publisher is not started"
            raise MqttPublishError(msg)
        return client

    def _wait_counter(self, reached: Callable[[], bool], timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(reached, timeout_s)

    # -- error mapping --------------------------------------------------------------------

    def _refusal_error(self, reason_code: ReasonCode) -> MqttConnectionError:
        where = self._where
        value = reason_code.value
        if value == _RC_BAD_CREDENTIALS:
            text = f"the broker at {where} refused the username/password (check mqtt.username "
            text += "and mqtt.password)"
        elif value == _RC_NOT_AUTHORIZED and self._settings.username is None:
            text = f"the broker at {where} refused an anonymous connection (not authorised); "
            text += "set mqtt.username and mqtt.password"
        elif value == _RC_NOT_AUTHORIZED:
            text = f"the broker at {where} refused the username/password (not authorised); "
            text += "check mqtt.username, mqtt.password and the broker's ACL"
        elif value == _RC_CLIENT_ID:
            text = f"the broker at {where} rejected the client id (mqtt.client_id)"
        elif value == _RC_PROTOCOL_VERSION:
            text = f"the broker at {where} does not support MQTT {self._settings.protocol} "
            text += "(mqtt.protocol)"
        elif value == _RC_SERVER_UNAVAILABLE:
            text = f"the broker at {where} is unavailable (server unavailable)"
        else:
            text = f"the broker at {where} refused the connection: {reason_code}"
        return MqttConnectionError(text)

    def _closed_early_error(self) -> MqttConnectionError:
        text = f"the broker at {self._where} closed the connection before accepting it; "
        if self._settings.tls.enabled:
            text += "does it require a TLS client certificate (mqtt.tls.certfile, keyfile)?"
        else:
            text += "is it a TLS port (mqtt.tls.enabled) or not an MQTT broker?"
        return MqttConnectionError(text)

    def _socket_error(self, err: BaseException) -> MqttConnectionError:
        where = self._where
        if isinstance(err, ssl.SSLCertVerificationError):
            detail = err.verify_message or err.reason or str(err)
            text = f"TLS certificate verification failed for the broker at {where}: {detail}; "
            text += "set mqtt.tls.ca_file to the CA that signed the broker's certificate "
            text += "(or, at your own risk, mqtt.tls.insecure)"
        elif self._settings.tls.enabled and isinstance(err, _CLOSED_DURING_HANDSHAKE):
            text = f"the broker at {where} closed the connection during the TLS handshake; "
            text += "is this port a TLS listener (mqtt.tls.enabled)?"
        elif isinstance(err, ssl.SSLError):
            text = f"TLS handshake with the broker at {where} failed ({err.reason or err}); "
            text += "is this port a TLS listener?"
        elif isinstance(err, ConnectionRefusedError):
            text = f"connection refused by {where}: is the broker running on this host and port?"
        elif isinstance(err, socket.gaierror):
            text = f"cannot resolve the broker host {self._settings.host!r}: {err.strerror}"
        elif isinstance(err, TimeoutError):
            text = f"no answer from the broker at {where} within {self._connect_timeout_s:g} s"
        elif isinstance(err, OSError):
            text = f"cannot reach the broker at {where}: {err.strerror or err}"
        else:
            text = f"cannot connect to the broker at {where}: {err}"
        return MqttConnectionError(text)
