"""The terminal front end: a ``>>`` prompt with the room's lines printed above it.

prompt_toolkit keeps what the user is typing intact: under ``patch_stdout`` every print is
put above the prompt, and the prompt is redrawn with the half-typed line as it was. Enter
clears the line instead of echoing it, so a message appears once, as the server's echo, in
the order everyone else sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout

from lanchatd.client.link import (
    ConnectError,
    Connection,
    Endpoint,
    Refused,
    join,
    nick_problem,
    reach,
)
from lanchatd.client.render import Renderer
from lanchatd.client.session import MAX_HELD, Sent, Session, Status, sendable
from lanchatd.client.words import say
from lanchatd.core.commands import Quit, parse_command
from lanchatd.core.text import sanitize


async def run(endpoint: Endpoint, nick: str | None, renderer: Renderer) -> int:
    """Ask for a nickname until the server takes one, then chat; the exit status.

    Without a nickname the server is reached first, so that a wrong address or a stopped
    server is reported at once, not after the user has typed a name.
    """
    asker: PromptSession[str] | None = None
    while True:
        try:
            if nick is None:
                greeted = await reach(endpoint)
                asker = asker or PromptSession()
                nick = await _ask_nick(asker, renderer)
                if nick is None:
                    greeted.close()
                    return 0
                result = await greeted.answer(nick)
            else:
                result = await join(endpoint, nick.strip())
        except ConnectError as error:
            print(say("error", text=sanitize(str(error))), file=sys.stderr)
            return 1
        if isinstance(result, Refused):
            print(renderer.line(result.reason))
            nick = None
            continue
        return await _chat(endpoint, nick.strip(), result, renderer)


async def _ask_nick(asker: PromptSession[str], renderer: Renderer) -> str | None:
    while True:
        try:
            text = await asker.prompt_async(say("username"))
        except (EOFError, KeyboardInterrupt):
            return None
        problem = nick_problem(text)
        if problem is None:
            return text.strip()
        if text.strip():
            print(renderer.warning(problem))


async def _chat(endpoint: Endpoint, nick: str, connection: Connection, renderer: Renderer) -> int:
    styles = {"info": renderer.notice, "warning": renderer.warning, "error": renderer.error}

    def show_status(status: Status) -> None:
        print(styles.get(status.level, renderer.notice)(status.text))

    with patch_stdout(raw=True):
        security = _security(endpoint, connection)
        print(renderer.notice(say("connected", where=endpoint, nick=nick, security=security)))
        print(renderer.notice(say("how_to_leave")))
        session = Session(
            endpoint,
            nick,
            connection,
            on_line=lambda raw: print(renderer.line(raw)),
            on_history=lambda clock, raw: print(renderer.history(clock, raw)),
            on_status=show_status,
        )
        session.start()
        typed: asyncio.Queue[str | None] = asyncio.Queue()
        sender = asyncio.ensure_future(_send_typed(typed, session, renderer))
        depth = None if renderer.color else ColorDepth.DEPTH_1_BIT
        prompt: PromptSession[None] = PromptSession(
            ">> ",
            key_bindings=_submit_bindings(typed.put_nowait),
            erase_when_done=True,
            color_depth=depth,
        )
        await _prompt_until_done(prompt, session)
        typed.put_nowait(None)
        await sender
        unsent = await session.close()
        for line in unsent.held:
            print(renderer.warning(say("not_sent", line=line)))
        for line in unsent.unconfirmed:
            print(renderer.warning(say("maybe_lost", line=line)))
    return 1 if session.failed else 0


def _security(endpoint: Endpoint, connection: Connection) -> str:
    """How the connection is protected, for the "connected" notice (nothing when plain)."""
    version = connection.tls_version
    if version is None:
        return ""
    return f" ({version})" if endpoint.verified else f" ({version}, {say('unverified')})"


def _submit_bindings(submit: Callable[[str], None]) -> KeyBindings:
    """Enter hands the line over and clears the prompt, which keeps running.

    The prompt is never closed between messages: between two prompts the terminal would be
    back in cooked mode, where keys typed meanwhile are echoed twice and a Ctrl-D is lost.
    A pasted block of several lines becomes one message per line.
    """
    bindings = KeyBindings()

    @bindings.add("enter", filter=has_focus(DEFAULT_BUFFER))
    def _submit(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        text = sendable(buffer.text)  # pasted bytes that are not UTF-8
        buffer.reset(append_to_history=bool(text.strip()))
        for line in text.splitlines():
            if isinstance(parse_command(line.strip()), Quit):
                event.app.exit()
                return
            if line.strip():
                submit(line)

    return bindings


async def _send_typed(
    typed: asyncio.Queue[str | None], session: Session, renderer: Renderer
) -> None:
    """Send what was typed, in order; say so when a line has to wait or cannot go."""
    while (text := await typed.get()) is not None:
        outcome = await session.send(text)
        if outcome is Sent.HELD:
            print(renderer.warning(say("held", line=text)))
        elif outcome is Sent.REFUSED:
            print(renderer.warning(say("too_many_held", count=MAX_HELD, line=text)))


async def _prompt_until_done(prompt: PromptSession[None], session: Session) -> None:
    """Run the prompt until /quit, Ctrl-D or Ctrl-C, or until the session ends by itself."""
    typing = asyncio.ensure_future(_prompt(prompt))
    ended = asyncio.ensure_future(session.wait_done())
    try:
        await asyncio.wait({typing, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        if not typing.done():
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing


async def _prompt(prompt: PromptSession[None]) -> None:
    # Caught here, inside the task: a KeyboardInterrupt escaping a task would be re-raised
    # by the event loop itself, with asyncio's own traceback on the way out.
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        await prompt.prompt_async()
