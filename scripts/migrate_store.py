"""Bring a store written by an older emergence-lab up to today's layout (idempotent).

    .venv/bin/python scripts/migrate_store.py --dry-run                 # what would change
    .venv/bin/python scripts/migrate_store.py                           # change it
    .venv/bin/python scripts/migrate_store.py --tracking-uri http://host:5000

What it rewrites is listed in src/emergence_lab/config/migrate.py: runs tagged with a cell hash of
an older identity scheme are re-tagged (the old hash kept as config_hash_legacy), unfinished
cells from before the ledger get their ledger entry, and each experiment is tagged with the
store version. A second run changes nothing.
"""

import argparse

from emergence_lab import procs
from emergence_lab.config.migrate import apply, plan_migration
from emergence_lab.registry import load_plugins


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    ap.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    args = ap.parse_args()
    load_plugins()
    changes = plan_migration(args.tracking_uri)
    for ch in changes:
        print(("would change " if args.dry_run else "") + ch.line())
    if not args.dry_run:
        apply(args.tracking_uri, changes)
    runs = sum(ch.kind != "version" for ch in changes)
    print(f"{len(changes)} changes ({runs} to runs or cells)"
          + (", none written (--dry-run)" if args.dry_run else "")
          + ("; the store is up to date" if not changes else ""))
    return 0


if __name__ == "__main__":
    procs.run_and_exit(main)
