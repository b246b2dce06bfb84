"""The MLflow UI on a store, after printing where the latest sweep is in it.

    python scripts/ui.py --tracking-uri URI [--host H] [--port P] [--print-only]

MLflow's experiment page opens on an overview; the sweep's runs are one filter away. This
prints the URL of the latest sweep's runs (its children, the filter applied) and of its parent
run (the note with the verdicts and the link to the report), then serves `mlflow ui`.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

from emergence_lab import tracking


def sweep_urls(uri: str, address: str) -> list[str]:
    """Lines naming the latest sweep's pages, or saying there is none yet."""
    if tracking.local_store_dir(uri) is not None and \
            not Path(tracking.resolve_uri(uri)[len("sqlite:///"):]).is_file():
        return [f"no store at {uri} yet: make sweep first"]
    parent = tracking.latest_sweep(uri)
    if parent is None:
        return [f"no sweep in {uri} yet: make sweep first"]
    exp, rid = parent.info.experiment_id, parent.info.run_id
    return [f"latest sweep: {parent.info.run_name}",
            f"  its runs:   {tracking.sweep_page(address, exp, rid)}",
            f"  its parent: {tracking.run_page(address, exp, rid)}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", default="5000")
    ap.add_argument("--artifact-root", default="./mlruns/artifacts")
    ap.add_argument("--print-only", action="store_true", help="print the URLs, do not serve")
    args = ap.parse_args()
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    for line in sweep_urls(args.tracking_uri, f"http://{shown}:{args.port}"):
        print(line, flush=True)
    if args.print_only:
        return 0
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", args.tracking_uri,
                      "--default-artifact-root", args.artifact_root,
                      "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
