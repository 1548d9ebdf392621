"""Configuration: built-in defaults, then the TOML file, then command-line flags.

Every key is declared once in ``SCHEMA`` with its type and allowed range, so a mistake in the
file is reported as one line naming the file, the section and the key, before anything
listens. The same loader serves start-up and SIGHUP reloads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lanchatd.core.catalog import LANGUAGES
from lanchatd.core.text import has_hidden
from lanchatd.daemon.logs import LEVELS

LOG_FORMATS: Final = ("auto", "json", "console")
#: ``[discovery] name`` travels in one TXT string (255 bytes, ``room=`` included).
NAME_BYTES: Final = 200


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon can be told; immutable, replaced as a whole on reload."""

    host: str = "::"
    port: int = 5001
    lang: str = "id"
    max_clients: int = 1024
    max_handshakes: int = 1024
    max_line_bytes: int = 4096
    send_buffer_bytes: int = 1 << 20
    handshake_timeout: float = 30.0
    rate: float = 10.0
    burst: int = 20
    per_address: int = 16
    keepalive: float = 60.0
    admin_socket: str | None = None
    admin_group: str = "lanchat"
    log_format: str = "auto"
    log_level: str = "info"
    log_message_text: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    history: bool = True
    history_keep: int = 10_000
    history_keep_days: float = 7.0
    history_on_join: int = 20
    discovery: bool = True
    #: None: ``lanchat on HOSTNAME`` (core/announce.py).
    discovery_name: str | None = None
    web: bool = True
    web_host: str = "::"
    web_port: int = 8080
    web_allowed_origins: tuple[str, ...] = ()
    cluster_redis: str | None = None
    cluster_password_file: str | None = None
    cluster_room: str = "lanchat"
    cluster_node: str | None = None


#: Settings that only take effect at start-up; a reload that changes them says so.
RESTART_ONLY: Final = frozenset(
    {
        "host",
        "port",
        "admin_socket",
        "admin_group",
        "tls_cert",
        "tls_key",
        "history",
        "discovery",
        "web",
        "web_host",
        "web_port",
    }
    | {"cluster_redis", "cluster_password_file", "cluster_room", "cluster_node"}
)


class ConfigError(Exception):
    """A one-line explanation of what is wrong with the configuration."""


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key: the Settings field it sets and how to check a value."""

    field: str
    check: Callable[[Any], str | None]


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected an integer, got {_show(value)}"
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}"
        return None

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"expected a number, got {_show(value)}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value}"
        if value < low or value > high or (low_open and value == low):
            if low_open:
                return f"must be above {low} and at most {high}, got {value}"
            return f"must be between {low} and {high}, got {value}"
        return None

    return check


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, got {_show(value)}"
        return None

    return check


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"expected a non-empty string, got {_show(value)}"
    return None


def _name(value: Any) -> str | None:
    """A name people see in a list: one line of visible text."""
    if problem := _text(value):
        return problem
    if value != value.strip() or has_hidden(value):
        return "must be one line of visible text, without leading or trailing spaces"
    if len(value.encode()) > NAME_BYTES:
        return f"must be at most {NAME_BYTES} bytes in UTF-8, got {len(value.encode())}"
    return None


def _boolean(value: Any) -> str | None:
    if not isinstance(value, bool):
        return f"expected true or false, got {_show(value)}"
    return None


def _origins(value: Any) -> str | None:
    """A list of origins as browsers send them: ``scheme://host[:port]``, nothing after."""
    if not isinstance(value, list):
        return f"expected a list of origins, got {_show(value)}"
    for origin in value:
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            return f'expected origins like "http://chat.example.lan:8080", got {_show(origin)}'
    return None


