"""Mutation testing of the science outside metrics, summary and losses (mutmut), on a seeded
random sample of each module's mutants.

Run by hand, from the checkout's venv (it needs mutmut and the project's dependencies):
    python tests/mutation/trainers.py [--per-module 15] [--seed 0] [--max-children 2] [--all]
    python tests/mutation/trainers.py --modules methods/sampling,data/datasets --per-module 30

The modules mutated (``--modules``, paths under src/glann without .py) default to the
methods (models, glo, imle, gans, vae, nn_search, training, gaussian, sampling, sweep), the
data (datasets, sources, kinds) and the evaluation steps (evaluator, scoring, snapshots); the tests are the
in-process ones that train and check them (Snakefile and subprocess tests cannot see
mutants). Their tests train networks for seconds, so every mutant costs seconds to minutes on
a CPU and the full set takes many hours on 2 cores: by default the script generates every
mutant, then runs a uniform random sample of ``--per-module`` mutants of each module (fixed
``--seed``) and reports the killed share per module and in all, each with a 95% interval, so
each score is an unbiased estimate of that module's full run. ``--all`` runs every mutant.

Everything happens in a scratch copy of the repository (never in the checkout); the copy is
kept and printed, so ``mutmut results`` / ``mutmut show <name>`` can be run there. mutmut 3
must not see the editable install (its import hook would shadow the mutants): the script runs
mutmut from a venv that has the dependencies but not the project.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ["methods/models", "methods/glo", "methods/imle", "methods/gans", "methods/vae", "methods/nn_search",
           "methods/training", "methods/gaussian", "methods/sampling", "methods/search_space", "data/datasets",
           "data/sources", "data/kinds", "evaluation/evaluator", "evaluation/scoring", "evaluation/snapshots"]
TESTS = ["tests/test_science.py", "tests/test_trainers.py", "tests/test_glann.py", "tests/test_baselines.py",
         "tests/test_faithfulness.py", "tests/test_losses_and_search.py", "tests/test_snapshots.py",
         "tests/test_architecture.py", "tests/test_models.py", "tests/test_properties.py", "tests/test_splits.py",
         "tests/test_datasets.py", "tests/test_evaluation.py", "tests/test_metrics_exact.py", "tests/test_config.py",
         "tests/test_sweeps.py"]
# tests that run the installed glann or snakemake, or read the source files (mutmut's copies differ on purpose)
DESELECT = ["tests/test_glann.py::test_kill9_then_resume_equals_uninterrupted",
            "tests/test_architecture.py::test_no_dead_code",
            "tests/test_architecture.py::test_code_hash_is_the_import_closure_of_the_step",
            "tests/test_architecture.py::test_src_imports_no_snakemake_and_has_no_cycles",
            "tests/test_architecture.py::test_workflow_start_and_cli_help_import_no_torch",
            "tests/test_config.py::test_snakemake_refuses_bad_config_before_any_job",
            "tests/test_config.py::test_dry_run_builds_the_dag",
            "tests/test_sweeps.py::test_sweeping_glo_gauss_alone_trains_glanns_glo_for_each_setting"]


def scratch_copy(modules=MODULES) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="glann-mutmut-trainers-"))
    for name in ("src", "tests", "workflow", "config", "benchmarks", "pyproject.toml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    text = (dest / "pyproject.toml").read_text()
    section = text[text.index("[tool.mutmut]"):]
    end = re.search(r"\n\[(?!tool\.mutmut)", section)
    section = section[: end.start() + 1] if end else section
    keep = {f"src/glann/{m}.py" for m in modules}
    skip = sorted(str(p.relative_to(dest)) for p in (dest / "src/glann").rglob("*.py")
                  if str(p.relative_to(dest)) not in keep)
    new = ("[tool.mutmut]\n"
           'paths_to_mutate = ["src/glann/"]\n'
           f"do_not_mutate = {json.dumps(skip)}\n"
           f"tests_dir = {json.dumps(TESTS)}\n"
           "pytest_add_cli_args = "
           + json.dumps(["-m", "not pipeline", "-p", "no:cacheprovider", "-q", "-x"]
                        + [a for t in DESELECT for a in ("--deselect", t)]) + "\n"
           'also_copy = ["tests/", "workflow/", "config/", "benchmarks/"]\n')
    (dest / "pyproject.toml").write_text(text.replace(section, new))
    return dest


def mutmut_python(work: Path) -> str:
    """A venv with the checkout's dependencies (a .pth onto its site-packages) but not the project."""
    venv = work / ".mvenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    return str(venv / "bin/python")


