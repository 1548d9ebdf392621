"""Bans by IP address, kept in the state directory so they survive restarts.

The file is JSON with one ban per line, so it reads well, works with ``jq`` and, should it
ever be damaged (a hand edit, a disk fault), every intact line can still be recovered::

    {"version": 1, "bans": [
    {"address": "10.0.0.7", "reason": "spam", "created_at": "...", "expires_at": null, ...}
    ]}

It is only ever replaced whole: written to a temporary file in the same directory, fsynced,
then renamed over the old one (and the directory fsynced), so a crash or a full disk leaves
either the old list or the new one, never half of either.

What can go wrong, and what happens then:

- The file is damaged: the daemon keeps every ban it can still read, moves the damaged file
  aside (``bans.json.corrupt-TIMESTAMP``) for a human to look at, and writes a clean file.
- The file cannot be read (permissions, I/O error), or the damaged one cannot be moved aside:
  the daemon never overwrites it (the bans in it would be lost); new bans work in memory and
  each change says it was not saved, until the file can be read again.
- The file cannot be written: the change still takes effect at once and the caller is told it
  was not saved; the old file is left as it was.

Lookups (one per accepted connection) take no lock: the table is replaced as a whole on every
change, and reading a dict attribute is atomic in CPython.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lanchatd.daemon.logs import Logger

FORMAT_VERSION: Final = 1
MAX_REASON_CHARS: Final = 500


def normalize_address(text: str) -> str:
    """The canonical form of an IP address (``::ffff:1.2.3.4`` is ``1.2.3.4``; no zone id).

    Raises ValueError if ``text`` is not an IP address.
    """
    address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def iso(timestamp: float) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def until_text(timestamp: float) -> str:
    """When a ban ends, as told to the banned client (ASCII, UTC, to the minute)."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Ban:
    """One banned address."""

    address: str
    reason: str
    created_at: float
    expires_at: float | None = None
    by_uid: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "expires_at": None if self.expires_at is None else iso(self.expires_at),
            "by_uid": self.by_uid,
        }

    @classmethod
    def from_json(cls, data: Any) -> Ban:
        """Raises ValueError (or TypeError) for anything that is not a well-formed ban."""
        if not isinstance(data, dict):
            raise ValueError("a ban must be a JSON object")
        reason = data.get("reason", "")
        by_uid = data.get("by_uid")
        if not isinstance(reason, str) or not (by_uid is None or isinstance(by_uid, int)):
            raise ValueError("bad reason or by_uid")
        created = _parse_time(data.get("created_at"))
        return cls(
            address=normalize_address(data["address"]),
            reason=reason,
            created_at=time.time() if created is None else created,
            expires_at=_parse_time(data.get("expires_at")),
            by_uid=by_uid,
        )


