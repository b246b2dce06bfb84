"""A shared MLflow tracking server (`make server`): PostgreSQL as its store (scripts/postgres.sh),
artifacts served through it, and MLflow's basic-auth app where others can reach it.

    python scripts/server.py [--host H] [--port P] [--auth auto|on|off]
                             [--backend-store-uri URI | --pgdata DIR --pgport N]

--auth auto (the default) logs users in when the server is bound to an address other machines
reach (a cluster's nodes: HOST=0.0.0.0), not on loopback. The admin's name and password come
from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, or the password is generated once
into mlruns/server-auth/admin.password (mode 600); clients (a sweep, its jobs, the report) set
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. A public address without authentication
is served with a warning.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from emergence_lab.store import serving

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", default="5000")
    ap.add_argument("--auth", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--auth-dir", default="mlruns/server-auth", help="the users' database")
    ap.add_argument("--backend-store-uri", help="default: a PostgreSQL started by postgres.sh")
    ap.add_argument("--pgdata", default="/tmp/emergence-lab-postgres")
    ap.add_argument("--pgport", default="5432")
    ap.add_argument("--artifacts-destination", default="./mlruns/server-artifacts")
    ap.add_argument("--workers", default="2")
    args = ap.parse_args()
    extra, env = serving.served(args.host, args.auth, Path(args.auth_dir), "make server")
    command = ["server", "--host", args.host, "--port", str(args.port), "--workers", args.workers,
               "--artifacts-destination", args.artifacts_destination, *extra]
    store = args.backend_store_uri or subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "start", args.pgdata, args.pgport],
        capture_output=False, stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    os.execve(mlflow, [mlflow, *command, "--backend-store-uri", store], env)


if __name__ == "__main__":
    sys.exit(main())
