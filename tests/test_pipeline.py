"""The real Snakefile on config/quick.yaml in a temp dir, interrupted on the way.

One session-scoped run serves every pipeline test (it is the expensive part):
  1. snakemake starts (default workflow profile: keep-going, rerun-incomplete);
  2. once train_glo has checkpointed two epochs, that job gets a real `kill -9`;
  3. once more jobs have finished, the whole process group gets SIGINT (Ctrl-C);
  4. a plain rerun finishes the pipeline.
nsgan's loss is made NaN in its only epoch: it must be marked diverged and the
rest must still finish.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from conftest import copy_workflow, snakemake

METHODS = ["glann", "glo_gauss", "imle_pixel", "nsgan", "wgan_gp", "lsgan", "vae"]
QUICK = ["--cores", "2", "--configfile", "config/quick.yaml", "extra.yaml"]


def _finished_outputs(log: str) -> set[str]:
    """Outputs of the jobs snakemake reported as finished in ``log``."""
    outputs, done = {}, set()
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", log):
        m_out = re.search(r"^\s+output: (.+)$", block, re.M)
        m_id = re.search(r"^\s+jobid: (\d+)$", block, re.M)
        if m_out and m_id:
            outputs[m_id.group(1)] = [s.strip() for s in m_out.group(1).split(",")]
        done |= set(re.findall(r"Finished jobid: (\d+)", block))
    return {f for j in done for f in outputs.get(j, [])}


def _rules_run(log: str) -> list[str]:
    return re.findall(r"^(?:local)?rule (\w+):$", log, re.M)


def _fingerprint(wf: Path, files) -> dict:
    return {f: (hashlib.sha256((wf / f).read_bytes()).hexdigest(), (wf / f).stat().st_mtime_ns) for f in files}


def _glann_job(wf: Path, rule: str):
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["cwd"] == str(wf) and rule in cmd and any(c.endswith("glann") for c in cmd[:2]):
                return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _wait(what, cond, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    wf = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    (wf / "extra.yaml").write_text(
        "fault_injection: {nsgan: 1}\n"      # nsgan diverges in epoch 1
        "glo: {epochs: 6, lr_halve_every: 2}\n"  # long enough to be killed mid-training
    )
    (wf / "split1.yaml").write_text("data: {digits: {size: 16, split_seed: 1}}\n")
    env = {**os.environ, "GLANN_TRACKING": "1"}
    exe = str(Path(sys.executable).with_name("snakemake"))
    first_log = wf / "first.log"
    with open(first_log, "w") as fh:
        proc = subprocess.Popen([exe, *QUICK], cwd=wf, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        resume = wf / "results/digits/glann/seed0/glo.pt.resume"

        def glo_two_epochs():
            try:
                return resume.exists() and torch.load(resume, weights_only=False)["epoch"] >= 2
            except Exception:  # being replaced right now
                return False

        _wait("train_glo to checkpoint 2 epochs", glo_two_epochs)
        job = _wait("the train_glo process", lambda: _glann_job(wf, "train-glo"), timeout=10)
        job.send_signal(signal.SIGKILL)
        killed_at = torch.load(resume, weights_only=False)["epoch"]
        assert not (wf / "results/digits/glann/seed0/glo.pt").exists(), "killed too late"
        # keep-going: other jobs go on. Interrupt once a few more have finished.
        _wait("more jobs to finish", lambda: first_log.read_text().count("Finished jobid") >= 5)
        assert proc.poll() is None, "snakemake ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = first_log.read_text()
    finished = sorted(f for f in _finished_outputs(first) if (wf / f).exists())
    before = _fingerprint(wf, finished)
    rerun = snakemake(wf, *QUICK, "--printshellcmds", env={"GLANN_TRACKING": "1"})
    return {"wf": wf, "first": first, "rerun": rerun.stdout + rerun.stderr, "returncode": proc.returncode,
            "finished": finished, "before": before, "killed_at": killed_at}


@pytest.mark.pipeline
def test_quick_pipeline_outputs(quick_run):
    wf = quick_run["wf"]
    manifest = json.loads((wf / "data/prepared/digits/manifest.json").read_text())
    assert manifest["shapes"]["train"] == [1437, 16, 16, 1] and len(manifest["sha256"]) == 2
    for m in METHODS:
        run = wf / "results/digits" / m / "seed0"
        with np.load(run / "samples.npz") as z:
            assert z["images"].shape == (200, 16, 16, 1) and z["images"].dtype == np.uint8
        for png in ("samples.png", "interpolation.png", "nearest.png"):
            assert (run / png).stat().st_size > 100
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fid_domain"] > 0 and 0 <= metrics["precision"] <= 1
        assert metrics["inception_fid"] is None and "Inception" in metrics["inception_fid_reason"]
        assert (m == "nsgan") == metrics["diverged"]
    table = (wf / "results/summary/table.md").read_text()
    for m in METHODS:
        assert f"| {m} |" in table
    assert "(diverged, epoch 1)" in table
    for heading in ("fid_domain", "precision", "recall", "coverage", "classes covered", "duplicate pairs"):
        assert heading in table
    assert (wf / "results/digits/glann/seed0/reconstructions.png").exists()
    assert not list(wf.rglob("*.resume")), "resume files must be removed after success"
    assert not list(wf.rglob(".tmp-*")), "no temporary files may be left behind"
    for bench in ("train_glo", "train_imle", "evaluate"):
        assert list((wf / "logs").rglob(f"{bench}.bench.tsv")), bench


@pytest.mark.pipeline
def test_sigint_then_rerun_recomputes_only_unfinished_jobs(quick_run):
    """Reliability 2: finished outputs keep their bytes and mtimes; only unfinished jobs run again."""
    wf, finished = quick_run["wf"], quick_run["finished"]
    assert quick_run["returncode"] != 0
    assert len(finished) >= 5, finished
    assert _fingerprint(wf, finished) == quick_run["before"]
    rerun_outputs = _finished_outputs(quick_run["rerun"])
    assert rerun_outputs and not (rerun_outputs & set(finished)), rerun_outputs & set(finished)
    assert "prepare_data" not in _rules_run(quick_run["rerun"])


@pytest.mark.pipeline
def test_kill9_of_a_job_resumes_from_its_checkpoint_under_snakemake(quick_run, tmp_path):
    """Reliability 1: the killed train_glo resumes and ends equal to an uninterrupted run."""
    wf = quick_run["wf"]
    log = (wf / "logs/digits/glann/seed0/train_glo.log").read_text()
    assert f"resuming from results/digits/glann/seed0/glo.pt.resume (epoch {quick_run['killed_at']} finished)" in log
    # The exact command snakemake ran, pointed at fresh outputs: an uninterrupted run.
    cmd = next(line for line in quick_run["rerun"].splitlines() if line.startswith("glann train-glo"))
    ref = tmp_path / "ref"
    ref.mkdir()
    cmd = re.sub(r"--out \S+ --csv \S+ --recon \S+ > \S+",
                 f"--out {ref}/glo.pt --csv {ref}/l.csv --recon {ref}/r.png > {ref}/log", cmd)
    bindir = str(Path(sys.executable).parent)
    subprocess.run(cmd, shell=True, cwd=wf, check=True, env={**os.environ, "GLANN_TRACKING": "0",
                                                              "PATH": bindir + os.pathsep + os.environ["PATH"]})
    a = torch.load(ref / "glo.pt", weights_only=False)
    b = torch.load(wf / "results/digits/glann/seed0/glo.pt", weights_only=False)
    assert torch.equal(a["codes"], b["codes"])
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert [r["epoch"] for r in b["history"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.pipeline
def test_rerun_does_nothing_and_param_change_reruns_that_dataset(quick_run):
    wf = quick_run["wf"]
    t0 = time.perf_counter()
    proc = snakemake(wf, "-n", *QUICK)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = snakemake(wf, "-n", *QUICK, "split1.yaml")
    out = proc.stdout
    assert "prepare_data" in out and "train_glo" in out
    assert time.perf_counter() - t0 < 120


@pytest.mark.pipeline
def test_mlflow_runs_recorded(quick_run):
    import sqlite3

    wf = quick_run["wf"]
    con = sqlite3.connect(wf / "mlflow.db")
    exps = dict(con.execute("select name, experiment_id from experiments").fetchall())
    assert "glann/digits" in exps
    runs = con.execute("select run_uuid, name, status from runs where experiment_id=?",
                       (exps["glann/digits"],)).fetchall()
    finished = {n for _, n, s in runs if s == "FINISHED"}
    for name in ("train_glo:glann:seed0", "train_imle:glann:seed0", "evaluate:vae:seed0", "sample:glo_gauss:seed0"):
        assert name in finished, name
    parent_of = dict(con.execute("select run_uuid, value from tags where key='mlflow.parentRunId'").fetchall())
    parents = {r for r, n, _ in runs if n.startswith("snakemake")}
    assert len(parents) == 2, "one parent run per snakemake invocation (interrupted + rerun)"
    assert set(parent_of.values()) <= parents and len(parent_of) >= 20
    n_metric = con.execute("select count(*) from metrics where key='loss'").fetchone()[0]
    assert n_metric >= 2
