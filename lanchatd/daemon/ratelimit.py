"""Flood control: a token bucket that tells the reader how long to pause.

A flooding client is slowed down, not cut off: its reader stops reading for a while, so TCP
flow control pushes back on the sender and nothing it sent is lost while it stays connected.
"""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` messages per second on average, bursts of up to ``burst``; rate 0 disables."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate", "throttled")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        #: Set by the caller while it is pausing a client, so it tells the client only once.
        self.throttled = False
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def reconfigure(self, rate: float, burst: int) -> None:
        """Apply new limits (config reload) without granting a fresh burst."""
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, float(burst))

    def take(self, now: float | None = None) -> float:
        """Spend one token; return how many seconds the caller must wait first (0 if none)."""
        if not self.rate:
            return 0.0
        self._refill(now)
        self._tokens -= 1.0
        return self._owed()

    def due(self, now: float | None = None) -> float:
        """Seconds until the tokens already spent are paid back (0 when they are, or rate 0).

        A paused caller asks again after each wake-up, so a reload's new rate counts at once.
        """
        if not self.rate:
            return 0.0
        self._refill(now)
        return self._owed()

    def _refill(self, now: float | None) -> None:
        if now is None:
            now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _owed(self) -> float:
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate
