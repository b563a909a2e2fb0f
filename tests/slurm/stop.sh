#!/usr/bin/env bash
# Stop the test cluster started by setup.sh: cancel its jobs, then stop slurmd, slurmctld
# and munged by the pids they wrote under $HMF_SLURM_DIR (default /tmp/hmf-slurm).
# and remove its links in /etc/slurm. Leaves the directory (logs) in place; setup.sh wipes
# it on the next start.
set -uo pipefail

DIR="${HMF_SLURM_DIR:-/tmp/hmf-slurm}"
export SLURM_CONF="$DIR/etc/slurm.conf"

if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null 2>&1; then
    timeout 10 scancel --full --quiet --partition=debug >/dev/null 2>&1 || true
fi

stop_pidfile() {
    local pidfile="$1" name="$2" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name (pid $pid) ignored SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

stop_pidfile "$DIR/run/slurmd.pid" slurmd
stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
stop_pidfile "$DIR/run/munged.pid" munged

# Remove the links setup.sh made in /etc/slurm (only ours).
for name in slurm.conf gres.conf; do
    target="/etc/slurm/$name"
    if [ -L "$target" ] && [ "$(readlink "$target")" = "$DIR/etc/$name" ]; then
        rm -f "$target"
    fi
done
exit 0
