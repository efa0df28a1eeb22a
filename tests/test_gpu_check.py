"""The GPU check (benchmarks/gpu/): everything of it that runs without a GPU.

The wheel set it carries is the closure of the pipeline's runtime packages less what the GPU image
provides (read from the installed packages' metadata, offline); its dry run writes the data and
plans every method of the paper's MNIST preset as a GPU job; its report reads Snakemake's
benchmark files and nvidia-smi's samples.
"""

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from conftest import REPO, copy_workflow

GPU = REPO / "benchmarks" / "gpu"
ROOTS = ("snakemake", "mlflow", "prdc", "mlxtend")  # what the pipeline imports beyond the image's packages
LEFT_OUT = {"pulp"}  # Snakemake's ILP scheduler: the check runs --scheduler greedy


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            out[_norm(name)] = version
    return out


def test_the_carried_wheels_are_the_runtime_closure_less_the_gpu_image():
    wheels, provided = _listed(GPU / "wheels.txt"), set(_listed(GPU / "provided.txt"))
    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    seen, todo, missing, wanted = set(), list(ROOTS), [], {}
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        if name in provided:
            continue  # the image's own: its dependencies are the image's business
        if name not in wheels and name not in LEFT_OUT:
            missing.append(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
                wanted.setdefault(_norm(req.name), []).append((dist.metadata["Name"], req.specifier))
    assert not missing, f"needed at run time, neither carried nor provided: {sorted(missing)}"
    # each carried version meets every requirement on it in the closure (the set installs offline
    # with --no-deps); not the very version installed here: a new patch release on PyPI moves that
    for name, version in wheels.items():
        for by, spec in wanted.get(name, []):
            assert spec.contains(version, prereleases=True), f"{name}: wheels.txt pins {version}; {by} needs {spec}"
    assert not set(wheels) & provided, "a carried wheel the image provides: two versions stop the install"
    assert set(wheels) <= seen, f"carried but not needed: {sorted(set(wheels) - seen)}"


def test_the_dry_run_writes_the_data_and_plans_every_method_on_the_gpu(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "benchmarks", wf / "benchmarks", ignore=shutil.ignore_patterns("out", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(wf / "src"), "GPU_CHECK_OUT": str(tmp_path / "out"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "benchmarks/gpu/check.sh", "--dry-run", "--slots", "2"], cwd=wf, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "60000 training and 10000 test images (mnist5k repeated)" in proc.stdout
    plan = (tmp_path / "out" / "plan.txt").read_text()
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:", 1)[1], re.M))
    assert (stats["train_baseline"], stats["train_glo"], stats["train_imle"], stats["fit_gaussian"],
            stats["evaluate"]) == ("10", "1", "1", "1", "12")
    trains = re.findall(r"rule (train_\w+):.*?resources: ([^\n]*)", plan, re.S)
    assert len(trains) == 13 and all("gpu=1" in r for _, r in trains)  # 12 methods' and the evaluator's
    assert "results/mnist/glann/seed0/glo.pt" in plan and "results/mnist/glann/seed1" not in plan
    import torchvision

    assert len(torchvision.datasets.MNIST(str(wf / ".gpu_data"), train=True)) == 60000


def test_the_check_refuses_to_start_without_its_wheels(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "benchmarks" / "gpu", wf / "benchmarks" / "gpu")
    proc = subprocess.run(["bash", "benchmarks/gpu/check.sh"], cwd=wf, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and "run benchmarks/gpu/fetch_wheels.sh first" in proc.stderr


def test_the_report_sums_the_jobs_and_the_utilisation(tmp_path):
    sys.path.insert(0, str(GPU))
    try:
        import report
    finally:
        sys.path.remove(str(GPU))
    for where, rule, s in (("mnist/glann/seed0", "train_glo", 40.0), ("mnist/nsgan/seed0", "train_baseline", 30.5),
                           ("mnist/nsgan/seed0", "sample", 2.0)):
        (tmp_path / "logs" / where).mkdir(parents=True, exist_ok=True)
        (tmp_path / "logs" / where / f"{rule}.bench.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:01\t100\n")
    (tmp_path / "util.csv").write_text("2026/01/01 00:00:00, 50 %, 100 MiB\n2026/01/01 00:00:01, 0 %, 100 MiB\n"
                                       "garbage\n2026/01/01 00:00:02, 100 %, 100 MiB\n")
    text = report.render(125.0, 4, report.utilisation(tmp_path / "util.csv"), report.job_times(tmp_path / "logs"),
                         "Test GPU", "# Results\n\nthe table")
    assert "**125 s** (2.1 min), up to 4 GPU jobs at a time; 3 jobs" in text
    assert "mean 50%, median 50%, non-zero in 67% of them" in text
    assert "| train_glo | 1 | 40.0 |" in text and "| mnist/nsgan/seed0 (train_baseline) | 30.5 |" in text
    assert "(sample)" not in text and text.rstrip().endswith("the table")


def test_the_step_benchmark_times_the_trainer_and_a_bare_loop_of_the_same_networks(tmp_path):
    """benchmarks/gpu/step_bench.py on the CPU at a tiny size: a row per kind with the trainer's and
    the bare loop's ms per D step (the CUDA-graph column needs a GPU and says so), and the bare
    loop builds the networks train_gan builds, with the kind's settings."""
    import json

    import torch

    sys.path.insert(0, str(GPU))
    try:
        import step_bench
    finally:
        sys.path.remove(str(GPU))
    out = tmp_path / "step.md"
    assert step_bench.main(["--device", "cpu", "--images", "128", "--size", "16", "--epochs", "2",
                            "--steps", "5", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["nsgan", "wgan_gp"]
    for r in rows:
        assert r["ours_ms"] > 0 and r["bare_ms"] > 0 and "bare_graph_ms" not in r
    assert "n/a (CPU)" in out.read_text()
    from glann.methods import gans

    for kind, r in zip(("nsgan", "wgan_gp"), rows):
        cfg = step_bench.gan_config(kind)
        assert r["critic_steps"] == cfg["critic_steps"] and r["batch_size"] == cfg["batch_size"]
        bare = step_bench.Bare(kind, cfg, 8, 16, torch.device("cpu"))
        critic = gans.KINDS[kind].critic((16, 16, 1), cfg)
        assert [p.shape for p in bare.D.parameters()] == [p.shape for p in critic.parameters()]
        assert [type(m) for m in bare.D.modules()] == [type(m) for m in critic.modules()]
