#!/usr/bin/env bash
# A real one-node SLURM cluster (slurmctld + slurmd + slurmdbd on MariaDB, munge auth) living
# entirely under STATE_DIR, for testing Hydra/submitit sweeps on this machine.
#
#   scripts/local_slurm.sh install            apt-get the Debian packages if missing (root)
#   scripts/local_slurm.sh start  STATE_DIR   install if needed, write configs, start daemons,
#                                             wait until the node is idle
#   scripts/local_slurm.sh status STATE_DIR   daemons alive? + sinfo
#   scripts/local_slurm.sh stop   STATE_DIR   cancel jobs, kill exactly the PIDs in STATE_DIR/run/
#
# Clients find the cluster through SLURM_CONF, never /etc/slurm:
#   source STATE_DIR/env.sh; sbatch --wrap hostname; sacct
#
# Why these settings (learnt on these machines):
# - proctrack/linuxproc + task/none: no cgroups needed (containers/VMs without a writable cgroupfs).
# - DefMemPerCPU: without it every job takes the whole node's memory, so jobs run one at a time.
# - slurmdbd is required: submitit polls sacct, and without accounting a job that dies before
#   writing its result leaves submitit waiting forever.
# - munged runs on a socket under STATE_DIR; slurmctld's connection to slurmdbd ignores
#   AuthInfo=socket=, so AccountingStoragePass carries the socket path too.
# - Ports are picked free at first start and kept in STATE_DIR, so two clusters can coexist.
# - Job ids start at a time-based FirstJobId, so a fresh cluster does not reuse an old one's ids.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
START_TIMEOUT_S=${LOCAL_SLURM_START_TIMEOUT_S:-90}

log() { echo "local_slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (daemons run as root, apt-get installs)"; }

packages_missing() {
    local pkg missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    echo "${missing[@]:-}"
}

cmd_install() {
    need_root
    local missing
    missing=$(packages_missing)
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: $missing"
    log "installing: $missing"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Package lists may be absent or stale (404 on download): refresh only when the first try fails.
    # shellcheck disable=SC2086
    if ! "${apt[@]}" install $missing >/dev/null; then
        log "install failed; running apt-get update and retrying"
        apt-get -q update >/dev/null
        # shellcheck disable=SC2086
        "${apt[@]}" install $missing >/dev/null
    fi
    missing=$(packages_missing)
    [ -z "$missing" ] || die "still missing after apt-get: $missing"
}

# --- state layout -------------------------------------------------------------------------------

