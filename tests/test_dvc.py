"""Reproduce from cache, from a clean clone with no earlier run: one `dvc repro` records every
file the pipeline writes, the artifacts go to a DVC remote and come back in a fresh clone,
where Snakemake then has nothing to do."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, copy_workflow, snakemake
from glann.methods.search_space import settings

BIN = Path(sys.executable).parent
# the project's own .gitignore (results/ and data/ among it: only DVC brings them to a clone)
GITIGNORE = (REPO / ".gitignore").read_text() + "*.log\n"
# the quick preset with GLANN (GLO, IMLE and their temp() snapshot files) and a GAN: every stage
# of the pipeline, in well under a minute of jobs
METHODS = ["glann", "nsgan"]


def _run(cwd, *cmd):
    env = {**os.environ, "GLANN_TRACKING": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.pipeline
def test_dvc_repro_from_a_clean_clone_then_push_pull_has_nothing_to_do(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((REPO / "config/quick.yaml").read_text())
    # one setting of a GAN's sweep: its folders are versioned with the dataset's stage
    (wf / "config/config.yaml").write_text(yaml.safe_dump({**cfg, "methods": METHODS,
                                                           "sweep": {"settings": 1, "methods": ["nsgan"]}}))
    store, clone = tmp_path / "dvc-store", tmp_path / "clone"
    (wf / ".gitignore").write_text(GITIGNORE)
    _run(wf, "git", "init", "-q")
    _run(wf, "dvc", "init", "-q")
    _run(wf, "dvc", "config", "core.analytics", "false")
    _run(wf, "dvc", "remote", "add", "-d", "-f", "local", str(store))
    # no earlier run: dvc repro runs each stage's snakemake command, the whole pipeline
    out = _run(wf, "dvc", "repro")
    assert "Running stage 'pipeline@digits'" in out and "Running stage 'summarize'" in out
    # everything the run wrote under a stage's outputs was written before DVC recorded them:
    # only the always-changed summarize stage is listed
    status = _run(wf, "dvc", "status")
    assert "pipeline@digits" not in status and "modified" not in status, status
    # the GAN's sweep setting trained with the values its sweep file records
    (setting,) = json.loads((wf / "results/digits/sweep/nsgan.json").read_text())["settings"]
    v = setting["values"]
    assert v == settings("nsgan", 1, 0)[0]
    cfg_hp0 = torch.load(wf / setting["run"] / "seed0/model.pt", weights_only=False)["config"]
    assert (cfg_hp0["lr"], cfg_hp0["betas"][0], cfg_hp0["critic_steps"], cfg_hp0["d_batchnorm"]) == (
        v["nsgan.lr"], v["nsgan.beta1"], v["nsgan.critic_steps"], v["nsgan.d_batchnorm"])
    curve = wf / "results/digits/nsgan/seed0/snapshots.json"
    assert curve.exists() and not (wf / "results/digits/nsgan/seed0/snapshots.pt").exists()
    again = _run(wf, "dvc", "repro")  # DVC skips the recorded stage; the summary's snakemake is a no-op
    assert "Stage 'pipeline@digits' didn't change, skipping" in again, again[-3000:]
    assert again.count("Nothing to be done") == 1, again[-3000:]
    _run(wf, "dvc", "push")
    _run(wf, "git", "add", "-A")
    _run(wf, "git", "commit", "-qm", "quick run")

    _run(tmp_path, "git", "clone", "-q", str(wf), str(clone))
    assert not (clone / "results/digits").exists() and not (clone / "data/prepared/digits").exists()
    _run(clone, "dvc", "pull")
    table = "results/summary/table.md"
    assert (clone / table).read_bytes() == (wf / table).read_bytes()
    for f in ("data/prepared/digits/train.npz", "results/digits/glann/seed0/glo.pt",
              "results/digits/nsgan/seed0/samples.npz", "results/digits/nsgan/seed0/metrics.json",
              "results/digits/nsgan/seed0/snapshots.json", "results/digits/nsgan/hp0/seed0/metrics.json",
              "results/digits/sweep/nsgan.json"):
        assert (clone / f).read_bytes() == (wf / f).read_bytes(), f
    # DVC restores files with checkout-time mtimes; --touch tells Snakemake that the
    # pulled (hash-checked) outputs are current, without running anything.
    snakemake(clone, "--touch", "--cores", "1", env={"GLANN_TRACKING": "0"})
    proc = snakemake(clone, "-n", "--cores", "2", env={"GLANN_TRACKING": "0"})
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert (clone / table).read_bytes() == (wf / table).read_bytes()
    # every file the summary wrote came back from the cache, the sweep's among them
    summary = {p.relative_to(wf).as_posix() for p in (wf / "results/summary").rglob("*") if p.is_file()}
    assert "results/summary/sweep.md" in summary
    assert {p.relative_to(clone).as_posix() for p in (clone / "results/summary").rglob("*") if p.is_file()} == summary

    metrics = _run(clone, "dvc", "metrics", "show")
    assert "results/summary/summary.json" in metrics and "digits/glann/fid_domain" in metrics
    plots = _run(clone, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    assert "failed" not in plots.lower() and (tmp_path / "plots" / "index.html").exists()
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "digits_glann_seed0_glo.csv" in html and "fid.json" in html and "sweep.csv" in html