class BanStore:
    """The ban table in memory and its file on disk."""

    def __init__(self, path: Path, log: Logger) -> None:
        self.path = path
        self.log = log
        self._bans: dict[str, Ban] = {}
        self._lock = threading.Lock()
        #: Why the file must not be overwritten right now (it holds bans we could not read).
        self._blocked: str | None = None

    def __len__(self) -> int:
        return len(self._bans)

    # Reading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file at start-up; never raises (problems are logged and handled).

        Temporary files of a save that a crash interrupted are removed: the rename never
        happened, so the file itself still holds the last complete save.
        """
        with self._lock:
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            self._load_locked()

    def _load_locked(self) -> bool:
        """Merge the file into memory; True if the file can be replaced from now on."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._blocked = None
            return True
        except OSError as error:
            self._blocked = f"cannot read {self.path}: {error.strerror}"
            self.log.error("bans_unreadable", path=str(self.path), error=error.strerror)
            return False
        now = time.time()
        bans, damaged = _parse(raw)
        merged = {ban.address: ban for ban in bans if not ban.expired(now)}
        merged.update(self._bans)
        self._bans = merged
        if damaged:
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"
            )
            try:
                os.replace(self.path, aside)
            except OSError as error:
                self._blocked = (
                    f"{self.path} is damaged and could not be moved aside: {error.strerror}"
                )
                self.log.error(
                    "bans_corrupt", path=str(self.path), recovered=len(bans), error=error.strerror
                )
                return False
            self.log.error(
                "bans_corrupt", path=str(self.path), recovered=len(bans), moved_to=str(aside)
            )
            self._blocked = None
            self._save_locked()
        else:
            self._blocked = None
        self.log.info("bans_loaded", path=str(self.path), count=len(self._bans))
        return True

    # Lookups ---------------------------------------------------------------------------------

    def match(self, host: str) -> Ban | None:
        """The ban in force for ``host``, if any; an expired ban lapses here.

        Called for every accepted connection: with no bans it returns at once.
        """
        bans = self._bans
        if not bans:
            return None
        try:
            ban = bans.get(normalize_address(host))
        except ValueError:
            return None
        if ban is None:
            return None
        if ban.expired(time.time()):
            self._lapse(ban)
            return None
        return ban

    def list(self) -> list[Ban]:
        """Bans in force, oldest first; expired ones lapse."""
        now = time.time()
        bans = list(self._bans.values())
        for ban in bans:
            if ban.expired(now):
                self._lapse(ban)
        return sorted((ban for ban in bans if not ban.expired(now)), key=lambda ban: ban.created_at)

    def _lapse(self, ban: Ban) -> None:
        # Called from the accept loop: never wait for a save in progress (it may be fsyncing);
        # the ban is not enforced either way, and the next lookup tidies it up.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._bans.get(ban.address) is not ban:
                return
            bans = dict(self._bans)
            del bans[ban.address]
            self._bans = bans
        finally:
            self._lock.release()
        # The file keeps it until the next change; loading skips expired bans anyway.
        self.log.info("ban_expired", address=ban.address)

    # Changes ---------------------------------------------------------------------------------

    def add(self, ban: Ban) -> str | None:
        """Put ``ban`` in force (replacing one for the same address); return a save error."""
        with self._lock:
            self._bans = {**self._bans, ban.address: ban}
            return self._save_locked()

    def remove(self, address: str) -> tuple[Ban | None, str | None]:
        """Lift the ban on ``address``; return it (None if there was none) and a save error."""
        with self._lock:
            ban = self._bans.get(address)
            if ban is None:
                return None, None
            bans = dict(self._bans)
            del bans[address]
            self._bans = bans
            return ban, self._save_locked()

    def _save_locked(self) -> str | None:
        """Write the table to disk atomically; the error text if that was not possible."""
        if self._blocked and not self._load_locked():
            return f"{self._blocked}; not overwriting it"
        now = time.time()
        lines = [json.dumps(b.to_json()) for b in self._bans.values() if not b.expired(now)]
        body = f'{{"version": {FORMAT_VERSION}, "bans": [\n' + ",\n".join(lines) + "\n]}\n"
        try:
            _write_atomically(self.path, body.encode())
        except OSError as error:
            self.log.error("bans_save_failed", path=str(self.path), error=error.strerror)
            return f"cannot write {self.path}: {error.strerror}"
        return None


def _parse(raw: bytes) -> tuple[list[Ban], bool]:
    """The bans in a file and whether it was damaged (then: every line that still parses)."""
    try:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError("not a version 1 ban file")
        entries = document["bans"]
        if not isinstance(entries, list):
            raise ValueError("bans is not a list")
        return [Ban.from_json(entry) for entry in entries], False
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return list(_salvage(raw.decode("utf-8", "replace").splitlines())), True


def _salvage(lines: Iterable[str]) -> Iterable[Ban]:
    for line in lines:
        text = line.strip().rstrip(",")
        if not text.startswith("{"):
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            yield Ban.from_json(json.loads(text))


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync the directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
