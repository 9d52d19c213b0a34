"""The write-ahead spool: what makes a 2xx a promise.

Every accepted request is appended to a segment file (Arrow IPC, length-prefixed and checksummed)
before the collector answers; the writer inserts whole segments into the store and deletes them only
after the store said yes. So an acknowledged span survives kill -9 of the collector (the bytes are in
the kernel's page cache; ``fsync=True`` also survives power loss) and an outage of the store (the
segments pile up on disk and drain when it returns). With the spool at its byte limit, or the disk
full, ``append`` raises ``SpoolFull`` and the HTTP layer answers 503 + Retry-After.

Segment names are unique forever (start time in ns + sequence): the writer uses them as ClickHouse
insert deduplication tokens, so replaying a segment that was inserted just before a crash is a no-op.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQ")  # magic, crc32, length
_MAGIC = 0x41575350  # "AWSP"
SUFFIX = ".seg"


class SpoolFull(RuntimeError):
    """No room to accept more: answer 503 with Retry-After."""


@dataclass(frozen=True)
class Segment:
    path: Path
    rows: int  # known for segments written by this process; -1 when found on disk at start

    @property
    def name(self) -> str:
        return self.path.stem


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 32 << 20,
        fsync: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "failed").mkdir(exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._run = f"{time.time_ns():020d}"
        self._seq = 0
        self._fd: int | None = None
        self._cur_path: Path | None = None
        self._cur_bytes = 0
        self._cur_rows = 0
        self._closed: list[Segment] = [Segment(p, -1) for p in sorted(self.dir.glob(f"*{SUFFIX}"))]
        self._bytes = sum(p.stat().st_size for p in self.dir.glob(f"*{SUFFIX}"))
        self._pending_rows = 0
        if self._closed:
            log.info("spool: %d segment(s) from a previous run to replay (%d bytes)", len(self._closed), self._bytes)

    # --- accounting ---
    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def pending_rows(self) -> int:
        """Rows accepted and not yet stored (segments from a previous run not counted until read)."""
        return self._pending_rows

    # --- the request path ---
    def append(self, payload: bytes, rows: int) -> None:
        """Durably append one record; raises SpoolFull (nothing written) when there is no room."""
        record = _HEADER.pack(_MAGIC, zlib.crc32(payload), len(payload)) + payload
        with self._lock:
            if self._bytes + len(record) > self.max_bytes:
                raise SpoolFull(f"spool holds {self._bytes} bytes, its limit is {self.max_bytes}")
            if self._fd is None or self._cur_bytes >= self.segment_bytes:
                self._rotate_locked()
            assert self._fd is not None
            offset = self._cur_bytes
            try:
                _write_all(self._fd, record)
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as e:
                # leave no torn record behind: cut the file back to where the record began
                try:
                    os.ftruncate(self._fd, offset)
                except OSError:
                    self._close_current_locked()
                raise SpoolFull(f"cannot write to the spool at {self.dir}: {e.strerror or e}") from e
            self._cur_bytes += len(record)
            self._cur_rows += rows
            self._bytes += len(record)
            self._pending_rows += rows

    # --- the writer's side ---
    def take(self) -> list[Segment]:
        """Close the open segment (if it has data) and return every closed segment, oldest first."""
        with self._lock:
            if self._fd is not None and self._cur_bytes:
                self._close_current_locked()
            out, self._closed = self._closed, []
            return out

    def give_back(self, segments: list[Segment]) -> None:
        """Segments the writer could not store yet: they go first next time."""
        with self._lock:
            self._closed = segments + self._closed

    def done(self, segment: Segment) -> None:
        size = _size(segment.path)
        segment.path.unlink(missing_ok=True)
        with self._lock:
            self._bytes -= size
            self._pending_rows = max(0, self._pending_rows - max(segment.rows, 0))

    def quarantine(self, segment: Segment) -> Path:
        """A segment the store keeps refusing: moved aside (kept for a human), never silently lost."""
        size = _size(segment.path)
        target = self.dir / "failed" / segment.path.name
        os.replace(segment.path, target)
        with self._lock:
            self._bytes -= size
            self._pending_rows = max(0, self._pending_rows - max(segment.rows, 0))
        return target

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._close_current_locked()

    # --- internals ---
    def _rotate_locked(self) -> None:
        if self._fd is not None:
            self._close_current_locked()
        self._seq += 1
        self._cur_path = self.dir / f"{self._run}-{self._seq:09d}{SUFFIX}"
        self._fd = os.open(self._cur_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._cur_bytes = 0
        self._cur_rows = 0

    def _close_current_locked(self) -> None:
        assert self._fd is not None and self._cur_path is not None
        os.close(self._fd)
        if self._cur_bytes:
            self._closed.append(Segment(self._cur_path, self._cur_rows))
        else:
            self._cur_path.unlink(missing_ok=True)
        self._fd = None
        self._cur_path = None
        self._cur_bytes = 0
        self._cur_rows = 0


def read_records(path: Path) -> tuple[list[memoryview], int]:
    """The intact records of a segment (views into one read of the file), and how many bytes at its end
    were torn or corrupt."""
    data = memoryview(path.read_bytes())
    out = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, crc, length = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start : start + length]
        if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            break
        out.append(payload)
        pos = start + length
    return out, len(data) - pos


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
