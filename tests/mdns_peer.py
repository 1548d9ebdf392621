"""A neighbour on the test LAN, run inside a network namespace by tests/test_discovery.py.

``python -m tests.mdns_peer watch``: browse ``_lanchat._tcp`` and print ``add NAME`` and
``remove NAME`` as they happen, until standard input closes.

``python -m tests.mdns_peer hostile ADDRESS``: announce lanchat services with hostile TXT
records (control characters, bytes that are not UTF-8, values out of range, no fields at all,
a record of several kilobytes), print ``ready``, and withdraw them when standard input closes.

``python -m tests.mdns_peer redirect ADDRESS``: announce one lanchat service, from ADDRESS,
whose address records point at the listener's own machine (loopback, unspecified, multicast),
print ``ready``, and withdraw it when standard input closes.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from lanchatd.core.announce import SERVICE_TYPE

HOSTILE: dict[str, dict[bytes, bytes | None]] = {
    "evil": {
        b"room": b"\x1b]0;pwned\x07\xff\xfe caf\xc3\xa9\xe2\x80\xae",
        b"lang": b"x" * 250,
        b"tls": b"yes",
        b"web": b"99999999",
        b"path": b"javascript:alert(1)",
        b"proto": b"-1",
        b"\xff\xfe": b"junk",
        b"novalue": None,
    },
    "bare": {},
    "huge": {b"room": b"A" * 240, **{f"k{n}".encode(): b"v" * 240 for n in range(20)}},
}


def watch() -> None:
    def changed(name: str, state_change: Any, **_: Any) -> None:
        kind = "remove" if state_change is ServiceStateChange.Removed else "add"
        if state_change is not ServiceStateChange.Updated:
            print(kind, name, flush=True)

    zeroconf = Zeroconf()
    ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[changed])
    print("watching", flush=True)
    sys.stdin.read()
    zeroconf.close()


#: Addresses that are never a LAN server's: connecting to them reaches the browsing machine.
REDIRECT = ["127.0.0.1", "0.0.0.0", "224.0.0.251"]


def redirect(address: str) -> None:
    zeroconf = Zeroconf(interfaces=[address])
    info = ServiceInfo(
        SERVICE_TYPE,
        f"sneaky.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(target) for target in REDIRECT],
        port=22,
        properties={b"room": b"sneaky"},
        server="sneaky.local.",
    )
    zeroconf.register_service(info)
    print("ready", flush=True)
    sys.stdin.read()
    zeroconf.close()


def hostile(address: str) -> None:
    zeroconf = Zeroconf(interfaces=[address])
    for label, properties in HOSTILE.items():
        info = ServiceInfo(
            SERVICE_TYPE,
            f"{label}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(address)],
            port=5001,
            properties=properties,
            server="hostile.local.",
        )
        zeroconf.register_service(info)
    print("ready", flush=True)
    sys.stdin.read()
    zeroconf.close()


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        watch()
    elif sys.argv[1] == "redirect":
        redirect(sys.argv[2])
    else:
        hostile(sys.argv[2])
