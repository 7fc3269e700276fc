"""A throw-away certificate authority, server and client certificate, made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

OPENSSL = shutil.which("openssl")

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXT = """\
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""
_CLIENT_EXT = """\
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


@dataclass(frozen=True)
class TestCerts:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    __test__ = False  # not a pytest test class despite the name

    def mosquitto_tls(self, *, require_certificate: bool = False) -> str:
        """Listener options that turn the preceding mosquitto ``listener`` into TLS."""
        lines = [
            f"cafile {self.ca_cert}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
        ]
        if require_certificate:
            lines.append("require_certificate true")
        return "\n".join(lines) + "\n"


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    result = subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        msg = f"openssl {args[0]} failed: {result.stderr.strip()}"
        raise RuntimeError(msg)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(extensions, encoding="utf-8")
    _openssl("req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", subject,
             cwd=directory)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", str(cert), "-extfile", str(ext_file), cwd=directory,
    )  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> TestCerts:
    """Create a CA and sign a server and a client certificate with it, under ``directory``."""
    if OPENSSL is None:
        msg = "openssl is not installed"
        raise RuntimeError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-new", *_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=veolia2mqtt test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    server_cert, server_key = _signed(directory, "server", "/CN=127.0.0.1", _SERVER_EXT)
    client_cert, client_key = _signed(directory, "client", "/CN=veolia2mqtt", _CLIENT_EXT)
    return TestCerts(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )
