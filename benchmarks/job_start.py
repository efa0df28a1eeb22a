"""What a job pays before it computes anything (run by hand, on an idle machine)

    python benchmarks/job_start.py [--repeats 5]

Every rule of the workflow runs `glann <step>` in a fresh process, so each of a run's jobs
pays Python's start, the imports its step needs, and the start of its MLflow run. This times,
in fresh processes, the median wall seconds of:

- ``python``: the interpreter alone;
- ``glann + torch``: importing the command line and torch (every training and scoring job);
- ``scoring imports``: what `glann evaluate` imports (torch, scipy, prdc, the evaluator);
- ``live MLflow run``: the above plus opening an MLflow run in a fresh SQLite store
  (``tracking.live: true``);
- ``journaled run``: the same run journaled (``tracking.live: false``), which imports no MLflow.

The difference of the last two, times a run's job count, is what live tracking costs a run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "python": "pass",
    "glann + torch": "import glann.pipeline.cli, torch",
    "scoring imports": "import glann.evaluation.scoring, prdc, scipy.linalg",
    "live MLflow run": ("import glann.evaluation.scoring\n"
                        "from glann.tracking.tracker import Tracker\n"
                        "t = Tracker('evaluate', {'dataset': 'd', 'method': 'm', 'seed': 0}, params={'a': 1},\n"
                        "            settings={'uri': 'sqlite:///{tmp}/mlflow.db', 'live': True})\n"
                        "t.finish()"),
    "journaled run": ("import glann.evaluation.scoring\n"
                      "from glann.tracking.tracker import Tracker\n"
                      "t = Tracker('evaluate', {'dataset': 'd', 'method': 'm', 'seed': 0}, params={'a': 1},\n"
                      "            settings={'uri': 'sqlite:///{tmp}/mlflow.db', 'live': False})\n"
                      "t.finish()"),
}


def timed(code: str, tmp: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code.replace("{tmp}", str(tmp))], check=True, cwd=tmp,
                   capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print("| start | median wall s | min | max |\n|---|---|---|---|")
    for name, code in CASES.items():
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:  # a fresh store and journal folder every time
                times.append(timed(code, Path(tmp)))
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
