"""The launching process's one owner of SIGINT and SIGTERM. The first signal marks the sweep
stopping (procs.stop_requested: its parent ends KILLED); while the local launcher's pool runs
(`held`), the pool reads it (`first`) and stops its workers itself; otherwise (before or after
the launch, or under another launcher) `on_first`, given by the sweep's callback, stops the
sweep. Later signals are ignored: the sweep is already stopping."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from emergence_lab import procs

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_first: int | None = None
_on_first: Callable[[int], None] | None = None
_held = False
_saved: dict[int, Any] | None = None  # the handlers before ours (restored by uninstall)


def install(on_first: Callable[[int], None] | None = None) -> None:
    """Own SIGINT and SIGTERM in this (the launching) process, for a new sweep."""
    global _first, _on_first, _saved
    _first, _on_first = None, on_first
    if _saved is None:
        _saved = {s: signal.signal(s, _on) for s in SIGNALS}


def uninstall() -> None:
    global _saved, _on_first
    if _saved is not None:
        for s, handler in _saved.items():
            signal.signal(s, handler)
    _saved, _on_first = None, None


def first() -> int | None:
    """The first signal since this sweep began, None for none."""
    return _first


@contextlib.contextmanager
def held() -> Iterator[None]:
    """While the pool runs: a signal is only noted; the pool reads `first()` and stops."""
    global _held
    own = _saved is None  # no sweep callback: the pool owns the signals while it runs
    if own:
        install()
    _held = True
    try:
        yield
    finally:
        _held = False
        if own:
            uninstall()


def _on(signum: int, frame: Any) -> None:
    global _first
    if _first is not None:
        return
    _first = signum
    procs.stop_requested.set()
    if not _held and _on_first is not None:
        _on_first(signum)
