"""``/msg`` against the real daemon: it never reaches someone the sender did not mean, and no
``/msg`` line, however it is spaced, holds up anyone else's chat (issue 10)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from tests.support import Daemon, LineClient, join

AMBIGUOUS = (
    '*** Tidak terkirim: bisa jadi "alice", "alice can"; pakai tanda kutip, misalnya '
    '/msg "alice can" PESAN'
)


def _room(daemon: Daemon, clients: list, *nicks: str) -> list[LineClient]:
    """Join ``nicks`` in order, each having read everything up to the last join."""
    joined = []
    for nick in nicks:
        joined.append(join(daemon.port, nick))
        clients.append(joined[-1])
    for index, client in enumerate(joined):
        for later in nicks[index + 1 :]:
            assert client.line() == f"{later} Bergabung!"
    return joined


def test_msg_that_could_name_two_people_is_not_sent(daemon: Daemon, clients: list) -> None:
    alice, alice_can, bob = _room(daemon, clients, "alice", "alice can", "bob")
    bob.send("/msg alice can you send me the answers?")
    assert bob.line() == AMBIGUOUS
    bob.send('/msg "alice" can you send me the answers?')
    assert bob.line() == "*-> alice* can you send me the answers?"
    assert alice.line() == "*bob* can you send me the answers?"
    bob.send('/msg "ALICE CAN" hi')
    assert bob.line() == "*-> alice can* hi"
    assert alice_can.line() == "*bob* hi"
    bob.send("/msg alice can")  # one reading only: alice, text "can"
    assert bob.line() == "*-> alice* can"
    assert alice.line() == "*bob* can"
    bob.send('/msg "carol" hi')
    assert bob.line() == "*** Nickname tidak ada: carol"
    bob.send("done")
    for client in (alice, alice_can, bob):
        assert client.line() == "bob: done", "nothing else reached anyone"


def test_msg_lines_full_of_spaces_do_not_stall_the_room(
    daemon: Daemon, clients: list, figures: Callable[[str], None]
) -> None:
    alice, bob = _room(daemon, clients, "alice", "bob")
    spaced = "/msg nobody " + "x " * 2000  # 4 KB, 2000 words: every prefix is a candidate
    flooders = [join(daemon.port, f"spacer{i}") for i in range(8)]
    clients += flooders
    done = threading.Event()

    def flood(client: LineClient) -> None:
        # 40 lines each: a burst of 20, then paced at the default 10 a second.
        for _ in range(40):
            if done.is_set():
                return
            client.send(spaced)
            time.sleep(0.05)

    threads = [threading.Thread(target=flood, args=(f,), daemon=True) for f in flooders]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        for i in range(20):
            sent = time.monotonic()
            alice.send(f"ping {i}")
            while bob.line() != f"alice: ping {i}":
                pass
            latencies.append(time.monotonic() - sent)
            time.sleep(0.05)
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    figures(
        f"/msg with 2000 spaces from 8 clients: chat latency median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 0.5, latencies
