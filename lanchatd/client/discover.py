"""Find lanchat servers on the LAN: an mDNS/DNS-SD browse with python-zeroconf.

Used only when no address was given (or for ``--list``), so zeroconf is imported only then.
What the neighbours answered becomes :class:`lanchatd.core.announce.Found` there, bounded and
sanitised; here is only the asking. A neighbour that answers too many names or never
completes its records costs at most the resolve deadline, and none of it can raise past
``browse`` except :class:`Unavailable` (mDNS could not be used at all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any, Final

from lanchatd.client.words import say
from lanchatd.core.announce import SERVICE_TYPE, Found, found

#: How long to listen for answers: mDNS responders answer within about a second.
BROWSE_SECONDS: Final = 1.5
#: How long resolving the names heard may take in all, and how many are resolved.
RESOLVE_SECONDS: Final = 1.0
MAX_SERVERS: Final = 64


class Unavailable(Exception):
    """mDNS cannot be used here; the message says why, in one line."""


def browse(seconds: float = BROWSE_SECONDS) -> list[Found]:
    """The lanchat servers that answered within ``seconds``, sorted by name."""
    try:
        from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf  # noqa: PLC0415
    except ImportError:
        raise Unavailable(say("no_zeroconf")) from None
    if not os.environ.get("LANCHAT_DEBUG"):
        logging.getLogger("zeroconf").addHandler(logging.NullHandler())
        logging.getLogger("zeroconf").propagate = False
    try:
        zeroconf = Zeroconf()
    except Exception as error:  # no interface, no multicast, port 5353 not shareable
        raise Unavailable(say("no_mdns", reason=error)) from None
    try:
        names: dict[str, None] = {}
        lock = threading.Lock()

        def changed(service_type: str, name: str, state_change: Any, **_: Any) -> None:
            del service_type
            with lock:
                if state_change is ServiceStateChange.Removed:
                    names.pop(name, None)
                elif len(names) < MAX_SERVERS:
                    names[name] = None

        browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[changed])
        threading.Event().wait(seconds)
        browser.cancel()
        with lock:
            heard = sorted(names)
        return sorted(_resolve(zeroconf, heard), key=lambda server: server.name)
    finally:
        with contextlib.suppress(Exception):
            zeroconf.close()


def _resolve(zeroconf: Any, names: list[str]) -> list[Found]:
    """Each name's address, port and TXT record (mostly already cached from the answers)."""
    from zeroconf import ServiceInfo  # noqa: PLC0415

    deadline = time.monotonic() + RESOLVE_SECONDS
    servers = []
    for name in names:
        info = ServiceInfo(SERVICE_TYPE, name)
        left = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(Exception):  # a malformed answer leaves that one out
            if info.request(zeroconf, int(left * 1000) or 1) and info.port:
                servers.append(found(name, info.parsed_addresses(), info.port, info.properties))
    return servers
