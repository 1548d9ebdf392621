"""An append-only log of checksummed records: the cheapest step that survives ``kill -9``.

History (history.py) writes each delivery round's new entries here, one ``write()``, before
the round is sent, and commits them to SQLite later on its writer thread. A ``write()`` into
the page cache survives the process dying, as a WAL commit with ``synchronous=NORMAL`` does,
for a few µs instead of SQLite's fixed ~15 µs (and 0.1-0.4 ms of wall time on an idle CPU).

Why it is shaped this way:

- **Records.** Each is ``<length><crc32><payload>`` (little-endian 32-bit). What a process
  killed in the middle of a ``write()`` leaves is a torn last record: reading stops at the
  first record that is short or fails its checksum, and says how many bytes it ignored. A
  failed or short write is undone (the file is cut back to where it was), so a record never
  follows a torn one. The payload is the caller's; this module only frames it.
- **Segments, never rewritten.** The log is numbered files, ``<stem>.1``, ``<stem>.2``, …;
  the newest takes the appends. The caller :meth:`AppendLog.rotate` s to a new one when the
  current one is large, and :meth:`AppendLog.release` s whole segments once all they hold
  is kept elsewhere: they are unlinked, never truncated or renamed over. Emptying or
  replacing one file instead cost milliseconds each time under load: on ext4 both make the
  kernel write the file's data out at once (``auto_da_alloc``), and rounds logged while the
  store committed kept the file from ever being all committed. A segment unlinked before
  the kernel's writeback never reaches the disk at all.
- Files are mode 0640 (tightened when found looser) and never opened through a symlink.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Final

from lanchatd.core.tags import ORIGIN, MessageId

_HEADER: Final = struct.Struct("<II")
#: Largest record read back: anything longer is a damaged header, not a record.
MAX_RECORD: Final = 256 * 1024 * 1024
_FLAGS: Final = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
#: The mark of a segment a previous run left, until mark_found says it.
_UNKNOWN: Final = MessageId(2**63 - 1, 2**63 - 1)


class AppendLog:
    """The segments ``<stem>.<n>``: records are appended to the newest.

    Each segment has a *mark*, the newest id in it (the caller's, given with each record):
    a segment can go once the caller keeps everything up to its mark elsewhere.
    """

    __slots__ = (
        "_fd",
        "_mark",
        "_number",
        "_opened",
        "_retired",
        "size",
        "stem",
        "total",
        "unreadable",
    )

    def __init__(self, stem: Path) -> None:
        self.stem = stem
        self._fd: int | None = None
        #: The current segment's number (created at its first append) and mark.
        self._number = 0
        self._mark = ORIGIN
        #: Older segments, oldest first: their paths, marks and sizes.
        self._retired: list[tuple[Path, MessageId, int]] = []
        #: Bytes in the current segment, and in all of them.
        self.size = 0
        self.total = 0
        #: Segments open() found but could not read, and why.
        self.unreadable: list[tuple[Path, str]] = []
        self._opened = False

    def open(self) -> tuple[list[bytes], int]:
        """Read the segments a previous run left, oldest first: their records, and how many
        bytes were ignored after the last whole record of each (torn tails, cut off here).
        They are kept until released, with the mark given to :meth:`mark_found`. A segment
        that cannot be read (a symlink, a directory, not ours) is left alone and named in
        ``unreadable``; the others are read all the same."""
        found = sorted(
            (int(suffix), path)
            for path in self.stem.parent.glob(f"{self.stem.name}.*")
            if (suffix := path.name.removeprefix(f"{self.stem.name}.")).isascii()
            and suffix.isdigit()
        )
        records: list[bytes] = []
        torn = 0
        for _, path in found:
            try:
                fd = os.open(path, _FLAGS)
            except OSError as error:
                self.unreadable.append((path, error.strerror or str(error)))
                continue
            try:
                _tighten(fd)
                data = _read_all(fd)
                kept, whole = _records(data)
                if whole < len(data):
                    os.ftruncate(fd, whole)
            finally:
                os.close(fd)
            records += kept
            torn += len(data) - whole
            self._retired.append((path, _UNKNOWN, whole))
            self.total += whole
        self._number = found[-1][0] if found else 0
        self._opened = True
        return records, torn

    def mark_found(self, mark: MessageId) -> None:
        """The newest id in the segments :meth:`open` found, once the caller knows it."""
        self._retired = [(p, mark if m is _UNKNOWN else m, s) for p, m, s in self._retired]

    @property
    def is_open(self) -> bool:
        return self._opened

    def append(self, payload: bytes, mark: MessageId) -> None:
        """Add one record (ids up to ``mark``) with one ``write()``. Raises OSError when it
        could not be written whole; the segment is then as it was."""
        if not self._opened:
            raise OSError("the log is not open")
        if self._fd is None:
            self._number += 1
            self._fd = os.open(self._path(self._number), _FLAGS, 0o640)
            self.size = 0
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, record)
        except OSError:
            self._undo()
            raise
        if written != len(record):
            self._undo()
            raise OSError(f"short write to {self._path(self._number)}")
        self.size += written
        self.total += written
        self._mark = mark

    def rotate(self) -> None:
        """Close the current segment: the next record starts a new one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._retired.append((self._path(self._number), self._mark, self.size))
            self.size = 0

    def release(self, through: MessageId) -> None:
        """Remove the older segments whose records are all at or before ``through``."""
        self._retired = [
            (path, mark, size)
            for path, mark, size in self._retired
            if mark > through or not self._removed(path, size)
        ]

    def reset(self, payloads: list[bytes], mark: MessageId) -> None:
        """Make the log hold only ``payloads``: a new segment with them is written before
        the others are removed. Raises OSError (then nothing was removed)."""
        self.rotate()
        old, self._retired = self._retired, []
        try:
            for payload in payloads:
                self.append(payload, mark)
        except OSError:
            self.rotate()
            self._retired = old + self._retired
            raise
        self._retired = [(p, m, s) for p, m, s in old if not self._removed(p, s)]

    def close(self, *, remove: bool = False) -> None:
        """Close the log; ``remove`` every segment too when nothing in them is needed."""
        if not self._opened:
            return
        self.rotate()
        self._opened = False
        if remove:
            self._retired = [(p, m, s) for p, m, s in self._retired if not self._removed(p, s)]

    def _removed(self, path: Path, size: int) -> bool:
        """Unlink ``path``: whether it is gone."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
        self.total -= size
        return True

    def _path(self, number: int) -> Path:
        return self.stem.with_name(f"{self.stem.name}.{number}")

    def _undo(self) -> None:
        """Cut the segment back to its last whole record after a failed write."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self.size)
        except OSError:
            # Nothing may follow a torn record: the next record starts a new segment.
            self.rotate()


def _tighten(fd: int) -> None:
    """Mode 0640 or tighter for a segment found looser (say, restored with cp)."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & ~0o640:
        os.fchmod(fd, mode & 0o640)


def _read_all(fd: int) -> bytes:
    chunks = []
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _records(data: bytes) -> tuple[list[bytes], int]:
    """The whole records at the start of ``data``, and the offset where they end."""
    records = []
    at = 0
    view = memoryview(data)
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        start = at + _HEADER.size
        if length > MAX_RECORD or start + length > len(data):
            break
        payload = bytes(view[start : start + length])
        if zlib.crc32(payload) != crc:
            break
        records.append(payload)
        at = start + length
    return records, at
