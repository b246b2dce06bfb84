#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests and for trying the SLURM launcher
# (Debian's packages, installed if missing: slurmctld, slurmd, slurmdbd, munge, MariaDB).
#   scripts/slurm.sh start DIR [PORT]   set DIR up if new, start every daemon, print the
#                                       SLURM_CONF to export (PORT..PORT+3: its daemons' ports)
#   scripts/slurm.sh stop DIR           stop every daemon DIR's start started, by its PID file
#   scripts/slurm.sh status DIR         exit 0 when the cluster in DIR answers
# Everything lives in DIR: configs, MariaDB's files, logs, PID files. Nothing under /etc is
# changed and no systemd is needed, so two clusters (two DIRs and PORTs) can run side by side.
# Munge is the machine's own service (SLURM's clients find it at its default socket, with the
# key the package made): started here when it is not running, and then stopped with the cluster. Accounting (sacct) goes through slurmdbd to a MariaDB that listens on
# loopback only, with a password generated at the first start (DIR/db.password, mode 600).
# Run as root (slurmd starts jobs as their users); the node is this machine, with its CPUs and
# memory as `slurmd -C` reports them, and one partition, `debug`.
set -euo pipefail
cmd=${1:?start, stop or status}
dir=$(realpath -m "${2:?cluster directory}")
port=${3:-6817}
conf="$dir/slurm.conf"
pkgs="slurmctld slurmd slurmdbd slurm-client munge mariadb-server"

install() {  # one installer at a time (parallel tests, two terminals)
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null &&
    command -v mariadbd >/dev/null && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm.sh: SLURM is not installed and apt-get cannot run here (needs root): install" \
         "$pkgs" >&2
    exit 3
  fi
  flock /tmp/emergence-lab-apt.lock sh -c "command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null; }" ||
    { echo "slurm.sh: apt-get could not install $pkgs" >&2; exit 3; }
}

up() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local n=$(( $1 * 10 )) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "slurm.sh: $what did not come up in $dir (its log: $(ls "$dir"/*.log 2>/dev/null | tr '\n' ' '))" >&2
  return 1
}

configure() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p "$dir/state" "$dir/spool" "$dir/db" "$dir/jobs"
  chmod 700 "$dir"
  if [ ! -f "$dir/db.password" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$dir/db.password")
  fi
  cat > "$conf" <<EOF
# written by scripts/slurm.sh: a one-node cluster for emergence-lab's tests
ClusterName=emergencelab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((port + 2))
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# a cancelled job's processes get SIGTERM, then SIGKILL after KillWait seconds
KillWait=10
InactiveLimit=0
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  (umask 077 && cat > "$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((port + 2))
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((port + 3))
StorageUser=slurm
StoragePass=$(cat "$dir/db.password")
StorageLoc=slurm_acct_db
EOF
  )
}

start_db() {
  if [ ! -d "$dir/db/mysql" ]; then
    mariadb-install-db --datadir="$dir/db" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$dir/db-install.log" 2>&1
  fi
  up "$dir/mariadb.pid" || (setsid mariadbd --user=root --datadir="$dir/db" --socket="$dir/db.sock" \
    --port=$((port + 3)) --bind-address=127.0.0.1 --pid-file="$dir/mariadb.pid" \
    --log-error="$dir/mariadb.log" --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 &)
  wait_for 30 MariaDB mariadb --socket="$dir/db.sock" -e "SELECT 1"
  # the password through standard input, never a command line
  printf "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '%s';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '%s';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" "$(cat "$dir/db.password")" \
    "$(cat "$dir/db.password")" | mariadb --socket="$dir/db.sock"
}

start() {
  install
  configure
  export SLURM_CONF=$conf
  if ! munge -n >/dev/null 2>&1; then  # the machine's munged, as its service would run it
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged
    touch /run/munge/started-by-emergence-lab
  fi
  if [ -f /run/munge/started-by-emergence-lab ]; then  # ours: the last cluster stops it
    cp /run/munge/munged.pid "$dir/munged.pid"
  fi
  wait_for 10 munged munge -n
  start_db
  up "$dir/slurmdbd.pid" || slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 30 slurmdbd sacctmgr -i list cluster
  up "$dir/slurmctld.pid" || slurmctld -f "$conf"
  wait_for 30 slurmctld scontrol ping
  up "$dir/slurmd.pid" || slurmd -f "$conf"
  wait_for 30 "the node" sh -c "sinfo -h -o %t | grep -Eq '^(idle|mix|alloc)'"
  echo "SLURM_CONF=$conf"
}

stop() {
  local pidfile pid
  for name in slurmd slurmctld slurmdbd mariadb munged; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    # munge serves every cluster of this machine: it stays while another one runs
    if [ "$name" = munged ]; then
      if pgrep -x slurmctld >/dev/null; then rm -f "$pidfile"; continue; fi
      rm -f /run/munge/started-by-emergence-lab
    fi
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$conf scontrol ping >/dev/null 2>&1 ;;
  *) echo "usage: $0 start|stop|status DIR [PORT]" >&2; exit 2 ;;
esac
