"""Print the latest sweep (or a given one) as a table, read back from MLflow.

    python scripts/summary.py --tracking-uri sqlite:///mlruns/mlflow.db [--sweep PARENT_RUN_ID]
"""

import argparse
import sys

import pandas as pd

from emergence_lab import tracking


def sweep_table(uri: str, parent_run_id: str) -> pd.DataFrame:
    """One row per child run: accuracy at the prune epoch and at the end, emergence, timing."""
    rows = []
    for run in tracking.sweep_children(uri, parent_run_id):
        params, metrics = run.data.params, run.data.metrics
        prune_epoch = int(params.get("pruning.epoch", 0))
        acc = dict(tracking.metric_history(uri, run.info.run_id, "test/acc"))
        times = [v for _, v in tracking.metric_history(uri, run.info.run_id, "time/epoch_s")]
        rows.append({
            "run": run.info.run_name, "status": run.info.status,
            "amount": float(params.get("pruning.amount", 0)),
            f"acc@{prune_epoch}": acc.get(prune_epoch), "acc final": metrics.get("test/acc"),
            "acc best": max(acc.values()) if acc else None,
            "E final": metrics.get("emergence/E"), "rel E final": metrics.get("emergence/relative"),
            "sparsity": metrics.get("pruning/sparsity"),
            "s/epoch": sum(times) / len(times) if times else None,
        })
    return pd.DataFrame(rows).sort_values("amount") if rows else pd.DataFrame()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--sweep", help="parent run id (default: the latest sweep)")
    args = ap.parse_args()
    parent = args.sweep or getattr(getattr(tracking.latest_sweep(args.tracking_uri), "info", None),
                                   "run_id", None)
    if parent is None:
        print(f"no sweep found in {args.tracking_uri}", file=sys.stderr)
        return 2
    table = sweep_table(args.tracking_uri, parent)
    print(f"sweep {parent} in {args.tracking_uri}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
