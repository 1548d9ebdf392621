"""Batch verification of what the readers received, vectorised with numpy.

The kernel writes each reader's bytes into its :class:`Inbox`, which notes where every read
ended and when it arrived. Every ~100 ms the :class:`Verifier` takes all inboxes of a
process at once:

1. per reader, a C-speed check that the buffer is whole 80-byte lines (every 80th byte a
   newline, none in the partial record left over); only a buffer that fails it, or whose
   records then fail the checks below, is split into lines in Python (join/leave lines are
   skipped, broken records counted);
2. all readers' records are concatenated and viewed as an ``(n, 10)`` array of uint64 words;
   every byte of every record is checked (sender table, digit columns decoded 8 at a time
   with SWAR arithmetic, check digits, filler, terminator);
3. per (reader, sender) the sequence numbers must continue exactly where they stopped:
   a stable radix sort by (reader, sender) key and one comparison with the previous record
   settle the common case; only keys with a gap or a step back are walked in Python, where
   holes are remembered so that a late record counts as reordered and a repeat as duplicate;
4. latency (arrival minus send time) goes into a log-scaled histogram (128 bins per octave,
   so percentiles are within 0.55 %) and an exact maximum.

Loss is settled at the end of a run, when the senders' final counts are known: every reader
must hold every message from sequence 0 to the last one sent (see :meth:`Verifier.finish`).
"""

from __future__ import annotations

import bisect
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from benchmarks.chatbench.records import (
    CHECK_MASK,
    FILLER,
    RECORD_BYTES,
    SIGNATURE,
    WORDS,
    head,
)

BINS_PER_OCTAVE: Final = 128
#: Histogram covers 1 µs … 2**30 µs (about 18 minutes); anything longer is clipped to the top.
HIST_BINS: Final = 30 * BINS_PER_OCTAVE + 1
BLOCK_RECORDS: Final = 32 * 1024
INITIAL_BUFFER: Final = 64 * 1024
MIN_FREE: Final = 32 * 1024
#: A gap this large is counted as lost without remembering each missing sequence number.
MAX_TRACKED_GAP: Final = 1_000_000

_U64 = np.uint64
_ZEROS = _U64(0x3030303030303030)
_HIGH = _U64(0xF0F0F0F0F0F0F0F0)
_SIX = _U64(0x0606060606060606)
_MASK = _U64(0x000000FF000000FF)
_MUL1 = _U64(100 + (1000000 << 32))
_MUL2 = _U64(1 + (10000 << 32))
_LOW32 = _U64(0xFFFFFFFF)
_FILLER_WORDS = np.frombuffer(FILLER, dtype="<u8")
_NL = 10


