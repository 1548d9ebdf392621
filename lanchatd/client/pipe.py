"""The front end for pipes and scripts: stdin lines out, received lines to stdout.

Exit 0 means every input line reached the server: at end of input the client waits for
the server to confirm it has processed everything (see ``Session.sync``), then half-closes
the connection and lets the server close it, so no byte is left in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from typing import Final, TextIO

from lanchatd.client.link import ConnectError, Endpoint, Refused, join
from lanchatd.client.session import Session, Status
from lanchatd.client.words import say
from lanchatd.core.text import sanitize

#: How long a lost connection may stay lost before a script is told it failed.
GIVE_UP_AFTER: Final = 30.0
_QUEUED_LINES: Final = 256


class StdinLines:
    """Lines of a file descriptor, read in a thread: files, pipes and terminals alike.

    Reading stays ``_QUEUED_LINES`` ahead of sending at most, so a huge input is streamed.
    ``os.read`` on the raw descriptor keeps the thread off ``sys.stdin``'s lock, which an
    interpreter shutting down with this thread still blocked would otherwise trip over.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(_QUEUED_LINES)
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    async def get(self) -> str | None:
        """The next line without its end of line; None at end of input."""
        return await self._queue.get()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if not self._put(line):
                    return
        if buffer:
            self._put(buffer)
        self._put(None)

    def _put(self, line: bytes | None) -> bool:
        text = None if line is None else line.removesuffix(b"\r").decode(errors="replace")
        try:
            asyncio.run_coroutine_threadsafe(self._queue.put(text), self._loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            return False  # the client is finishing without the rest of its input
        return True


class LineWriter:
    """Writes received lines to stdout, flushed per line so a reading script sees them live.

    Once the reader has gone away (``lanchat ... | head -1``), output is discarded and the
    lines still get sent: posting is the job, and a broken pipe is not worth a traceback.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, raw: str) -> None:
        try:
            self._stream.write(sanitize(raw) + "\n")
            self._stream.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)


def _error(text: str) -> None:
    print(say("error", text=sanitize(text)), file=sys.stderr)


def _status(status: Status) -> None:
    print(say("note", text=sanitize(status.text)), file=sys.stderr)


async def run(endpoint: Endpoint, nick: str) -> int:
    """Post standard input to the room; the exit status."""
    try:
        result = await join(endpoint, nick)
    except ConnectError as error:
        _error(str(error))
        return 1
    if isinstance(result, Refused):
        _error(say("nick_refused", nick=repr(nick), reason=result.reason))
        return 1
    session = Session(
        endpoint,
        nick,
        result,
        on_line=LineWriter(sys.stdout),
        on_status=_status,
        give_up_after=GIVE_UP_AFTER,
        max_held=None,  # input waits for the connection instead: nothing is refused
    )
    session.start()
    lines = StdinLines()
    while (line := await lines.get()) is not None:
        if not await session.wait_connected():
            break
        await session.send(line)
        if session.quit_sent:
            break
    if session.failed is None and await session.finish():
        return 0
    await session.close()
    _error(say("not_all_delivered", why=session.failed or say("connection_lost")))
    return 1
