"""What lanchatd announces on the LAN with DNS-SD, and what a browser makes of an announcement.

The daemon turns its settings into a TXT record here (``Announcement.properties``); the client
turns whatever a network neighbour sent back into fields fit to show (``found``). Anyone on
the LAN can answer an mDNS query, so every value read is bounded, decoded leniently and passed
through the one sanitiser (core/text.py); nothing a neighbour sends can raise here.

TXT keys: ``proto`` (the chat protocol's revision), ``tls`` (``1`` when the chat port speaks
TLS only), ``lang`` (the server's language), ``room`` (the full name, which the DNS instance
label may have had to shorten), and, when the web page is on, ``web`` (its port) and ``path``.

Sans-IO and pure: no sockets, threads or clocks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lanchatd.core.text import sanitize

SERVICE_TYPE: Final = "_lanchat._tcp.local."
#: The web page's own service: with ``[tls]`` the web port speaks HTTPS, as the chat port TLS.
WEB_SERVICE_TYPES: Final = {False: "_http._tcp.local.", True: "_https._tcp.local."}
#: The chat protocol's revision, announced so that a later incompatible one can be told apart.
PROTOCOL: Final = 1
#: A DNS label (the instance name) holds at most 63 bytes.
LABEL_BYTES: Final = 63
#: Longest value shown from a neighbour's record, and most addresses kept from one.
SHOWN_CHARS: Final = 100
SHOWN_ADDRESSES: Final = 8
_SAFE_PATH: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/")


def default_name(hostname: str) -> str:
    """``[discovery] name`` unless configured: the host name keeps names on one LAN apart."""
    return f"lanchat on {hostname}"


def instance_label(name: str) -> str:
    """``name`` cut to the 63 bytes a DNS label holds, on a character boundary."""
    return name.encode()[:LABEL_BYTES].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one daemon tells the LAN about itself."""

    name: str
    port: int
    tls: bool
    lang: str
    web_port: int | None = None
    web_path: str = "/"

    def properties(self) -> dict[str, str]:
        """The TXT record of the ``_lanchat._tcp`` service."""
        record = {
            "proto": str(PROTOCOL),
            "tls": "1" if self.tls else "0",
            "lang": self.lang,
            "room": self.name,
        }
        if self.web_port is not None:
            record["web"] = str(self.web_port)
            record["path"] = self.web_path
        return record


@dataclass(frozen=True, slots=True)
class Found:
    """One server a browser found, every text field sanitised and bounded."""

    name: str
    addresses: tuple[str, ...]
    port: int
    tls: bool
    lang: str | None
    proto: int | None
    web_port: int | None
    web_path: str

    @property
    def address(self) -> str | None:
        """The address to connect to: IPv4 first (a link-local IPv6 one would need a scope)."""
        ordered = sorted(self.addresses, key=lambda address: ":" in address)
        return ordered[0] if ordered else None

    @property
    def web_url(self) -> str | None:
        if self.web_port is None or self.address is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.web_port}{self.web_path}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addresses": list(self.addresses),
            "port": self.port,
            "tls": self.tls,
            "lang": self.lang,
            "proto": self.proto,
            "web": self.web_url,
        }


def found(
    instance: str, addresses: Iterable[str], port: int, properties: Mapping[Any, Any]
) -> Found:
    """A server as announced by a neighbour: ``instance`` is the full DNS-SD name, the
    properties the TXT record's keys and values as received (bytes, or None for a key
    without a value)."""
    record = {_decode(key): value for key, value in properties.items() if isinstance(key, bytes)}
    label = instance.removesuffix("." + SERVICE_TYPE)
    room = _text(record.get("room"))
    return Found(
        name=room or _shown(label) or "?",
        addresses=tuple(_addresses(addresses)),
        port=port if isinstance(port, int) and 0 < port < 65536 else 0,
        tls=record.get("tls") == b"1",
        lang=_text(record.get("lang")),
        proto=_number(record.get("proto"), 1 << 16),
        web_port=_number(record.get("web"), 65535) or None,
        web_path=_path(record.get("path")),
    )


def _decode(raw: bytes) -> str:
    return raw.decode(errors="replace")


def _shown(text: str) -> str:
    """One cell of a list: sanitised, and tabs (which the sanitiser keeps) as spaces."""
    return sanitize(text[:SHOWN_CHARS]).replace("\t", " ").strip()


def _text(raw: object) -> str | None:
    if not isinstance(raw, bytes):
        return None
    return _shown(raw[: SHOWN_CHARS * 4].decode(errors="replace")) or None


def _number(raw: object, high: int) -> int | None:
    if not isinstance(raw, bytes) or not raw.isdigit() or len(raw) > 5:
        return None
    value = int(raw)
    return value if value <= high else None


def _path(raw: object) -> str:
    """A path safe to print inside a URL; anything else is the page's root."""
    if not isinstance(raw, bytes) or len(raw) > SHOWN_CHARS:
        return "/"
    path = raw.decode(errors="replace")
    return path if path.startswith("/") and set(path) <= _SAFE_PATH else "/"


def _addresses(candidates: Iterable[str]) -> list[str]:
    """The announced addresses a LAN server can have: never one that reaches the browsing
    machine itself or nobody (loopback, unspecified, multicast, reserved), which a neighbour
    could announce to point ``lanchat`` at a local service."""
    kept: list[str] = []
    for candidate in candidates:
        try:
            parsed = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if not _on_the_lan(parsed):
            continue
        address = str(parsed)
        if address not in kept:
            kept.append(address)
        if len(kept) == SHOWN_ADDRESSES:
            break
    return kept


def _on_the_lan(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback or address.is_unspecified or address.is_multicast or address.is_reserved
    )
