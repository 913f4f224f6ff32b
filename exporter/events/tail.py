"""Follow JSON-lines log files like `tail -F`, resuming where they stopped.

A followed file is held open by its descriptor and known by its identity (device,
inode) and its first bytes, never by its path alone, so:
- rename rotation: the renamed file is read to its end (and for `rotate_wait` after it
  last grew, since a writer appends to it until it reopens its log) while the new file
  at the path is read from its beginning; a glob that also matches the renamed file
  finds the same inode and keeps its offset: nothing is read twice.
- copytruncate: a file that shrinks, or whose first bytes change, is read again from
  its beginning; a new file whose first bytes are those of a followed (or just
  truncated) file is its copy and is read from where the original was left.
- a partial last line waits for its newline; an over-long line is skipped to its end.
- restart: offsets and identities are kept in a state file (state.py), written
  atomically every second and at stop; an entry is used only if device, inode and
  first bytes still match.
Exactly what this guarantees, and what it cannot: docs/events.md, "Following files".
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from stat import S_ISREG
from typing import TYPE_CHECKING

from exporter.events.counters import Tally
from exporter.events.parse import LINE_TOO_LONG, PARTIAL_LINE, LineParser, Rejected
from exporter.events.state import HEAD_BYTES, FileState, head_digest

if TYPE_CHECKING:
    from exporter.events.pipeline import Sink
from exporter.events import state as state_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read (and merged into the counters) at a time
_FAIR_SHARE = 8 * CHUNK  # per file per round, so one busy file cannot starve the others
_MIN_COPY_HEAD = 64  # a copy is recognised by at least this many identical first bytes
_TAIL_BYTES = 256  # ... and by the bytes before the offset the original was read to
_NEWLINE_SEARCH = 1 << 16  # how far back "start at end" looks for the last complete line
_IDLE_FLUSH = 1.0  # seconds without growth that end a multi-line prisma:error message


@dataclass(frozen=True)
class SourceSpec:
    pattern: str  # the configured glob; also the `source` label
    database: str


class FollowedFile:
    """One open file: its identity, how far it was read, and its partial last line."""

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int, parser: LineParser, now: float):
        self.path = path
        self.fd = fd
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = offset  # just past the last complete line read
        self.read_pos = offset
        self.partial = bytearray()
        self.skipping = False  # inside a line longer than the limit: dropping it
        self.size = -1
        self.head = os.pread(fd, HEAD_BYTES, 0)
        self.tail = b""  # the bytes just before `offset`: with `head`, what a copy must match
        self.parser = parser
        self.last_growth = now
        self.unmatched_since: float | None = None
        # Set while this file looks like a copy of a followed one (copytruncate copies,
        # then truncates): it is read only once the original is truncated.
        self.copy_of: tuple[int, int] | None = None
        self.opened_at = now

    @property
    def identity(self) -> tuple[int, int]:
        return self.dev, self.ino

    def close(self) -> None:
        os.close(self.fd)


class FileSource:
    """Every file matching one glob, counted into `sink` under one source label."""

    def __init__(self, spec: SourceSpec, sink: Sink, max_line_bytes: int, rotate_wait: float):
        self.spec = spec
        self.sink = sink
        self.max_line_bytes = max_line_bytes
        self.rotate_wait = rotate_wait
        self.files: dict[tuple[int, int], FollowedFile] = {}
        # (head, offset, tail) of files truncated lately: a copy of one of them that shows
        # up later (copytruncate) is read from where the original was left.
        self._truncated: deque[tuple[bytes, int, bytes]] = deque(maxlen=32)
        self._tally = Tally()

    # -- discovery ---------------------------------------------------------------------------
    def scan(self, now: float, saved: dict[tuple[int, int], FileState] | None, start_at_end: bool) -> None:
        """Match the glob; open new files; note the files the glob no longer points to.
        `saved` is given on the first scan after start (None later)."""
        found = []
        for path in sorted(glob.glob(self.spec.pattern)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if S_ISREG(st.st_mode):
                found.append((path, st))
        matched = {(st.st_dev, st.st_ino) for _, st in found}
        for identity, followed in self.files.items():
            if identity not in matched:
                if followed.unmatched_since is None:
                    followed.unmatched_since = now
            else:
                followed.unmatched_since = None
        for path, st in found:
            known = self.files.get((st.st_dev, st.st_ino))
            if known is not None:
                known.path = path  # renamed to another matching name: same file, same offset
                continue
            opened = self._open(path, st, now, saved, start_at_end)
            if opened is not None:
                self.files[opened.identity] = opened

    def _open(self, path: str, st: os.stat_result, now: float,
              saved: dict[tuple[int, int], FileState] | None, start_at_end: bool) -> FollowedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            log.warning("cannot open followed file %s: %s", path, e.strerror)
            return None
        st = os.fstat(fd)  # the file actually opened, if the path changed in between
        if (st.st_dev, st.st_ino) in self.files:
            os.close(fd)  # renamed onto a path that was matched too: already followed
            return None
        parser = LineParser(self._tally.add)
        followed = FollowedFile(path, fd, st, 0, parser, now)
        followed.offset = followed.read_pos = self._start_offset(followed, st, saved, start_at_end)
        log.info("following %s from byte %d", path, followed.offset)
        return followed

    def _start_offset(self, followed: FollowedFile, st: os.stat_result,
                      saved: dict[tuple[int, int], FileState] | None, start_at_end: bool) -> int:
        if saved is not None:
            entry = saved.get(followed.identity)
            if entry is not None and _same_head(followed.fd, entry) and st.st_size >= entry.offset:
                return entry.offset
            if saved or not start_at_end:
                return 0  # appeared (or was replaced) while the exporter was down
            return _last_line_end(followed.fd, st.st_size)
        for original in self.files.values():
            # copytruncate leaves the original where it was: one rotated away or deleted
            # is not copied (a new file with its content is a new file).
            copied = _is_copy(followed, st.st_size, original.head, original.offset, original.tail)
            if original.unmatched_since is None and copied:
                followed.copy_of = original.identity
                return original.offset
        for head, offset, tail in reversed(self._truncated):  # the original was truncated already
            if _is_copy(followed, st.st_size, head, offset, tail):
                return offset
        return 0

    # -- reading -----------------------------------------------------------------------------
    def read(self, now: float, stop: threading.Event) -> bool:
        """Read every file once (a fair share each); True when some file has more to read."""
        more = False
        for followed in list(self.files.values()):
            if stop.is_set():
                break
            if followed.copy_of is not None and self._still_a_copy(followed, now):
                continue
            try:
                file_more = self._read_file(followed, now, stop)
            except OSError as e:
                log.warning("reading %s failed: %s", followed.path, e.strerror)
                file_more = False
            more |= file_more
            if followed.unmatched_since is not None and not file_more \
                    and now - max(followed.last_growth, followed.unmatched_since) >= self.rotate_wait:
                self._finish(followed)
        self._merge()
        return more

    def _still_a_copy(self, copy: FollowedFile, now: float) -> bool:
        """A copy waits for its original's truncation, which releases it where the
        original was left (_restart_truncated). If the original is not truncated within
        rotate_wait, or goes away, the copy is a plain backup: its content was counted
        from the original, so only what is appended to it later is read."""
        if copy.copy_of in self.files and now - copy.opened_at < self.rotate_wait:
            return True
        copy.copy_of = None
        copy.offset = copy.read_pos = copy.size = os.fstat(copy.fd).st_size
        copy.tail = b""
        return False

    def _read_file(self, followed: FollowedFile, now: float, stop: threading.Event) -> bool:
        size = os.fstat(followed.fd).st_size
        if size != followed.size:
            if size < followed.read_pos or not self._head_unchanged(followed, size):
                self._restart_truncated(followed)
            followed.size = size
        budget = _FAIR_SHARE
        while followed.read_pos < size and budget > 0 and not stop.is_set():
            chunk = os.pread(followed.fd, min(CHUNK, size - followed.read_pos), followed.read_pos)
            if not chunk:
                break
            self._consume(followed, chunk)
            followed.last_growth = now
            budget -= len(chunk)
            self._merge()
        if followed.read_pos < size:
            return True
        if now - followed.last_growth >= _IDLE_FLUSH:
            followed.parser.flush()  # the writer paused: close a multi-line prisma:error message
        return False

    def _head_unchanged(self, followed: FollowedFile, size: int) -> bool:
        """The first bytes are as seen before (and are extended while the file is short)."""
        current = os.pread(followed.fd, min(size, HEAD_BYTES), 0)
        if not current.startswith(followed.head):
            return False
        followed.head = current
        return True

    def _restart_truncated(self, followed: FollowedFile) -> None:
        log.info("%s was truncated or rewritten: reading it from the beginning", followed.path)
        self._truncated.append((followed.head, followed.offset, followed.tail))
        for copy in self.files.values():
            if copy.copy_of == followed.identity:  # copytruncate: read what the original lost
                copy.copy_of = None
                copy.offset = copy.read_pos = min(followed.offset, os.fstat(copy.fd).st_size)
        if followed.partial or followed.skipping:
            self._tally.add(Rejected(PARTIAL_LINE))  # its end was cut off
        followed.parser.flush()
        followed.partial.clear()
        followed.skipping = False
        followed.offset = followed.read_pos = 0
        followed.head = os.pread(followed.fd, HEAD_BYTES, 0)
        followed.tail = b""

    def _consume(self, followed: FollowedFile, chunk: bytes) -> None:
        chunk_start = followed.read_pos
        followed.read_pos += len(chunk)
        last_newline = chunk.rfind(b"\n")
        if last_newline < 0:
            self._extend_partial(followed, chunk)
            return
        end = last_newline + 1
        carried = b"" if followed.skipping else bytes(followed.partial)  # the first line's start
        before = b"" if followed.skipping else followed.tail + carried  # what precedes this chunk
        lines = chunk[:last_newline].split(b"\n")
        if followed.skipping:
            followed.skipping = False
            del lines[0]  # the end of an over-long line, already rejected
        elif carried:
            lines[0] = carried + lines[0]
        followed.partial.clear()
        feed, limit = followed.parser.feed, self.max_line_bytes
        for line in lines:
            if len(line) > limit:
                self._tally.add(Rejected(LINE_TOO_LONG))
            else:
                feed(line)
        followed.offset = chunk_start + end
        followed.tail = (before[-_TAIL_BYTES:] + chunk[max(0, end - _TAIL_BYTES):end])[-_TAIL_BYTES:]
        self._extend_partial(followed, chunk[end:])

    def _extend_partial(self, followed: FollowedFile, data: bytes) -> None:
        if followed.skipping or not data:
            return
        followed.partial += data
        if len(followed.partial) > self.max_line_bytes:
            self._tally.add(Rejected(LINE_TOO_LONG))  # memory stays bounded: drop it to its newline
            followed.partial.clear()
            followed.skipping = True

    def _finish(self, followed: FollowedFile) -> None:
        """A rotated-away or deleted file that stopped growing: its partial last line is
        final (the writer has moved on), then the file is closed."""
        if followed.partial and not followed.skipping:
            followed.parser.feed(bytes(followed.partial))
            followed.offset += len(followed.partial)
        followed.partial.clear()
        followed.parser.flush()
        followed.close()
        del self.files[followed.identity]
        log.info("stopped following %s (rotated away or deleted)", followed.path)

    def _merge(self) -> None:
        if self._tally:
            self.sink.merge(self.spec.pattern, self.spec.database, self._tally.take())

    def flush(self) -> None:
        for followed in self.files.values():
            followed.parser.flush()
        self._merge()

    def states(self) -> list[FileState]:
        return [FileState(self.spec.pattern, f.path, f.dev, f.ino, f.offset, len(f.head), head_digest(f.head))
                for f in self.files.values()]

    def close(self) -> None:
        for followed in list(self.files.values()):
            followed.close()
        self.files.clear()


class Followers:
    """All file sources, read by one daemon thread; offsets saved to `state_path`."""

    SAVE_EVERY = 1.0

    def __init__(self, specs: list[SourceSpec], sink: Sink, *, max_line_bytes: int, poll_interval: float,
                 rotate_wait: float, state_path: str | None, start_at_end: bool):
        self.sources = [FileSource(spec, sink, max_line_bytes, rotate_wait) for spec in specs]
        self.poll_interval = poll_interval
        self.state_path = state_path
        self.start_at_end = start_at_end
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_saved: list[FileState] | None = None

    def start(self) -> None:
        if self._thread is not None or not self.sources:
            return
        self._stop.clear()
        self.resume()
        self._thread = threading.Thread(target=self._run, name="events-followers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.9) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # mid-read: leave its files to it (a daemon thread)
                log.warning("the file followers did not stop within %.1f s", timeout)
                return
            self._thread = None
        for source in self.sources:
            source.flush()
        self.save_state()
        for source in self.sources:
            source.close()

    def poll_once(self, now: float | None = None) -> bool:
        """One round: scan the globs, read what is new. True when more is waiting."""
        now = time.monotonic() if now is None else now
        more = False
        for source in self.sources:
            source.scan(now, None, self.start_at_end)
            more |= source.read(now, self._stop)
        return more

    def resume(self, now: float | None = None) -> None:
        """Open the files there at startup: at their saved offsets, else per start_at."""
        saved = state_file.load(self.state_path) if self.state_path else []
        now = time.monotonic() if now is None else now
        for source in self.sources:
            entries = {(e.dev, e.ino): e for e in saved if e.source == source.spec.pattern}
            source.scan(now, entries, self.start_at_end)

    def _run(self) -> None:
        last_save = time.monotonic()
        while not self._stop.is_set():
            try:
                more = self.poll_once()
            except Exception:  # a follower must not die: log, wait, go on
                log.exception("following log files failed")
                more = False
            if time.monotonic() - last_save >= self.SAVE_EVERY:
                self._save_logged()
                last_save = time.monotonic()
            if not more:
                self._stop.wait(self.poll_interval)

    def _save_logged(self) -> None:
        try:
            self.save_state()
        except OSError as e:
            log.warning("cannot write the events state file %s: %s", self.state_path, e.strerror)

    def save_state(self) -> None:
        if not self.state_path:
            return
        entries = [entry for source in self.sources for entry in source.states()]
        if entries != self._last_saved:
            state_file.save(self.state_path, entries)
            self._last_saved = entries


def _is_copy(new: FollowedFile, new_size: int, head: bytes, offset: int, tail: bytes) -> bool:
    """`new` holds the same bytes as the original at its beginning and just before where
    the original was left: it is a copy (two app instances' logs with the same banner
    are not)."""
    n = min(len(head), len(new.head))
    if n < _MIN_COPY_HEAD or head[:n] != new.head[:n] or new_size < offset:
        return False
    return not tail or os.pread(new.fd, len(tail), offset - len(tail)) == tail


def _same_head(fd: int, entry: FileState) -> bool:
    return head_digest(os.pread(fd, entry.head_len, 0)) == entry.head_sha256


def _last_line_end(fd: int, size: int) -> int:
    """Just past the last newline: "start at the end" without a half line."""
    start = max(0, size - _NEWLINE_SEARCH)
    tail = os.pread(fd, size - start, start)
    newline = tail.rfind(b"\n")
    return start + newline + 1 if newline >= 0 else (size if start > 0 else 0)
