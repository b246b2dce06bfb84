"""The sweep's status line as a person sees it: redrawn in place on a terminal, plain lines
elsewhere (CI, nohup, a log file), and messages printed above it."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from emergence_lab.console import escape_codes
from emergence_lab.sweep.status import SweepStatus

TTY_EVERY_S = 1.0  # a terminal's line is redrawn this often
PLAIN_EVERY_S = 30.0  # without a terminal, at most one line this often


class StatusDisplay:
    """Draws `status.line()`: in place at most every TTY_EVERY_S on a terminal; else a plain
    line at the start, at most every PLAIN_EVERY_S, and at the end."""

    def __init__(self, status: SweepStatus, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.status = status
        self.stream = stream or sys.stderr
        self.tty = escape_codes(self.stream) if tty is None else tty
        self.every_s = TTY_EVERY_S if self.tty else PLAIN_EVERY_S
        self.last: float | None = None
        self.drawn = False  # a terminal line is on screen, to be cleared before a message

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        line = self.status.line()
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r\x1b[K" + line[:max(width - 1, 20)])
            self.drawn = True
        else:
            self.stream.write(f"[sweep] {line}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line (or lines) above the status line."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.drawn = False
        self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()
        if self.tty:
            self.refresh(force=True)

    def close(self) -> None:
        """The final state, left on screen."""
        self.refresh(force=True)
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
