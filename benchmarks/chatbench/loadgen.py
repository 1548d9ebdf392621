"""One load-generator process: an asyncio loop driving its share of the clients.

Clients are ``asyncio.BufferedProtocol`` objects: the kernel copies received bytes straight
into each reader's own growing ``bytearray`` (no bytes object per read), and the per-read
work in Python is recording where the read ended and when. Verification runs in batches
every ~100 ms over all readers of the process (see verify.py). In latency mode readers are
read with ``recvmsg`` instead, so that each read carries the kernel's receive time.

Roles (decided by the runner, see runner.py): every client reads everything (except the
stalled ones, which stop reading when the measurement starts); S clients also send; in
throughput mode a sender keeps at most ``window`` messages in flight, where a message stops
being in flight once every process's *observer* of its sender (a reading client there, never
the sender) has received it: the slowest process sets the pace (see progress.py). One scheme
for all servers keeps the comparison fair (ncat does not echo).

The process obeys commands from the runner (pickled tuples over a socketpair, see
``main``) and answers each. Every wait is bounded; the process exits when the pipe closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from benchmarks.chatbench import records
from benchmarks.chatbench.progress import Progress
from benchmarks.chatbench.verify import RELAYS, Inbox, Verifier

VERIFY_INTERVAL: Final = 0.1
DRAIN_INTERVAL: Final = 0.05
#: How often senders look whether other processes have read far enough to send more: their
#: progress is not an event here.
WINDOW_POLL: Final = 0.001
#: Linux: SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), receive times as a struct timespec.
SO_TIMESTAMPNS: Final = 35
_TIMESPEC: Final = struct.Struct("@qq")
_ANCILLARY: Final = socket.CMSG_SPACE(_TIMESPEC.size)
#: After a run, how long stalled readers read again to learn whether the server closed them.
STALLED_CHECK: Final = 0.5
_NEWLINE: Final = 10
#: The tutorial server's welcome to a newcomer, the last thing of its handshake.
TUTORIAL_WELCOME: Final = b"Terkoneksi dengan Server!"
#: IRC (ngircd): the channel every client joins; the end of its NAMES list ends the join.
IRC_CHANNEL: Final = b"#bench"
IRC_END_OF_NAMES: Final = b" 366 "


@dataclass
class WorkerSpec:
    """What one generator process does; built by the runner."""

    index: int
    server: str  # a name from servers.SERVERS: how to join and speak (see Client)
    host: str
    port: int
    clients: list[int]  # client ids (nick c%04d) this process opens
    senders: list[int]  # every sender in the run (all processes)
    observers: dict[int, int]  # every sender id (all processes) -> local observer client id
    progress_fd: int  # the shared counts (progress.py), passed to the process
    processes: int
    stalled: list[int]  # local client ids that stop reading when the measurement starts
    echo: bool
    epoch_ns: int
    join_timeout: float = 60.0
    connect_concurrency: int = 4
    #: lanchatd's web port: this process's clients are browsers there (websocket.py).
    web_port: int = 0


class Client(asyncio.BufferedProtocol):
    """One chat connection: handshake, then reading into its inbox (and maybe sending).

    How it joins, by server: lanchatd: ``NICK``, the nickname as a line, then the join line
    and the welcome line; naive (the tutorial's server): ``NICK``, the bare nickname (as
    the tutorial client sends it), then the welcome (its joins and welcome carry no line
    ends); ncat: its first announce line; ngircd: NICK, USER and JOIN sent at once, then the
    end of the channel's NAMES list. Senders on ngircd say ``PRIVMSG #bench :{record}``.
    """

    def __init__(self, worker: Worker, cid: int) -> None:
        self.worker = worker
        self.cid = cid
        self.nick = records.nick(cid).encode()
        self.inbox = Inbox()
        self.transport: asyncio.Transport | None = None
        self.joined_ns = 0
        #: The server sent its first byte (NICK, or ncat's announce): it accepted us.
        self.accepted = False
        #: Set once the server accepted the client, or it failed or was closed.
        self.settled = asyncio.Event()
        self.lines = 0
        self.lost = False
        self.rx_bytes = 0
        self.protocol = worker.spec.server
        self.greeted = self.protocol not in ("lanchatd", "naive")
        self.command = b"PRIVMSG " + IRC_CHANNEL + b" :" if self.protocol == "ngircd" else b""
        # Sender state.
        self.seq = 0
        self.window = 0
        self.running = False
        self.head = records.head(cid)
        # Observer state: the senders (of every process) whose messages this client counts.
        self.watch: list[tuple[bytes, int]] = []
        self.scanned = 0
        # Latency mode: a duplicate of the socket, read with recvmsg (see _read_raw).
        self.raw: socket.socket | None = None
        self.realtime_offset = 0

    # asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.protocol == "ngircd":
            nick = self.nick
            transport.write(b"NICK %s\r\nUSER %s 0 * :%s\r\nJOIN %s\r\n"
                            % (nick, nick, nick, IRC_CHANNEL))  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.running = False
        self.worker.on_lost(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.inbox.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        """Before the measurement: handshake, then discard whole lines (joins, announces)."""
        inbox = self.inbox
        start = inbox.end
        end = inbox.end = start + nbytes
        self.rx_bytes += nbytes
        buf = inbox.buf
        if self.joined_ns:
            # Joined, waiting for the measurement: drop whole lines, keep a partial one.
            if buf[end - 1] == _NEWLINE:
                inbox.end = 0
            else:
                inbox.keep_tail()
            return
        if not self.accepted:
            self.accepted = True
            self.worker.on_accepted(self)
        if not self.greeted:
            if end < 4:
                return
            if bytes(buf[:4]) != b"NICK":
                self.worker.fail(self, f"expected NICK, got {bytes(buf[:end])!r}")
                return
            self.greeted = True
            inbox.discard(4)
            start = 0
            assert self.transport is not None
            self.transport.write(self.nick + (b"" if self.protocol == "naive" else b"\n"))
        if not self._handshake_done(start):
            return
        self.joined_ns = time.monotonic_ns()
        self.worker.on_joined(self)
        inbox.keep_tail()

    def _handshake_done(self, start: int) -> bool:
        """Whether the bytes up to now complete the join; ``start``: where the new ones begin."""
        buf, end = self.inbox.buf, self.inbox.end
        if self.protocol == "naive":
            return buf.find(TUTORIAL_WELCOME, 0, end) >= 0
        if self.protocol == "ngircd":
            return buf.find(IRC_END_OF_NAMES, 0, end) >= 0
        self.lines += buf.count(b"\n", start, end)
        if self.lines < (2 if self.protocol == "lanchatd" else 1):
            return False
        if self.protocol == "lanchatd" and not buf.startswith(self.nick + b" "):
            first = bytes(buf[: buf.find(b"\n")])
            self.worker.fail(self, f"refused: {first.decode(errors='replace')}")
            return False
        return True

    # measurement phase ------------------------------------------------------------------------

    def measure(self, *, kernel_stamps: bool) -> None:
        """From now on every received byte goes to verification."""
        inbox = self.inbox
        if self.protocol == "naive":
            inbox.end = 0  # joins and welcome, without line ends: none of it is a record
        inbox.ends.clear()
        inbox.times.clear()
        inbox.consumed = 0
        self.scanned = inbox.end
        if kernel_stamps and self.transport is not None and self._read_raw():
            return
        # Instance attribute beats the class method: the hot path becomes one bound call.
        self.buffer_updated = inbox.updated if not self.watch else self._observe  # type: ignore[method-assign]

    def _read_raw(self) -> bool:
        """Read with ``recvmsg`` and SO_TIMESTAMPNS instead of through the transport.

        Each read then carries the kernel's receive time of its last segment, which leaves
        out how long this event loop took to get round to the socket (with 500 sockets per
        process that is milliseconds). A duplicate descriptor of the same socket is watched
        directly; the transport (paused for reading) still writes.
        """
        assert self.transport is not None
        wrapped = self.transport.get_extra_info("socket")
        if wrapped is None:
            return False
        raw = socket.socket(fileno=os.dup(wrapped.fileno()))
        raw.setblocking(False)
        try:
            raw.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            raw.close()
            return False
        self.raw = raw
        self.realtime_offset = time.time_ns() - time.monotonic_ns()
        self.transport.pause_reading()
        self.worker.loop.add_reader(raw.fileno(), self._raw_readable)
        return True

    def _raw_readable(self) -> None:
        inbox = self.inbox
        raw = self.raw
        assert raw is not None
        try:
            nbytes, ancillary, _, _ = raw.recvmsg_into([inbox.get_buffer()], _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            nbytes, ancillary = 0, []
        if not nbytes:
            self.worker.loop.remove_reader(raw.fileno())
            self.connection_lost(None)
            return
        now = time.monotonic_ns()
        inbox.end = end = inbox.end + nbytes
        inbox.ends.append(end)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                stamp = seconds * 1_000_000_000 + nanoseconds - self.realtime_offset
                inbox.times.append(stamp)
                self.worker.lag.add(now - stamp)
                break
        else:
            inbox.times.append(now)

    def close_raw(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            with contextlib.suppress(ValueError, OSError):
                self.worker.loop.remove_reader(raw.fileno())
            raw.close()

    def _observe(self, nbytes: int) -> None:
        inbox = self.inbox
        inbox.updated(nbytes)
        end = inbox.end
        buf = inbox.buf
        # A marker is 8 bytes: count those ending in the new bytes (none twice, none missed).
        start = max(0, self.scanned - 7)
        self.scanned = end
        add = self.worker.progress.add
        progressed = False
        for marker, cid in self.watch:
            seen = buf.count(marker, start, end)
            if seen:
                add(cid, seen)
                progressed = True
        if progressed:
            # The other processes read this stream too: their progress may make room for
            # any local sender, not only for those whose records arrived here just now.
            self.worker.fill()

    def discard(self, nbytes: int) -> None:
        self.inbox.end = 0

    def compacted(self, consumed: int) -> None:
        self.scanned = max(0, self.scanned - consumed)

    def fill(self) -> None:
        room = self.window - self.seq + self.worker.progress.slowest(self.cid)
        if room <= 0 or self.transport is None:
            return
        stamp = time.monotonic_ns() // 1000 - self.worker.epoch_us
        self.transport.write(
            records.encode_many(self.head, self.cid, self.seq, room, stamp, self.command)
        )
        self.seq += room

    def send_one(self) -> None:
        if not self.running or self.transport is None:
            return
        stamp = time.monotonic_ns() // 1000 - self.worker.epoch_us
        self.transport.write(records.encode(self.head, self.cid, self.seq, stamp, self.command))
        self.seq += 1


class Lag:
    """How long after the kernel received a read this process got to it (latency mode)."""

    __slots__ = ("count", "peak", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.peak = 0

    def add(self, nanoseconds: int) -> None:
        self.count += 1
        self.total += nanoseconds
        self.peak = max(self.peak, nanoseconds)


class Worker:
    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.epoch_us = spec.epoch_ns // 1000
        self.loop = asyncio.get_running_loop()
        # websocket.py builds on Client, so it is imported once this module is.
        from benchmarks.chatbench.websocket import WebSocketClient  # noqa: PLC0415

        kind = WebSocketClient if spec.web_port else Client
        self.clients = {cid: kind(self, cid) for cid in spec.clients}
        self.stalled = [self.clients[c] for c in spec.stalled]
        self.readers = [c for c in self.clients.values() if c.cid not in spec.stalled]
        self.senders = [self.clients[s] for s in spec.senders if s in self.clients]
        self.progress = Progress(spec.progress_fd, spec.processes, spec.senders, spec.index)
        for cid in spec.senders:
            observer = self.clients[spec.observers[cid]]
            observer.watch.append((records.head(cid), cid))
        self.verifier = Verifier(
            [c.cid for c in self.readers],
            spec.senders,
            echo=spec.echo,
            relay=RELAYS.get(spec.server),
            epoch_ns=spec.epoch_ns,
        )
        self.inboxes = [(i, c.inbox) for i, c in enumerate(self.readers)]
        self.joined = 0
        self.failures: list[str] = []
        self.lost_after_join = 0
        self.measuring = False
        self.finished = asyncio.Event()
        self.all_joined = asyncio.Event()
        self.cpu_marks: dict[str, float] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handles: list[asyncio.TimerHandle] = []
        self.lag = Lag()

    # events from clients ------------------------------------------------------------------

    def on_accepted(self, client: Client) -> None:
        client.settled.set()

    def on_joined(self, client: Client) -> None:
        self.joined += 1
        client.settled.set()
        self._check_joined()

    def on_lost(self, client: Client) -> None:
        client.settled.set()
        if client.joined_ns:
            self.lost_after_join += 1
        elif not self.finished.is_set():
            self.failures.append(f"{client.nick.decode()}: closed before joining")
        self._check_joined()

    def fail(self, client: Client, why: str) -> None:
        self.failures.append(f"{client.nick.decode()}: {why}")
        client.settled.set()
        if client.transport is not None:
            client.transport.abort()

    def _check_joined(self) -> None:
        if self.joined + len(self.failures) >= len(self.clients):
            self.all_joined.set()

    # commands -----------------------------------------------------------------------------

    def reply(self, *message: Any) -> None:
        self.conn.send(message)

    def on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.finished.set()
            return
        name, *args = message
        try:
            getattr(self, f"cmd_{name}")(*args)
        except Exception:
            self.reply("error", traceback.format_exc())

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.reply("error", "".join(traceback.format_exception(error)))

    def cmd_connect(self, start_ns: int) -> None:
        self.spawn(self._connect(start_ns))

    async def _connect(self, start_ns: int) -> None:
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        cpu = time.process_time()
        spec = self.spec
        # At most this many clients of this process between connect() and the server's first
        # byte: a burst of connects beyond the listen backlog (ncat's is 10) overflows it, and
        # then (SYN cookies) a connection whose final ACK was dropped hangs until the client
        # sends, which a reader never does. The rest of a handshake is not held back.
        gate = asyncio.Semaphore(spec.connect_concurrency)

        async def open_one(client: Client) -> None:
            async with gate:
                try:
                    port = spec.web_port or spec.port
                    await self.loop.create_connection(lambda: client, spec.host, port)
                except OSError as error:
                    self.failures.append(f"{client.nick.decode()}: connect: {error}")
                    self._check_joined()
                    return
                await client.settled.wait()

        for client in self.clients.values():
            self.spawn(open_one(client))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_joined.wait(), spec.join_timeout)
        joins = [c.joined_ns for c in self.clients.values() if c.joined_ns]
        missing = len(self.clients) - len(joins)
        if missing and not self.failures:
            self.failures.append(f"{missing} clients did not join within {spec.join_timeout}s")
        self.reply("joined", joins, self.failures[:20], missing, time.process_time() - cpu)

    def cmd_status(self) -> None:
        self.reply("status", sum(c.rx_bytes for c in self.clients.values()), self.lost_after_join)

    def cmd_start(self, plan: dict[str, Any]) -> None:
        """Measure from now; senders start at plan['start_ns'] and stop at plan['stop_ns']."""
        for client in self.stalled:
            if client.transport is not None:
                client.transport.pause_reading()
        # Latency mode times reads by the kernel's receive stamp (an ioctl per read: too
        # dear at throughput-mode read rates, where latency is mostly queueing anyway).
        kernel_stamps = plan["mode"] == "latency"
        for client in self.readers:
            client.measure(kernel_stamps=kernel_stamps)
        self.measuring = True
        self.verifier.set_window(plan["window_ns"], plan["stop_ns"])
        at = self._at
        self.handles.append(at(plan["window_ns"], self._mark_cpu, "window"))
        self.handles.append(at(plan["stop_ns"], self._stop, plan))
        if plan["mode"] == "throughput":
            for sender in self.senders:
                sender.window = plan["window"]
                sender.running = True
            self.handles.append(at(plan["start_ns"], self._window_tick))
        else:
            self._pace(plan)
        self.handles.append(self.loop.call_later(VERIFY_INTERVAL, self._verify_tick))

    def _at(self, when_ns: int, callback: Any, *args: Any) -> asyncio.TimerHandle:
        delay = (when_ns - time.monotonic_ns()) / 1e9
        return self.loop.call_at(self.loop.time() + max(0.0, delay), callback, *args)

    def _window_tick(self) -> None:
        """Fill every window, then again every ``WINDOW_POLL`` until the senders stop: what
        other processes read makes room without an event in this one."""
        if self.fill():
            self.loop.call_later(WINDOW_POLL, self._window_tick)

    def fill(self) -> bool:
        """Top up the window of every running sender; False once none runs."""
        running = False
        for sender in self.senders:
            if sender.running and sender.window:
                sender.fill()
                running = True
        return running

    def _pace(self, plan: dict[str, Any]) -> None:
        """Open loop: the run's messages are spread evenly over time and over the senders."""
        interval_ns = int(1e9 / plan["rate"])
        count = len(self.spec.senders)
        local = {s.cid: s for s in self.senders}
        for slot, cid in enumerate(self.spec.senders):
            if cid in local:
                local[cid].running = True
                first = plan["start_ns"] + slot * interval_ns
                self.spawn(self._paced(local[cid], first, interval_ns * count, plan["stop_ns"]))

    async def _paced(self, sender: Client, first_ns: int, period_ns: int, stop_ns: int) -> None:
        due = first_ns
        while due < stop_ns and sender.running:
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            sender.send_one()
            due += period_ns

    def _mark_cpu(self, name: str) -> None:
        self.cpu_marks[name] = time.process_time()

    def _stop(self, plan: dict[str, Any]) -> None:
        self._mark_cpu("stop")
        for sender in self.senders:
            sender.running = False
        sent = {s.cid: s.seq for s in self.senders}
        cpu = self.cpu_marks["stop"] - self.cpu_marks.get("window", self.cpu_marks["stop"])
        self.reply("stopped", sent, cpu)

    def _verify(self) -> None:
        self.verifier.feed(self.inboxes)
        for client in self.readers:
            consumed = client.inbox.consumed
            if consumed:
                client.inbox.consumed = 0
                client.compacted(consumed)

    def _verify_tick(self) -> None:
        if not self.measuring:
            return
        try:
            self._verify()
        except Exception:
            self.measuring = False
            self.reply("error", traceback.format_exc())
            return
        self.handles.append(self.loop.call_later(VERIFY_INTERVAL, self._verify_tick))

    def cmd_drain(self, sent: dict[int, int], deadline_ns: int) -> None:
        self.measuring = False
        self.spawn(self._drain(sent, deadline_ns))

    async def _drain(self, sent: dict[int, int], deadline_ns: int) -> None:
        while True:
            self._verify()
            if not self.verifier.missing(sent) or time.monotonic_ns() >= deadline_ns:
                break
            await asyncio.sleep(DRAIN_INTERVAL)
        drained_ns = time.monotonic_ns()
        tally = self.verifier.finish(sent)
        stalled_dropped = await self._stalled_dropped()
        readers_dropped = sum(1 for c in self.readers if c.lost)
        self.reply(
            "result",
            {
                "tally": tally.as_dict(),
                "cpu_total": time.process_time(),
                "drained_ns": drained_ns,
                "readers_dropped": readers_dropped,
                "stalled_dropped": stalled_dropped,
                "rx_bytes": sum(c.rx_bytes for c in self.clients.values()),
                "lag": (self.lag.count, self.lag.total, self.lag.peak),
            },
        )

    async def _stalled_dropped(self) -> int:
        """How many stalled readers the server has closed (it shows once they read again)."""
        if not self.stalled:
            return 0
        for client in self.stalled:
            client.buffer_updated = client.discard  # type: ignore[method-assign]
            if client.transport is not None and not client.lost:
                client.transport.resume_reading()
        deadline = time.monotonic() + STALLED_CHECK
        while time.monotonic() < deadline and not all(c.lost for c in self.stalled):
            await asyncio.sleep(0.02)
        return sum(1 for c in self.stalled if c.lost)

    def cmd_close(self) -> None:
        for handle in self.handles:
            handle.cancel()
        for client in self.clients.values():
            client.close_raw()
            if client.transport is not None:
                client.transport.abort()
        self.finished.set()

    async def run(self) -> None:
        self.loop.add_reader(self.conn.fileno(), self.on_command)
        self.reply("ready", os.getpid())
        try:
            await self.finished.wait()
        finally:
            self.loop.remove_reader(self.conn.fileno())
            for task in list(self.tasks):
                task.cancel()
            for client in self.clients.values():
                client.close_raw()
                if client.transport is not None:
                    client.transport.abort()
            await asyncio.sleep(0)


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Run a generator process until told to close (or the pipe closes)."""

    async def main() -> None:
        await Worker(conn, spec).run()

    try:
        asyncio.run(main())
    finally:
        conn.close()


def main() -> None:
    """``python -m benchmarks.chatbench.loadgen FD``: FD is the runner's socketpair end."""
    conn = Connection(int(sys.argv[1]))
    try:
        spec = WorkerSpec(**conn.recv())
    except EOFError:
        return
    profile_dir = os.environ.get("CHATBENCH_PROFILE")
    if not profile_dir:
        worker_main(conn, spec)
        return
    # Debugging aid: CHATBENCH_PROFILE=DIR writes a cProfile of each generator process.
    import cProfile  # noqa: PLC0415

    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(worker_main, conn, spec)
    finally:
        profiler.dump_stats(os.path.join(profile_dir, f"gen-{spec.index}-{os.getpid()}.prof"))


if __name__ == "__main__":
    main()
