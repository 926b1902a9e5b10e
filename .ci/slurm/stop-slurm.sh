#!/usr/bin/env bash
# Stop the single-node test SLURM started by .ci/slurm/start-slurm.sh
# (slurmd, slurmctld, munged), by their pid files. Idempotent.
#   --purge  also remove the controller's saved state (queued/finished jobs).
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "stop-slurm.sh: must run as root" >&2; exit 1; }

running() {  # running PID NAME -> 0 if PID is a live (non-zombie) NAME process
    local pid=$1 name=$2
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] \
        && ! grep -qE '^State:[[:space:]]+[ZX]' "/proc/$pid/status" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME
    local f=$1 name=$2 pid
    [[ -s $f ]] || return 0
    pid=$(<"$f")
    if running "$pid" "$name"; then
        echo "[stop-slurm] stopping $name ($pid)" >&2
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do running "$pid" "$name" || break; sleep 0.2; done
        if running "$pid" "$name"; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

stop_pidfile /run/slurmd.pid slurmd
stop_pidfile /run/slurmctld.pid slurmctld
stop_pidfile /run/munge/munged.pid munged

if [[ ${1:-} == --purge ]]; then
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
    echo "[stop-slurm] purged controller/slurmd state" >&2
fi
echo "[stop-slurm] done" >&2
