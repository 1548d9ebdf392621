"""The delivery thread in process: real socket pairs, no daemon subprocess."""

from __future__ import annotations

import os
import threading

from lanchatd.daemon.delivery import Delivery
from lanchatd.daemon.peer import Peer


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_stopped_delivery_thread_leaves_no_file_descriptor_open() -> None:
    before = _open_fds()
    lock = threading.Lock()
    delivery = Delivery(lock, 65536, on_slow=Peer.shutdown, on_error=Peer.shutdown)
    delivery.start()
    with lock:
        delivery.stop_locked()
    delivery.join(5.0)
    assert not delivery.is_alive()
    assert _open_fds() == before