set_paths() {
    [ -n "${1:-}" ] || die "usage: $0 {start|stop|status} STATE_DIR"
    [ -d "$1" ] || die "no such state dir: $1"
    STATE=$(cd "$1" && pwd)
    RUN=$STATE/run
    LOGS=$STATE/log
    MUNGE_SOCKET=$STATE/munge/munge.socket.2
    MYSQL_SOCKET=$STATE/mysql.sock
    export SLURM_CONF=$STATE/etc/slurm.conf
    # MariaDB's client library honours this when StorageHost=localhost: slurmdbd needs no TCP.
    export MYSQL_UNIX_PORT=$MYSQL_SOCKET
    # Unix socket paths are limited to 107 bytes.
    [ ${#MUNGE_SOCKET} -lt 100 ] || die "STATE_DIR path too long for unix sockets; use a shorter one"
}

# Daemon names in start order; stop goes in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

alive() {  # a zombie counts as gone: PID 1 in containers may be slow to reap it
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

pid_of() {  # prints the PID if the daemon from our PID file is alive and really is that program
    local name=$1 file=$RUN/$1.pid pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && alive "$pid" || return 1
    # Guard against a recycled PID: the process must be the program we started.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

free_ports() {  # N distinct TCP ports nobody listens on, away from slurm's default 6817-6819
    local n=$1 port hex picked=" "
    local listening  # local addresses as HEXIP:HEXPORT, read from /proc (no ss/netstat needed)
    listening=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '{print $2}' || true)
    for _ in $(seq 500); do
        port=$((20000 + RANDOM % 20000))
        printf -v hex ':%04X' "$port"
        case "$picked" in *" $port "*) continue ;; esac
        grep -qi "$hex\$" <<<"$listening" && continue
        picked+="$port "
        [ $((n -= 1)) -gt 0 ] || { echo "$picked"; return 0; }
    done
    die "no free TCP ports found"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { log "timed out waiting for $what"; return 1; }
        sleep 0.3
    done
}

# --- configuration ------------------------------------------------------------------------------

write_configs() {
    mkdir -p "$RUN" "$LOGS" "$STATE/etc" "$STATE/munge" "$STATE/spool/ctld" "$STATE/spool/d"
    chmod 700 "$STATE/munge" "$STATE/etc"

    if [ ! -s "$STATE/etc/munge.key" ]; then
        (umask 077; head -c 1024 /dev/urandom >"$STATE/etc/munge.key")
    fi
    chmod 400 "$STATE/etc/munge.key"

    # Chosen once per STATE_DIR, so a restart keeps the addresses the saved job state refers to.
    # FIRST_JOB_ID: a fresh cluster must not reuse the job ids of an earlier one, or submitit
    # finds that earlier job's result file in a reused folder (%j) and returns it.
    if [ ! -s "$STATE/etc/ids" ]; then
        local ports
        ports=$(free_ports 3)
        read -r -a ports <<<"$ports"
        echo "CTLD_PORT=${ports[0]} SLURMD_PORT=${ports[1]} DBD_PORT=${ports[2]}" \
             "FIRST_JOB_ID=$(( $(date +%s) % 50000000 + 1000 ))" >"$STATE/etc/ids"
    fi
    # shellcheck disable=SC1091
    . "$STATE/etc/ids"

    local node cpus mem_mb
    node=$(hostname -s)
    cpus=$(nproc)
    # Leave room for the daemons and the OS; never below 512 MB.
    mem_mb=$(awk '/^MemTotal:/ {t = $2 / 1024; m = t - (t > 4096 ? 1024 : t / 4); print (m < 512 ? 512 : int(m))}' /proc/meminfo)

    cat >"$SLURM_CONF" <<EOF
# Written by scripts/local_slurm.sh; rewritten on every start.
ClusterName=hsvlocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CryptoType=crypto/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: they are often unavailable inside containers and VMs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
LaunchParameters=enable_nss_slurm
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without a default each job is given the whole node's memory and jobs run one at a time.
DefMemPerCPU=$(( mem_mb / cpus < 1024 ? mem_mb / cpus : 1024 ))
FirstJobId=$FIRST_JOB_ID
# Quick turnaround for tests.
MinJobAge=60
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
# Accounting via slurmdbd (submitit polls sacct). AccountingStoragePass is munge's socket:
# slurmctld's connection to slurmdbd ignores AuthInfo=socket=.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd reads slurmdbd.conf from SLURM_CONF's directory; it must be 0600 and owned by SlurmUser.
    (umask 077; cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by scripts/local_slurm.sh; rewritten on every start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$STATE/etc/slurmdbd.conf"

    cat >"$STATE/env.sh" <<EOF
# Source this to talk to the cluster in $STATE (sbatch, squeue, sinfo, sacct, scancel, submitit).
export SLURM_CONF=$SLURM_CONF
EOF
}

# --- daemons ------------------------------------------------------------------------------------

start_munged() {
    pid_of munged >/dev/null && return 0
    # --force: munged refuses to start as root or when its paths look unsafe, and here both are ours.
    munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/etc/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOGS/munged.log" \
        --seed-file="$STATE/munge/munged.seed" </dev/null >>"$LOGS/munged.out" 2>&1 \
        || { cat "$LOGS/munged.out" >&2; die "munged failed to start"; }
    wait_for 10 munged munge -S "$MUNGE_SOCKET" -n
}

start_mariadbd() {
    pid_of mariadbd >/dev/null && return 0
    local datadir=$STATE/mysql opts
    opts=(--no-defaults --datadir="$datadir" --socket="$MYSQL_SOCKET" --skip-networking
          --user=root --pid-file="$RUN/mariadbd.pid" --log-error="$LOGS/mariadb.log"
          --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --skip-log-bin)
    if [ ! -d "$datadir/mysql" ]; then
        rm -rf "$datadir"
        # unix_socket auth for root: slurmdbd (running as root) logs in without a password.
        mariadb-install-db "${opts[@]:0:3}" --user=root --auth-root-authentication-method=socket \
            --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 \
            || { tail -20 "$LOGS/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    # mariadbd does not daemonize itself: detach it from our session and our stdout.
    setsid mariadbd "${opts[@]}" </dev/null >>"$LOGS/mariadb.out" 2>&1 &
    wait_for 30 mariadb mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root -e "select 1" \
        || { tail -20 "$LOGS/mariadb.log" >&2; die "mariadb did not come up"; }
}

start_slurmdbd() {
    pid_of slurmdbd >/dev/null && return 0
    slurmdbd </dev/null >>"$LOGS/slurmdbd.out" 2>&1 \
        || { tail -20 "$LOGS/slurmdbd.log" >&2; die "slurmdbd failed to start"; }
    wait_for 30 slurmdbd sacctmgr -i -n list cluster \
        || { tail -20 "$LOGS/slurmdbd.log" >&2; die "slurmdbd did not answer"; }
}

start_slurmctld() {
    pid_of slurmctld >/dev/null && return 0
    slurmctld </dev/null >>"$LOGS/slurmctld.out" 2>&1 \
        || { tail -20 "$LOGS/slurmctld.log" >&2; die "slurmctld failed to start"; }
}

start_slurmd() {
    pid_of slurmd >/dev/null && return 0
    slurmd </dev/null >>"$LOGS/slurmd.out" 2>&1 \
        || { tail -20 "$LOGS/slurmd.log" >&2; die "slurmd failed to start"; }
}

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; }

cmd_start() {
    need_root
    mkdir -p "${1:?usage: $0 start STATE_DIR}"
    set_paths "$1"
    local t0=$SECONDS
    cmd_install
    write_configs
    local d
    for d in "${DAEMONS[@]}"; do "start_$d"; done
    # A node left DOWN/DRAIN by an earlier unclean stop is resumed rather than waited on.
    if ! wait_for 10 "node idle" node_idle; then
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        wait_for $((START_TIMEOUT_S - 10)) "node idle" node_idle \
            || { sinfo -N -l >&2 || true; tail -20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2; die "node never became idle"; }
    fi
    log "cluster up in $((SECONDS - t0))s; use: source $STATE/env.sh"
}

cmd_status() {
    set_paths "$1"
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then echo "$d running (pid $pid)"; else echo "$d not running"; rc=1; fi
    done
    if [ -f "$SLURM_CONF" ]; then sinfo -N 2>/dev/null || true; fi
    return $rc
}

cmd_stop() {
    set_paths "$1"
    # Jobs first, so no slurmstepd or job process outlives slurmd.
    if pid_of slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # shellcheck disable=SC2016
            wait_for 15 "jobs to end" bash -c '[ -z "$(squeue -h -o %A)" ]' || true
        fi
    fi
    local i d pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[i]}
        pid=$(pid_of "$d") || { rm -f "$RUN/$d.pid"; continue; }
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for 20 "$d (pid $pid) to exit" eval "! alive $pid"; then
            log "killing $d (pid $pid)"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$RUN/$d.pid"
    done
    log "stopped cluster in $STATE"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    *) echo "usage: $0 {install|start STATE_DIR|stop STATE_DIR|status STATE_DIR}" >&2; exit 2 ;;
esac
