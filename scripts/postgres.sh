#!/usr/bin/env bash
# A PostgreSQL on loopback for a shared MLflow store (Debian's packages; installed if missing).
#   scripts/postgres.sh start DIR [PORT]   initialise DIR if new, start, print the store URI
#   scripts/postgres.sh stop DIR
# DIR must lie where the postgres user can reach it (e.g. under /tmp); as root the server runs
# as that user, since PostgreSQL refuses to run as root.
#
# Nobody logs in without a password: TCP logins use scram-sha-256, the socket in DIR only peer
# authentication (the OS user that owns the cluster). MLflow's role `mlflow` is no superuser: it
# owns the `mlflow` database and nothing else. Its password is $EMERGENCE_LAB_PG_PASSWORD, or one
# generated at the first start (kept in DIR/mlflow.password, mode 600); the printed URI carries
# no password: libpq reads it from ~/.pgpass (a line written here, mode 600), so it is never on a
# command line.
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
sql() { as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -d postgres -tA; }

case "$cmd" in
  start)
    if [ -f "$dir/PG_VERSION" ] && grep -Eq '^[^#]*[[:space:]]trust([[:space:]]|$)' "$dir/pg_hba.conf"; then
      echo "postgres.sh: $dir was made by an older postgres.sh (logins without a password, mlflow a" \
           "superuser); make a new one: scripts/postgres.sh stop $dir && rm -rf $dir" >&2
      exit 2
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -o "-h 127.0.0.1 -p $port -k $dir" -l "$dir/server.log" -w start >/dev/null
    secret="$dir/mlflow.password"
    if [ -n "${EMERGENCE_LAB_PG_PASSWORD:-}" ]; then
      pass=$EMERGENCE_LAB_PG_PASSWORD
    elif [ -f "$secret" ]; then
      pass=$(cat "$secret")
    else
      pass=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    fi
    case "$pass" in
      *"
"*) echo "postgres.sh: EMERGENCE_LAB_PG_PASSWORD holds a line break; choose one without" >&2; exit 2 ;;
    esac
    (umask 077 && printf '%s' "$pass" > "$secret")
    if [ "$(id -u)" = 0 ]; then chown postgres "$secret"; fi
    if [ -z "$(echo "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'" | sql)" ]; then
      echo "CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" | sql
    fi
    # the password through standard input, never a command line, as an SQL literal (quotes
    # doubled: a password is never read as SQL)
    printf "ALTER ROLE mlflow PASSWORD '%s'" "$(printf '%s' "$pass" | sed "s/'/''/g")" | sql
    if [ -z "$(echo "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | sql)" ]; then
      echo "CREATE DATABASE mlflow OWNER mlflow" | sql
    fi
    pgpass="${PGPASSFILE:-$HOME/.pgpass}"
    (
      flock 9
      umask 077
      touch "$pgpass"
      grep -v "^127.0.0.1:$port:mlflow:mlflow:" "$pgpass" > "$pgpass.new" || true
      # .pgpass escapes ':' and '\' with a backslash
      printf '127.0.0.1:%s:mlflow:mlflow:%s\n' "$port" \
        "$(printf '%s' "$pass" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')" >> "$pgpass.new"
      mv "$pgpass.new" "$pgpass"
      chmod 600 "$pgpass"
    ) 9>"/tmp/emergence-lab-pgpass.lock"
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
