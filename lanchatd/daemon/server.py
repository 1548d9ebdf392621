"""The daemon's main thread: listen, accept, and react to signals.

Accepting and signal handling share one ``select`` loop in the main thread (signals arrive
through ``signal.set_wakeup_fd``), so a reload or a shutdown is handled between accepts,
never in the middle of one. Each accepted client gets its own reader thread; delivery has
its own single thread (see delivery.py).
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import functools
import gc
import os
import selectors
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from lanchatd.core import paths
from lanchatd.core.framing import Framing
from lanchatd.daemon import config, discovery, interfaces, logs
from lanchatd.daemon.admin import AdminListener, AdminServer, DaemonOperations
from lanchatd.daemon.config import Settings
from lanchatd.daemon.delivery import CLOSE_GRACE
from lanchatd.daemon.history import History
from lanchatd.daemon.moderation import Moderation
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.reader import Upgrade, configure_socket, serve
from lanchatd.daemon.refusals import RefusalLog
from lanchatd.daemon.room import Room
from lanchatd.daemon.systemd import Notifier
from lanchatd.daemon.tls import TlsError, server_context
from lanchatd.daemon.web import http
from lanchatd.daemon.web.site import Site

#: Reader threads block in recv and recurse little: a small stack keeps 1000+ of them cheap.
THREAD_STACK_BYTES: Final = 512 * 1024
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How often the service manager's status line is refreshed (only under systemd).
STATUS_INTERVAL: Final = 5.0


class ListenError(Exception):
    """The chat port could not be opened; the message says which and why."""


def open_listener(host: str, port: int) -> socket.socket:
    """Bind the chat port (SO_REUSEADDR; dual-stack when the host is ``::``).

    ``::`` (the default) falls back to every IPv4 address on a machine without IPv6.
    """
    if host == "::" and not socket.has_dualstack_ipv6():
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenError(f"cannot resolve host {host!r}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(
            address,
            family=family,
            backlog=4096,
            dualstack_ipv6=family == socket.AF_INET6 and host == "::",
        )
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None


def client_address(address: tuple[Any, ...]) -> tuple[str, int]:
    """Host and port of a peer, with IPv4-mapped IPv6 shown as plain IPv4."""
    host, port = address[0], address[1]
    return host.removeprefix("::ffff:") if "." in host else host, port


class Server:
    """Owns the listener, the room and every connection thread."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        overrides: dict[str, Any],
        listeners: list[socket.socket],
        notifier: Notifier,
        admin: AdminListener | None = None,
        tls: ssl.SSLContext | None = None,
        web_listeners: tuple[socket.socket, ...] = (),
    ) -> None:
        """``web_listeners`` are the web port's (HTTP and WebSocket, lanchatd.daemon.web)."""
        self.settings = settings
        self._config_path = config_path
        self._overrides = overrides
        self._listeners = [*web_listeners, *listeners]  # web_started is logged first
        self._chat_listeners = listeners
        self._web_listeners = frozenset(web_listeners)
        #: The web port as bound (announced beside the chat port), if the page is served.
        self._web_port: int | None = web_listeners[0].getsockname()[1] if web_listeners else None
        self._site = Site.load(tls=tls is not None) if web_listeners else None
        self._notifier = notifier
        self._tls = tls
        self.log = logs.get_logger()
        self.room = self._room(settings)
        self._connections: set[Peer] = set()
        self._connections_lock = threading.Lock()
        self._connections_changed = threading.Condition(self._connections_lock)
        self._per_address: Counter[str] = Counter()
        #: Connections still choosing a nickname, oldest first (see ``_accept``).
        self._handshaking: dict[Peer, None] = {}
        self._refusals = RefusalLog(self.log)
        self._next_report = 0.0
        bans = self.room.ban_store(paths.state_dir() / paths.BANS_FILE_NAME)
        bans.load()
        self.moderation = Moderation(self.room, bans, self.peers)
        self.admin: AdminServer | None = None
        if admin is not None:
            operations = DaemonOperations(
                self.room, self.moderation, self.request_reload, self._web_page
            )
            self.admin = AdminServer(operations, admin, settings.admin_group, self.log)
        self._reloaded = threading.Condition()
        self._reload_count = 0
        self._reload_outcome: dict[str, Any] = {}
        self._announcer: discovery.Announcer | None = None

    def _web_page(self) -> tuple[str, list[socket.socket]] | None:
        """The web page's scheme and listeners (``lanchatctl url``); None when it is off."""
        if not self._web_listeners:
            return None
        return ("https" if self._tls is not None else "http", list(self._web_listeners))

    def _room(self, settings: Settings) -> Room:
        """The room: this node's own, or one shared with other nodes (``[cluster]``)."""
        if settings.cluster_redis is None:
            return Room(settings, self.log, self._history(settings))
        # Imported here: it imports redis, which a single node never loads.
        from lanchatd.daemon.cluster.room import SharedRoom  # noqa: PLC0415

        return SharedRoom(settings, self.log, self._history(settings))

    def _history(self, settings: Settings) -> History | None:
        """The room's history in the state directory, unless ``[history] enabled`` is off."""
        if not settings.history:
            return None
        path = paths.state_dir() / paths.HISTORY_FILE_NAME
        return History(
            path, self.log, keep=settings.history_keep, keep_days=settings.history_keep_days
        )

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit status."""
        threading.stack_size(THREAD_STACK_BYTES)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in _SIGNALS:
            signal.signal(signum, lambda *_: None)
        selector = selectors.DefaultSelector()
        for listener in self._listeners:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, listener)
        selector.register(wake_r, selectors.EVENT_READ)
        self.room.delivery.start()
        if self.admin is not None:
            self.admin.start()
        for listener in self._listeners:
            host, port = listener.getsockname()[:2]
            addresses = interfaces.reachable(listener)
            if listener in self._web_listeners:
                self.log.info("web_started", host=host, port=port, addresses=addresses)
            else:
                self.log.info("server_started", host=host, port=port, addresses=addresses)
        self._announcer = discovery.start(
            self.settings, self._chat_listeners, self._tls is not None, self.log, self._web_port
        )
        # What exists now (modules, settings, the room) lives as long as the daemon: out of
        # the collector's sight, a full collection scans only what chat made since.
        gc.freeze()
        self._notifier.ready(self._status())
        try:
            while True:
                for key, _ in selector.select(self._timeout()):
                    if key.data is not None:
                        self._accept(key.data)
                    elif self._signals(wake_r):
                        return self._stop()
                self._report()
        finally:
            signal.set_wakeup_fd(previous_fd)
            selector.close()
            wake_r.close()
            wake_w.close()

    def _timeout(self) -> float | None:
        """How long the loop may sleep: until the next refusal summary or systemd report."""
        due, tick = self._refusals.flush(), self._tick()
        if due is None or tick is None:
            return tick if due is None else due
        return min(due, tick)

    def _tick(self) -> float | None:
        """How long the loop may sleep: forever unless systemd wants pings or status."""
        if not self._notifier.enabled:
            return None
        return min(self._notifier.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)

    def _report(self) -> None:
        """Under systemd: refresh the status line and, if healthy, pet the watchdog."""
        if not self._notifier.enabled or time.monotonic() < self._next_report:
            return
        self._next_report = time.monotonic() + (self._tick() or STATUS_INTERVAL)
        self._notifier.status(self._status())
        if self.healthy():
            self._notifier.watchdog()

    def healthy(self) -> bool:
        """The accept loop runs (we are in it), delivery runs and the room lock is not stuck."""
        if not self.room.delivery.is_alive():
            return False
        if not self.room.lock.acquire(timeout=1.0):
            return False
        self.room.lock.release()
        return True

    def _status(self) -> str:
        stats = self.room.stats
        status = f"{len(self.room)} clients, {stats.messages} messages relayed"
        cluster = self.room.cluster_stats()
        return status if cluster is None else f"{status}; cluster {cluster['state']}"

    def _signals(self, wake: socket.socket) -> bool:
        """Handle pending signals; True when it is time to stop."""
        try:
            received = wake.recv(64)
        except BlockingIOError:
            return False
        stop = False
        for signum in received:
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                stop = True
        return stop

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # EMFILE and friends: keep serving those already connected.
                self.log.error("accept_failed", error=error.strerror)
                time.sleep(0.05)
                return
            host, port = client_address(address)
            refusal = self._refusal(host)
            upgrade: Upgrade | None = None
            if listener in self._web_listeners:
                # A browser is told why over HTTP or its WebSocket (web/http.py), not in a
                # line it would not show; it keeps a handshake slot meanwhile.
                assert self._site is not None
                if refusal is not None:
                    self._refusals.refused(host, port, refusal[0])
                upgrade = functools.partial(
                    http.exchange, room=self.room, site=self._site, refusal=refusal
                )
            elif refusal is not None:
                self._turn_away(sock, host, port, *refusal)
                continue
            configure_socket(sock, self.settings.keepalive)
            peer = Peer(sock, host, port, self.log.bind(host=host, port=port))
            peer.log.info("client_connected")
            with self._connections_lock:
                self._connections.add(peer)
                self._per_address[host] += 1
                self._handshaking[peer] = None
                shed = self._shed_locked()
            if shed is not None:
                shed.shed = True
                shed.stop_reading()
                self._refusals.refused(shed.host, shed.port, "handshake_full")
            # The low-level start does not wait for the new thread to be scheduled, so a burst
            # of connections is accepted without one GIL hand-off per client.
            _thread.start_new_thread(self._serve, (peer, upgrade))

    def _shed_locked(self) -> Peer | None:
        """The oldest connection still choosing a nickname, if there are too many.

        Unjoined connections have their own pool beside ``max_clients``: silent ones cannot
        crowd out people who answer ``NICK``; at worst a flood of them shortens everyone's
        time to answer to however long it takes to open ``max_handshakes`` connections.
        """
        if len(self._handshaking) <= self.settings.max_handshakes:
            return None
        oldest = next(iter(self._handshaking))
        del self._handshaking[oldest]
        return oldest

    def _joined(self, peer: Peer) -> None:
        """``peer`` has a nickname now: it leaves the handshake pool."""
        with self._connections_lock:
            self._handshaking.pop(peer, None)

    def _refusal(self, host: str) -> tuple[str, str] | None:
        """Why a new connection from ``host`` is turned away (reason, line to send), if it is."""
        catalog, settings = self.room.catalog, self.settings
        banned = self.moderation.refusal(host)
        if banned is not None:
            return "banned", banned
        with self._connections_lock:
            mine = self._per_address[host]
        if len(self.room) >= settings.max_clients:
            return "server_full", catalog("server_full", limit=settings.max_clients)
        if settings.per_address and mine >= settings.per_address:
            return "per_address", catalog("per_address", limit=settings.per_address)
        return None

    def _turn_away(self, sock: socket.socket, host: str, port: int, reason: str, text: str) -> None:
        """Refuse a connection with one line saying why; never blocks the accept loop."""
        self._refusals.refused(host, port, reason)
        with contextlib.suppress(OSError):
            sock.send(Framing.LINE.encode(text), socket.MSG_DONTWAIT)
        sock.close()

    def peers(self) -> list[Peer]:
        """Every open client connection, joined or still choosing a nickname."""
        with self._connections_lock:
            return list(self._connections)

    def request_reload(self, timeout: float) -> dict[str, Any] | None:
        """Reload exactly as SIGHUP does (in the main loop); return what came of it.

        None if the main loop did not get to it within ``timeout`` seconds.
        """
        with self._reloaded:
            count = self._reload_count
            os.kill(os.getpid(), signal.SIGHUP)
            if not self._reloaded.wait_for(lambda: self._reload_count != count, timeout):
                return None
            return self._reload_outcome

    def _reload_finished(self, outcome: dict[str, Any]) -> None:
        with self._reloaded:
            self._reload_outcome = outcome
            self._reload_count += 1
            self._reloaded.notify_all()

    def _serve(self, peer: Peer, upgrade: Upgrade | None) -> None:
        try:
            serve(peer, self.room, self._tls, self._joined, upgrade)
        finally:
            with self._connections_changed:
                self._connections.discard(peer)
                self._handshaking.pop(peer, None)
                self._per_address[peer.host] -= 1
                if not self._per_address[peer.host]:
                    del self._per_address[peer.host]
                self._connections_changed.notify_all()

    def reload(self) -> None:
        """Re-read the configuration and apply what can change while clients stay connected."""
        try:
            new = config.load(self._config_path, self._overrides)
        except config.ConfigError as error:
            self.log.error("config_reload_failed", error=str(error))
            self._reload_finished({"error": str(error)})
            return
        self._notifier.reloading()
        changed = config.changes(self.settings, new)
        frozen = sorted(changed.keys() & config.RESTART_ONLY)
        if frozen:
            self.log.warning("config_needs_restart", keys=frozen)
            new = dataclasses.replace(new, **{name: changed[name][0] for name in frozen})
        if (new.log_format, new.log_level) != (self.settings.log_format, self.settings.log_level):
            logs.configure(new.log_format, new.log_level)
        if self._tls is not None:
            self._reload_certificate(new)
        self.settings = new
        self.room.reconfigure(new)
        if self._announcer is not None:
            port = self._chat_listeners[0].getsockname()[1]
            tls = self._tls is not None
            self._announcer.update(discovery.announcement(new, port, tls, self._web_port))
        applied = {name: list(values) for name, values in changed.items() if name not in frozen}
        self.log.info("config_reloaded", changed=applied)
        self._reload_finished({"changed": applied, "needs_restart": frozen})
        self._notifier.ready(self._status())

    def _reload_certificate(self, settings: Settings) -> None:
        """Re-read the certificate files (renewed in place); keep the old ones if they fail."""
        assert settings.tls_cert is not None
        assert settings.tls_key is not None
        try:
            self._tls = server_context(settings.tls_cert, settings.tls_key)
        except TlsError as error:
            self.log.error("tls_reload_failed", error=str(error))

    def _stop(self) -> int:
        """Stop accepting, tell every client, flush, close; exit status 0."""
        for signum in _SIGNALS:  # shutdown is bounded; a repeated signal must not cut it short
            signal.signal(signum, signal.SIG_IGN)
        self.log.info("server_stopping", clients=len(self.room))
        self._notifier.stopping()
        if self._announcer is not None:
            self._announcer.withdraw()  # first, so browsers drop it while clients are told
        if self.admin is not None:
            self.admin.stop()
        for listener in self._listeners:
            listener.close()
        self.room.shutdown()
        with self._connections_lock:
            waiting = list(self._connections)
        for peer in waiting:
            if not peer.nick:
                peer.shutdown()
        self.room.delivery.join(CLOSE_GRACE + 1.0)
        if self.room.history is not None:
            self.room.history.close()
        if self._announcer is not None:
            self._announcer.join()
        with self._connections_changed:
            self._connections_changed.wait_for(lambda: not self._connections, timeout=2.0)
        self.log.info("server_stopped", log_events_lost=logs.lost())
        return 0
