"""Sweeps with known metric curves written into a store: what the report's tests check against
by hand, and what the report benchmark times at scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emergence_lab.measure import keys as mk
from emergence_lab.store import records, sweeps

Curves = dict[str, dict[int, float]]  # metric -> {step: value}


def branch(acc: Sequence[float], e: Sequence[float], rel: Sequence[float], pe: int,
           after: tuple[float, float, float] | None = None, sparsity: float = 0.0,
           params: int = 1000) -> Curves:
    """Curves of one run: test accuracy, E and relative E by epoch, and (E, relative E, test
    accuracy) just after pruning at epoch pe."""
    curves = {mk.TEST_ACC: dict(enumerate(acc)), mk.E: dict(enumerate(e)),
              mk.RELATIVE: dict(enumerate(rel)),
              mk.PARAMS: dict.fromkeys(range(len(acc)), params),
              mk.SPARSITY: dict.fromkeys(range(len(acc)), sparsity),
              mk.EPOCH_TIME: {s: 2.0 for s in range(1, len(acc))},
              mk.TRAIN_ACC: dict(enumerate(acc))}
    if after:
        curves.update({mk.E_AFTER: {pe: after[0]}, mk.RELATIVE_AFTER: {pe: after[1]},
                       mk.TEST_ACC_AFTER: {pe: after[2]}})
    return curves


def params(level: float, seed: int, dataset: str = "mnist", pe: int = 2) -> dict[str, Any]:
    """The flattened config params of a magnitude-pruned MLP run."""
    return {"pruning.amount": level, "trainer.seed": seed, "pruning.name": "magnitude",
            "pruning.epoch": pe, "dataset.name": dataset, "model.name": "mlp",
            "tracking.uri": "x", "dataset.data_dir": "data"}


def write_run(uri: str, parent: str | None, name: str, run_params: Mapping[str, Any],
              curves: Curves, status: str = "FINISHED", overrides: str = "",
              experiment: str = "synthetic") -> str:
    """A run with these params and curves (config_hash = its name); FAILED ones say "boom"."""
    run = records.Run(uri, experiment, name, {"overrides": overrides, "config_hash": name},
                       parent_run_id=parent)
    run.log_params(run_params)
    for s in sorted({s for c in curves.values() for s in c}):
        run.log_metrics({k: c[s] for k, c in curves.items() if s in c}, step=s)
    exc = RuntimeError("boom") if status == "FAILED" else None
    run.__exit__(type(exc) if exc else None, exc, None)
    return run.run_id


def big_sweep(uri: str, levels: Sequence[float] = (0.0, 0.3, 0.5, 0.7), seeds: int = 25,
              epochs: int = 20, pe: int = 5) -> str:
    """A sweep of len(levels) x seeds runs of `epochs` epochs; returns the parent run id."""
    parent = sweeps.start_sweep(uri, "synthetic", "big", {})
    acc = [0.1 + 0.8 * i / epochs for i in range(epochs + 1)]
    for level in levels:
        for seed in range(seeds):
            curves = branch([a * (1 - level / 10) + 0.001 * seed for a in acc],
                            [1000 - 10 * i for i in range(epochs + 1)], [0.1] * (epochs + 1),
                            pe=pe, after=(900, 0.1, 0.3), sparsity=level)
            write_run(uri, parent, f"r{level}-{seed}", params(level, seed, pe=pe), curves)
    return parent


def replicate(uri: str, parent: str, times: int) -> int:
    """`times` copies of every child run of the sweep `parent`, as new cells of the same sweep
    (new run ids; config_hash and name suffixed; seeds shifted past the originals'), copied
    row by row inside an SQLite store (MLflow's own tables): a store of thousands of runs in a
    second, for the report's scale test and benchmark. The number of runs the sweep then has."""
    import sqlite3
    import uuid

    path = uri[len("sqlite:///"):]
    with sqlite3.connect(path) as db:
        children = [r for (r,) in db.execute(
            "SELECT run_uuid FROM tags WHERE key = ? AND value = ?", (sweeps.PARENT_TAG, parent))]
        top = max(int(float(v)) for (v,) in db.execute(
            "SELECT value FROM params WHERE key = 'trainer.seed'")) + 1
        columns = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")]
                   for t in ("runs", "metrics", "latest_metrics", "params", "tags")}
        for k in range(1, times + 1):
            for old in children:
                new = uuid.uuid4().hex
                for table, cols in columns.items():
                    out = [f":new AS {c}" if c == "run_uuid" else c for c in cols]
                    if table == "runs":
                        out = [c if c != "name" else "name || :suffix AS name" for c in out]
                        out = [c if c != "artifact_uri" else
                               "replace(artifact_uri, :old, :new) AS artifact_uri" for c in out]
                    if table in ("tags", "params"):
                        out = [c if c != "value" else
                               "CASE WHEN key IN ('config_hash', 'mlflow.runName') THEN value || "
                               ":suffix WHEN key = 'trainer.seed' THEN CAST(CAST(value AS INTEGER)"
                               " + :shift AS TEXT) ELSE value END AS value" for c in out]
                    db.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(out)} "
                               f"FROM {table} WHERE run_uuid = :old",
                               {"new": new, "old": old, "suffix": f"-x{k}", "shift": k * top})
    return len(children) * (times + 1)
