"""Files the tool trusts when it reads them back, checked against what the store recorded when
they were written: a file's sha256 and the code version that wrote it, as ledger entries of the
experiment (`digest.<name>.<generation>`: the store, not a file beside the checked one, so
editing a file is seen even when its neighbours are edited too)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from emergence_lab.store import connection, ledger


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(uri: str, experiment: str, name: str, path: Path, code: str) -> None:
    """Record `path`'s digest and the code version that wrote it under `name` (a new
    generation: a file written again is recorded again)."""
    exp_id = connection.ensure_experiment(uri, experiment)
    gen, _ = ledger.latest_entry(uri, exp_id, f"digest.{name}")
    ledger.set_once(uri, exp_id, f"digest.{name}.{gen + 1}", f"{file_digest(path)} {code}")


def fault(uri: str, experiment: str, name: str, path: Path, code: str) -> str | None:
    """Why `path` is not the file recorded under `name` by this code version; None when it is."""
    exp_id = connection.ensure_experiment(uri, experiment)
    _, held = ledger.latest_entry(uri, exp_id, f"digest.{name}")
    if held is None:
        return "no digest of it is recorded in the store (written by older code, or copied in)"
    digest, _, by = held.partition(" ")
    if by != code:
        return f"written by code {by or '?'}, not by this code ({code})"
    actual = file_digest(path)
    if actual != digest:
        return f"its sha256 {actual[:16]} is not the {digest[:16]} recorded when it was written"
    return None
