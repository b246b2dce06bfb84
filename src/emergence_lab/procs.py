"""Processes: whether one is alive, a launcher's workers, and workers that outlive their launcher.

A sweep's launcher forwards SIGTERM/SIGINT to the worker processes it started (a scheduler or
`kill` usually signals the launcher alone), and a worker whose launcher has died stops as if it
had been sent SIGTERM, so its run ends KILLED and can be resumed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger(__name__)
_watched: set[int] = set()  # launchers this process watches
# Set once this process was asked to stop (SIGTERM, Ctrl-C): whatever exception the
# interruption surfaces as (torch, SQLite's "interrupted"), its run ends KILLED, not FAILED.
stop_requested = threading.Event()
stopped_run_closed = threading.Event()  # ... and the run it was training has been closed


_store_calls = 0  # the main thread's store calls in progress (see store_call)
_deferred: list[str] = []  # a stop that came during one, raised when it returns


@contextlib.contextmanager
def store_call() -> Iterator[None]:
    """A call into the store that a stop signal must not cut in half. Raised inside SQLAlchemy,
    KeyboardInterrupt can leave a pooled connection in an open transaction that holds SQLite's
    lock for as long as the process lives: the run's own closing, and the launcher's, then wait
    on it (seen: a sweep given SIGTERM that did not return in 60 s). The stop is raised when the
    call returns instead. Other threads' calls are not counted (the signal goes to the main one)."""
    global _store_calls
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _store_calls += 1
    try:
        yield
    finally:
        _store_calls -= 1
        if _store_calls == 0 and _deferred:
            raise KeyboardInterrupt(_deferred.pop())  # as if it came just after the call


# what a stop signal means, where more than its name (a scheduler's own warnings)
SIGNAL_REASONS: dict[int, str] = {}


def _interrupt(signum: int, frame: Any) -> None:
    if stop_requested.is_set():
        return
    stop_requested.set()
    reason = SIGNAL_REASONS.get(signum, f"signal {signal.Signals(signum).name}")
    if _store_calls:
        _deferred.append(reason)
        return
    raise KeyboardInterrupt(reason)


def quiet_while_loading(command: str, what: str = "nothing was written") -> None:
    """Ctrl-C while a command line still loads its libraries (seconds: torch, MLflow, Hydra):
    one line and exit 130, nothing begun, instead of a traceback out of an import. Installed
    before those imports; `loaded()` gives SIGINT back to KeyboardInterrupt."""
    def interrupted(signum: int, frame: Any) -> None:
        sys.stderr.write(f"{command}: interrupted before it began; {what}\n")
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)


def loaded() -> None:
    """The libraries are loaded: Ctrl-C raises KeyboardInterrupt again (see quiet_while_loading)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_on_signals(also: dict[int, str] | None = None) -> None:
    """SIGINT and SIGTERM stop this process's job: the first raises KeyboardInterrupt (its run
    ends KILLED, resumable), at once or, during a store call, when that returns; later ones are
    ignored while the run is being closed (Ctrl-C in a terminal reaches a worker twice: itself,
    and forwarded by its launcher). The one owner of a job process's signals: a pool worker
    installs it when it starts, a single run (or another launcher's job) when it trains; a
    second call changes nothing. Main thread only. `also`: more signals that stop the job, with
    what each means (SLURM's wall-time warning, SIGUSR2, under the SLURM launcher)."""
    SIGNAL_REASONS.update(also or {})
    for sig in (signal.SIGINT, signal.SIGTERM, *(also or {})):
        if signal.getsignal(sig) is not _interrupt:
            signal.signal(sig, _interrupt)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process this user can see (Linux /proc; empty elsewhere)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        # the command name is in parentheses and may hold spaces: fields follow the last ')'
        out[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, their children, and so on."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def forward_signal(signum: int, pids: list[int]) -> list[int]:
    """Send `signum` to those of `pids` that this process started (directly or not); returns
    the ones that got it."""
    mine = set(descendants(os.getpid()))
    sent = []
    for pid in pids:
        if pid in mine:
            try:
                os.kill(pid, signum)
                sent.append(pid)
            except ProcessLookupError:
                pass
    return sent


# How long an orphaned worker waits for its run to be closed before it exits anyway: closing
# retries while SQLite is locked (up to about 20 s under load, store.connection.retry), and a
# worker that exits first leaves the run RUNNING until a later sweep takes it over.
ORPHAN_GRACE_S = 60.0


def stop_when_gone(pid: int, interval_s: float = 1.0, grace_s: float = ORPHAN_GRACE_S) -> None:
    """In a worker: once process `pid` (its launcher) has died, send SIGTERM to this process,
    which marks its run KILLED, and exit once that run is closed (at most grace_s later).
    A daemon thread; nothing happens while the launcher lives."""
    me = os.getpid()
    if pid == me or pid in _watched:  # a pool worker runs many jobs: one watcher is enough
        return
    _watched.add(pid)

    def watch() -> None:
        while pid_alive(pid):
            threading.Event().wait(interval_s)
        log.warning("the sweep's launcher (pid %d) is gone: stopping this job", pid)
        os.kill(me, signal.SIGTERM)  # the run ends KILLED
        stopped_run_closed.wait(grace_s)
        os._exit(128 + signal.SIGTERM)  # a pool worker would otherwise wait for more work

    threading.Thread(target=watch, daemon=True, name="launcher-watch").start()


def run_and_exit(entry: Callable[[], Any]) -> NoReturn:
    """Run a command line's entry point, then end the process as the interpreter does, less its
    teardown: non-daemon threads are waited for, the atexit handlers run (logging's flush,
    MLflow's, multiprocessing's), the streams are flushed, and the process exits with the entry's
    code (an int it returns or raises with SystemExit). Freeing every object of an interpreter
    that holds torch, MLflow and Hydra takes 1 to 2 s of CPU that a user waits for, and
    nothing in it is ours. An exception other than SystemExit leaves the usual way (traceback,
    exit 1). Its output survives any stream encoding (console.safe_streams)."""
    from emergence_lab.console import safe_streams

    safe_streams()
    try:
        code = entry()
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's exit calls first
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)
