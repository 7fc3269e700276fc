"""MqttPublisher over TLS against mosquitto with a throw-away CA: verified unless insecure."""

from __future__ import annotations

import os
import pwd
import socket
import ssl
from typing import TYPE_CHECKING

import pytest

from tests.helpers.broker import MOSQUITTO, Broker, Collector, free_port, wait_until
from tests.helpers.certs import OPENSSL, TestCerts, make_certs
from veolia2mqtt.config import MqttSettings, TlsSettings
from veolia2mqtt.errors import MqttConnectionError
from veolia2mqtt.mqtt.messages import Message
from veolia2mqtt.mqtt.publisher import MqttPublisher

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (needed for test certs)"),
]

KEEP_USER = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
"""Run as root, mosquitto switches to user ``mosquitto``, which cannot read pytest's tmp_path."""
STATE = Message("veolia2mqtt/i19fa051732/state", '{"index": 1234567}', retain=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    return make_certs(tmp_path_factory.mktemp("certs"))


class TlsBroker:
    """A mosquitto whose main listener speaks TLS, plus a plain listener for the observer."""

    def __init__(self, broker: Broker, plain_port: int) -> None:
        self.broker = broker
        self.plain_port = plain_port

    def settings(self, tls: TlsSettings, **overrides: object) -> MqttSettings:
        return MqttSettings(
            host=self.broker.host,
            port=self.broker.port,
            tls=tls,
            **overrides,  # type: ignore[arg-type]
        )

    def observer(self) -> Collector:
        return Collector(self.broker.host, self.plain_port, ("#",))


def _tls_broker(
    tmp_path: Path, certs: TestCerts, *, require_certificate: bool
) -> Iterator[TlsBroker]:
    plain_port = free_port()
    conf = (
        KEEP_USER
        + certs.mosquitto_tls(require_certificate=require_certificate)
        + f"listener {plain_port} 127.0.0.1\n"
    )
    broker = Broker(tmp_path, extra_conf=conf).start()
    try:
        # Broker.start() waits for the TLS listener only.
        wait_until(lambda: _accepts(broker.host, plain_port), 10, "the plain listener")
        yield TlsBroker(broker, plain_port)
    finally:
        broker.kill()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def tls_broker(tmp_path: Path, certs: TestCerts) -> Iterator[TlsBroker]:
    yield from _tls_broker(tmp_path, certs, require_certificate=False)


@pytest.fixture
def mutual_tls_broker(tmp_path: Path, certs: TestCerts) -> Iterator[TlsBroker]:
    yield from _tls_broker(tmp_path, certs, require_certificate=True)


def publish_and_observe(tls_broker: TlsBroker, publisher: MqttPublisher) -> None:
    with tls_broker.observer() as col:
        publisher.start()
        try:
            assert publisher.publish([STATE]) == 1
            col.wait_for(lambda c: c.retained().get(STATE.topic) == STATE.payload, 10, "state")
            assert c_status(col) == "online"
        finally:
            publisher.stop()


def c_status(col: Collector) -> str:
    return col.retained()["veolia2mqtt/status"]


def test_self_signed_broker_is_refused_by_default(tls_broker):
    publisher = MqttPublisher(tls_broker.settings(TlsSettings(enabled=True)), connect_timeout_s=5)

    with pytest.raises(MqttConnectionError, match="certificate verification failed") as err:
        publisher.start()

    assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
    assert "mqtt.tls.ca_file" in str(err.value)
    assert not publisher.connected


def test_broker_is_accepted_with_its_ca_file(tls_broker, certs):
    tls = TlsSettings(enabled=True, ca_file=certs.ca_cert)
    publish_and_observe(tls_broker, MqttPublisher(tls_broker.settings(tls), readback_s=0.3))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_insecure_accepts_an_unverified_certificate(tls_broker, protocol):
    tls = TlsSettings(enabled=True, insecure=True)
    settings = tls_broker.settings(tls, protocol=protocol)
    publish_and_observe(tls_broker, MqttPublisher(settings, readback_s=0.3))


def test_plain_client_on_a_tls_port_is_a_clear_error(tls_broker):
    publisher = MqttPublisher(tls_broker.settings(TlsSettings(enabled=False)), connect_timeout_s=5)

    with pytest.raises(MqttConnectionError, match=r"TLS port \(mqtt\.tls\.enabled\)"):
        publisher.start()


def test_tls_client_on_a_plain_port_is_a_clear_error(broker, certs):
    tls = TlsSettings(enabled=True, ca_file=certs.ca_cert)
    settings = MqttSettings(host=broker.host, port=broker.port, tls=tls)
    publisher = MqttPublisher(settings, connect_timeout_s=5)

    with pytest.raises(MqttConnectionError, match="during the TLS handshake"):
        publisher.start()


def test_client_certificate_is_presented_when_configured(mutual_tls_broker, certs):
    without = TlsSettings(enabled=True, ca_file=certs.ca_cert)
    publisher = MqttPublisher(mutual_tls_broker.settings(without), connect_timeout_s=5)
    with pytest.raises(MqttConnectionError, match="client certificate"):
        publisher.start()

    with_cert = TlsSettings(
        enabled=True, ca_file=certs.ca_cert, certfile=certs.client_cert, keyfile=certs.client_key
    )
    settings = mutual_tls_broker.settings(with_cert)
    publish_and_observe(mutual_tls_broker, MqttPublisher(settings, readback_s=0.3))
