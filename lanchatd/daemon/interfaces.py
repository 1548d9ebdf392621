"""The addresses people on the network can use to reach a listening socket.

Read from the kernel without any network traffic and without netlink (the service's sandbox
allows only AF_INET, AF_INET6 and AF_UNIX): IPv4 addresses through the ``SIOCGIFCONF`` ioctl,
IPv6 addresses from ``/proc/self/net/if_inet6``. Loopback and link-local addresses are left
out: nobody else can use them without more information than a log line gives.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Final

_SIOCGIFCONF: Final = 0x8912
#: ``struct ifreq``: a 16-byte name, then a union whose largest member is ``struct ifmap``.
_IFREQ_SIZE: Final = 16 + max(16, struct.calcsize("LLHBBB0L"))
_MAX_INTERFACES: Final = 256
_IF_INET6: Final = Path("/proc/self/net/if_inet6")


def reachable(listener: socket.socket) -> list[str]:
    """The addresses other machines can connect to ``listener`` at; [] if none are known."""
    host = listener.getsockname()[0]
    if listener.family == socket.AF_INET6 and host == "::":
        v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        found = ipv6_addresses() if v6only else [*ipv4_addresses(), *ipv6_addresses()]
    elif host == "0.0.0.0":
        found = ipv4_addresses()
    else:
        found = [host.removeprefix("::ffff:")]
    return [address for address in found if _for_others(address)]


def _for_others(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def ipv4_addresses() -> list[str]:
    """Every interface's IPv4 address (the kernel's list; [] if it cannot be read)."""
    size = _IFREQ_SIZE * _MAX_INTERFACES
    buffer = array.array("B", bytes(size))
    request = struct.pack("iL", size, buffer.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFCONF, request)
    except OSError:
        return []
    used = struct.unpack("iL", answer)[0]
    data = buffer.tobytes()[:used]
    addresses = []
    for offset in range(0, used - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        # The union starts with a sockaddr_in: family, port, then the address.
        family = struct.unpack_from("H", data, offset + 16)[0]
        if family == socket.AF_INET:
            addresses.append(socket.inet_ntoa(data[offset + 20 : offset + 24]))
    return list(dict.fromkeys(addresses))


def ipv6_addresses() -> list[str]:
    """Every interface's IPv6 address ([] if the kernel has no IPv6 or hides the list)."""
    with contextlib.suppress(OSError):
        lines = _IF_INET6.read_text().splitlines()
        hexes = [line.split()[0] for line in lines if line.strip()]
        return list(dict.fromkeys(str(ipaddress.IPv6Address(bytes.fromhex(h))) for h in hexes))
    return []


def url(scheme: str, address: str, port: int) -> str:
    """``scheme://address:port/``, an IPv6 address in brackets, the scheme's own port left out."""
    host = f"[{address}]" if ":" in address else address
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}/" if port == default else f"{scheme}://{host}:{port}/"
