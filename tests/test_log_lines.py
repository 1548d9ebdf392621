"""The ``message`` event's own renderer writes the very lines structlog's path writes.

``logs.messages`` renders the hot event itself (lanchatd/daemon/logs.py); every consumer of
the log (jq, journald, tests, docs/events.md) relies on the line being the one
``log.info("message", ...)`` makes. Each case runs in a fresh Python process that configures
the daemon's logging on its real stderr, logs the same lines both ways and flushes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from tests.support import WAIT

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from lanchatd.daemon import logs

    fmt, level, journald = sys.argv[1], sys.argv[2], sys.argv[3] == "journald"
    if journald:
        info = os.fstat(2)
        os.environ["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    logs.configure(fmt, level)
    log = logs.get_logger().bind(host="::1", port=4242).bind(nick="zo\u00eb")
    texts = ['say "hi"', "zo\u00eb \u2603 \\\\ back\\t", "\U0001f600", ""]
    sizes = [len(text.encode()) for text in texts]
    for with_text in (True, False):
        for text, size in zip(texts, sizes):
            if with_text:
                log.info("message", text=text, bytes=size)
            else:
                log.info("message", bytes=size)
        logs.flush()
        print("---", file=sys.stderr, flush=True)
        logs.messages(log, texts, sizes, with_text)
        logs.flush()
        print("===", file=sys.stderr, flush=True)
    logs.messages(logs.get_logger(), texts[:1], sizes[:1], True)
    logs.flush()
    """
)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _logged(fmt: str, level: str, journald: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, fmt, level, journald],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return _TIMESTAMP.sub("T", result.stderr)


@pytest.mark.parametrize(
    ("fmt", "journald", "first"),
    [
        ("json", "plain", '{"host": "::1", "port": 4242, "nick": "zo\\u00eb", "text": "say \\"hi'),
        ("json", "journald", '<6>{"host": "::1", "port": 4242, "nick": "zo\\u00eb", "text": '),
        ("console", "plain", "T [info     ] message"),
    ],
)
def test_message_lines_are_the_lines_structlog_writes(fmt: str, journald: str, first: str) -> None:
    logged = _logged(fmt, "info", journald)
    *pairs, unbound = logged.split("===\n")
    assert len(pairs) == 2
    for pair in pairs:
        structlogs, own = pair.split("---\n")
        assert own == structlogs
        assert len(own.splitlines()) == 4
    assert pairs[0].startswith(first)
    if fmt == "json":
        prefix = "<6>" if journald == "journald" else ""
        assert unbound == prefix + (
            '{"text": "say \\"hi\\"", "bytes": 8, "event": "message", "level": "info", '
            '"timestamp": "T"}\n'
        )


def test_message_lines_follow_the_log_level() -> None:
    assert _logged("json", "warning", "plain") == "---\n===\n---\n===\n"
