#!/usr/bin/env bash
# End-to-end test of parts under a real Slurm, on this machine alone: installs Debian's slurm-wlm and munge
# with apt-get if they are missing (needs root), starts munged (unless one runs), slurmctld and slurmd for a
# one-node cluster, exports a synthetic NemotronH to NVFP4 as a 3-task job array through moeport-array.sbatch
# (then finalize.sbatch, which must find the folder complete), and checks that the folder equals the
# single-process export file for file, byte for byte. Everything it started is stopped at the end, its files
# removed. Exit 0 when the two folders are equal.
#
#   sudo scripts/slurm/e2e-test.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
moeport="$root/bin/moeport"
work=$(mktemp -d /tmp/moeport-slurm.XXXXXX)
chmod 755 "$work"
started=()
cleanup() {
  if [ -n "${array:-}" ]; then
    scancel "$array" 2>/dev/null || true
  fi
  for pid in "${started[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "e2e: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "run as root: it installs and starts Slurm's and munge's daemons"
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: the key Debian's package made, and the daemon, unless one already runs.
if ! pgrep -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || mungekey --create
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --foreground >"$work/munged.out" 2>&1 &
  started+=($!)
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$work/state" "$work/spool"
export SLURM_CONF="$work/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=moeport-e2e
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=e2e Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
/usr/sbin/slurmctld -D -i >"$work/slurmctld.out" 2>&1 &
started+=($!)
/usr/sbin/slurmd -D >"$work/slurmd.out" 2>&1 &
started+=($!)
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then break; fi
  sleep 0.2
done
sinfo -h -o '%P %D %T %c CPUs' | sed 's/^/e2e: slurm: /' >&2
sinfo -h -o %T | grep -qx idle || { say "the node did not come up"; cat "$work/slurmd.log" "$work/slurmctld.log" >&2; exit 1; }

say "building moeport and a synthetic input"
"$moeport" --version >/dev/null
export JAVA_OPTS=-Xmx256m
"$moeport" synth --preset small --out "$work/synth" -q
args=(export --in "$work/synth/mcore" --hf-config "$work/synth/hf" --format nvfp4 --max-shard-size 5MB -q)

t0=$(date +%s.%N)
"$moeport" "${args[@]}" --out "$work/whole" > "$work/whole.log"
t1=$(date +%s.%N)
say "single process: $(cat "$work/whole.log" | head -1)"

export MOEPORT="$moeport"
array=$(sbatch --parsable --array=0-2 --cpus-per-task=1 --mem=1G --output="$work/task-%a.log" \
    "$root/scripts/slurm/moeport-array.sbatch" "${args[@]}" --out "$work/out")
finalize=$(sbatch --parsable --dependency=afterok:"$array" --mem=512M --output="$work/finalize.log" \
    "$root/scripts/slurm/finalize.sbatch" "$work/out")
for _ in $(seq 600); do
  squeue -h -j "$array,$finalize" 2>/dev/null | grep -q . || break
  sleep 0.5
done
t2=$(date +%s.%N)
for i in 0 1 2; do
  sed "s/^/e2e: task $i: /" "$work/task-$i.log" | grep -v 'incubator modules' >&2
done
sed 's/^/e2e: finalize: /' "$work/finalize.log" >&2
if ! diff -r -q "$work/whole" "$work/out" >&2; then
  say "FAIL: the job array's folder differs from the single-process export"
  cat "$work/slurmctld.log" "$work/slurmd.log" >&2
  exit 1
fi
say "$(ls "$work/out" | wc -l) files, equal byte for byte to the single-process export"
printf 'e2e: single process %.1f s, 3-task array (submit to last task, %s CPUs) %.1f s\n' \
    "$(echo "$t1 - $t0" | bc)" "$cpus" "$(echo "$t2 - $t1" | bc)" >&2
say "PASS"
