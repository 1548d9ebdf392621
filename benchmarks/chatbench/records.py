"""The benchmark's message record: one fixed-width, self-checking 80-byte chat line.

Every client has a nickname of the same width (``c0000`` … ``c9999``), and a sender writes
the whole line, own-nick prefix included (as the original tutorial client does)::

    c0007: #SSSSSSSSTTTTTTTTKKKKKKKK~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\\n
    |word 0 ||word 1 ||word 2 ||word 3 ||words 4-9: filler and terminator        |

lanchatd strips one leading ``{own nick}: `` and broadcasts ``{nick}: {text}``, so what every
reader receives is byte for byte the line that was sent; so does the naive tutorial server,
which relays what it reads untouched. ncat relays the line with ``<userN> `` in front of
each read chunk; ngircd gets it as ``PRIVMSG #bench :{line}`` and relays it as
``:{nick}!~{nick}@127.0.0.1 PRIVMSG #bench :{line}`` with CR LF; the readers strip those and
get the same 80 bytes. Fixed width lets the verifier treat a buffer of records as an ``(n, 10)``
array of little-endian ``uint64`` words:

* word 0: ``cNNNN: #`` identifies the sender (looked up in a table of senders);
* word 1: sequence number, 8 decimal digits (per sender, from 0);
* word 2: send time, 8 decimal digits of microseconds since the run's epoch
  (``time.monotonic_ns``, which is one clock for every process on Linux);
* word 3: check digits, 26 bits mixing sender, sequence and send time;
* words 4-9: 47 filler bytes ``~`` and the ``\\n`` terminator.

Every byte of a record is checked, so a line that was cut, spliced, shifted or altered
is counted as corrupted, never silently accepted.
"""

from __future__ import annotations

from typing import Final

RECORD_BYTES: Final = 80
WORDS: Final = RECORD_BYTES // 8
NICK_DIGITS: Final = 4
MAX_CLIENTS: Final = 10**NICK_DIGITS
#: The timestamp field holds 8 digits of microseconds: a run must fit in this many seconds.
MAX_RUN_SECONDS: Final = 99.0
FILLER: Final = b"~" * 47 + b"\n"
#: Bytes that only benchmark records contain: a line holding one is a (possibly broken) record.
SIGNATURE: Final = (b": #", b"~~~~")
#: 26 bits: the check value always fits the 8 digits of its field.
CHECK_MASK: Final = (1 << 26) - 1


def nick(client: int) -> str:
    """Fixed-width nickname of a client index."""
    if not 0 <= client < MAX_CLIENTS:
        raise ValueError(f"client index {client} out of range")
    return f"c{client:0{NICK_DIGITS}d}"


def head(client: int) -> bytes:
    """The first 8 bytes of every record sent by ``client`` (word 0)."""
    return f"{nick(client)}: #".encode()


def check_value(client: int, seq: int, stamp_us: int) -> int:
    """The check digits of a record (word 3): cheap to recompute for millions at once."""
    return (seq ^ stamp_us ^ (client << 13)) & CHECK_MASK


def encode(head_bytes: bytes, client: int, seq: int, stamp_us: int, command: bytes = b"") -> bytes:
    """One record; ``head_bytes`` is ``head(client)`` (passed in so callers can cache it).

    ``command`` goes in front of the record on the wire (IRC: ``PRIVMSG #channel :``).
    """
    check = (seq ^ stamp_us ^ (client << 13)) & CHECK_MASK
    return b"%s%s%08d%08d%08d%s" % (command, head_bytes, seq, stamp_us, check, FILLER)


def encode_many(
    head_bytes: bytes, client: int, first_seq: int, count: int, stamp_us: int, command: bytes = b""
) -> bytes:
    """``count`` consecutive records sharing one send time, as one buffer for one write."""
    mix = stamp_us ^ (client << 13)
    return b"".join(
        [
            b"%s%s%08d%08d%08d%s"
            % (command, head_bytes, seq, stamp_us, (seq ^ mix) & CHECK_MASK, FILLER)
            for seq in range(first_seq, first_seq + count)
        ]
    )
