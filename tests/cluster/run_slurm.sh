#!/usr/bin/env bash
# A real SLURM test: install Debian's slurm-wlm and munge, start a one-node
# cluster on this machine, run config/quick.yaml through
# `--workflow-profile profiles/slurm` (snakemake-executor-plugin-slurm),
# then check that every job went through sbatch and that the outputs equal a
# local run of the same config.
#
# Run as root on a throw-away machine (it writes /etc/slurm and starts daemons):
#     bash tests/cluster/run_slurm.sh            # uses .venv, or the active venv
# Takes about 10 minutes on 2 cores (two quick runs plus polling).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -f "$REPO/.venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    source "$REPO/.venv/bin/activate"
fi
command -v snakemake >/dev/null || { echo "run_slurm: snakemake not found; activate the project's venv" >&2; exit 2; }
python -c "import snakemake_executor_plugin_slurm" 2>/dev/null || pip install -q snakemake-executor-plugin-slurm

# --- 1. Slurm and munge from Debian ------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)"
LOGDIR=/var/log/slurm
mkdir -p /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/log/munge /var/lib/munge /etc/munge

# --- 2. munge (authentication between the Slurm daemons and clients) --------
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

# --- 3. a one-node cluster ----------------------------------------------------
# No slurmdbd: accounting off, so the executor plugin is told to poll squeue
# (MinJobAge keeps finished jobs visible to squeue/scontrol for an hour), and
# jobcomp/filetxt records every finished job in $LOGDIR/jobcomp.log.
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=glanntest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
MinJobAge=3600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
rm -f "$LOGDIR/jobcomp.log"
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c          # -c: start clean, no jobs from an earlier test
slurmd
for _ in $(seq 1 30); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed"; then break; fi
    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    sleep 1
done
sinfo
sinfo -h -o "%T" | grep -qE "idle|mixed" || { echo "run_slurm: the node did not come up; see $LOGDIR" >&2; exit 1; }

# --- 4. the same quick config, locally and through SLURM ----------------------
WORK="$(mktemp -d /tmp/glann-slurm.XXXXXX)"
for d in local slurm; do
    mkdir -p "$WORK/$d"
    (cd "$REPO" && git ls-files -z Snakefile profiles workflow config src | xargs -0 -I{} cp -P --parents {} "$WORK/$d/")
done
export GLANN_TRACKING=0

echo "== local run"
(cd "$WORK/local" && snakemake --cores "$CPUS" --configfile config/quick.yaml --quiet rules)

echo "== SLURM run"
start=$(date +%s)
(cd "$WORK/slurm" && snakemake --workflow-profile profiles/slurm --configfile config/quick.yaml \
    --slurm-no-account --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 \
    --slurm-keep-successful-logs --jobs 4 --quiet rules)
echo "SLURM run took $(( $(date +%s) - start )) s"

# --- 5. checks ----------------------------------------------------------------
python - "$WORK" "$LOGDIR/jobcomp.log" <<'PY'
import hashlib, json, re, sys
from pathlib import Path

work, jobcomp = Path(sys.argv[1]), Path(sys.argv[2])
slurm, local = work / "slurm", work / "local"

# Every job snakemake ran is a completed SLURM job: one line in jobcomp.log each.
records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in jobcomp.read_text().splitlines() if line.strip()]
states = [r.get("JobState") for r in records]
submitted = sorted(p.name for p in (slurm / ".snakemake" / "slurm_logs").rglob("*.log"))
print(f"jobcomp: {len(records)} jobs, states {sorted(set(states))}; slurm logs: {len(submitted)}")
assert records and all(s == "COMPLETED" for s in states), states
assert len(submitted) == len(records), (len(submitted), len(records))
rules = {p.parent.name for p in (slurm / ".snakemake" / "slurm_logs").rglob("*.log")}
rules |= {p.parent.parent.name for p in (slurm / ".snakemake" / "slurm_logs").rglob("*.log")}
for rule in ("rule_prepare_data", "rule_train_glo", "rule_train_imle", "rule_sample", "rule_evaluate", "rule_summarize"):
    assert rule in rules, f"{rule} did not go through sbatch: {sorted(rules)}"

# Same outputs as the local run (config/quick.yaml is deterministic on CPU).
def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()

compared = 0
for f in sorted(local.joinpath("results").rglob("*")):
    if f.suffix not in {".json", ".npz", ".csv"} or f.name == "summary.json":
        continue
    g = slurm / f.relative_to(local)
    assert g.exists(), f"missing in the SLURM run: {g}"
    if f.name == "metrics.json":
        a, b = json.loads(f.read_text()), json.loads(g.read_text())
        drop = lambda d: {k: v for k, v in d.items() if "seconds" not in k}
        assert drop(a) == drop(b), f"{f.relative_to(local)} differs"
    elif f.suffix == ".csv":  # per-epoch losses; the wall-clock column differs
        import csv
        rows = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(p.open())]
        assert rows(f) == rows(g), f"{f.relative_to(local)} differs"
    else:
        assert digest(f) == digest(g), f"{f.relative_to(local)} differs"
    compared += 1
assert (slurm / "results/summary/table.md").read_text() == (local / "results/summary/table.md").read_text()
print(f"outputs: {compared} files equal between the local and the SLURM run; table.md identical")
print("SLURM test passed")
PY
