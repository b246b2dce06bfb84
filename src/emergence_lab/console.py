"""What the command lines write to a terminal: output that survives any stream encoding (an
ASCII-only locale, a pipe under LANG=C) and no escape codes where the terminal says it reads
none (TERM=dumb, NO_COLOR)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO


def safe_streams() -> None:
    """stdout and stderr write what their encoding cannot hold as escapes (θ as \\u03b8)
    instead of raising UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # not a text file, or closed
            stream.reconfigure(errors="backslashreplace")


def escape_codes(stream: TextIO) -> bool:
    """Whether `stream` is a terminal that reads escape codes (redrawing a line in place)."""
    if os.environ.get("TERM", "") == "dumb" or "NO_COLOR" in os.environ:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