def all_mutants(work: Path) -> dict[str, int | None]:
    out = {}
    for meta in (work / "mutants/src/glann").rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def module_of(name: str) -> str:
    """The module of a mutmut 3 mutant name: glann.methods.glo.x_train_glo__mutmut_3 ->
    methods/glo (a method's mutants: glann.methods.models.xǁClassǁmethod__mutmut_1)."""
    return name.split(".x", 1)[0].removeprefix("glann.").replace(".", "/")


def sample_of(names: list[str], per_module: int, seed: int, everything: bool) -> list[str]:
    """Every mutant, or ``per_module`` drawn uniformly from each module's (one seeded stream)."""
    names = sorted(names)
    if everything:
        return names
    rng = random.Random(seed)
    by_module: dict[str, list[str]] = {}
    for n in names:
        by_module.setdefault(module_of(n), []).append(n)
    return sorted(n for m in sorted(by_module) for n in rng.sample(by_module[m], min(per_module, len(by_module[m]))))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-module", type=int, default=15)
    ap.add_argument("--modules", default=",".join(MODULES), help="paths under src/glann, without .py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--report", type=Path, help="only report on the scratch copy of an earlier (or stopped) run")
    args = ap.parse_args()
    if args.report:
        return report(args.report, args.per_module, args.seed, args.all)

    modules = args.modules.split(",")
    work = scratch_copy(modules)
    py = mutmut_python(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLANN_TRACKING": "0"}
    env.pop("PYTHONPATH", None)
    print(f"scratch copy: {work}", flush=True)
    # generate every mutant and collect which tests reach which function: a filter that matches
    # nothing stops mutmut right after that step
    subprocess.run([py, "-m", "mutmut", "run", "--max-children", str(args.max_children), "glann.no_such_module.*"],
                   cwd=work, env=env, capture_output=True)
    names = sorted(all_mutants(work))
    if not names:
        print("mutmut generated no mutants", file=sys.stderr)
        return 1
    chosen = sample_of(names, args.per_module, args.seed, args.all)
    print(f"{len(names)} mutants in {', '.join(modules)}; running {len(chosen)}", flush=True)
    subprocess.run([py, "-m", "mutmut", "run", "--max-children", str(args.max_children), *chosen],
                   cwd=work, env=env, check=False)
    return report(work, args.per_module, args.seed, args.all)


def report(work: Path, per_module: int, seed: int, everything: bool) -> int:
    from mutmut.stats import status_by_exit_code

    codes = all_mutants(work)
    chosen = sample_of(list(codes), per_module, seed, everything)
    counts: dict[str, list[str]] = {}
    for name in chosen:
        counts.setdefault(status_by_exit_code[codes.get(name)], []).append(name)
    detected = ("killed", "timeout", "segfault")  # a test failed, ran out of time, or crashed
    status = {n: s for s, ns in counts.items() for n in ns}

    def line(label, names):
        scored = [n for n in names if status[n] in detected + ("survived",)]
        killed = sum(status[n] in detected for n in scored)
        lo, hi = wilson(killed, len(scored))
        total = sum(module_of(n) == label for n in codes) if label != "all" else len(codes)
        print(f"{label:24s} {total:5d} mutants, {len(names):3d} run: {killed:3d} of {len(scored):3d} killed = "
              f"{killed / max(1, len(scored)):6.1%} (95% interval {lo:.1%}-{hi:.1%})")

    print("\nper status:", {s: len(ns) for s, ns in sorted(counts.items())})
    print("killed (timeouts and crashes count as killed), per module:")
    for m in sorted({module_of(n) for n in chosen}):
        line(m, [n for n in chosen if module_of(n) == m])
    line("all", chosen)
    for s in ("survived", "no tests"):
        for name in counts.get(s, []):
            print(f"{s}: {name}")
    print(f"\nscratch copy kept: {work} (cd there; {work}/.mvenv/bin/python -m mutmut show <name>)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
