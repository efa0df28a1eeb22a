"""The GPU check's report (benchmarks/gpu/check.sh): wall time, GPU utilisation, per-job times.

    python benchmarks/gpu/report.py --wall-seconds S --slots N --util gpu_util.csv --logs logs \
        --table results/summary/table.md

Per-job times are Snakemake's benchmark files (``*.bench.tsv``: wall seconds of each job, the
GPU shared by up to N jobs at a time); utilisation is nvidia-smi's ``utilization.gpu`` sampled
once a second over the whole invocation.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def job_times(logs: Path) -> list[tuple[str, str, float]]:
    """(rule, job folder, wall s) for every *.bench.tsv under ``logs``."""
    out = []
    for path in sorted(logs.rglob("*.bench.tsv")):
        rows = list(csv.DictReader(path.open(), delimiter="\t"))
        if rows:
            out.append((path.name.removesuffix(".bench.tsv"), str(path.parent.relative_to(logs)),
                        float(rows[-1].get("s") or 0)))
    return out


def utilisation(path: Path) -> list[float]:
    """GPU utilisation samples (%) from nvidia-smi's CSV (timestamp, utilization.gpu [%], memory.used)."""
    values = []
    if path.is_file():
        for row in csv.reader(path.open()):
            if len(row) >= 2:
                try:
                    values.append(float(row[1].strip().rstrip("%").strip()))
                except ValueError:
                    continue
    return values


def render(wall: float, slots: int, util: list[float], jobs: list, device: str, table: str | None) -> str:
    lines = [f"# GPU check: the paper's MNIST preset, one seed ({device})", "",
             f"Wall time of the invocation: **{wall:.0f} s** ({wall / 60:.1f} min), up to {slots} GPU jobs at a time; "
             f"{len(jobs)} jobs.", ""]
    if util:
        busy = sum(v > 0 for v in util) / len(util)
        lines += [f"GPU utilisation over {len(util)} one-second samples: mean {statistics.mean(util):.0f}%, "
                  f"median {statistics.median(util):.0f}%, non-zero in {busy:.0%} of them.", ""]
    per_rule = defaultdict(lambda: [0, 0.0])
    for rule, _, s in jobs:
        per_rule[rule][0] += 1
        per_rule[rule][1] += s
    lines += ["| rule | jobs | summed wall s |", "|---|---|---|"]
    lines += [f"| {r} | {n} | {s:,.1f} |" for r, (n, s) in sorted(per_rule.items(), key=lambda kv: -kv[1][1])]
    lines += ["", "| training job | wall s |", "|---|---|"]
    lines += [f"| {where} ({rule}) | {s:,.1f} |" for rule, where, s in sorted(jobs, key=lambda j: -j[2])
              if rule.startswith(("train_", "fit_"))]
    if table:
        lines += ["", "## The summary's table (data: mnist5k repeated to MNIST's size: timing, not quality)", "",
                  table.split("\n", 1)[1] if table.startswith("# ") else table]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wall-seconds", type=float, required=True)
    ap.add_argument("--slots", type=int, required=True)
    ap.add_argument("--util", type=Path, required=True)
    ap.add_argument("--logs", type=Path, default=Path("logs"))
    ap.add_argument("--table", type=Path, default=Path("results/summary/table.md"))
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    device = args.device
    if device is None:
        try:
            import torch

            device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        except ImportError:
            device = "unknown device"
    table = args.table.read_text() if args.table.is_file() else None
    sys.stdout.write(render(args.wall_seconds, args.slots, utilisation(args.util), job_times(args.logs), device, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