_ORIGIN: Final = re.compile(r"(?:https?)://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _redis_url(value: Any) -> str | None:
    """A redis:// or rediss:// URL without a password: that belongs in ``password_file``."""
    if problem := _text(value):
        return problem
    scheme, _, rest = value.partition("://")
    if scheme not in ("redis", "rediss") or not rest:
        return f"expected redis://HOST:PORT/DB or rediss://..., got {value!r}"
    if "@" in rest.split("/", 1)[0]:
        return "put the password in password_file, not in the URL"
    return None


def _key_name(value: Any) -> str | None:
    """A room or node name: it becomes part of Redis key names and log fields."""
    if problem := _text(value):
        return problem
    if len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        return f"use at most 64 letters, digits, '-', '_' or '.', got {value!r}"
    return None


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


SCHEMA: Final[Mapping[str, Mapping[str, Key]]] = {
    "server": {
        "host": Key("host", _text),
        "port": Key("port", _integer(0, 65535)),
        "lang": Key("lang", _choice(*LANGUAGES)),
        "max_clients": Key("max_clients", _integer(1, 100_000)),
        "max_handshakes": Key("max_handshakes", _integer(1, 100_000)),
        "max_line_bytes": Key("max_line_bytes", _integer(64, 1 << 20)),
        "send_buffer_bytes": Key("send_buffer_bytes", _integer(4096, 1 << 30)),
        "handshake_timeout": Key("handshake_timeout", _number(0, 3600, low_open=True)),
    },
    "limits": {
        "rate": Key("rate", _number(0, 1_000_000)),
        "burst": Key("burst", _integer(1, 1_000_000)),
        "per_address": Key("per_address", _integer(0, 100_000)),
        "keepalive": Key("keepalive", _number(0, 86_400)),
    },
    "admin": {
        "socket": Key("admin_socket", _text),
        "group": Key("admin_group", _text),
    },
    "log": {
        "format": Key("log_format", _choice(*LOG_FORMATS)),
        "level": Key("log_level", _choice(*LEVELS)),
        "message_text": Key("log_message_text", _boolean),
    },
    "tls": {
        "cert": Key("tls_cert", _text),
        "key": Key("tls_key", _text),
    },
    "history": {
        "enabled": Key("history", _boolean),
        "keep": Key("history_keep", _integer(1, 10_000_000)),
        "keep_days": Key("history_keep_days", _number(0, 36_500)),
        "on_join": Key("history_on_join", _integer(0, 500)),
    },
    "discovery": {
        "enabled": Key("discovery", _boolean),
        "name": Key("discovery_name", _name),
    },
    "web": {
        "enabled": Key("web", _boolean),
        "host": Key("web_host", _text),
        "port": Key("web_port", _integer(0, 65535)),
        "allowed_origins": Key("web_allowed_origins", _origins),
    },
    "cluster": {
        "redis": Key("cluster_redis", _redis_url),
        "password_file": Key("cluster_password_file", _text),
        "room": Key("cluster_room", _key_name),
        "node": Key("cluster_node", _key_name),
    },
}


def read_file(path: Path) -> dict[str, Any]:
    """Parse and check a config file; return the Settings fields it sets."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        document = tomllib.loads(raw.decode())
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[error.start]:02x} is not UTF-8; "
            "save the file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}: a key outside any section; {_home(section)}")
        keys = SCHEMA.get(section)
        if keys is None:
            raise ConfigError(
                f"{path}: [{section}]: unknown section; sections: {', '.join(SCHEMA)}"
            )
        for name, value in table.items():
            key = keys.get(name)
            if key is None:
                raise ConfigError(f"{path}: [{section}] {name}: unknown key")
            problem = key.check(value)
            if problem:
                raise ConfigError(f"{path}: [{section}] {name}: {problem}")
            if isinstance(value, list):
                values[key.field] = tuple(value)
            else:
                values[key.field] = float(value) if key.field in _FLOATS else value
    if document.get("cluster") and "cluster_redis" not in values:
        raise ConfigError(f"{path}: [cluster] redis: missing; the Redis server's URL is required")
    return values


def _home(name: str) -> str:
    """Where a key found outside any section belongs, as advice."""
    homes = [section for section, keys in SCHEMA.items() if name in keys]
    if homes:
        return f"it belongs under [{homes[0]}]"
    return f"keys go under a section: {', '.join(f'[{section}]' for section in SCHEMA)}"


_FLOATS: Final = frozenset(
    f.name for f in dataclasses.fields(Settings) if f.type in ("float", float)
)


def load(path: Path | None, overrides: Mapping[str, Any]) -> Settings:
    """Defaults, then the file (if any), then flags that were given (None means not given)."""
    values = read_file(path) if path is not None else {}
    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = Settings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        where = path if path is not None else "command line"
        raise ConfigError(f"{where}: [tls] cert and key must be given together")
    if settings.web and settings.port and settings.port == settings.web_port:
        _check_ports_apart(path, settings)
    if settings.cluster_redis is not None:
        _check_cluster(path, settings)
    return settings


#: Listen addresses that take a port on every address (of their family, or of both for ``::``).
_WILDCARDS: Final = frozenset({"::", "0.0.0.0"})


def _check_ports_apart(path: Path | None, settings: Settings) -> None:
    """The chat port and the web port on one address: the start would fail as if another
    program held the port (``--port 8080`` is the web page's default)."""
    hosts = {settings.host, settings.web_host}
    if len(hosts) == 1 or hosts & _WILDCARDS:
        where = path if path is not None else "command line"
        raise ConfigError(
            f"{where}: [web] port: {settings.port} is the chat port too ([server] port); "
            "give the web page a port of its own, or turn it off (--no-web)"
        )


def _check_cluster(path: Path | None, settings: Settings) -> None:
    """What a node needs before it starts: the redis module and a readable password file."""
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(
            f"{path}: [cluster] needs the Python module redis (apt-get install python3-redis)"
        )
    if settings.cluster_password_file is not None:
        try:
            Path(settings.cluster_password_file).read_bytes()
        except OSError as error:
            raise ConfigError(
                f"{path}: [cluster] password_file: cannot read "
                f"{settings.cluster_password_file}: {error.strerror}"
            ) from None


def changes(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    """The fields that differ between two settings, as ``{name: (old, new)}``."""
    return {
        f.name: (getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(Settings)
        if getattr(old, f.name) != getattr(new, f.name)
    }
