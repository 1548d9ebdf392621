"""Sending one segment to many sockets, from two threads at once when the room is large.

A round at 1000 clients is 1000 ``send`` calls, and the last client waits for all of them.
Nearly all of a loopback TCP send is kernel time, spent without the GIL, and each send wakes
the reader of that socket, which the kernel often runs on the sending CPU: one thread sending
a round of 1000 used 4.4 ms of CPU but took 7.7 ms, preempted ~55 times. With a helper thread
taking the next socket from the same iterator, whichever thread is not preempted goes on, and
on two cores they send side by side: the round took 4.6 ms (p99 5.4 against 9.3 ms) for the
same CPU (``python -m benchmarks.roundbench``, which compares both).

Which thread sends to which socket does not matter: each socket is sent to once a call, and
the call returns only when both are done, so every client still gets its segments in order.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, ValuesView
from typing import Final

#: A round for fewer clients than this is sent by the calling thread alone: waking the helper
#: costs more than it saves.
HELP_FROM: Final = 64

_Job = tuple[Iterator[tuple[int, socket.socket]], bytes, int, list[tuple[int, int]]]


def _send_all(job: _Job) -> None:
    """Send from ``job``'s shared iterator until it is empty, noting every short send."""
    pairs, data, flags, short = job
    size = len(data)
    for index, sock in pairs:
        try:
            sent = sock.send(data, flags)
        except OSError:  # BlockingIOError too: the caller's caller tells them apart
            sent = 0
        if sent != size:
            short.append((index, sent))


class FanOut:
    """The calling thread plus, on a machine with more than one CPU, one helper thread."""

    def __init__(self) -> None:
        #: Locked from the start; released (only by ``send`` and ``close``, which the caller
        #: serialises) to wake the helper, which alone acquires it.
        self._go = threading.Lock()
        self._go.acquire()
        #: Held by the helper while it sends: the caller takes it to know the helper is done
        #: or has not started, and then withdraws the job.
        self._claim = threading.Lock()
        self._job: _Job | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        if len(os.sched_getaffinity(0)) > 1:
            self._thread = threading.Thread(target=self._help, name="fan-out", daemon=True)

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def is_alive(self) -> bool:
        """False once a helper that was started has ended."""
        thread = self._thread
        return thread is None or not thread.ident or thread.is_alive()

    def close(self) -> None:
        """End the helper; ``send`` goes on alone."""
        with self._claim:
            self._closed = True
            self._wake()

    def send(
        self,
        socks: list[socket.socket] | ValuesView[socket.socket],
        count: int,
        data: bytes,
        flags: int,
    ) -> list[tuple[int, int]]:
        """Send ``data`` to each of the ``count`` sockets in ``socks``; return (index, bytes
        sent) for each that did not take all of it, 0 if its send failed.

        Both threads draw from one iterator over ``socks``: a list or a dict's values, whose
        iterators hand out each item once under the GIL. Calls must not overlap (the round
        lock), nor overlap ``close``.
        """
        short: list[tuple[int, int]] = []
        job: _Job = (enumerate(socks), data, flags, short)
        thread = self._thread
        helped = count >= HELP_FROM and thread is not None and thread.is_alive()
        if not helped:
            _send_all(job)
            return short
        self._job = job
        self._wake()
        try:
            _send_all(job)
        finally:  # the helper is done, or never starts this job: nothing sends after return
            with self._claim:
                self._job = None
                error, self._error = self._error, None
        if error is not None:
            raise error
        return short

    def _wake(self) -> None:
        # Only one thread releases (under the round lock, or closing) and only the helper
        # acquires: an unlocked _go is a wake-up the helper has yet to take, and it will find
        # the newest job then.
        if self._go.locked():
            self._go.release()

    def _help(self) -> None:
        while True:
            self._go.acquire()
            with self._claim:
                if self._closed:
                    return
                if self._job is not None:
                    try:
                        _send_all(self._job)
                    except BaseException as error:  # the caller re-raises it
                        self._error = error
