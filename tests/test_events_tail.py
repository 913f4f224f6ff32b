"""Following log files like `tail -F`: rotation, truncation, partial lines, restarts.

Real files in a temporary folder; the followers are driven round by round
(`poll_once(now)`) so each test decides exactly when the exporter looks.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames
from exporter.events import state as state_file
from test_events_support import scrape

KNOWN = KnownNames(constraints=frozenset({"Item_practiceId_name_key"}), tables=frozenset({"Item"}))


def event(n: int) -> bytes:
    """A distinct pino line holding a real-shaped P2002 error (n makes each unique)."""
    return json.dumps({"level": 50, "time": 1732000000000 + n, "pid": 7, "hostname": "web-1", "seq": n,
                       "err": {"type": "PrismaClientKnownRequestError", "code": "P2002", "meta": {
                           "modelName": "Item", "driverAdapterError": {"cause": {
                               "originalCode": "23505", "constraint": {"index": "Item_practiceId_name_key"}}}}},
                       "msg": "database write failed"}).encode() + b"\n"


def events(start: int, count: int) -> bytes:
    return b"".join(event(n) for n in range(start, start + count))


class Harness:
    """A pipeline following `pattern`, looked at only when the test says so."""

    def __init__(self, tmp: Path, pattern: str = "app.log", **settings):
        settings.setdefault("start_at", "beginning")
        settings.setdefault("rotate_wait", 5.0)
        self.config = EventsConfig.model_validate({
            "files": [{"path": str(tmp / pattern)}], "http": {"enabled": False}, **settings})
        self.pipeline = EventPipeline(self.config, ["venzory"], KNOWN)
        self.followers = self.pipeline.followers
        self.clock = 1000.0
        self.followers.resume(self.clock)

    def poll(self, seconds: float = 0.1) -> None:
        self.clock += seconds
        while self.followers.poll_once(self.clock):
            pass

    def counted(self) -> int:
        series = scrape(self.pipeline.collector).get("venzory_db_prisma_errors_total", {})
        return int(sum(series.values()))

    def metric(self, name: str) -> dict:
        return {dict(k).get("reason", "value"): v
                for k, v in scrape(self.pipeline.collector).get(name, {}).items() if v}

    def stop(self) -> None:
        self.followers.stop()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_lines_are_counted_once_and_new_matching_files_picked_up(tmp_path):
    append(tmp_path / "a.log", events(0, 3))
    h = Harness(tmp_path, "*.log")
    h.poll()
    assert h.counted() == 3
    h.poll()
    assert h.counted() == 3
    append(tmp_path / "b.log", events(3, 2))
    append(tmp_path / "a.log", events(5, 1))
    h.poll()
    assert h.counted() == 6
    h.stop()


def test_partial_last_line_waits_for_its_newline(tmp_path):
    log = tmp_path / "app.log"
    line = event(1)
    append(log, line[:50])
    h = Harness(tmp_path)
    h.poll(5)
    assert h.counted() == 0 and h.metric("venzory_db_events_rejected_total") == {}
    append(log, line[50:-1])
    h.poll(5)
    assert h.counted() == 0
    append(log, b"\n")
    h.poll()
    assert h.counted() == 1 and h.metric("venzory_db_events_rejected_total") == {}
    h.stop()


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path):
    log = tmp_path / "app.log"
    writer = open(log, "ab", buffering=0)
    writer.write(events(0, 5))
    h = Harness(tmp_path, rotate_wait=2.0)
    h.poll()
    writer.write(events(5, 3))  # not read yet when the rotation happens
    os.rename(log, tmp_path / "app.log.1")
    append(log, events(100, 4))  # the new file (logrotate `create`)
    h.poll()
    writer.write(events(8, 2))  # the app writes to the old file until it reopens its log
    h.poll(1.0)
    writer.close()
    writer = open(log, "ab", buffering=0)  # reopened (SIGUSR2 / `pino.destination().reopen()`)
    writer.write(events(104, 1))
    h.poll(1.5)
    h.poll(3.0)  # past rotate_wait: the old file is closed
    assert h.counted() == 5 + 3 + 4 + 2 + 1
    assert len(h.followers.sources[0].files) == 1
    writer.close()
    h.stop()


def test_a_glob_matching_the_rotated_name_does_not_count_it_twice(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 5))
    h = Harness(tmp_path, "app.log*")
    h.poll()
    os.rename(log, tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", events(5, 1))
    append(log, events(10, 2))
    h.poll()
    h.poll(10)
    assert h.counted() == 8
    h.stop()


@pytest.mark.parametrize("pattern", ["app.log*", "*.log"])
def test_copytruncate_neither_loses_nor_repeats_lines(tmp_path, pattern):
    log = tmp_path / "app.log"
    writer = open(log, "ab", buffering=0)  # O_APPEND: after the truncation it writes at 0
    writer.write(events(0, 5))
    h = Harness(tmp_path, pattern)
    h.poll()
    writer.write(events(5, 3))  # written after the exporter last looked, before the copy
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    writer.write(events(100, 2))
    h.poll()
    h.poll(10)
    # With the copy matched, the 3 lines the truncation took are read from it; with the
    # copy not matched they are lost (logrotate's own copytruncate window, documented).
    assert h.counted() == (5 + 3 + 2 if pattern == "app.log*" else 5 + 2)
    writer.close()
    h.stop()


def test_copy_seen_before_the_truncation_waits_for_it(tmp_path):
    log = tmp_path / "app.log"
    writer = open(log, "ab", buffering=0)
    writer.write(events(0, 5))
    h = Harness(tmp_path, "app.log*")
    h.poll()
    writer.write(events(5, 3))
    shutil.copyfile(log, tmp_path / "app.log.1")
    h.poll()  # the copy is found while the original still holds everything
    os.truncate(log, 0)
    writer.write(events(100, 2))
    h.poll()
    h.poll(10)
    assert h.counted() == 10
    writer.close()
    h.stop()


def test_a_backup_copy_is_not_counted_again(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 5))
    h = Harness(tmp_path, "app.log*", rotate_wait=1.0)
    h.poll()
    shutil.copyfile(log, tmp_path / "app.log.bak")
    append(log, events(5, 1))
    h.poll()
    h.poll(2)
    assert h.counted() == 6
    h.stop()


def test_same_banner_in_two_files_is_not_taken_for_a_copy(tmp_path):
    banner = b"prisma:info Starting a postgresql pool with 9 connections.\n" * 3
    append(tmp_path / "web-1.log", banner + events(0, 2))
    h = Harness(tmp_path, "web-*.log")
    h.poll()
    append(tmp_path / "web-2.log", banner + events(10, 3))
    h.poll()
    assert h.counted() == 5
    h.stop()


def test_file_truncated_while_being_read(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 4) + event(4)[:30])
    h = Harness(tmp_path)
    h.poll()
    assert h.counted() == 4
    os.truncate(log, 0)
    append(log, events(50, 2))
    h.poll()
    assert h.counted() == 6
    assert h.metric("venzory_db_events_rejected_total") == {"partial_line": 1}
    h.stop()


def test_truncated_and_rewritten_past_the_old_offset_is_noticed(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 2))
    h = Harness(tmp_path)
    h.poll()
    with open(log, "wb") as f:  # truncate and write more than before, between two looks
        f.write(events(10, 5))
    h.poll()
    assert h.counted() == 7
    h.stop()


def test_file_deleted_and_recreated(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 3))
    h = Harness(tmp_path, rotate_wait=1.0)
    h.poll()
    log.unlink()
    h.poll()
    append(log, events(0, 3))  # same first lines, a new file
    h.poll()
    h.poll(2)
    assert h.counted() == 6
    assert len(h.followers.sources[0].files) == 1
    h.stop()


def test_resume_after_restart_from_the_state_file(tmp_path):
    log, state = tmp_path / "app.log", tmp_path / "state" / "events.json"
    state.parent.mkdir()
    append(log, events(0, 5) + event(5)[:40])
    h = Harness(tmp_path, state_file=str(state), start_at="end")
    h.poll()
    assert h.counted() == 0  # first run, start_at end: history is not counted
    append(log, event(5)[40:] + events(6, 2))
    h.poll()
    assert h.counted() == 3
    h.stop()
    saved = json.loads(state.read_text())
    assert saved["files"][0]["offset"] == log.stat().st_size
    append(log, events(8, 4))
    h2 = Harness(tmp_path, state_file=str(state), start_at="end")
    h2.poll()
    assert h2.counted() == 4  # exactly the lines written while it was down
    h2.stop()


def test_state_entry_of_a_replaced_file_is_not_used(tmp_path):
    log, state = tmp_path / "app.log", tmp_path / "events.json"
    append(log, events(0, 5))
    h = Harness(tmp_path, state_file=str(state))
    h.poll()
    h.stop()
    # The same inode now holds another content (as after delete + recreate with the
    # inode recycled): the first bytes differ, so the saved offset is not trusted.
    with open(log, "r+b") as f:
        f.write(events(100, 6))
    h2 = Harness(tmp_path, state_file=str(state))
    h2.poll()
    assert h2.counted() == 6
    h2.stop()


def test_file_appearing_while_down_is_read_from_its_beginning(tmp_path):
    state = tmp_path / "events.json"
    append(tmp_path / "a.log", events(0, 2))
    h = Harness(tmp_path, "*.log", state_file=str(state), start_at="end")
    h.stop()
    append(tmp_path / "b.log", events(10, 3))
    h2 = Harness(tmp_path, "*.log", state_file=str(state), start_at="end")
    h2.poll()
    assert h2.counted() == 3
    h2.stop()


def test_state_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "events.json"
    entries = [state_file.FileState("x", "/x", 1, 2, 3, 4, "ab")]
    state_file.save(path, entries)
    assert state_file.load(path) == entries
    assert [p.name for p in tmp_path.iterdir()] == ["events.json"]  # no temp file left
    path.write_text("{ torn")
    assert state_file.load(path) == []


def test_a_10_mb_line_is_rejected_and_memory_stays_bounded(tmp_path):
    log = tmp_path / "app.log"
    h = Harness(tmp_path, max_line_bytes="64KiB")
    tracemalloc.start()
    with open(log, "ab") as f:
        f.write(b'{"msg": "')
        for _ in range(10):  # a 10 MB line arriving in pieces, looked at in between
            f.write(b"a" * (1024 * 1024))
            f.flush()
            h.poll()
        f.write(b'"}\n' + event(1))
    h.poll()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert h.counted() == 1
    assert h.metric("venzory_db_events_rejected_total") == {"line_too_long": 1}
    h.stop()


def test_garbage_in_a_file(tmp_path):
    log = tmp_path / "app.log"
    append(log, event(1) + b'{"level":50,"err":{"code":"P20\n' + bytes(b for b in range(256) if b != 10) + b"\n" + b"plain text\n"
           + event(2))
    h = Harness(tmp_path)
    h.poll()
    assert h.counted() == 2
    assert h.metric("venzory_db_events_rejected_total") == {"invalid_json": 1, "invalid_utf8": 1}
    assert h.metric("venzory_db_events_ignored_total") == {"value": 1}
    h.stop()


def test_start_and_stop_within_one_second_while_busy(tmp_path):
    log = tmp_path / "app.log"
    append(log, events(0, 20000))
    config = EventsConfig.model_validate({"files": [{"path": str(log)}], "start_at": "beginning",
                                          "http": {"enabled": False}})
    pipeline = EventPipeline(config, ["venzory"], KNOWN)
    pipeline.start()
    deadline = time.monotonic() + 30
    while not scrape(pipeline.collector).get("venzory_db_prisma_errors_total") and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    pipeline.stop()
    assert time.monotonic() - started < 1.0
    assert not any(t.name == "events-followers" for t in threading.enumerate())
