#!/bin/bash
# The GPU check: the paper's MNIST preset (the 11 methods of GLANN's Table 1, and flow), one seed,
# end to end (Snakemake, MLflow on a local SQLite store, the summary) on one GPU, on a machine
# with PyTorch and CUDA but no network. Before, on a machine with PyPI:
#   bash benchmarks/gpu/fetch_wheels.sh        # .whl/: 76 wheels, about 39 MB
# then, with .whl/ beside the tree on the GPU machine:
#   bash benchmarks/gpu/check.sh [--slots N] [--dry-run]
# --slots N: training jobs sharing the GPU at a time (Snakemake's --resources gpu=N; default 4).
# --dry-run: no install and no training: the data files and Snakemake's plan only (runs on CPU;
# tests/test_gpu_check.py). Then times one GAN training step against bare loops (step_bench.py).
# Writes its report, the step benchmark, the GPU samples and Snakemake's log to
# $GPU_CHECK_OUT (default benchmarks/out/gpu_check) and prints the report.
set -euo pipefail
cd "$(dirname "$0")/../.."
slots=4; dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slots) slots=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "usage: bash benchmarks/gpu/check.sh [--slots N] [--dry-run]" >&2; exit 2 ;;
  esac
done
out=${GPU_CHECK_OUT:-benchmarks/out/gpu_check}
mkdir -p "$out"
config=(--configfile config/paper/mnist.yaml benchmarks/gpu/check.yaml)
smk=(snakemake --cores all --resources "gpu=$slots" --scheduler greedy "${config[@]}")
if [ $dry = 0 ]; then
  ls .whl/*.whl > /dev/null 2>&1 || { echo "error: no wheels in .whl/: run benchmarks/gpu/fetch_wheels.sh first, where PyPI is reachable" >&2; exit 2; }
  site=/tmp/glann-site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$site" .
  export PYTHONPATH="$site" PATH="$site/bin:$PATH"
fi
python3 benchmarks/gpu/mnist_idx.py .gpu_data
if [ $dry = 1 ]; then
  "${smk[@]}" -n > "$out/plan.txt" 2>&1
  grep -m1 -A16 "^Job stats" "$out/plan.txt"
  exit 0
fi
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > "$out/gpu_util.csv" &
sampler=$!
start=$(date +%s.%N)
rc=0
"${smk[@]}" > "$out/snakemake.log" 2>&1 || rc=$?
end=$(date +%s.%N)
kill $sampler 2>/dev/null || true
python3 benchmarks/gpu/report.py --wall-seconds "$(python3 -c "print($end - $start)")" --slots "$slots" \
  --util "$out/gpu_util.csv" --logs logs --table results/summary/table.md | tee "$out/report.md"
[ $rc = 0 ] || { echo "snakemake exited $rc: the end of $out/snakemake.log:"; tail -n 40 "$out/snakemake.log"; }
# one training step: the trainer against a bare loop and a CUDA-graph bare loop (about 30 s)
python3 benchmarks/gpu/step_bench.py --out "$out/step_bench.md" || echo "the step benchmark failed (above)"
exit $rc
