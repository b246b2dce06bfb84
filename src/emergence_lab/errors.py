"""How an error reads in one line: what every entry point (a run, a sweep, the report, the UI)
prints instead of a traceback when the cause is outside the code (bad input, a store it cannot
use, a full disk)."""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import NoReturn

_DISK_FULL = re.compile(r"database or disk is full|no space left on device", re.IGNORECASE)
_SQLITE_PATH = re.compile(r"sqlite:///(\S+?\.db)\b")
_NOT_LOGGED_IN = re.compile(r"error code 401|You are not authenticated")


def one_line(exc: BaseException, store: str | None = None) -> str:
    """The error's cause in one line. A full disk names the path that filled (the file an
    OSError names; the SQLite store for SQLite's "database or disk is full")."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = exc.filename or store or "?"
        return f"no space left on the device holding {where}: free space there, or point " \
               f"tracking.uri / tracking.cache_dir at another disk"
    text = str(exc).strip()
    if _DISK_FULL.search(text):
        path = store or next(iter(_SQLITE_PATH.findall(text)), "the store")
        return f"the disk holding {path} is full (SQLite: database or disk is full): free space " \
               f"there, or point tracking.uri at another disk"
    if _NOT_LOGGED_IN.search(text):
        refused = " (the ones set were refused)" if "MLFLOW_TRACKING_PASSWORD" in os.environ else ""
        return (f"the tracking server{' ' + store if store else ''} lets in only who logs in (MLflow's "
                f"basic-auth): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                f"{refused}; make server says where its password is")
    first = text.splitlines()[0] if text else ""
    cause = str(exc.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in first:  # e.g. Hydra's "Error merging override": the reason
        first += f" ({cause[0]})"
    return f"{type(exc).__name__}: {first}" if not isinstance(exc, ValueError) else first


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` on stderr and exit with `code` (2: the input or the store is unusable)."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)
