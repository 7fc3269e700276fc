"""StateStore: round trips, atomic writes, the private token file, damage and unwritable dirs."""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from veolia2mqtt.meter import MeterValues, PendingReset
from veolia2mqtt.state import (
    CORRUPT_SUFFIX,
    SCHEMA_VERSION,
    STATE_FILE,
    TOKEN_FILE,
    AuthBlock,
    StateStore,
    SyncAttempt,
)
from veolia2mqtt.tokens import CachedToken

ACCESS_TOKEN = "eyJraWQiOiJhY2Nlc3MiLCJhbGciOiJSUzI1NiJ9.access-secret.sig"
ACCOUNT = "9f2c1e" * 10
PARIS = timezone(timedelta(hours=1))
WHEN = datetime(2026, 3, 14, 6, 5, 0, tzinfo=UTC)
FULL_VALUES = MeterValues(
    reading_date=date(2026, 3, 13),
    daily_consumption_l=312.5,
    index_l=1_234_567.0,
    reliability="MESURE",
    billed_volume_m3=9.876,
    billing_period_start=date(2026, 3, 1),
    pending_reset=PendingReset(day=date(2026, 3, 12), index_l=42.0),
)
TOKEN = CachedToken(
    access_token=ACCESS_TOKEN,
    expires_at=1_773_468_300.25,
    client_id="3kghade1fg54739kj8pkbova8j",
    auth_url="https://cognito-idp.eu-west-3.amazonaws.com",
    account=ACCOUNT,
)


def fresh(path: Path) -> StateStore:
    store = StateStore(path)
    store.load()
    return store


def state_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "veolia2mqtt.state"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def fill(store: StateStore) -> None:
    store.set_last_sync(WHEN)
    store.set_last_attempt(
        SyncAttempt(at=WHEN, ok=False, error="broker: no answer in 10 s", failing_since=WHEN)
    )
    store.set_values("I19FA051732", FULL_VALUES)
    store.set_values("B2", MeterValues())
    store.set_meter_last_sync("I19FA051732", WHEN)
    store.set_digests({"homeassistant/device/veolia2mqtt_i19fa051732/config": "ab" * 32})
    store.add_published_topics(
        ["homeassistant/device/veolia2mqtt_i19fa051732/config", "veolia2mqtt/i19fa051732/state"]
    )
    store.set_auth_block(
        AuthBlock(since=WHEN, reason="NotAuthorizedException", fingerprint="cd" * 32)
    )


# --- round trips ---------------------------------------------------------------------------


def test_empty_store_knows_nothing(tmp_path: Path) -> None:
    store = fresh(tmp_path / "state")
    assert store.last_sync() is None
    assert store.last_attempt() is None
    assert store.values("X") is None
    assert store.all_values() == {}
    assert store.meter_last_sync("X") is None
    assert store.digests() == {}
    assert store.published_topics() == set()
    assert store.auth_block() is None
    assert store.load_token() is None
    assert not store.in_memory


def test_full_values_example_sets_every_field() -> None:
    """If MeterValues gains a field, this fails until the example (and state.py) cover it."""
    assert all(getattr(FULL_VALUES, f.name) is not None for f in fields(MeterValues))


