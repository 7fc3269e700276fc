"""What survives a restart, kept in ``state_dir``; the only module that writes files there.

Files:

* ``state.json``: schema ``version``, the last successful sync, the last sync attempt, the last
  published values of each meter (the index high-water mark lives here), the discovery digests,
  every retained topic ever published, the auth block and the fingerprint salt.
* ``token.json``: the Cognito access token only (mode 0600); never a password or refresh token.
* ``heartbeat``: touched by the daemon's loop; its age is the container health check.

Every write is atomic: a temporary file in the same directory, ``fsync``, ``os.replace``.
A damaged ``state.json`` is moved aside to ``state.json.corrupt`` and the store starts afresh.
A ``state_dir`` that cannot be written turns the store into an in-memory one, with one
warning: losing the cache must never stop the daemon.

Setters change memory only; :meth:`StateStore.flush` writes them. The token is written at
once by :meth:`StateStore.save_token`, and a new salt by :meth:`StateStore.salt`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from veolia2mqtt.meter import MeterValues, PendingReset
from veolia2mqtt.tokens import CachedToken

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
STATE_FILE: Final = "state.json"
TOKEN_FILE: Final = "token.json"  # noqa: S105  # a file name, not a secret
HEARTBEAT_FILE: Final = "heartbeat"
CORRUPT_SUFFIX: Final = ".corrupt"
TOKEN_MODE: Final = 0o600
_SALT_BYTES: Final = 16

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AuthBlock:
    """Veolia refused the credentials: no new login before the next slot or a config change."""

    since: datetime
    reason: str
    fingerprint: str
    """The salted credentials fingerprint in force when the login was refused."""


@dataclass(frozen=True, slots=True)
class SyncAttempt:
    """How the last sync attempt ended."""

    at: datetime
    ok: bool
    error: str | None = None
    """A readable line, never a secret."""
    failing_since: datetime | None = None


class _BadStateError(Exception):
    """Internal: the file's content is not what this version writes."""


