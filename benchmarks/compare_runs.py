"""Mean ± sample std over seeds of chosen metrics, for one or more finished pipeline folders.

    python benchmarks/compare_runs.py LABEL=FOLDER [LABEL=FOLDER ...] [--methods glann nsgan]
        [--metrics fid_domain recall coverage classes_covered]

Reads FOLDER/results/<dataset>/<method>/seed*/metrics.json and prints one
Markdown row per (label, dataset, method): how README's before/after and
ablation tables are made.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows(folder: Path, methods):
    for ds_dir in sorted((folder / "results").iterdir()):
        if not ds_dir.is_dir() or ds_dir.name == "summary":
            continue
        for m_dir in sorted(ds_dir.iterdir()):
            if methods and m_dir.name not in methods:
                continue
            files = sorted(m_dir.glob("seed*/metrics.json"))
            if files:
                yield ds_dir.name, m_dir.name, [json.loads(f.read_text()) for f in files]


def cell(values):
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "n/a"
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{mean:.3g} ± {std:.2g}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=FOLDER")
    ap.add_argument("--methods", nargs="*")
    ap.add_argument("--metrics", nargs="*", default=["fid_domain", "precision", "recall", "coverage",
                                                      "classes_covered"])
    args = ap.parse_args(argv)
    print("| run | dataset | method | seeds | " + " | ".join(args.metrics) + " |")
    print("|---" * (4 + len(args.metrics)) + "|")
    for spec in args.runs:
        label, folder = spec.split("=", 1)
        for ds, method, ms in rows(Path(folder), args.methods):
            cells = [cell([m.get(k) for m in ms]) for k in args.metrics]
            print(f"| {label} | {ds} | {method} | {len(ms)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
