"""The MLflow UI on a store, after printing where the latest sweep is in it.

    python scripts/ui.py --tracking-uri URI [--host H] [--port P] [--print-only]

MLflow's experiment page opens on an overview; the sweep's runs are one filter away. This
prints the URL of the latest sweep's runs (its children, the filter applied) and of its parent
run (the note with the verdicts and the link to the report), then serves `mlflow ui`. The URLs
are printed once the server answers its health check; a port that is taken, or a server that
fails to start, is one line and exit code 2. MLflow's own log goes to a file it names.
"""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from emergence_lab.console import safe_streams
from emergence_lab.errors import one_line
from emergence_lab.report.ending import CLAIMS_DOC
from emergence_lab.store import connection, links, serving, survey, sweeps


def sweep_urls(uri: str, address: str) -> list[str]:
    """Lines naming the latest sweep's pages, or saying there is none yet."""
    store = connection.sqlite_file(uri)
    if store is not None and not store.is_file():
        return [f"no store at {uri} yet: make sweep first"]
    parent = sweeps.latest_sweep(uri)
    if parent is None:
        return [f"no sweep in {uri} yet: make sweep first"]
    exp, rid = parent.info.experiment_id, parent.info.run_id
    return [f"latest sweep: {parent.info.run_name}",
            f"  its runs:   {links.sweep_page(address, exp, rid)}",
            f"  its parent: {links.run_page(address, exp, rid)}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", default="5000")
    ap.add_argument("--artifact-root", default="./mlruns/artifacts")
    ap.add_argument("--print-only", action="store_true", help="print the URLs, do not serve")
    ap.add_argument("--auth", choices=("auto", "on", "off"), default="auto",
                    help="MLflow's basic-auth login (auto: where others reach the address)")
    ap.add_argument("--auth-dir", default="mlruns/server-auth", help="the users' database")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        store = connection.sqlite_file(args.tracking_uri)
        if store is not None and store.is_file() and not connection.writable(args.tracking_uri):
            # read-only: browse a copy
            print(f"make ui: the store {args.tracking_uri} cannot be written: browsing a copy of "
                  f"it made now (what is changed in the UI is not kept)", file=sys.stderr)
            args.tracking_uri = stack.enter_context(survey.readable_copy(args.tracking_uri))
        return serve(args)


def serve(args: argparse.Namespace) -> int:
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    address = f"http://{shown}:{args.port}"
    try:
        store = connection.sqlite_file(args.tracking_uri)
        if store is None or store.is_file():
            connection.check_reachable(args.tracking_uri)
        urls = sweep_urls(args.tracking_uri, address)
    except Exception as exc:  # a store it cannot read: one line
        print(f"make ui: {one_line(exc, args.tracking_uri)}", file=sys.stderr)
        return 2
    if args.print_only:
        print("\n".join(urls), flush=True)
        return 0
    if _taken(shown, int(args.port)):
        print(f"make ui: port {args.port} on {shown} is taken (another server?); choose another: "
              f"make ui PORT={int(args.port) + 1}", file=sys.stderr)
        return 2
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    log = tempfile.NamedTemporaryFile(prefix="mlflow-ui-", suffix=".log", delete=False)
    command, env = serving.served(args.host, args.auth, Path(args.auth_dir), "make ui")
    child = subprocess.Popen([mlflow, "ui", "--backend-store-uri", args.tracking_uri,
                              "--default-artifact-root", args.artifact_root,
                              "--host", args.host, "--port", str(args.port), *command],
                             stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(signum, frame):  # Ctrl-C or a kill: the server goes with this process
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + 180
    while not _healthy(f"{address}/health"):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            last = Path(log.name).read_text(errors="replace").strip().splitlines()[-1:] or [""]
            print(f"make ui: the MLflow UI did not start (exit {child.poll()}): {last[0][:300]} "
                  f"(its log: {log.name})", file=sys.stderr)
            return 2
        time.sleep(0.5)
    print("\n".join(urls), flush=True)
    print(f"MLflow UI ready at {address} (Ctrl-C stops it; its log: {log.name}); what each "
          f"verdict on a sweep's page means: {CLAIMS_DOC}", flush=True)
    return child.wait()


def _taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    safe_streams()
    sys.exit(main())