class StateStore:
    """The state kept in ``state_dir`` across restarts.

    Nothing touches the disk before :meth:`load` (the getters call it when needed). Problems
    with the directory or its files are logged once as a warning and never raised.
    """

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._dir = Path(state_dir)
        self._clock = clock
        self._lock = threading.RLock()
        self._loaded = False
        self._in_memory = False
        self._dirty = False
        self._reset()
        self._token: CachedToken | None = None
        self._token_on_disk = True

    def _reset(self) -> None:
        self._last_sync: datetime | None = None
        self._last_attempt: SyncAttempt | None = None
        self._values: dict[str, MeterValues] = {}
        self._meter_sync: dict[str, datetime] = {}
        self._digests: dict[str, str] = {}
        self._topics: set[str] = set()
        self._auth_block: AuthBlock | None = None
        self._salt: bytes | None = None

    @property
    def state_dir(self) -> Path:
        """The directory this store keeps its files in."""
        return self._dir

    @property
    def in_memory(self) -> bool:
        """Whether ``state_dir`` proved unwritable, so nothing is written any more."""
        return self._in_memory

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """Create ``state_dir`` if needed and read the state and the token, once; never raises."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            self._reset()
            self._token = None
            self._dirty = False
            self._prepare_dir()
            if self._dir.is_dir():
                self._load_state()
                self._token = self._read_token()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    def _prepare_dir(self) -> None:
        if self._in_memory:
            return
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=self._dir)
            os.close(fd)
            Path(probe).unlink()
        # ValueError: a path with a NUL character (a YAML "\0"), which no system call takes.
        except (OSError, ValueError) as err:
            self._go_in_memory(err)

    def _go_in_memory(self, err: OSError | ValueError) -> None:
        if not self._in_memory:
            self._in_memory = True
            _LOGGER.warning(
                "State directory %s cannot be written (%s): keeping state in memory only; the "
                "token, the last sync and the published values will not survive a restart",
                self._dir,
                getattr(err, "strerror", None) or err.__class__.__name__,
            )

    def _load_state(self) -> None:
        path = self._dir / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            self._set_aside(path, f"unreadable: {err.strerror or err.__class__.__name__}")
            return
        try:
            self._parse_state(raw)
        except _BadStateError as err:
            self._reset()
            self._set_aside(path, str(err))

    def _set_aside(self, path: Path, reason: str) -> None:
        corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
        kept = f"the old file is kept as {corrupt.name}"
        if self._in_memory:
            kept = "the old file is left in place"
        else:
            try:
                path.replace(corrupt)
            except OSError as err:
                kept = f"the old file could not be set aside ({err.strerror})"
        _LOGGER.warning("State file %s is unusable (%s): starting afresh; %s", path, reason, kept)

    def _parse_state(self, raw: bytes) -> None:
        doc = _mapping(_decode(raw), "top level")
        version = doc.get("version")
        if version != SCHEMA_VERSION:
            shown = version if isinstance(version, int) else "missing or not a number"
            msg = f"schema version {shown}, this veolia2mqtt reads {SCHEMA_VERSION}"
            raise _BadStateError(msg)
        self._last_sync = _opt(_datetime, doc.get("last_sync"), "last_sync")
        self._last_attempt = _attempt_from(doc.get("last_attempt"))
        for number, entry in _mapping(doc.get("meters", {}), "meters").items():
            where = f"meters.{number}"
            item = _mapping(entry, where)
            if item.get("values") is not None:
                self._values[number] = _values_from(item["values"], f"{where}.values")
            synced = _opt(_datetime, item.get("last_sync"), f"{where}.last_sync")
            if synced is not None:
                self._meter_sync[number] = synced
        self._digests, self._topics = _discovery_from(doc.get("discovery", {}))
        self._auth_block = _block_from(doc.get("auth_block"))
        salt = doc.get("salt")
        if salt is not None:
            try:
                self._salt = bytes.fromhex(_str(salt, "salt"))
            except ValueError:
                msg = "salt: expected hex digits"
                raise _BadStateError(msg) from None

    # -- writing ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write ``state.json`` if anything changed since the last write."""
        with self._lock:
            self._ensure_loaded()
            if not self._dirty or self._in_memory:
                return
            payload = json.dumps(self._state_document(), indent=2, sort_keys=True) + "\n"
            if self._write_atomic(self._dir / STATE_FILE, payload.encode("utf-8")):
                self._dirty = False

    def _changed(self) -> None:
        self._dirty = True

    def _state_document(self) -> dict[str, Any]:
        meters: dict[str, Any] = {}
        for number in sorted(set(self._values) | set(self._meter_sync)):
            values = self._values.get(number)
            synced = self._meter_sync.get(number)
            meters[number] = {
                "values": None if values is None else _values_to(values),
                "last_sync": _iso(synced),
            }
        return {
            "version": SCHEMA_VERSION,
            "last_sync": _iso(self._last_sync),
            "last_attempt": _attempt_to(self._last_attempt),
            "meters": meters,
            "discovery": {
                "digests": dict(sorted(self._digests.items())),
                "published_topics": sorted(self._topics),
            },
            "auth_block": _block_to(self._auth_block),
            "salt": None if self._salt is None else self._salt.hex(),
        }

    def _write_atomic(self, path: Path, content: bytes, *, mode: int | None = None) -> bool:
        """Replace ``path`` with ``content`` all at once; ``False`` (now in memory) on failure."""
        if self._in_memory:
            return False
        tmp: str | None = None
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file 0600 before any byte is written, so a token never sits
            # in a file that others can read, not even for a moment.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self._dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            if mode is not None:
                Path(tmp).chmod(mode)
            Path(tmp).replace(path)
            tmp = None
            self._fsync_dir()
        except OSError as err:
            self._go_in_memory(err)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink()
        return True

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable; some filesystems refuse to open a directory.
        with contextlib.suppress(OSError):
            fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- token ------------------------------------------------------------------------------

    def load_token(self) -> CachedToken | None:
        """The cached access token, if one was saved."""
        with self._lock:
            self._ensure_loaded()
            return self._token

    def save_token(self, token: CachedToken | None) -> None:
        """Keep ``token`` in ``token.json`` (mode 0600) at once; ``None`` deletes the file."""
        with self._lock:
            self._ensure_loaded()
            self._token = token
            if self._in_memory or not self._token_on_disk:
                return
            path = self._dir / TOKEN_FILE
            if token is None:
                try:
                    path.unlink(missing_ok=True)
                except OSError as err:
                    self._go_in_memory(err)
                return
            document = {
                "version": SCHEMA_VERSION,
                "access_token": token.access_token,
                "expires_at": token.expires_at,
                "client_id": token.client_id,
                "auth_url": token.auth_url,
                "account": token.account,
            }
            content = (json.dumps(document, sort_keys=True) + "\n").encode("utf-8")
            if self._write_atomic(path, content, mode=TOKEN_MODE):
                self._check_token_mode(path)

    def _check_token_mode(self, path: Path) -> None:
        try:
            if stat.S_IMODE(path.stat().st_mode) == TOKEN_MODE:
                return
            path.chmod(TOKEN_MODE)
            if stat.S_IMODE(path.stat().st_mode) == TOKEN_MODE:
                return
        except OSError:
            pass
        self._token_on_disk = False
        _LOGGER.warning(
            "Token file %s could not be made private (mode 0600): removed, the token is kept "
            "in memory only from now on",
            path,
        )
        with contextlib.suppress(OSError):
            path.unlink()

    def _read_token(self) -> CachedToken | None:
        path = self._dir / TOKEN_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            _LOGGER.warning("Token file %s is unreadable (%s): ignored", path, err.strerror)
            return None
        try:
            token = _token_from(raw)
        except _BadStateError as err:
            # Never set aside like state.json: a copy of a token is one more secret on disk.
            _LOGGER.warning("Token file %s is unusable (%s): ignored and removed", path, err)
            if not self._in_memory:
                with contextlib.suppress(OSError):
                    path.unlink()
            return None
        if not self._in_memory:
            with contextlib.suppress(OSError):
                if stat.S_IMODE(path.stat().st_mode) != TOKEN_MODE:
                    path.chmod(TOKEN_MODE)
        return token

    # -- sync times -------------------------------------------------------------------------

    def last_sync(self) -> datetime | None:
        """When the last successful sync ended (aware, UTC)."""
        with self._lock:
            self._ensure_loaded()
            return self._last_sync

    def set_last_sync(self, when: datetime) -> None:
        """Remember a successful sync.

        Raises:
            ValueError: ``when`` is a naive datetime.
        """
        with self._lock:
            self._ensure_loaded()
            self._last_sync = _utc(when)
            self._changed()

    def last_attempt(self) -> SyncAttempt | None:
        """How the last sync attempt ended, successful or not."""
        with self._lock:
            self._ensure_loaded()
            return self._last_attempt

    def set_last_attempt(self, attempt: SyncAttempt) -> None:
        """Remember how a sync attempt ended.

        Raises:
            ValueError: a datetime of ``attempt`` is naive.
        """
        with self._lock:
            self._ensure_loaded()
            since = attempt.failing_since
            self._last_attempt = SyncAttempt(
                at=_utc(attempt.at),
                ok=attempt.ok,
                error=attempt.error,
                failing_since=None if since is None else _utc(since),
            )
            self._changed()

    # -- meters -----------------------------------------------------------------------------

    def values(self, number: str) -> MeterValues | None:
        """The values last published for meter ``number``."""
        with self._lock:
            self._ensure_loaded()
            return self._values.get(number)

    def all_values(self) -> dict[str, MeterValues]:
        """The values last published, by meter number (a copy)."""
        with self._lock:
            self._ensure_loaded()
            return dict(self._values)

    def set_values(self, number: str, values: MeterValues) -> None:
        """Remember what was published for meter ``number``."""
        with self._lock:
            self._ensure_loaded()
            self._values[number] = values
            self._changed()

    def meter_last_sync(self, number: str) -> datetime | None:
        """When meter ``number`` was last published (aware, UTC)."""
        with self._lock:
            self._ensure_loaded()
            return self._meter_sync.get(number)

    def set_meter_last_sync(self, number: str, when: datetime) -> None:
        """Remember when meter ``number`` was published.

        Raises:
            ValueError: ``when`` is a naive datetime.
        """
        with self._lock:
            self._ensure_loaded()
            self._meter_sync[number] = _utc(when)
            self._changed()

    def forget_meter(self, number: str) -> None:
        """Drop everything known about meter ``number`` (removed or disabled)."""
        with self._lock:
            self._ensure_loaded()
            found = self._values.pop(number, None) is not None
            found = self._meter_sync.pop(number, None) is not None or found
            if found:
                self._changed()

    # -- discovery and retained topics ------------------------------------------------------

    def digests(self) -> dict[str, str]:
        """The digest of the discovery payload last published, by topic (a copy)."""
        with self._lock:
            self._ensure_loaded()
            return dict(self._digests)

    def set_digests(self, digests: Mapping[str, str]) -> None:
        """Replace every discovery digest."""
        with self._lock:
            self._ensure_loaded()
            new = dict(digests)
            if new != self._digests:
                self._digests = new
                self._changed()

    def published_topics(self) -> set[str]:
        """Every retained topic published and not cleared since (a copy)."""
        with self._lock:
            self._ensure_loaded()
            return set(self._topics)

    def add_published_topics(self, topics: Iterable[str]) -> None:
        """Record retained topics that were published."""
        with self._lock:
            self._ensure_loaded()
            new = set(topics) - self._topics
            if new:
                self._topics |= new
                self._changed()

    def remove_published_topics(self, topics: Iterable[str]) -> None:
        """Forget retained topics that were cleared, and their digests."""
        with self._lock:
            self._ensure_loaded()
            gone = set(topics)
            found = gone & (self._topics | set(self._digests))
            if found:
                self._topics -= gone
                for topic in found:
                    self._digests.pop(topic, None)
                self._changed()

    # -- auth block -------------------------------------------------------------------------

    def auth_block(self) -> AuthBlock | None:
        """The refused login that blocks new attempts, if any."""
        with self._lock:
            self._ensure_loaded()
            return self._auth_block

    def set_auth_block(self, block: AuthBlock | None) -> None:
        """Remember a refused login (``None`` lifts the block).

        Raises:
            ValueError: ``block.since`` is a naive datetime.
        """
        with self._lock:
            self._ensure_loaded()
            if block is not None:
                block = AuthBlock(
                    since=_utc(block.since), reason=block.reason, fingerprint=block.fingerprint
                )
            if block != self._auth_block:
                self._auth_block = block
                self._changed()

    def salt(self) -> bytes:
        """A random salt kept with the state, for the credentials fingerprint.

        Created and written at first use, so that every process using this ``state_dir``
        computes the same fingerprint.
        """
        with self._lock:
            self._ensure_loaded()
            if self._salt is None:
                self._salt = secrets.token_bytes(_SALT_BYTES)
                self._changed()
                self.flush()
            return self._salt

    # -- heartbeat --------------------------------------------------------------------------

    def _heartbeat_paths(self) -> tuple[Path, Path]:
        """The heartbeat in ``state_dir``, and its stand-in in the temp dir.

        The stand-in serves when ``state_dir`` is unwritable: the daemon then keeps running in
        memory, and must not look dead to the health check for it.
        """
        key = hashlib.sha256(str(self._dir.absolute()).encode("utf-8")).hexdigest()[:16]
        return self._dir / HEARTBEAT_FILE, Path(tempfile.gettempdir()) / f"veolia2mqtt-{key}.beat"

    def touch_heartbeat(self) -> None:
        """Mark the daemon alive (the health check reads the file's age)."""
        with self._lock:
            self._ensure_loaded()
            main, fallback = self._heartbeat_paths()
            now = self._clock()
            for path in (fallback,) if self._in_memory else (main, fallback):
                try:
                    path.touch(mode=0o644)
                    os.utime(path, (now, now))
                except OSError as err:
                    if path == main:
                        self._go_in_memory(err)
                        continue
                    _LOGGER.debug("Cannot touch the heartbeat %s: %s", path, err.strerror)
                return

    def heartbeat_age_s(self) -> float | None:
        """Seconds since the daemon last marked itself alive, or ``None``; reads no state."""
        ages = []
        for path in self._heartbeat_paths():
            try:
                ages.append(max(self._clock() - path.stat().st_mtime, 0.0))
            except (OSError, ValueError):
                continue
        return min(ages, default=None)


