"""Files the tool trusts when it reads them back, checked against what the store recorded when
they were written: a file's sha256 and the code version that wrote it. Always the store, never
a file beside the checked one, so editing a file is seen even when its neighbours are edited too:

- the prefix cache (files of the cache folder, shared by runs): ledger entries of the experiment,
  `digest.<name>.<generation>` (`record`, `fault`);
- a run's own stored files (its measurements, the weights its landscape keeps): tags of that
  run, `digest.<folder>.<n>` (`RunFiles`, `check_run_files`), so a report or a copy of the run
  carries them along.

The store is where trust starts: whoever may change a run's tags may change anything of it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emergence_lab.store import connection, ledger

log = logging.getLogger(__name__)


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
    return _differs(path, digest, "when it was written")


def _differs(path: Path, digest: str, when: str) -> str | None:
    """What differs when the file's sha256 is not `digest` (recorded `when`); None when it is."""
    actual = file_digest(path)
    return None if actual == digest else \
        f"its sha256 {actual[:16]} is not the {digest[:16]} recorded {when}"


# A run's own stored files (its measurements, the weights its landscape keeps) are recorded as
# tags of the run: `digest.<folder>.<n>`, a first line `code <version>` (the code that stored
# them) and a line `<file> <sha256>` per file. Each owner of the run (a resumed run has a new
# one) and each TAG_LIMIT characters start a new tag; a file stored again counts as last stored.
RUN_TAG = "digest.{folder}.{n}"
TAG_LIMIT = 7900  # MLflow keeps 8,000 characters of a tag's value


class RunFiles:
    """The record of the files a run stores in one artifact folder, kept as they are stored."""

    def __init__(self, uri: str, run_id: str, folder: str, code: str):
        self.uri, self.run_id, self.folder = uri, run_id, folder
        client = connection.get_client(uri)
        tags = connection.retry(lambda: client.get_run(run_id)).data.tags
        self.n = max((n for n, _ in _chunks(tags, folder)), default=0) + 1
        self.head, self.lines = f"code {code}", {}

    def record(self, path: Path) -> None:
        """Record the file about to be stored (under its own name); before storing it, so that
        a run killed between the two leaves a record without a file (found missing), never a
        file without a record."""
        line = f"{path.name} {file_digest(path)}"
        if path.name not in self.lines and len(self._text()) + len(line) + 1 > TAG_LIMIT:
            self.n, self.lines = self.n + 1, {}  # this tag is full: the next one
        self.lines[path.name] = line
        key, text = RUN_TAG.format(folder=self.folder, n=self.n), self._text()
        client = connection.get_client(self.uri)
        connection.retry(lambda: client.set_tag(self.run_id, key, text))

    def _text(self) -> str:
        return "\n".join([self.head, *self.lines.values()])


def recorded(tags: Mapping[str, str], folder: str) -> dict[str, tuple[str, str]]:
    """file -> (sha256, code version that stored it) as a run's tags record its files in
    `folder`; {} for a run that stored them before their digests were recorded."""
    out = {}
    for _, text in sorted(_chunks(tags, folder)):
        head, *lines = text.splitlines() or [""]
        for line in lines:
            name, _, digest = line.rpartition(" ")
            out[name] = (digest, head.removeprefix("code "))
    return out


def run_file_fault(held: Mapping[str, tuple[str, str]], name: str, path: Path) -> str | None:
    """Why the file at `path` is not the `name` the run recorded (held: `recorded`); None when
    it is."""
    if name not in held:
        return ("no digest of it is recorded with the run (stored by older code and the run "
                "resumed since, or not stored by the run)")
    digest, code = held[name]
    return _differs(path, digest, f"when code {code} stored it")


def check_run_files(run: Any, folder: str, where: Path, names: list[str]) -> None:
    """Each of a run's stored files (copied to `where`) is the one the run recorded storing
    (store.digests); else a ValueError naming the run, the file and what differs. Files stored
    before runs recorded their digests are read unchecked, with a warning."""
    held = recorded(run.data.tags, folder)
    if not held:
        log.warning("run %s stored its %s before runs recorded their digests: they are read "
                    "unchecked", run.info.run_id, folder)
        return
    for name in names:
        why = run_file_fault(held, name, where / name)
        if why is not None:
            raise ValueError(f"run {run.info.run_id}: {folder}/{name} is not the file it stored: "
                             f"{why}; what is computed from it needs retraining (force=true)")


def _chunks(tags: Mapping[str, str], folder: str) -> list[tuple[int, str]]:
    prefix = f"digest.{folder}."
    return [(int(k[len(prefix):]), v) for k, v in tags.items()
            if k.startswith(prefix) and k[len(prefix):].isdigit()]
