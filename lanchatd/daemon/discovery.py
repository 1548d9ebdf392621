"""Announce the room on the LAN with mDNS/DNS-SD (python-zeroconf), beside the chat.

zeroconf is imported here only when ``[discovery] enabled``: a disabled daemon opens no UDP
5353 socket at all. Registering probes the network for about a second and withdrawing sends
goodbye packets, so both run in one worker thread of ours, fed by a queue, while zeroconf
answers queries in its own thread: the accept loop and delivery never wait for mDNS. Any
failure (port 5353 taken, no multicast) is one ``discovery_failed`` warning, and the chat is
served without the announcement.

mDNS runs over IPv4 on the LAN addresses the chat port listens on (daemon/interfaces.py);
the records carry the IPv6 addresses too. The service's host name is ``lanchat-HOST.local``,
not ``HOST.local``, so that an avahi-daemon on the same machine keeps its own name.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import queue
import socket
import threading
from typing import TYPE_CHECKING, Any, Final

from lanchatd.core.announce import (
    SERVICE_TYPE,
    WEB_SERVICE_TYPES,
    Announcement,
    default_name,
    instance_label,
)
from lanchatd.daemon import interfaces
from lanchatd.daemon.config import Settings
from lanchatd.daemon.logs import Logger

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

#: How long stopping waits for the goodbye packets (zeroconf sends them in about 0.3 s).
STOP_TIMEOUT: Final = 3.0
_STOP: Final = object()


def announcement(
    settings: Settings, port: int, tls: bool, web_port: int | None = None
) -> Announcement:
    """What the settings say to announce for a chat port, and the web page's port (as
    bound: systemd's socket or a free one may differ from ``[web] port``) if it is served."""
    name = settings.discovery_name or default_name(socket.gethostname())
    return Announcement(name, port, tls, settings.lang, web_port)


class Announcer:
    """The announcement's own thread; ``update`` and ``withdraw`` only queue what is wanted."""

    def __init__(self, first: Announcement, addresses: list[str], log: Logger) -> None:
        self._log = log
        self._addresses = addresses
        self._wanted: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wanted.put(first)
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self._thread.start()

    def update(self, wanted: Announcement) -> None:
        """Announce ``wanted`` instead (a reload); unchanged announcements cost nothing."""
        self._wanted.put(wanted)

    def withdraw(self) -> None:
        """Say goodbye on the LAN and stop; returns at once (see ``join``)."""
        self._wanted.put(_STOP)

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        zeroconf: Zeroconf | None = None
        try:
            from zeroconf import IPVersion, Zeroconf  # noqa: PLC0415 (only when enabled)

            _quiet_zeroconf_logging(self._log)
            ipv4 = [a for a in self._addresses if ipaddress.ip_address(a).version == 4]
            if not ipv4:
                raise OSError("no IPv4 LAN address to announce on")
            zeroconf = Zeroconf(interfaces=ipv4, ip_version=IPVersion.V4Only)
            self._announce(zeroconf)
        except Exception as error:  # never the daemon's end: chat goes on unannounced
            self._log.warning("discovery_failed", error=_reason(error))
        finally:
            if zeroconf is not None:
                with contextlib.suppress(Exception):
                    zeroconf.close()  # unregisters what is left: the goodbye packets

    def _announce(self, zeroconf: Zeroconf) -> None:
        current: Announcement | None = None
        services: list[ServiceInfo] = []
        while (wanted := self._wanted.get()) is not _STOP:
            if wanted == current:
                continue
            for info in services:
                zeroconf.unregister_service(info)
            services = self._services(wanted)
            for info in services:
                zeroconf.register_service(info, allow_name_change=True)
            current = wanted
            self._log.info(
                "discovery_announced",
                name=services[0].name,
                addresses=self._addresses,
                port=wanted.port,
                web_port=wanted.web_port,
            )
        for info in services:
            zeroconf.unregister_service(info)
        self._log.info("discovery_withdrawn")

    def _services(self, wanted: Announcement) -> list[ServiceInfo]:
        from zeroconf import ServiceInfo  # noqa: PLC0415 (only when enabled)

        label = instance_label(wanted.name)
        host = f"lanchat-{instance_label(socket.gethostname()).replace('.', '-')}.local."
        packed = [ipaddress.ip_address(address).packed for address in self._addresses]

        def service(type_: str, port: int, properties: dict[str, str]) -> ServiceInfo:
            return ServiceInfo(
                type_,
                f"{label}.{type_}",
                addresses=packed,
                port=port,
                properties=properties,
                server=host,
            )

        services = [service(SERVICE_TYPE, wanted.port, wanted.properties())]
        if wanted.web_port is not None:
            web_type = WEB_SERVICE_TYPES[wanted.tls]
            services.append(service(web_type, wanted.web_port, {"path": wanted.web_path}))
        return services


def start(
    settings: Settings,
    listeners: list[socket.socket],
    tls: bool,
    log: Logger,
    web_port: int | None = None,
) -> Announcer | None:
    """Announce the first chat port on the addresses people can reach it at, if enabled.

    A daemon that listens on loopback only has nothing to announce (and opens no mDNS socket).
    """
    if not settings.discovery or not listeners:
        return None
    addresses = list(dict.fromkeys(a for sock in listeners for a in interfaces.reachable(sock)))
    if not addresses:
        log.info("discovery_skipped", reason="listening on no LAN address")
        return None
    port = listeners[0].getsockname()[1]
    return Announcer(announcement(settings, port, tls, web_port), addresses, log)


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return "UDP port 5353 is taken by a program that does not share it (SO_REUSEPORT)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _Forward(logging.Handler):
    """zeroconf's own log lines, as debug events in ours (never raw text on stderr)."""

    def __init__(self, log: Logger) -> None:
        super().__init__(logging.DEBUG)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._log.debug(
                "zeroconf_log", severity=record.levelname.lower(), text=record.getMessage()
            )


def _quiet_zeroconf_logging(log: Logger) -> None:
    logger = logging.getLogger("zeroconf")
    logger.propagate = False
    logger.handlers = [_Forward(log)]
