"""A round's sends on two cores: the delivery thread and a helper take outboxes from one queue.

At N = 1000 a round is ~1000 loopback ``send`` calls, ~90 % of it the kernel's TCP work in the
sending thread (benchmarks/roundbench.py). ``send`` releases the GIL, so a second thread puts
part of that work on the second core and the last client of a round gets its line sooner.

The two threads claim outboxes one at a time from a shared counter, so neither waits for the
other's share: when the helper gets no CPU (a busy machine), the delivery thread sends the
whole round itself and waits at most for the one outbox the helper is in the middle of. Each
outbox is flushed by exactly one thread, and the delivery thread acts on the outcomes (drops,
closes, counters) only once the round is complete, so nothing else about a round changes.
Small rounds stay on one thread: waking the helper costs more than a few sends.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Sequence
from typing import Final

from lanchatd.daemon.journal import Outbox, flush_all, flush_one

#: Rounds to fewer clients than this are sent by the delivery thread alone.
SPLIT_MIN: Final = 128


class _Round:
    """One shared round: the outboxes, a counter both threads claim them from, the outcomes."""

    __slots__ = ("busy", "claims", "failure", "outboxes", "outcomes", "sent")

    def __init__(self, outboxes: Sequence[Outbox]) -> None:
        self.outboxes = outboxes
        self.claims = itertools.count()  # next() on it is atomic under the GIL
        self.outcomes: list[bool | Exception] = [False] * len(outboxes)
        self.sent = 0
        #: Held by the helper while it works on this round.
        self.busy = threading.Lock()
        self.failure: BaseException | None = None

    def work(self, flags: int) -> int:
        """Flush outboxes until none is left to claim; the bytes this thread sent."""
        outboxes, outcomes = self.outboxes, self.outcomes
        count = len(outboxes)
        sent = 0
        for index in self.claims:
            if index >= count:
                break
            outcomes[index], taken = flush_one(outboxes[index], flags)
            sent += taken
        return sent


class Senders:
    """``flush_all`` for the delivery thread, shared with a helper thread when that pays."""

    def __init__(self, flags: int, split_min: int = SPLIT_MIN) -> None:
        """Flush with ``flags``; share rounds of ``split_min`` outboxes or more, given a
        second CPU to run on."""
        self._flags = flags
        self._split_min = split_min
        self._rounds: queue.SimpleQueue[_Round | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if len(os.sched_getaffinity(0)) > 1:
            self._thread = threading.Thread(target=self._run, name="delivery-helper", daemon=True)
            self._thread.start()

    def flush(self, outboxes: Sequence[Outbox]) -> tuple[list[bool | Exception], int]:
        """As ``flush_all(outboxes)``; the outcomes are in the order of ``outboxes``."""
        if self._thread is None or len(outboxes) < self._split_min:
            return flush_all(outboxes, self._flags)
        round_ = _Round(outboxes)
        self._rounds.put(round_)
        try:
            sent = round_.work(self._flags)
        finally:
            with round_.busy:  # the helper's last outbox, if it is in the middle of one
                pass
        if round_.failure is not None:
            raise round_.failure
        return round_.outcomes, sent + round_.sent

    def close(self) -> None:
        """Stop the helper thread (the delivery thread does, as it ends)."""
        if self._thread is not None:
            self._rounds.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (round_ := self._rounds.get()) is not None:
            with round_.busy:
                try:
                    round_.sent = round_.work(self._flags)
                except BaseException as failure:  # re-raised by the delivery thread
                    round_.failure = failure
