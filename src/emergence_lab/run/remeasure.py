"""E under another analysis setting for runs already trained: from the measurements they
stored at every epoch (measure.record), never by training again.

A sweep that changes only the threshold group over finished cells lands here: each run gains
the series of the new setting (`emergence/E/<rule>/<θ>/<counting>` and its relative E) at the
steps of its epochs. Two processes adding the same series to the same run race for an entry in the ledger of
the store (one per run and key); the loser leaves it to the winner, so no epoch is logged
twice.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emergence_lab.config.identity import stable_hash
from emergence_lab.measure import keys, record
from emergence_lab.measure.setting import Setting
from emergence_lab.store import artifacts, digests, ledger, records

log = logging.getLogger(__name__)


def stored_measurements(uri: str, run_id: str) -> list[tuple[str, int, str]]:
    """(phase, epoch, file name) of a run's stored measurements, in epoch order."""
    out = []
    for name in artifacts.artifact_names(uri, run_id, record.FOLDER):
        parsed = record.parse_name(name)
        if parsed is not None:
            out.append((*parsed, name))
    return sorted(out, key=lambda t: (t[1], t[0] == "pruned"))


def series(folder: Path, files: list[tuple[str, int, str]], settings: Iterable[Setting]
           ) -> dict[str, list[tuple[int, float]]]:
    """The E and relative-E series of each setting from measurement files (epochs only; the
    states right after a pruning step are for pruning/E_after)."""
    settings = list(settings)
    out: dict[str, list[tuple[int, float]]] = {}
    for phase, epoch, name in files:
        if phase != "epoch":
            continue
        m = record.load(folder / name)
        for s in settings:
            e = m.at(s)
            k_e, k_rel = keys.setting_keys(s)
            out.setdefault(k_e, []).append((epoch, float(e.E)))
            out.setdefault(k_rel, []).append((epoch, e.relative))
    return out


def add_settings(uri: str, run: Any, settings: Iterable[Setting]) -> str:
    """Log the settings' series a FINISHED run lacks; returns what happened: "present" (it has
    them), "added", "taken" (another process adds them) or "unmeasured" (logged before runs
    stored measurements: nothing can be computed without training again)."""
    run_id = run.info.run_id
    todo = [s for s in dict.fromkeys(x.normalized() for x in settings)
            if keys.setting_keys(s)[0] not in run.data.metrics]
    if not todo:
        return "present"
    files = stored_measurements(uri, run_id)
    if not files:
        return "unmeasured"
    _check_complete(uri, run_id, files)
    with tempfile.TemporaryDirectory() as tmp:  # every file read before anything is logged
        folder = artifacts.download_folder(uri, run_id, record.FOLDER, tmp)
        digests.check_run_files(run, record.FOLDER, folder, [name for _, _, name in files])
        try:
            computed = series(folder, files, todo)
        except ValueError as exc:  # a truncated or tampered file: named as the store has it
            raise ValueError(f"run {run_id}: {str(exc).replace(str(folder), record.FOLDER)}; its "
                             f"E under another setting needs retraining (force=true)") from None
    token = ledger.owner_token()
    exp_id = run.info.experiment_id
    mine = [s for s in todo if ledger.set_once(
        uri, exp_id, f"measure.{run_id}.{stable_hash(keys.setting_keys(s)[0])}", token) == token]
    if not mine:
        return "taken"
    wanted = {k for s in mine for k in keys.setting_keys(s)}
    records.log_series(uri, run_id, {k: v for k, v in computed.items() if k in wanted})
    return "added"


def _check_complete(uri: str, run_id: str, files: list[tuple[str, int, str]]) -> None:
    """Every epoch the run logged E at has its stored measurement; else a ValueError naming the
    missing files (a series with a gap is never logged)."""
    logged = {step for step, _ in records.metric_history(uri, run_id, keys.E)}
    stored = {epoch for phase, epoch, _ in files if phase == "epoch"}
    missing = sorted(logged - stored)
    if missing:
        names = ", ".join(f"{record.FOLDER}/{record.file_name(e)}" for e in missing[:5])
        raise ValueError(f"run {run_id} lacks the stored measurements of epochs {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} ({names}): E under another "
                         f"setting would have gaps; it needs retraining (force=true)")
