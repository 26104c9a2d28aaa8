"""Signals for the command-line tools: SIGTERM and SIGHUP unwind like Ctrl-C, and finished work stays finished.

Python's default SIGTERM ends the process at once, so `finally` blocks never run: temporaries stay behind and a
server the tool started keeps running. Inside a :class:`SignalGuard` the first SIGINT, SIGTERM or SIGHUP raises
:class:`Interrupted` instead, which unwinds through every cleanup. Once the tool starts publishing its output
(`guard.publishing(move)`), a signal no longer interrupts: the file is complete, so it is only noted in `late`.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A handled signal arrived while the tool was working; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum, self.name = signum, signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(self.name)


class SignalGuard:
    """A context manager installing the handlers above (in the main thread; elsewhere it changes nothing)."""

    def __init__(self) -> None:
        self.raised = False
        self.finished = False
        self.late: str | None = None  # the name of a signal that came once the output was being published
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in HANDLED}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.raised or self.finished:  # cleanup under way, or nothing left to lose: only note it
            self.late = self.late or signal.Signals(signum).name
            return
        self.raised = True
        raise Interrupted(signum)

    def publishing(self, move: Callable[..., None]) -> Callable[..., None]:
        """`move` (which gives the finished temporary its final name), run with interrupts only noted: a signal
        from this moment on can no longer lose the output."""
        def publish(*args, **kwargs) -> None:
            self.finished = True
            move(*args, **kwargs)
        return publish