def test_round_trip_of_everything(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.save_token(TOKEN)
    salt = store.salt()
    store.flush()

    again = fresh(tmp_path)
    assert again.last_sync() == WHEN
    assert again.last_attempt() == SyncAttempt(
        at=WHEN, ok=False, error="broker: no answer in 10 s", failing_since=WHEN
    )
    assert again.values("I19FA051732") == FULL_VALUES
    assert again.values("B2") == MeterValues()
    assert again.all_values() == {"I19FA051732": FULL_VALUES, "B2": MeterValues()}
    assert again.meter_last_sync("I19FA051732") == WHEN
    assert again.meter_last_sync("B2") is None
    assert again.digests() == {"homeassistant/device/veolia2mqtt_i19fa051732/config": "ab" * 32}
    assert again.published_topics() == {
        "homeassistant/device/veolia2mqtt_i19fa051732/config",
        "veolia2mqtt/i19fa051732/state",
    }
    assert again.auth_block() == AuthBlock(
        since=WHEN, reason="NotAuthorizedException", fingerprint="cd" * 32
    )
    assert again.load_token() == TOKEN
    assert again.salt() == salt


def test_values_keep_their_types(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_values(
        "M", MeterValues(reading_date=date(2026, 1, 2), index_l=5, daily_consumption_l=0)
    )
    store.flush()
    values = fresh(tmp_path).values("M")
    assert values is not None
    assert isinstance(values.reading_date, date)
    assert isinstance(values.index_l, float)
    assert values.index_l == 5.0
    assert values.daily_consumption_l == 0.0  # zero is a value, not "unknown"
    assert values.pending_reset is None


def test_file_is_readable_json_with_a_version(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.flush()
    doc = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    assert doc["version"] == SCHEMA_VERSION
    assert doc["last_sync"] == "2026-03-14T06:05:00+00:00"
    values = doc["meters"]["I19FA051732"]["values"]
    assert values["reading_date"] == "2026-03-13"
    assert values["billing_period_start"] == "2026-03-01"
    assert values["pending_reset"] == {"day": "2026-03-12", "index_l": 42.0}


def test_times_are_kept_in_utc(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_last_sync(datetime(2026, 3, 14, 7, 5, tzinfo=PARIS))
    store.flush()
    last = fresh(tmp_path).last_sync()
    assert last == WHEN
    assert last is not None
    assert last.utcoffset() == timedelta(0)


def test_naive_times_are_refused(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    with pytest.raises(ValueError, match="naive"):
        store.set_last_sync(datetime(2026, 3, 14, 6, 5))  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive"):
        store.set_auth_block(
            AuthBlock(since=datetime(2026, 1, 1), reason="x", fingerprint="y")  # noqa: DTZ001
        )


def test_setters_write_only_on_flush(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_last_sync(WHEN)
    assert not (tmp_path / STATE_FILE).exists()
    assert fresh(tmp_path).last_sync() is None
    store.flush()
    assert fresh(tmp_path).last_sync() == WHEN


def test_flush_without_changes_writes_nothing(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.flush()
    assert not (tmp_path / STATE_FILE).exists()
    store.set_last_sync(WHEN)
    store.flush()
    before = (tmp_path / STATE_FILE).stat().st_mtime_ns
    os.utime(tmp_path / STATE_FILE, ns=(1, 1))
    store.flush()
    assert (tmp_path / STATE_FILE).stat().st_mtime_ns == 1 != before


def test_getters_load_lazily(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_last_sync(WHEN)
    store.flush()
    assert StateStore(tmp_path).last_sync() == WHEN


def test_load_is_done_once(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_last_sync(WHEN)
    store.load()  # must not throw away what is not flushed yet
    assert store.last_sync() == WHEN


def test_forget_meter(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.forget_meter("I19FA051732")
    store.forget_meter("never-seen")
    store.flush()
    again = fresh(tmp_path)
    assert again.values("I19FA051732") is None
    assert again.meter_last_sync("I19FA051732") is None
    assert set(again.all_values()) == {"B2"}


def test_published_topics_add_and_remove(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.set_digests({"a/config": "1", "b/config": "2"})
    store.add_published_topics(iter(["a/config", "b/config", "c/state"]))
    store.remove_published_topics(t for t in ["a/config", "zzz"])
    store.flush()
    again = fresh(tmp_path)
    assert again.published_topics() == {"b/config", "c/state"}
    # A cleared topic's digest goes too, or the next publish would be skipped as unchanged.
    assert again.digests() == {"b/config": "2"}


def test_returned_collections_are_copies(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.published_topics().add("sneaky")
    store.digests()["sneaky"] = "x"
    store.all_values().clear()
    assert "sneaky" not in store.published_topics()
    assert "sneaky" not in store.digests()
    assert store.all_values()


def test_auth_block_is_lifted(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.flush()
    store.set_auth_block(None)
    store.flush()
    assert fresh(tmp_path).auth_block() is None


def test_salt_is_random_and_persisted_at_once(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    salt = store.salt()
    assert len(salt) >= 16
    # Another process (the config watcher) reads the same salt without any flush.
    assert fresh(tmp_path).salt() == salt
    assert fresh(tmp_path / "other").salt() != salt


def test_concurrent_setters_are_safe(tmp_path: Path) -> None:
    store = fresh(tmp_path)

    def work(n: int) -> None:
        for i in range(50):
            store.add_published_topics([f"t/{n}/{i}"])
            store.set_values(f"m{n}", MeterValues(index_l=float(i)))
            store.flush()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    again = fresh(tmp_path)
    assert len(again.published_topics()) == 200
    assert again.values("m3") == MeterValues(index_l=49.0)
    assert leftovers(tmp_path) == []


# --- token ---------------------------------------------------------------------------------


def test_token_file_is_private(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    old = os.umask(0)
    try:
        store.save_token(TOKEN)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600


def test_token_is_written_at_once(tmp_path: Path) -> None:
    fresh(tmp_path).save_token(TOKEN)
    assert fresh(tmp_path).load_token() == TOKEN
    assert not (tmp_path / STATE_FILE).exists()


def test_token_file_holds_the_token_only(tmp_path: Path) -> None:
    fresh(tmp_path).save_token(TOKEN)
    doc = json.loads((tmp_path / TOKEN_FILE).read_text(encoding="utf-8"))
    assert set(doc) == {"version", "access_token", "expires_at", "client_id", "auth_url", "account"}
    assert "refresh" not in json.dumps(doc).lower()
    assert "password" not in json.dumps(doc).lower()


def test_token_none_deletes_the_file(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.save_token(TOKEN)
    store.save_token(None)
    assert not (tmp_path / TOKEN_FILE).exists()
    assert store.load_token() is None
    store.save_token(None)  # nothing to delete: fine


def test_token_replaced_keeps_mode(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.save_token(TOKEN)
    newer = CachedToken(
        access_token="other", expires_at=2.0, client_id="c", auth_url="u", account=ACCOUNT
    )
    store.save_token(newer)
    assert fresh(tmp_path).load_token() == newer
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_loose_token_file_is_tightened(tmp_path: Path) -> None:
    fresh(tmp_path).save_token(TOKEN)
    (tmp_path / TOKEN_FILE).chmod(0o644)
    assert fresh(tmp_path).load_token() == TOKEN
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600


def test_token_repr_hides_secrets() -> None:
    text = repr(TOKEN)
    assert ACCESS_TOKEN not in text
    assert ACCOUNT not in text


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 1, "access_token": 5}',
        b"[]",
        b"\xff\xfe\x00garbage",
        b'{"version": 99}',
        b"",
    ],
)
def test_damaged_token_file_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    (tmp_path / TOKEN_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        store = fresh(tmp_path)
    assert store.load_token() is None
    [record] = state_warnings(caplog)
    assert record.levelno == logging.WARNING
    assert "Token file" in record.getMessage()
    # No copy of a token is kept around.
    assert not (tmp_path / TOKEN_FILE).exists()
    assert not list(tmp_path.glob("*corrupt*"))


def test_damaged_token_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / TOKEN_FILE).write_text(
        json.dumps({"version": 1, "access_token": ACCESS_TOKEN, "expires_at": "soon"}),
        encoding="utf-8",
    )
    with caplog.at_level(logging.DEBUG):
        fresh(tmp_path)
    assert ACCESS_TOKEN not in caplog.text
    assert "access-secret" not in caplog.text


# --- atomic writes -------------------------------------------------------------------------


def test_no_temporary_file_left(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    fill(store)
    store.flush()
    store.save_token(TOKEN)
    store.set_last_sync(WHEN + timedelta(days=1))
    store.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, TOKEN_FILE]


def test_crash_during_replace_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = fresh(tmp_path)
    store.set_last_sync(WHEN)
    store.flush()
    before = (tmp_path / STATE_FILE).read_bytes()

    def no_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_replace)
    store.set_last_sync(WHEN + timedelta(days=1))
    with caplog.at_level(logging.WARNING):
        store.flush()
    monkeypatch.undo()

    assert (tmp_path / STATE_FILE).read_bytes() == before
    assert leftovers(tmp_path) == []
    assert fresh(tmp_path).last_sync() == WHEN
    # The running process goes on in memory with what it knows.
    assert store.in_memory
    assert store.last_sync() == WHEN + timedelta(days=1)
    [record] = state_warnings(caplog)
    assert "No space left on device" in record.getMessage()


def test_crash_while_writing_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fresh(tmp_path)
    store.save_token(TOKEN)

    def no_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    store.save_token(
        CachedToken(access_token="new", expires_at=1.0, client_id="c", auth_url="u", account="a")
    )
    monkeypatch.undo()
    assert fresh(tmp_path).load_token() == TOKEN
    assert leftovers(tmp_path) == []


# --- damaged state file --------------------------------------------------------------------

DAMAGED = {
    "corrupt JSON": b'{"version": 1, "last_sync": ',
    "truncated": json.dumps({"version": 1, "meters": {"A": {"values": {}}}}).encode()[:-7],
    "binary garbage": bytes(range(256)) * 4,
    "empty": b"",
    "not an object": b"[1, 2, 3]",
    "no version": b'{"last_sync": null}',
    "future version": b'{"version": 2}',
    "version as text": b'{"version": "1"}',
    "wrong last_sync": b'{"version": 1, "last_sync": 12}',
    "naive last_sync": b'{"version": 1, "last_sync": "2026-03-14T06:05:00"}',
    "last_sync before UTC year 1": b'{"version": 1, "last_sync": "0001-01-01T00:00:00+01:00"}',
    "meters a list": b'{"version": 1, "meters": []}',
    "index as text": b'{"version": 1, "meters": {"A": {"values": {"index_l": "12"}}}}',
    "index as bool": b'{"version": 1, "meters": {"A": {"values": {"index_l": true}}}}',
    "bad date": b'{"version": 1, "meters": {"A": {"values": {"reading_date": "13/03/2026"}}}}',
    "bad pending": b'{"version": 1, "meters": {"A": {"values": {"pending_reset": {"day": 1}}}}}',
    "topics a string": b'{"version": 1, "discovery": {"published_topics": "a/b"}}',
    "digest a number": b'{"version": 1, "discovery": {"digests": {"a": 1}}}',
    "auth_block partial": b'{"version": 1, "auth_block": {"since": "2026-01-01T00:00:00+00:00"}}',
    "attempt ok as text": (
        b'{"version": 1, "last_attempt": {"at": "2026-01-01T00:00:00+00:00", "ok": "yes"}}'
    ),
    "salt not hex": b'{"version": 1, "salt": "zz"}',
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_state_means_fresh_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with caplog.at_level(logging.DEBUG):
        store = fresh(tmp_path)
    [record] = state_warnings(caplog)
    assert record.levelno == logging.WARNING
    assert "starting afresh" in record.getMessage()
    assert store.last_sync() is None
    assert store.all_values() == {}
    assert not store.in_memory
    # The user keeps the damaged file to look at; the next flush writes a good one.
    assert (tmp_path / (STATE_FILE + CORRUPT_SUFFIX)).read_bytes() == content
    assert not (tmp_path / STATE_FILE).exists()
    store.set_last_sync(WHEN)
    store.flush()
    assert fresh(tmp_path).last_sync() == WHEN


def test_partly_valid_state_is_not_half_loaded(tmp_path: Path) -> None:
    doc = {
        "version": 1,
        "last_sync": "2026-03-14T06:05:00+00:00",
        "meters": {"A": {"values": {"index_l": "oops"}}},
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(doc), encoding="utf-8")
    assert fresh(tmp_path).last_sync() is None


def test_state_path_that_is_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / STATE_FILE).mkdir()
    with caplog.at_level(logging.WARNING):
        store = fresh(tmp_path)
    assert len(state_warnings(caplog)) == 1
    store.set_last_sync(WHEN)
    store.flush()
    assert fresh(tmp_path).last_sync() == WHEN


def test_damage_reason_never_echoes_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {"version": 1, "last_sync": ACCESS_TOKEN, "auth_block": ACCESS_TOKEN}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc), encoding="utf-8")
    with caplog.at_level(logging.DEBUG):
        fresh(tmp_path)
    assert ACCESS_TOKEN not in caplog.text
    assert "last_sync" in caplog.text


def test_missing_optional_sections_are_fine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 1}', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        store = fresh(tmp_path)
    assert state_warnings(caplog) == []
    assert store.published_topics() == set()


# --- the directory -------------------------------------------------------------------------


def test_state_dir_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state"
    store = fresh(target)
    assert target.is_dir()
    assert not store.in_memory
    store.set_last_sync(WHEN)
    store.flush()
    assert fresh(target).last_sync() == WHEN


def test_no_directory_before_load(tmp_path: Path) -> None:
    StateStore(tmp_path / "state")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("layout", ["file in the way", "under a file"])
def test_unwritable_state_dir_runs_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, layout: str
) -> None:
    # chmod does not stop root, so the directory is made impossible instead: a file sits
    # where it should be, or where one of its parents should be.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory", encoding="utf-8")
    target = blocker if layout == "file in the way" else blocker / "state"
    with caplog.at_level(logging.WARNING):
        store = fresh(target)
        assert store.in_memory
        fill(store)
        store.save_token(TOKEN)
        store.flush()
        store.touch_heartbeat()
        store.salt()
        store.save_token(None)
        store.save_token(TOKEN)
        store.flush()
    [record] = state_warnings(caplog)
    assert record.levelno == logging.WARNING
    assert "in memory" in record.getMessage()
    assert ACCESS_TOKEN not in caplog.text
    # Everything still works from memory.
    assert store.last_sync() == WHEN
    assert store.values("I19FA051732") == FULL_VALUES
    assert store.load_token() == TOKEN
    assert store.salt() == store.salt()
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def test_directory_lost_while_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "state"
    store = fresh(target)
    store.set_last_sync(WHEN)
    store.flush()
    (target / STATE_FILE).unlink()
    target.rmdir()
    target.write_text("a file now", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        store.set_last_sync(WHEN + timedelta(days=1))
        store.flush()
        store.save_token(TOKEN)
        store.touch_heartbeat()
        store.flush()
    assert store.in_memory
    assert len(state_warnings(caplog)) == 1
    assert store.last_sync() == WHEN + timedelta(days=1)


def test_read_only_state_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory that can be read but not written: the old state is used, in memory."""
    store = fresh(tmp_path)
    fill(store)
    store.flush()

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    again = fresh(tmp_path)
    assert again.in_memory
    assert again.last_sync() == WHEN
    assert again.values("I19FA051732") == FULL_VALUES


# --- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_age(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = StateStore(tmp_path, clock=lambda: now[0])
    assert store.heartbeat_age_s() is None
    store.touch_heartbeat()
    now[0] += 42.5
    assert StateStore(tmp_path, clock=lambda: now[0]).heartbeat_age_s() == pytest.approx(42.5)


def test_heartbeat_age_reads_no_state(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"garbage")
    assert StateStore(tmp_path).heartbeat_age_s() is None
    assert (tmp_path / STATE_FILE).exists()


def test_heartbeat_is_not_in_the_way(tmp_path: Path) -> None:
    store = fresh(tmp_path)
    store.touch_heartbeat()
    store.touch_heartbeat()
    fill(store)
    store.flush()
    assert fresh(tmp_path).last_sync() == WHEN


def test_token_on_a_filesystem_that_ignores_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where 0600 cannot be had (some network mounts), the token stays in memory only."""
    real_mkstemp = tempfile.mkstemp

    def loose_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        os.chmod(name, 0o644)  # noqa: PTH101
        return fd, name

    store = fresh(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", loose_mkstemp)
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    with caplog.at_level(logging.WARNING):
        store.save_token(TOKEN)
        store.save_token(TOKEN)
    [record] = state_warnings(caplog)
    assert "0600" in record.getMessage()
    assert not (tmp_path / TOKEN_FILE).exists()
    assert store.load_token() == TOKEN
    assert not store.in_memory  # the rest of the state is still written
    store.set_last_sync(WHEN)
    store.flush()
    assert (tmp_path / STATE_FILE).exists()


def test_damaged_state_in_read_only_dir_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"{oops")

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with caplog.at_level(logging.WARNING):
        store = fresh(tmp_path)
    assert store.in_memory
    assert len(state_warnings(caplog)) == 2  # the directory, then the file
    assert "left in place" in caplog.text
    assert (tmp_path / STATE_FILE).read_bytes() == b"{oops"


def test_state_dir_property(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "x").state_dir == tmp_path / "x"


def test_heartbeat_survives_an_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way", encoding="utf-8")
    store = StateStore(blocker / "state")
    store.load()
    assert store.in_memory
    store.touch_heartbeat()
    age = StateStore(blocker / "state").heartbeat_age_s()
    assert age is not None
    assert age < 5
