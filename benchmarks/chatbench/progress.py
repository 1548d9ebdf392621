"""The throughput window's shared state: how far every generator process has read each sender.

A sender keeps at most ``window`` messages in flight, and a message stays in flight until
*every* generator process has received it (one observer per process counts each sender's
records, see loadgen.py). Counting only in the sender's own process let a reader in another
process that got no CPU for ~150 ms fall over the server's send buffer behind and be
dropped as a slow consumer. All servers get the same rule, so the comparison stays fair.

The counts are one int64 per (process, sender) in a memfd that every process maps: each
process writes only its own row, a sender reads its column. Aligned 8-byte stores are atomic
on the machines this runs on; a stale read only makes the window smaller for a moment.
"""

from __future__ import annotations

import mmap
import os
from typing import Final

_SLOT: Final = 8  # bytes of one int64 count


def create(processes: int, senders: int) -> int:
    """A fresh zeroed memfd for ``processes`` times ``senders`` counts; the caller closes it."""
    fd = os.memfd_create("chatbench-progress", os.MFD_CLOEXEC)
    os.ftruncate(fd, max(1, processes * senders) * _SLOT)
    return fd


class Progress:
    """One process's view of the shared counts: it adds to its row, reads every row."""

    def __init__(self, fd: int, processes: int, senders: list[int], index: int) -> None:
        self._map = mmap.mmap(fd, max(1, processes * len(senders)) * _SLOT)
        self._counts = memoryview(self._map).cast("q")
        self._width = len(senders)
        self._column = {sender: column for column, sender in enumerate(senders)}
        self._row = index * self._width
        self._rows = range(0, processes * self._width, self._width)

    def add(self, sender: int, count: int) -> None:
        """This process received ``count`` more of ``sender``'s messages."""
        self._counts[self._row + self._column[sender]] += count

    def slowest(self, sender: int) -> int:
        """How many of ``sender``'s messages every process has received."""
        column = self._column[sender]
        counts = self._counts
        return min(counts[row + column] for row in self._rows)

    def close(self) -> None:
        self._counts.release()
        self._map.close()
