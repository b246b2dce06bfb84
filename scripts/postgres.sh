#!/usr/bin/env bash
# A PostgreSQL on loopback for a shared MLflow store (Debian's packages; installed if missing).
#   scripts/postgres.sh start DIR [PORT]   initialise DIR if new, start, print the store URI
#   scripts/postgres.sh stop DIR
# DIR must lie where the postgres user can reach it (e.g. under /tmp); as root the server runs
# as that user, since PostgreSQL refuses to run as root.
set -euo pipefail
cmd=${1:?start or stop}
dir=$(realpath -m "${2:?data directory}")
port=${3:-5432}

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -z "$(bindir)" ]; then  # one installer at a time (parallel tests, two terminals)
  flock /tmp/emergence-lab-apt.lock sh -c '[ -n "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null)" ] ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }'
fi
bin=$(bindir)

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" -A trust -U mlflow >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -o "-h 127.0.0.1 -p $port -k $dir" -l "$dir/server.log" -w start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlflow mlflow 2>/dev/null || true
    echo "postgresql://mlflow@127.0.0.1:$port/mlflow"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
