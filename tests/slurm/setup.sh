#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster (munged, slurmctld, slurmd) for the tests.
#
# Needs root. Installs the Debian packages slurmctld, slurmd, slurm-client and munge when
# they are missing. Everything else lives under $HMF_SLURM_DIR (default /tmp/hmf-slurm):
# configuration, munge key and socket, spool and state, logs, pid files and the placeholder
# GPU device files. The node offers 2 CPUs and 2 GPUs (gres) in the default partition
# "debug"; there is no accounting database. /etc/slurm/slurm.conf and gres.conf become
# symbolic links to the generated files (job steps only look there). On success the last
# line printed is
#   SLURM_CONF=<dir>/etc/slurm.conf
# which clients (sbatch, squeue, snakemake's slurm executor) need in their environment.
# Stop everything with stop.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${HMF_SLURM_DIR:-/tmp/hmf-slurm}"
CTLD_PORT="${HMF_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${HMF_SLURM_SLURMD_PORT:-16818}"
WAIT_S="${HMF_SLURM_WAIT_S:-60}"

# Exit codes: 1 the cluster did not come up, 2 not root, 3 packages missing and not installable.
die() { echo "setup.sh: $1" >&2; exit "${2:-1}"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the daemons start as root)" 2

# --- packages -------------------------------------------------------------------------
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them" 3
    echo "setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2 || die "apt-get update failed" 3
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed" 3
    fi
fi

# --- fresh state directory --------------------------------------------------------------
"$HERE/stop.sh" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,munge,spool/ctld,spool/d,log,run,dev}
chmod 700 "$DIR/munge"

HOST="$(hostname -s)"
ADDR=127.0.0.1
mem_avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
MEM_MB=$(( mem_avail_mb * 8 / 10 ))            # a bit below what is free: slurmd must not drain the node
[ "$MEM_MB" -ge 1024 ] || die "only ${mem_avail_mb} MB of memory available; need at least 1.3 GB"

# Placeholder device files for the two GPUs: slurmd only needs them to exist.
ln -s /dev/null "$DIR/dev/nvidia0"; ln -s /dev/null "$DIR/dev/nvidia1"

fill() {
    sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@ADDR@|$ADDR|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" "$1" > "$2"
}
fill "$HERE/slurm.conf.in" "$DIR/etc/slurm.conf"
fill "$HERE/gres.conf.in" "$DIR/etc/gres.conf"
export SLURM_CONF="$DIR/etc/slurm.conf"

# Job steps must find the configuration at the compiled-in default path: the Snakemake
# slurm-jobstep executor strips SLURM_CONF (with all SLURM_* variables) before calling
# srun inside a job. Link it there, but never replace a configuration we did not write.
mkdir -p /etc/slurm
for name in slurm.conf gres.conf; do
    target="/etc/slurm/$name"
    if [ -e "$target" ] || [ -L "$target" ]; then
        # ours: a link that is dangling or leads into a folder of this test cluster (judged by
        # the slurm.conf beside the link's target: gres.conf names no cluster)
        [ -L "$target" ] && { [ ! -e "$target" ] \
            || grep -q '^ClusterName=hmftest$' "$(dirname "$(readlink "$target")")/slurm.conf"; } \
            || die "$target exists and was not written by this script: refusing to replace a real SLURM configuration"
    fi
    ln -sfn "$DIR/etc/$name" "$target"
done

# --- munge: a private daemon with its own key and socket ---------------------------------
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start; see $DIR/log/munged.log"
munge --socket="$DIR/munge/munge.socket" -n | unmunge --socket="$DIR/munge/munge.socket" >/dev/null \
    || die "munge round trip failed; see $DIR/log/munged.log"

# --- SLURM daemons (they fork into the background and write pid files) -------------------
slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
slurmd -f "$SLURM_CONF" -N "$HOST" || die "slurmd did not start; see $DIR/log/slurmd.log"

deadline=$(( $(date +%s) + WAIT_S ))
state=""
while :; do
    state="$(sinfo --noheader --nodes="$HOST" --format=%t 2>/dev/null | head -n1 | tr -d ' *')"
    [ "$state" = "idle" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "setup.sh: node $HOST is '${state:-unknown}' after ${WAIT_S}s" >&2
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 1
done
echo "setup.sh: node $HOST idle with $(sinfo --noheader --nodes="$HOST" --format=%G)" >&2
echo "SLURM_CONF=$SLURM_CONF"