# -- (de)serialisation helpers --------------------------------------------------------------


def _decode(raw: bytes) -> object:
    """The JSON document in ``raw``; anything unreadable is a :class:`_BadStateError`."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        msg = "not UTF-8 text"
        raise _BadStateError(msg) from None
    except json.JSONDecodeError as err:
        msg = f"not valid JSON at line {err.lineno}, column {err.colno}"
        raise _BadStateError(msg) from None
    except (RecursionError, ValueError):
        # Arrays nested thousands deep, or an integer of more than 4300 digits.
        msg = "not a JSON document this version writes"
        raise _BadStateError(msg) from None


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        msg = "a naive datetime cannot be stored: give it a time zone"
        raise ValueError(msg)
    return when.astimezone(UTC)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        msg = f"{where}: expected an object"
        raise _BadStateError(msg)
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        msg = f"{where}: expected a string"
        raise _BadStateError(msg)
    return value


def _opt(parse: Callable[[object, str], _T], value: object, where: str) -> _T | None:
    """``None`` for a JSON ``null``; anything else must be what ``parse`` reads."""
    return None if value is None else parse(value, where)


def _float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{where}: expected a number"
        raise _BadStateError(msg)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    # JSON's 1e999 and NaN read as inf and nan: a high-water mark of inf would block the index.
    if not math.isfinite(number):
        msg = f"{where}: expected a finite number"
        raise _BadStateError(msg)
    return number


def _date(value: object, where: str) -> date:
    if value is not None:
        with contextlib.suppress(ValueError):
            return date.fromisoformat(_str(value, where))
    msg = f"{where}: expected a YYYY-MM-DD date"
    raise _BadStateError(msg)


def _datetime(value: object, where: str) -> datetime:
    if value is not None:
        # OverflowError: 0001-01-01T00:00+01:00 is valid ISO 8601 but lies before UTC's year 1.
        with contextlib.suppress(ValueError, OverflowError):
            when = datetime.fromisoformat(_str(value, where))
            if when.tzinfo is not None:
                return when.astimezone(UTC)
    msg = f"{where}: expected an ISO 8601 time with its offset"
    raise _BadStateError(msg)


def _iso(moment: date | datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _values_to(values: MeterValues) -> dict[str, Any]:
    pending = values.pending_reset
    return {
        "reading_date": _iso(values.reading_date),
        "daily_consumption_l": values.daily_consumption_l,
        "index_l": values.index_l,
        "reliability": values.reliability,
        "billed_volume_m3": values.billed_volume_m3,
        "billing_period_start": _iso(values.billing_period_start),
        "pending_reset": (
            None
            if pending is None
            else {"day": pending.day.isoformat(), "index_l": pending.index_l}
        ),
    }


def _values_from(value: object, where: str) -> MeterValues:
    data = _mapping(value, where)
    pending_raw = data.get("pending_reset")
    pending = None
    if pending_raw is not None:
        raw = _mapping(pending_raw, f"{where}.pending_reset")
        pending = PendingReset(
            day=_date(raw.get("day"), f"{where}.pending_reset.day"),
            index_l=_float(raw.get("index_l"), f"{where}.pending_reset.index_l"),
        )
    return MeterValues(
        reading_date=_opt(_date, data.get("reading_date"), f"{where}.reading_date"),
        daily_consumption_l=_opt(
            _float, data.get("daily_consumption_l"), f"{where}.daily_consumption_l"
        ),
        index_l=_opt(_float, data.get("index_l"), f"{where}.index_l"),
        reliability=_opt(_str, data.get("reliability"), f"{where}.reliability"),
        billed_volume_m3=_opt(_float, data.get("billed_volume_m3"), f"{where}.billed_volume_m3"),
        billing_period_start=_opt(
            _date, data.get("billing_period_start"), f"{where}.billing_period_start"
        ),
        pending_reset=pending,
    )


def _discovery_from(value: object) -> tuple[dict[str, str], set[str]]:
    discovery = _mapping(value, "discovery")
    digests = {
        topic: _str(digest, f"discovery.digests.{topic}")
        for topic, digest in _mapping(discovery.get("digests", {}), "discovery.digests").items()
    }
    topics = discovery.get("published_topics", [])
    if not isinstance(topics, list):
        msg = "discovery.published_topics: expected a list"
        raise _BadStateError(msg)
    return digests, {_str(t, "discovery.published_topics[]") for t in topics}


def _attempt_to(attempt: SyncAttempt | None) -> dict[str, Any] | None:
    if attempt is None:
        return None
    return {
        "at": attempt.at.isoformat(),
        "ok": attempt.ok,
        "error": attempt.error,
        "failing_since": _iso(attempt.failing_since),
    }


def _attempt_from(value: object) -> SyncAttempt | None:
    if value is None:
        return None
    data = _mapping(value, "last_attempt")
    ok = data.get("ok")
    if not isinstance(ok, bool):
        msg = "last_attempt.ok: expected true or false"
        raise _BadStateError(msg)
    return SyncAttempt(
        at=_datetime(data.get("at"), "last_attempt.at"),
        ok=ok,
        error=_opt(_str, data.get("error"), "last_attempt.error"),
        failing_since=_opt(_datetime, data.get("failing_since"), "last_attempt.failing_since"),
    )


def _block_to(block: AuthBlock | None) -> dict[str, Any] | None:
    if block is None:
        return None
    return {
        "since": block.since.isoformat(),
        "reason": block.reason,
        "fingerprint": block.fingerprint,
    }


def _block_from(value: object) -> AuthBlock | None:
    if value is None:
        return None
    data = _mapping(value, "auth_block")
    return AuthBlock(
        since=_datetime(data.get("since"), "auth_block.since"),
        reason=_str(data.get("reason"), "auth_block.reason"),
        fingerprint=_str(data.get("fingerprint"), "auth_block.fingerprint"),
    )


def _token_from(raw: bytes) -> CachedToken:
    doc = _mapping(_decode(raw), "top level")
    if doc.get("version") != SCHEMA_VERSION:
        msg = "unknown schema version"
        raise _BadStateError(msg)
    return CachedToken(
        access_token=_str(doc.get("access_token"), "access_token"),
        expires_at=_float(doc.get("expires_at"), "expires_at"),
        client_id=_str(doc.get("client_id"), "client_id"),
        auth_url=_str(doc.get("auth_url"), "auth_url"),
        account=_str(doc.get("account"), "account"),
    )
