"""One 2-thread training job, or two 1-thread jobs side by side? (run by hand, on an idle machine)

    python benchmarks/threads.py [--method nsgan] [--epochs 1] [--data data/prepared/mnist5k]

Trains the method (the embedded default's config section) for ``--epochs`` on the prepared data
three ways, each in a fresh process through `glann train-baseline`: one job with 1 thread, one job
with 2 threads, and two 1-thread jobs started together. Prints the wall seconds of each and the
throughput (epochs per wall second) of "one 2-thread job" against "two 1-thread jobs": the better
one is how `runtime.threads` should split a 2-core machine's cores (config/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job(method: str, epochs: int) -> str:
    import yaml

    sys.path.insert(0, str(REPO / "src"))
    from glann.pipeline.config import fill_defaults, load_schema

    cfg = fill_defaults(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                        load_schema(REPO / "workflow/schemas/config.schema.yaml"))
    params = {**cfg[method], "epochs": epochs}
    return json.dumps({"dataset": "mnist5k", "method": method, "seed": 0, "device": "cpu",
                       "runtime": {"amp": "auto", "deterministic": False}, "params": params, "fault": None,
                       "snapshots": 0})


def start(method, epochs, threads, data, out):
    exe = Path(sys.executable).with_name("glann")
    return subprocess.Popen([str(exe), "train-baseline", "--job", job(method, epochs), "--threads", str(threads),
                             "--data", str(data), "--out", str(out / "model.pt"), "--csv", str(out / "losses.csv"),
                             "--snapshots", str(out / "snapshots.pt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "GLANN_TRACKING": "0"})


def timed(procs) -> float:
    t0 = time.perf_counter()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("a training job failed")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="nsgan")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", type=Path, default=REPO / "data/prepared/mnist5k")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glann-threads-"))
    try:
        dirs = [work / name for name in ("one1", "one2", "a", "b")]
        for d in dirs:
            d.mkdir()
        one1 = timed([start(args.method, args.epochs, 1, args.data, dirs[0])])
        one2 = timed([start(args.method, args.epochs, 2, args.data, dirs[1])])
        two1 = timed([start(args.method, args.epochs, 1, args.data, d) for d in dirs[2:]])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.method}, {args.epochs} epoch(s) per job, wall seconds (process start included):")
    print(f"  one job, 1 thread:            {one1:.1f}")
    print(f"  one job, 2 threads:           {one2:.1f}")
    print(f"  two 1-thread jobs side by side: {two1:.1f} (both)")
    print(f"throughput, two 1-thread jobs against one 2-thread job: {2 * one2 / two1:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