def parse8(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode 8 ASCII digits per little-endian uint64; returns (values, all-digits mask)."""
    valid = ((words & _HIGH) == _ZEROS) & (((words + _SIX) & _HIGH) == _ZEROS)
    v = words - _ZEROS
    v = v * _U64(10) + (v >> _U64(8))
    v = (((v & _MASK) * _MUL1) + (((v >> _U64(16)) & _MASK) * _MUL2)) >> _U64(32)
    return (v & _LOW32).astype(np.int64), valid


class Inbox:
    """One reader's received bytes, in its own growing buffer, with each read's arrival time.

    The kernel writes into ``buf`` directly (``get_buffer``/``updated`` serve an asyncio
    ``BufferedProtocol``). ``ends[i]`` is where read ``i`` ended in ``buf`` and ``times[i]``
    when it arrived. The buffer is never resized (asyncio may hold a view of it): it is
    replaced when it fills, and consumed bytes are dropped by moving the rest to the front.
    """

    __slots__ = ("buf", "consumed", "end", "ends", "times")

    def __init__(self, size: int = INITIAL_BUFFER) -> None:
        self.buf = bytearray(size)
        self.end = 0
        self.ends: list[int] = []
        self.times: list[int] = []
        #: Bytes dropped from the front since the owner last looked (for offsets it keeps).
        self.consumed = 0

    def get_buffer(self) -> memoryview:
        buf = self.buf
        if len(buf) - self.end < MIN_FREE:
            bigger = bytearray(max(2 * len(buf), self.end + MIN_FREE))
            bigger[: self.end] = memoryview(buf)[: self.end]
            self.buf = buf = bigger
        return memoryview(buf)[self.end :]

    def updated(self, nbytes: int) -> None:
        self.end = end = self.end + nbytes
        self.ends.append(end)
        self.times.append(time.monotonic_ns())

    def discard(self, upto: int) -> None:
        """Forget ``buf[:upto]``."""
        rest = self.end - upto
        if rest:
            self.buf[:rest] = self.buf[upto : self.end]
        self.end = rest
        self.consumed += upto

    def keep_tail(self) -> None:
        """Forget every whole line (used before the measurement)."""
        cut = self.buf.rfind(b"\n", 0, self.end) + 1
        if cut:
            self.discard(cut)


@dataclass
class Tally:
    """What one process's readers received; summed over processes by the runner."""

    valid: int = 0
    window_deliveries: int = 0
    corrupted: int = 0
    other_lines: int = 0
    duplicated: int = 0
    reordered: int = 0
    unexpected: int = 0
    invalid_seq: int = 0
    lost: int = 0
    prefixes: int = 0
    latency_max_us: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    verify_seconds: float = 0.0

    def merge(self, other: Tally) -> None:
        for name in (
            "valid",
            "window_deliveries",
            "corrupted",
            "other_lines",
            "duplicated",
            "reordered",
            "unexpected",
            "invalid_seq",
            "lost",
            "prefixes",
            "verify_seconds",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_max_us = max(self.latency_max_us, other.latency_max_us)
        self.histogram = self.histogram + other.histogram

    def percentile_us(self, fraction: float) -> float | None:
        """Latency at ``fraction`` (0..1) of the window's deliveries; None without samples."""
        total = int(self.histogram.sum())
        if not total:
            return None
        rank = max(1, math.ceil(fraction * total))
        index = int(np.searchsorted(np.cumsum(self.histogram), rank))
        if index == 0:
            return 1.0
        # Geometric middle of the bin, never above the exact maximum.
        value = 2 ** ((index + 0.5) / BINS_PER_OCTAVE)
        return min(value, float(self.latency_max_us))

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "window_deliveries": self.window_deliveries,
            "corrupted": self.corrupted,
            "other_lines": self.other_lines,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "unexpected": self.unexpected,
            "invalid_seq": self.invalid_seq,
            "lost": self.lost,
            "prefixes": self.prefixes,
            "latency_max_us": self.latency_max_us,
            "histogram": self.histogram,
            "verify_seconds": self.verify_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        return cls(**data)


class _Part:
    """One reader's records in one pass, and when each of them arrived.

    ``region`` holds whole 80-byte records. Arrival is given per read: ``ends[i]`` is where
    read ``i`` ended (an offset in ``region``; it may lie past it) and ``times[i]`` when it
    arrived; a record arrived with the read that carried its last byte.
    """

    __slots__ = ("count", "ends", "fast", "index", "region", "times")

    def __init__(self, index: int, region: Any, ends: list[int], times: list[int],
                 fast: bool) -> None:  # fmt: skip
        self.index = index
        self.region = region
        self.count = len(region) // RECORD_BYTES
        self.ends = ends
        self.times = times
        self.fast = fast


class Verifier:
    """Checks the records of ``readers`` (client ids) from ``senders`` (client ids).

    ``echo``: whether a sender receives its own messages (lanchatd, naive: yes; ncat,
    ngircd: no). ``relay``: what the server puts around a relayed line (see RELAYS), removed
    before checking; None for servers that deliver the sent line as it is.
    Send stamps are microseconds since ``epoch_ns``.
    """

    def __init__(
        self,
        readers: list[int],
        senders: list[int],
        *,
        echo: bool,
        relay: Relay | None = None,
        epoch_ns: int,
    ) -> None:
        self.readers = readers
        self.senders = senders
        self.relay = relay
        self.epoch_us = epoch_ns // 1000
        count = len(senders)
        heads = np.array([np.frombuffer(head(c), dtype="<u8")[0] for c in senders], dtype=_U64)
        self._head_order = np.argsort(heads).astype(np.int64)
        self._heads_sorted = heads[self._head_order]
        self._sender_ids = np.array(senders, dtype=np.int64)
        expected = np.ones((len(readers), count), dtype=bool)
        if not echo:
            for r, reader in enumerate(readers):
                for s, sender in enumerate(senders):
                    if reader == sender:
                        expected[r, s] = False
        self.expected = expected.reshape(-1)
        self.hi = np.full(len(readers) * count, -1, dtype=np.int64)
        self.holes: dict[int, set[int]] = {}
        self.untracked_lost = 0
        self.window = (0, 0)
        self.tally = Tally()

    def set_window(self, start_ns: int, stop_ns: int) -> None:
        """Deliveries arriving in [start, stop) count for deliveries/s and latency."""
        self.window = (start_ns // 1000 - self.epoch_us, stop_ns // 1000 - self.epoch_us)

    # -- one pass ---------------------------------------------------------------------------

    def feed(self, inboxes: list[tuple[int, Inbox]]) -> None:
        """Verify every whole line that arrived in ``(reader index, inbox)`` since last time."""
        started = time.process_time()
        parts: list[_Part] = []
        consumed: list[tuple[Inbox, int]] = []
        tally = self.tally
        for index, inbox in inboxes:
            if not inbox.ends:
                continue
            ends, times = inbox.ends, inbox.times
            inbox.ends = []
            inbox.times = []
            if self.relay is not None:
                cut = inbox.buf.rfind(b"\n", 0, inbox.end) + 1
                if not cut:
                    continue
                data, ends, prefixes = _strip(bytes(memoryview(inbox.buf)[:cut]), ends, self.relay)
                tally.prefixes += prefixes
                part = _records(index, data, len(data), ends, times, tally)
                consumed.append((inbox, cut))  # every whole line, in raw bytes
            else:
                part = _records(index, inbox.buf, inbox.end, ends, times, tally)
                consumed.append((inbox, part.consumed))
            if part.count:
                parts.append(part)
        # Blocks of a few MB: cache-friendly, and numpy's temporaries stay small enough to be
        # reused from the heap instead of being mapped (and faulted in) afresh every pass.
        block: list[_Part] = []
        size = 0
        for part in parts:
            block.append(part)
            size += part.count
            if size >= BLOCK_RECORDS:
                self._check(block)
                block, size = [], 0
        if block:
            self._check(block)
        del parts, block
        for inbox, cut in consumed:
            inbox.discard(cut)
        tally.verify_seconds += time.process_time() - started

    def _check(self, parts: list[_Part]) -> None:
        ok, reader, sender, seq, stamp, arrival = self._decode(parts)
        if not ok.all():
            # A buffer that looked like whole records but is not (say, 80 bytes of join lines
            # in front of them) gets a second look line by line before anything is corrupted.
            owners = set(np.unique(reader[~ok]).tolist())
            first = 0
            redo: list[_Part] = []
            for part in parts:
                if part.fast and part.index in owners:
                    mine = arrival[first : first + part.count]
                    ends = list(range(RECORD_BYTES, (part.count + 1) * RECORD_BYTES, RECORD_BYTES))
                    again = _records(part.index, bytes(part.region), len(part.region), ends,
                                     (mine * 1000).tolist(), self.tally, slow=True)  # fmt: skip
                    if again.count:
                        redo.append(again)
                first += part.count
            if redo or owners:
                keep = ~np.isin(reader, [p.index for p in parts if p.fast and p.index in owners])
                fields = [f[keep] for f in (ok, reader, sender, seq, stamp, arrival)]
                if redo:
                    more = self._decode(redo, base_us=0)
                    fields = [np.concatenate(pair) for pair in zip(fields, more, strict=True)]
                ok, reader, sender, seq, stamp, arrival = fields
        tally = self.tally
        if not ok.all():
            tally.corrupted += int(np.count_nonzero(~ok))
            reader, sender, seq, stamp, arrival = (
                a[ok] for a in (reader, sender, seq, stamp, arrival)
            )
        key = reader * len(self.senders) + sender
        expected = self.expected[key]
        if not expected.all():
            tally.unexpected += int(np.count_nonzero(~expected))
            key, seq, stamp, arrival = (a[expected] for a in (key, seq, stamp, arrival))
        tally.valid += len(key)
        self._sequences(key, seq)
        self._latency(arrival, stamp)

    def _decode(self, parts: list[_Part], base_us: int | None = None) -> list[np.ndarray]:
        """Check every byte of every record; (ok, reader, sender, seq, stamp, arrival µs).

        Arrival times come from the parts' reads (ns), made relative to the epoch in µs;
        with ``base_us=0`` the parts' times are already µs since the epoch (times 1000).
        """
        data = b"".join([p.region for p in parts])
        counts = [p.count for p in parts]
        reader = np.repeat(np.array([p.index for p in parts], dtype=np.int64), counts)
        # When each record arrived: one search over the reads of all parts, laid end to end.
        ends: list[int] = []
        times: list[int] = []
        base = 0
        for part in parts:
            size = part.count * RECORD_BYTES
            # Reads ending past the records: only the first of them carried any record.
            last = min(bisect.bisect_left(part.ends, size), len(part.ends) - 1)
            ends.extend([base + e for e in part.ends[:last]])
            ends.append(base + size)
            times.extend(part.times[: last + 1])
            base += size
        read = np.searchsorted(
            np.array(ends, dtype=np.int64),
            np.arange(RECORD_BYTES - 1, base, RECORD_BYTES, dtype=np.int64),
            side="right",
        )
        arrival = np.array(times, dtype=np.int64)[read] // 1000
        arrival -= self.epoch_us if base_us is None else base_us
        words = np.frombuffer(data, dtype="<u8").reshape(-1, WORDS)
        columns = np.ascontiguousarray(words[:, :4].T)
        heads = columns[0]
        slot = np.searchsorted(self._heads_sorted, heads)
        np.minimum(slot, len(self._heads_sorted) - 1, out=slot)
        ok = self._heads_sorted[slot] == heads
        sender = self._head_order[slot]
        seq, valid = parse8(columns[1])
        ok &= valid
        stamp, valid = parse8(columns[2])
        ok &= valid
        check, valid = parse8(columns[3])
        ok &= valid
        filler = words[:, 4] ^ _FILLER_WORDS[0]
        for k in range(1, len(_FILLER_WORDS)):
            filler |= words[:, 4 + k] ^ _FILLER_WORDS[k]
        ok &= filler == 0
        ok &= check == ((seq ^ stamp ^ (self._sender_ids[sender] << 13)) & CHECK_MASK)
        return [ok, reader, sender, seq, stamp, arrival]

    def _sequences(self, key: np.ndarray, seq: np.ndarray) -> None:
        size = len(key)
        if not size:
            return
        narrow = key.astype(np.int16 if len(self.hi) < 2**15 else np.int32)
        order = np.argsort(narrow, kind="stable")
        keys = key[order]
        seqs = seq[order]
        first = np.empty(size, dtype=bool)
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        last = np.empty(size, dtype=bool)
        last[-1] = True
        last[:-1] = first[1:]
        previous = np.empty(size, dtype=np.int64)
        previous[1:] = seqs[:-1]
        previous[first] = self.hi[keys[first]]
        in_order = seqs == previous + 1
        if in_order.all():
            self.hi[keys[last]] = seqs[last]
            return
        troubled = np.isin(keys, np.unique(keys[~in_order]))
        calm_last = last & ~troubled
        self.hi[keys[calm_last]] = seqs[calm_last]
        self._walk(keys[troubled].tolist(), seqs[troubled].tolist())

    def _walk(self, keys: list[int], seqs: list[int]) -> None:
        """Exact bookkeeping, record by record, for keys whose sequence broke step."""
        hi = self.hi
        tally = self.tally
        for key, seq in zip(keys, seqs, strict=True):
            top = int(hi[key])
            if seq == top + 1:
                hi[key] = seq
            elif seq > top + 1:
                if seq - top - 1 > MAX_TRACKED_GAP:
                    self.untracked_lost += seq - top - 1
                else:
                    self.holes.setdefault(key, set()).update(range(top + 1, seq))
                hi[key] = seq
            else:
                holes = self.holes.get(key)
                if holes and seq in holes:
                    holes.discard(seq)
                    tally.reordered += 1
                else:
                    tally.duplicated += 1

    def _latency(self, arrival_us: np.ndarray, stamp: np.ndarray) -> None:
        low, high = self.window
        inside = (arrival_us >= low) & (arrival_us < high)
        latency = (arrival_us - stamp)[inside]
        if not len(latency):
            return
        tally = self.tally
        tally.window_deliveries += len(latency)
        np.maximum(latency, 1, out=latency)
        tally.latency_max_us = max(tally.latency_max_us, int(latency.max()))
        bins = (np.log2(latency) * BINS_PER_OCTAVE).astype(np.int64)
        np.minimum(bins, HIST_BINS - 1, out=bins)
        tally.histogram += np.bincount(bins, minlength=HIST_BINS)

    # -- the end of a run --------------------------------------------------------------------

    def missing(self, sent: dict[int, int]) -> int:
        """Messages (reader, sender, seq) not yet received, given each sender's final count."""
        last = np.array([sent.get(s, 0) - 1 for s in self.senders], dtype=np.int64)
        want = np.tile(last, len(self.readers))
        behind = np.where(self.expected, want - self.hi, 0)
        holes = sum(len(h) for h in self.holes.values())
        return int(np.maximum(behind, 0).sum()) + holes + self.untracked_lost

    def finish(self, sent: dict[int, int]) -> Tally:
        """Settle loss (and sequence numbers beyond what was sent) once the stream drained."""
        last = np.array([sent.get(s, 0) - 1 for s in self.senders], dtype=np.int64)
        want = np.tile(last, len(self.readers))
        behind = np.where(self.expected, want - self.hi, 0)
        self.tally.invalid_seq = int(np.maximum(-behind, 0).sum())
        self.tally.lost = self.missing(sent)
        return self.tally


# -- splitting buffers into records -----------------------------------------------------------


@dataclass(frozen=True)
class Relay:
    """How a server wraps each line it relays.

    ``prefix`` matches a newline and the prefix after it, the prefix captured: the newline
    is a literal start that is fast to find and is put back by the join, so one split yields
    pieces and prefixes. ``crlf``: lines end in CR LF (the CRs are removed first).
    """

    prefix: re.Pattern[bytes]
    crlf: bool = False


#: ncat puts ``<userN> `` in front of each chunk it relays; ngircd relays ``PRIVMSG #bench
#: :{line}`` as ``:{nick}!{user}@{host} PRIVMSG #bench :{line}`` CR LF.
RELAYS: Final = {
    "ncat": Relay(re.compile(rb"\n(<user\d+> )")),
    "ngircd": Relay(re.compile(rb"\n(:c\d+!\S+ PRIVMSG #bench :)"), crlf=True),
}


class _Records(_Part):
    __slots__ = ("consumed",)


def _records(
    index: int,
    buf: Any,
    end: int,
    ends: list[int],
    times: list[int],
    tally: Tally,
    *,
    slow: bool = False,
) -> _Records:
    """The whole records among ``buf[:end]``; ``consumed`` is how much of buf they used up.

    Fast path (no Python per line): the buffer is whole 80-byte lines up to a partial record
    at the end. Otherwise it is split into lines: records are kept, lines that are not
    records (joins, leaves, announces) skipped, broken records counted as corrupted.
    """
    whole = end // RECORD_BYTES
    used = whole * RECORD_BYTES
    if (
        not slow
        and whole
        and buf[RECORD_BYTES - 1 : used : RECORD_BYTES].count(_NL) == whole
        and buf.find(b"\n", used, end) < 0
    ):
        part = _Records(index, memoryview(buf)[:used], ends, times, True)
        part.consumed = used
        return part
    cut = buf.rfind(b"\n", 0, end) + 1
    keep: list[bytes] = []
    offsets: list[int] = []
    position = 0
    for line in bytes(memoryview(buf)[:cut]).split(b"\n")[:-1]:
        size = len(line)
        is_record = SIGNATURE[0] in line or SIGNATURE[1] in line
        if size == RECORD_BYTES - 1 and is_record:
            keep.append(line)
            offsets.append(position + size)
        elif is_record:
            tally.corrupted += 1
        else:
            tally.other_lines += 1
        position += size + 1
    # Each kept record becomes one pseudo-read ending with it, at its real read's time.
    read = np.searchsorted(np.array(ends, dtype=np.int64), offsets, side="right")
    arrival = np.array(times, dtype=np.int64)[np.minimum(read, len(times) - 1)].tolist()
    keep.append(b"")
    records = b"\n".join(keep) if len(keep) > 1 else b""
    pseudo_ends = list(range(RECORD_BYTES, (len(offsets) + 1) * RECORD_BYTES, RECORD_BYTES))
    part = _Records(index, records, pseudo_ends, arrival, False)
    part.consumed = cut
    return part


def _drop_cr(raw: bytes, ends: list[int]) -> tuple[bytes, list[int]]:
    """Remove every CR; map read ends to the offsets without them."""
    if raw.find(b"\r") < 0:
        return raw, ends
    crs = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 13)
    at = np.array(ends, dtype=np.int64)
    return raw.replace(b"\r", b""), (at - np.searchsorted(crs, at, side="left")).tolist()


def _strip(raw: bytes, ends: list[int], relay: Relay) -> tuple[bytes, list[int], int]:
    """Remove the relay's prefixes at line starts; map read ends to the stripped offsets.

    Returns the stripped bytes, the read ends in them, and how many prefixes there were.
    A prefix inside a line (ncat relays a chunk that ends mid-line) stays: that line is
    counted as corrupted, as it is for a person reading it.
    """
    if relay.crlf:
        raw, ends = _drop_cr(raw, ends)
    parts = relay.prefix.split(b"\n" + raw)
    if len(parts) == 1:
        return raw, ends, 0
    pieces = parts[0::2]
    prefixes = parts[1::2]
    piece_len = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    prefix_len = np.fromiter(map(len, prefixes), dtype=np.int64, count=len(prefixes))
    removed = np.cumsum(prefix_len)
    prefix_start = np.cumsum(piece_len[:-1]) + removed - prefix_len + np.arange(len(prefixes))
    # Prefixes starting before each end; the last of them may straddle it.
    at = np.array(ends, dtype=np.int64)
    count = np.searchsorted(prefix_start, at, side="left")
    last = np.maximum(count - 1, 0)
    partial = np.clip(at - prefix_start[last], 0, prefix_len[last])
    before = np.where(count > 0, removed[last] - prefix_len[last] + partial, 0)
    return b"\n".join(pieces)[1:], (at - before).tolist(), len(prefixes)
