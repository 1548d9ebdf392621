"""The append-only log on real files: records back as written, torn tails cut off, failed
writes undone, segments removed only once released."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lanchatd.core.tags import MessageId
from lanchatd.daemon.appendlog import AppendLog


def mark(number: int) -> MessageId:
    return MessageId(1_700_000_000_000 + number, 0)


def opened(stem: Path) -> tuple[AppendLog, list[bytes], int]:
    log = AppendLog(stem)
    records, torn = log.open()
    return log, records, torn


def segments(stem: Path) -> list[str]:
    return sorted(path.name for path in stem.parent.glob(f"{stem.name}.*"))


def test_records_come_back_in_order_across_segments_after_a_reopen(tmp_path: Path) -> None:
    stem = tmp_path / "log"
    payloads = [b"", b"one", bytes(range(256)) * 300, b"\n\x00\xff"]
    log, records, torn = opened(stem)
    assert (records, torn, segments(stem)) == ([], 0, [])
    for number, payload in enumerate(payloads):
        log.append(payload, mark(number))
        if number == 1:
            log.rotate()
    assert segments(stem) == ["log.1", "log.2"]
    assert log.total == sum(8 + len(p) for p in payloads)
    assert log.size == (stem.parent / "log.2").stat().st_size
    log.close()
    again, records, torn = opened(stem)
    assert (records, torn) == (payloads, 0)
    again.append(b"more", mark(9))
    again.close()
    assert segments(stem) == ["log.1", "log.2", "log.3"]
    assert opened(stem)[1] == [*payloads, b"more"]


def test_release_removes_only_older_segments_wholly_up_to_the_mark(tmp_path: Path) -> None:
    stem = tmp_path / "log"
    log, _, _ = opened(stem)
    for number in range(6):
        log.append(b"x", mark(number))
        if number % 2:
            log.rotate()  # segments hold 0-1, 2-3, 4-5
    log.append(b"y", mark(6))  # the current one: never released
    log.release(mark(2))
    assert segments(stem) == ["log.2", "log.3", "log.4"]
    log.release(mark(6))
    assert segments(stem) == ["log.4"]
    assert log.total == log.size == 9
    log.close(remove=True)
    assert segments(stem) == []


def test_segments_found_at_open_go_once_released_through_their_mark(tmp_path: Path) -> None:
    stem = tmp_path / "log"
    log, _, _ = opened(stem)
    log.append(b"old", mark(1))
    log.close()
    again, records, _ = opened(stem)
    assert records == [b"old"]
    again.release(mark(10**6))
    assert segments(stem) == ["log.1"], "kept until the caller says what they hold"
    again.mark_found(mark(5))
    again.release(mark(4))
    assert segments(stem) == ["log.1"]
    again.release(mark(5))
    assert segments(stem) == []
    again.append(b"new", mark(6))
    assert segments(stem) == ["log.2"], "numbers go on from the newest found"


def test_reset_leaves_only_the_new_payload(tmp_path: Path) -> None:
    stem = tmp_path / "log"
    log, _, _ = opened(stem)
    log.append(b"a", mark(1))
    log.rotate()
    log.append(b"b", mark(2))
    log.reset([b"kept"], mark(3))
    log.append(b"after", mark(4))
    assert segments(stem) == ["log.3"]
    log.reset([], mark(4))
    assert segments(stem) == []
    assert log.total == 0
    log.close()
    assert opened(stem)[1] == []


def test_new_segments_are_0640_looser_ones_are_tightened_and_symlinks_refused(
    tmp_path: Path,
) -> None:
    stem = tmp_path / "log"
    log, _, _ = opened(stem)
    log.append(b"x", mark(1))
    log.close()
    segment = tmp_path / "log.1"
    assert segment.stat().st_mode & 0o777 == 0o640
    segment.chmod(0o666)  # say, restored from a backup with cp
    opened(stem)
    assert segment.stat().st_mode & 0o777 == 0o640
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    (tmp_path / "log.2").symlink_to(target)
    again, records, _ = opened(stem)
    assert records == [b"x"]
    ((path, why),) = again.unreadable
    assert (path, "symbolic links" in why) == (tmp_path / "log.2", True)
    again.append(b"y", mark(2))
    assert target.read_bytes() == b"precious"
    assert segments(stem) == ["log.1", "log.2", "log.3"]


def test_a_tail_torn_at_any_byte_is_ignored_and_cut_off(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    log, _, _ = opened(whole)
    log.append(b"first", mark(1))
    log.append(b"second record", mark(2))
    log.close()
    data = (tmp_path / "whole.1").read_bytes()
    first_end = 8 + len(b"first")
    for cut in range(first_end, len(data)):
        stem = tmp_path / f"cut{cut}" / "log"
        stem.parent.mkdir()
        (stem.parent / "log.1").write_bytes(data[:cut])
        again, records, torn = opened(stem)
        assert (records, torn) == ([b"first"], cut - first_end), cut
        assert (stem.parent / "log.1").stat().st_size == first_end
        again.append(b"next", mark(3))
        again.close()
        assert opened(stem)[1:] == ([b"first", b"next"], 0), cut


def test_reading_a_segment_stops_at_a_record_that_fails_its_checksum(tmp_path: Path) -> None:
    stem = tmp_path / "log"
    log, _, _ = opened(stem)
    for payload in (b"good", b"flipped", b"after"):
        log.append(payload, mark(1))
    log.rotate()
    log.append(b"next segment", mark(2))
    log.close()
    first = tmp_path / "log.1"
    data = bytearray(first.read_bytes())
    data[8 + 4 + 8] ^= 0x01  # the first byte of the second payload
    first.write_bytes(bytes(data))
    assert opened(stem)[1:] == ([b"good", b"next segment"], len(data) - 12)


def test_a_header_claiming_a_huge_record_is_a_torn_tail(tmp_path: Path) -> None:
    (tmp_path / "log.1").write_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"x" * 100)
    assert opened(tmp_path / "log")[1:] == ([], 108)
    assert (tmp_path / "log.1").stat().st_size == 0


def test_files_that_are_not_segments_are_left_alone(tmp_path: Path) -> None:
    for name in ("log.1.bak", "log.x", "log", "other.1"):
        (tmp_path / name).write_bytes(b"\x00" * 20)
    log, records, torn = opened(tmp_path / "log")
    assert (records, torn) == ([], 0)
    log.close(remove=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "log.1.bak", "log.x", "other.1"]


def test_a_closed_log_takes_nothing(tmp_path: Path) -> None:
    log, _, _ = opened(tmp_path / "log")
    log.close()
    with pytest.raises(OSError, match="not open"):
        log.append(b"y", mark(1))


FULL = """
import sys, subprocess
from pathlib import Path
from lanchatd.core.tags import MessageId
from lanchatd.daemon.appendlog import AppendLog
directory = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], check=True)
log = AppendLog(directory / "log")
log.open()
log.append(b"a" * 1000, MessageId(1, 0))
try:
    log.append(b"b" * 200_000, MessageId(2, 0))
except OSError as error:
    print("refused", "short write" in str(error) or error.errno == 28)
log.append(b"c" * 1000, MessageId(3, 0))
log.close()
records, torn = AppendLog(directory / "log").open()
print([len(r) for r in records], torn)
"""


def test_a_write_the_disk_cannot_take_whole_is_undone(tmp_path: Path) -> None:
    """A real ENOSPC halfway through a record (a 64 KiB tmpfs in a private mount namespace):
    the segment is cut back, and the next record follows the last whole one."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs privately")
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            FULL,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused True", "[1000, 1000] 0"]
