"""What the web port answers to each HTTP request, apart from any socket.

The static files ship in the package (``static/``) and are read once, at start; a request
can only name one of them, never a path on disk. Every response carries the same security
headers: a Content-Security-Policy that allows scripts, styles and connections from the
page's own origin only (no inline script), ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import ipaddress
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Final

import segno

#: Content types by file suffix; anything else is served as opaque bytes.
TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
#: Where the page opens its WebSocket.
WEBSOCKET_PATH: Final = "/ws"
QR_PATH: Final = "/qr.svg"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST: Final = re.compile(
    rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<v6>[0-9A-Fa-f:.]{{2,45}})\])(?::(?P<port>[0-9]{{1,5}}))?"
)


def valid_host(value: bytes | None) -> str | None:
    """A ``Host`` header's value if it is a host name or address with an optional port.

    What passes can be put in a header or a URL as it is; anything else is None, never
    echoed.
    """
    if value is None or len(value) > 260:
        return None
    match = _HOST.fullmatch(value.decode("ascii", errors="replace"))
    if match is None:
        return None
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return None
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            return None
    return match[0]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def security_headers(host: str | None) -> list[tuple[str, str]]:
    """Headers every response carries; ``host`` (validated) lets the page reach its own
    WebSocket by name as well as by ``'self'``."""
    sockets = f" ws://{host} wss://{host}" if host else ""
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ]


class Site:
    """The static files and the routes; immutable once built, shared by every connection."""

    def __init__(self, files: dict[str, _File], scheme: str) -> None:
        self._files = files
        self.scheme = scheme

    @classmethod
    def load(cls, *, tls: bool) -> Site:
        """The files shipped in ``lanchatd/daemon/web/static`` (none if it is missing)."""
        root = importlib.resources.files("lanchatd.daemon.web").joinpath("static")
        files: dict[str, _File] = {}
        if root.is_dir():
            _walk(root, "", files)
        if "/index.html" in files:
            files["/"] = files["/index.html"]
        return cls(files, "https" if tls else "http")

    def respond(self, method: str, target: str, host: str | None, etag: str | None) -> Response:
        """The answer to a request other than a WebSocket upgrade (HEAD: without the body)."""
        response = self._respond(method, target.split("?", 1)[0], host, etag)
        if method == "HEAD":
            return Response(response.status, response.headers)
        return response

    def _respond(self, method: str, path: str, host: str | None, etag: str | None) -> Response:
        known = path in self._files or path in (QR_PATH, WEBSOCKET_PATH)
        if not known:
            return self.error(404, "Not Found", host)
        if method not in ("GET", "HEAD") or path == WEBSOCKET_PATH:
            if path == WEBSOCKET_PATH and method in ("GET", "HEAD"):
                return self.error(400, "Expected a WebSocket upgrade", host)
            response = self.error(405, "Method Not Allowed", host)
            response.headers.append(("Allow", "GET, HEAD"))
            return response
        if path == QR_PATH:
            return self._qr(host)
        found = self._files[path]
        headers = [
            *security_headers(host),
            ("Content-Type", found.content_type),
            ("Cache-Control", "no-cache"),
            ("ETag", found.etag),
        ]
        if etag == found.etag:
            return Response(304, headers)
        headers.append(("Content-Length", str(len(found.body))))
        return Response(200, headers, found.body)

    def _qr(self, host: str | None) -> Response:
        """The page's own address as an SVG QR code; only a valid ``Host`` is drawn."""
        if host is None:
            return self.error(400, "Bad Host header", host)
        body = _svg(f"{self.scheme}://{host}/")
        headers = [
            *security_headers(host),
            ("Content-Type", TYPES[".svg"]),
            ("Cache-Control", "no-cache"),
            ("Content-Length", str(len(body))),
        ]
        return Response(200, headers, body)

    @staticmethod
    def error(status: int, text: str, host: str | None) -> Response:
        body = f"{status} {text}\n".encode()
        headers = [
            *security_headers(host),
            ("Content-Type", TYPES[".txt"]),
            ("Content-Length", str(len(body))),
        ]
        return Response(status, headers, body)


def _svg(url: str) -> bytes:
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False)
    return out.getvalue()


def _walk(directory: Traversable, prefix: str, files: dict[str, _File]) -> None:
    for entry in directory.iterdir():
        name = f"{prefix}/{entry.name}"
        if entry.is_dir():
            _walk(entry, name, files)
            continue
        body = entry.read_bytes()
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[name] = _File(body, TYPES.get(suffix, "application/octet-stream"), etag)
