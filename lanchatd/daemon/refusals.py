"""Turned-away connections, logged as a summary per address instead of a line each.

An address that keeps reconnecting into a full server or its per-address limit would
otherwise write thousands of warnings a second. The first refusal of an address is logged at
once (so an operator sees it start); further ones within ``interval`` are counted and logged
as one ``clients_refused`` line when the interval ends.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from lanchatd.daemon.logs import Logger

#: Seconds covered by one summary line per address.
INTERVAL: Final = 10.0
#: Addresses tracked at once; beyond this, refusals are summed under ``*`` (many addresses
#: must not mean much memory or many lines either).
MAX_ADDRESSES: Final = 1024


@dataclass(slots=True)
class _Window:
    ends: float
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    """Rate-limited logging of refusals; used by the accept loop only (not thread-safe)."""

    def __init__(self, log: Logger, interval: float = INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._windows: dict[str, _Window] = {}
        #: When the oldest window ends (windows end in the order they began).
        self._next = 0.0

    def refused(self, host: str, port: int, reason: str, now: float | None = None) -> None:
        """Record one refusal: logged now if it is the first from ``host`` in a while."""
        now = time.monotonic() if now is None else now
        if host not in self._windows and len(self._windows) >= MAX_ADDRESSES:
            host = "*"
        window = self._windows.get(host)
        if window is None:
            if not self._windows:
                self._next = now + self._interval
            self._windows[host] = _Window(now + self._interval)
            self._log.warning("client_refused", host=host, port=port, reason=reason)
        else:
            window.reasons[reason] += 1

    def flush(self, now: float | None = None) -> float | None:
        """Log the summaries of ended windows; return seconds until the next one ends."""
        now = time.monotonic() if now is None else now
        if not self._windows:
            return None
        if now < self._next:
            return self._next - now
        while self._windows:
            host, window = next(iter(self._windows.items()))
            if window.ends > now:
                break
            del self._windows[host]
            if window.reasons:
                count, reasons = sum(window.reasons.values()), dict(window.reasons)
                self._log.warning("clients_refused", host=host, count=count, reasons=reasons)
        if not self._windows:
            return None
        self._next = next(iter(self._windows.values())).ends
        return self._next - now
