"""The real Snakefile on config/quick.yaml in a temp dir, interrupted on the way.

One session-scoped run serves every pipeline test (it is the expensive part):
  1. snakemake starts (default workflow profile: keep-going, rerun-incomplete);
  2. once train_glo has checkpointed two epochs, that job gets a real `kill -9`;
  3. once more jobs have finished, the whole process group gets SIGINT (Ctrl-C);
  4. a plain rerun finishes the pipeline.
nsgan's loss is made NaN in its only epoch: it must be marked diverged and the
rest must still finish.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUICK, QUICK_METHODS, _finished_outputs, _fingerprint, snakemake

METHODS = QUICK_METHODS


def _rules_run(log: str) -> list[str]:
    return re.findall(r"^(?:local)?rule (\w+):$", log, re.M)


@pytest.mark.pipeline
def test_quick_pipeline_outputs(quick_run):
    wf = quick_run["wf"]
    manifest = json.loads((wf / "data/prepared/digits/manifest.json").read_text())
    assert manifest["shapes"]["train"] == [1293, 8, 8, 1] and len(manifest["sha256"]) == 3
    assert manifest["shapes"]["val"] == [144, 8, 8, 1]  # val_size 0.1 of 1,437: the sweep picks on it
    for m in METHODS:
        run = wf / "results/digits" / m / "seed0"
        with np.load(run / "samples.npz") as z:
            assert z["images"].shape == (200, 8, 8, 1) and z["images"].dtype == np.uint8
        for png in ("samples.png", "interpolation.png", "nearest.png"):
            assert (run / png).stat().st_size > 100
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fid_domain"] > 0 and 0 <= metrics["precision"] <= 1
        assert metrics["inception_fid"] is None and "Inception" in metrics["inception_fid_reason"]
        assert (m == "nsgan") == metrics["diverged"]
        # the sampling cost beside every method's: network evaluations per sample, seconds per 1,000
        assert metrics["network_evals"] == {"glann": 2, "flow": 4}.get(m, 1), m  # flow: the quick preset's 4 Euler steps
        assert metrics["sample_seconds_per_1000"] > 0
    table = (wf / "results/summary/table.md").read_text()
    assert "network evaluations per sample" in table and "sampling seconds per 1,000 images" in table
    for m in METHODS:
        assert f"| {m} |" in table
    assert "(diverged, epoch 1)" in table
    for heading in ("fid_domain", "precision", "recall", "coverage", "classes covered", "duplicate pairs"):
        assert heading in table
    assert (wf / "results/digits/glann/seed0/reconstructions.png").exists()
    assert not list(wf.rglob("*.resume")), "resume files must be removed after success"
    assert not list(wf.rglob(".tmp-*")), "no temporary files may be left behind"
    # quality against compute: every method's snapshots scored, drawn, and in MLflow by images processed
    curve_rows = list(csv.DictReader((wf / "results/summary/fid_vs_compute.csv").open()))
    assert {r["method"] for r in curve_rows} == set(METHODS) - {"nsgan"}  # nsgan diverged in epoch 1
    assert (wf / "results/summary/fid_vs_compute.png").stat().st_size > 1000
    for m in METHODS:
        run = wf / "results/digits" / m / "seed0"
        curve = json.loads((run / "snapshots.json").read_text())
        pts = curve["points"]
        assert curve["split"] == "val"  # a validation split: the curves are scored on it
        assert all(np.isfinite(p["fid_domain"]) and p["n_samples"] == 100 for p in pts)
        assert [p["images_processed"] for p in pts] == sorted(p["images_processed"] for p in pts)
        if m == "nsgan":  # diverged in its only epoch: no snapshot, the curve says so
            assert curve["diverged"] and curve["diverged_epoch"] == 1 and pts == []
        else:  # count 2 over the method's epochs (the GANs train 1 epoch here: one snapshot)
            epochs = torch.load(run / "model.pt" if m not in ("glann", "glo_gauss") else
                                wf / "results/digits/glann/seed0" / ("imle.pt" if m == "glann" else "glo.pt"),
                                weights_only=False)["epochs"]
            assert [p["epoch"] for p in pts] == ([1] if epochs == 1 else [epochs // 2, epochs])
            assert all(a["train_seconds"] < b["train_seconds"] for a, b in zip(pts, pts[1:]))
        if m == "glann":  # GLANN's compute includes the whole GLO stage
            glo = torch.load(wf / "results/digits/glann/seed0/glo.pt", weights_only=False)
            assert pts[0]["train_seconds"] > glo["train_seconds"]
            assert pts[0]["images_processed"] > glo["images_processed"]
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
    cmd = next(line[line.index("glann train-glo"):] for line in quick_run["rerun"].splitlines()
               if "glann train-glo" in line and "--out results/digits/glann/seed0/glo.pt" in line)
    ref = tmp_path / "ref"
    ref.mkdir()
    cmd = re.sub(r"--out \S+ --csv \S+ --recon \S+ --snapshots \S+ > \S+",
                 f"--out {ref}/glo.pt --csv {ref}/l.csv --recon {ref}/r.png --snapshots {ref}/s.pt > {ref}/log", cmd)
    bindir = str(Path(sys.executable).parent)
    subprocess.run(cmd, shell=True, cwd=wf, check=True, env={**os.environ, "GLANN_TRACKING": "0",
                                                              "PATH": bindir + os.pathsep + os.environ["PATH"]})
    a = torch.load(ref / "glo.pt", weights_only=False)
    b = torch.load(wf / "results/digits/glann/seed0/glo.pt", weights_only=False)
    assert torch.equal(a["codes"], b["codes"])
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert [r["epoch"] for r in b["history"]] == [1, 2, 3, 4, 5, 6]
    # the snapshots kept across the kill are the uninterrupted run's (count 2: epochs 3 and 6). The
    # run's snapshot file is a temp() output, gone once scored: its scores are compared, with the
    # reference's file scored by the command the rerun scored glo_gauss's (GLO's) snapshots with
    sa = torch.load(ref / "s.pt", weights_only=False)["snapshots"]
    assert [s["epoch"] for s in sa] == [3, 6]
    assert torch.equal(sa[-1]["codes"], b["codes"])  # the last snapshot is the final model
    assert not (wf / "results/digits/glann/seed0/glo_snapshots.pt").exists()
    score = next(line[line.index("glann evaluate-snapshots"):] for line in quick_run["rerun"].splitlines()
                 if "glann evaluate-snapshots" in line and "glo_gauss" in line)
    score = re.sub(r"--snapshots \S+", f"--snapshots {ref}/s.pt", score)
    score = re.sub(r"--out \S+ > \S+", f"--out {ref}/curve.json > {ref}/score.log", score)
    score = re.sub(r" --record \S+", "", score)  # the reference's curve is not the run's: no record of it
    subprocess.run(score, shell=True, cwd=wf, check=True, env={**os.environ, "GLANN_TRACKING": "0",
                                                                "PATH": bindir + os.pathsep + os.environ["PATH"]})
    keys = ("epoch", "images_processed", "fid_domain", "classes_covered")
    ours = json.loads((wf / "results/digits/glo_gauss/seed0/snapshots.json").read_text())["points"]
    theirs = json.loads((ref / "curve.json").read_text())["points"]
    assert [{k: p[k] for k in keys} for p in ours] == [{k: p[k] for k in keys} for p in theirs]


@pytest.mark.pipeline
def test_rerun_does_nothing_and_param_change_reruns_that_dataset(quick_run):
    wf = quick_run["wf"]
    proc = snakemake(wf, "-n", *QUICK)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = snakemake(wf, "-n", *QUICK, "--configfile", "split1.yaml")
    out = proc.stdout
    assert "prepare_data" in out and "train_glo" in out


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
    step_of = dict(con.execute("select run_uuid, value from tags where key='glann.step'").fetchall())
    parents = {r for r, _, _ in runs if step_of.get(r) == "pipeline"}
    assert len(parents) == 2, "one parent run per snakemake invocation (interrupted + rerun)"
    assert set(parent_of.values()) <= parents and len(parent_of) >= 20
    n_metric = con.execute("select count(*) from metrics where key='loss'").fetchone()[0]
    assert n_metric >= 2
    # the invocation ends with the link that opens MLflow 3.17's UI on the runs table
    link = re.search(r"MLflow runs of digits: (\S+)", quick_run["rerun"])
    assert link and link.group(1).endswith(f"/#/experiments/{exps['glann/digits']}/runs?workflowType=machine_learning")
    kind = con.execute("select value from experiment_tags where key='mlflow.experimentKind' and experiment_id=?",
                       (exps["glann/digits"],)).fetchone()
    assert kind == ("custom_model_development",)
    # the quality-vs-compute points, with images processed as the step
    steps = {s for (s,) in con.execute("select step from metrics where key='snapshot_fid_domain'")}
    curve = json.loads((wf / "results/digits/vae/seed0/snapshots.json").read_text())
    assert {p["images_processed"] for p in curve["points"]} <= steps


@pytest.mark.pipeline
def test_cache_keys_are_exact(quick_run, tmp_path):
    """Bookkeeping reruns nothing; a module only `sample` imports reruns sample and what follows."""
    import re
    import shutil

    wf = tmp_path / "wf"
    shutil.copytree(quick_run["wf"], wf, symlinks=True)  # the shared run stays as it is
    for override in ("tracking={live: true}", "tracking={uri: sqlite:///elsewhere.db}",
                     "runtime={threads: 1}", "tracking={enabled: false}"):
        proc = snakemake(wf, "-n", *QUICK, "--config", override)
        assert "Nothing to be done" in proc.stdout + proc.stderr, override

    def planned(*args):
        out = snakemake(wf, "-n", *QUICK, *args).stdout
        jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
        return {k: int(v) for k, v in jobs.items() if k not in ("all", "total")}

    # fid.num_samples changes Inception FID only: not real_stats, not the snapshots
    # (the sweep's 2 settings included)
    assert planned("--config", "fid={num_samples: 100}") == {"evaluate": 9, "summarize": 1}
    # the BN re-estimation applies to the compare_gan v1 generators (the GANs and the VAE: here
    # NS-GAN, WGAN-GP, VAE) only; it rescores their snapshots, whose files are temp() outputs gone
    # after scoring: those 3 retrain (GLANN's sweep settings are untouched)
    assert planned("--config", "sample={num_samples: 200, batch_size: 200, bn_batches: 8}") == {
        "train_baseline": 3, "sample": 3, "evaluate": 3, "evaluate_snapshots": 3, "summarize": 1}
    # a module inside a sub-package reruns exactly what imports it: the VAE's trainer, its one job
    # and what follows; the tracking package is bookkeeping and reruns nothing
    vae = wf / "src/glann/methods/vae.py"
    original = vae.read_text()
    vae.write_text(original + "\n# an edit\n")
    assert planned() == {"train_baseline": 1, "sample": 1, "evaluate": 1, "evaluate_snapshots": 1, "summarize": 1}
    vae.write_text(original)
    with open(wf / "src/glann/tracking/journal.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert "Nothing to be done" in snakemake(wf, "-n", *QUICK).stdout
    with open(wf / "src/glann/methods/sampling.py", "a") as fh:
        fh.write("\n# an edit\n")
    out = snakemake(wf, "-n", *QUICK).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
    # sampling.py is scoring code of the snapshot curves too: with their files gone, the methods retrain
    assert {k for k in jobs if k not in ("all", "total")} == {
        "train_glo", "train_imle", "train_baseline", "fit_gaussian", "sample",
        "evaluate", "evaluate_snapshots", "summarize"}, jobs
    assert jobs["sample"] == "9" and jobs["evaluate"] == "9" and jobs["evaluate_snapshots"] == "7"


@pytest.mark.pipeline
def test_quick_sweep_trains_each_drawn_setting_and_picks_on_validation(quick_run, tmp_path):
    """GLANN's sweep in the shared quick run (K = 2, conftest.QUICK_SWEEP): each setting trains its
    own GLO and IMLE with the values its sweep file records, is scored on test and validation, is
    an MLflow run tagged with the sweep, and the summary picks the best by validation. Raising K
    trains only the new setting. (A GAN's setting: test_dvc.py.)"""
    import shutil
    import sqlite3

    from glann.methods.search_space import settings

    wf = quick_run["wf"]
    record = json.loads((wf / "results/digits/sweep/glann.json").read_text())
    assert [s["values"] for s in record["settings"]] == settings("glann", 2, 1)
    assert not (wf / "results/digits/sweep/nsgan.json").exists()
    for s in record["settings"]:
        run = wf / s["run"] / "seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fid_domain"] > 0 and metrics["val_fid_domain"] > 0
        assert metrics["val_fid_domain"] != metrics["fid_domain"]
        assert not metrics["diverged"]
        assert not (run / "snapshots.pt").exists()
        v = s["values"]
        glo = torch.load(run / "glo.pt", weights_only=False)["config"]
        imle = torch.load(run / "imle.pt", weights_only=False)["config"]
        assert (glo["lr_generator"], glo["lr_codes"]) == (v["glo.lr_generator"], v["glo.lr_codes"])
        assert glo["epochs"] == 6 and glo["loss"] == "lap1"  # the rest is the configured setting
        assert (imle["lr"], imle["samples_factor"]) == (v["imle.lr"], v["imle.samples_factor"])
    base = json.loads((wf / "results/digits/glann/seed0/metrics.json").read_text())
    assert base["val_fid_domain"] > 0
    result = json.loads((wf / "results/summary/sweep.json").read_text())
    vals = [json.loads((wf / f"results/digits/glann/hp{k}/seed0/metrics.json").read_text())["val_fid_domain"]
            for k in (0, 1)]
    assert result["digits/glann"]["best_k"] == int(np.argmin(vals))
    assert result["digits/glann"]["diverged_share"] == 0.0 and "digits/nsgan" not in result
    table = (wf / "results/summary/sweep.md").read_text()
    assert "| digits | glann | 2 | hp" in table
    for name in ("sweep_fid.png", "sweep_budget.png", "sweep_pr.png"):
        assert (wf / "results/summary" / name).stat().st_size > 500, name
    rows = list(csv.DictReader((wf / "results/summary/sweep.csv").open()))
    assert [(r["method"], r["k"], r["seed"]) for r in rows] == [("glann", "0", "0"), ("glann", "1", "0")]
    assert [float(r["val_fid_domain"]) for r in rows] == vals
    assert [float(r["glo.lr_generator"]) for r in rows] == [v["glo.lr_generator"] for v in settings("glann", 2, 1)]
    # MLflow: each setting's jobs are runs tagged sweep / sweep.trial, with the drawn values as params
    con = sqlite3.connect(wf / "mlflow.db")
    tagged = dict(con.execute("select run_uuid, value from tags where key='sweep.trial'").fetchall())
    sweep_of = dict(con.execute("select run_uuid, value from tags where key='sweep'").fetchall())
    names = dict(con.execute("select run_uuid, name from runs").fetchall())
    train = {names[r]: r for r in tagged if names[r].startswith(("train_glo", "train_imle"))}
    assert set(train) == {"train_glo:glann/hp0:seed0", "train_glo:glann/hp1:seed0",
                          "train_imle:glann/hp0:seed0", "train_imle:glann/hp1:seed0"}, set(train)
    run = train["train_glo:glann/hp1:seed0"]
    assert sweep_of[run] == "glann" and tagged[run] == "hp1"
    params = dict(con.execute("select key, value from params where run_uuid=?", (run,)).fetchall())
    assert float(params["hp.glo.lr_generator"]) == settings("glann", 2, 1)[1]["glo.lr_generator"]
    assert "sweep" not in {k for k, in con.execute(
        "select key from tags where run_uuid in (select run_uuid from runs where name='train_glo:glann:seed0')")}
    # K 2 -> 3: only the third setting trains (and the record and the summary are rewritten)
    copy = tmp_path / "wf"
    shutil.copytree(wf, copy, symlinks=True)
    out = snakemake(copy, "-n", *QUICK, "--config", "sweep={settings: 3, methods: [glann]}").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
    assert {k: int(v) for k, v in jobs.items() if k not in ("all", "total")} == {
        "train_glo": 1, "train_imle": 1, "sample": 1, "evaluate": 1, "write_sweep": 1, "summarize": 1}, jobs
    assert "hp2" in out and not re.search(r"hp[01]/seed0/(glo|imle)\.pt", out.split("Job stats:")[0])


@pytest.mark.pipeline
def test_records_let_a_fresh_copy_rebuild_the_summary_without_training(quick_run, tmp_path):
    """records.dir: every finished run left a record; a fresh copy of the workflow holding only
    the records (no results, no data) plans no training, sampling or evaluation, rebuilds the same
    table, and trains again only a run whose record no longer matches its key."""
    import shutil

    from conftest import copy_workflow

    wf = quick_run["wf"]
    records = sorted((wf / "records").rglob("metrics.json"))
    runs = {p.parent.relative_to(wf / "records").as_posix() for p in records}
    assert {f"digits/{m}/seed0" for m in METHODS} | {"digits/glann/hp0/seed0", "digits/glann/hp1/seed0"} <= runs
    rec = json.loads((wf / "records/digits/vae/seed0/metrics.json").read_text())
    assert rec["fid_domain"] == json.loads((wf / "results/digits/vae/seed0/metrics.json").read_text())["fid_domain"]
    assert rec["record"]["train_wall_seconds"] > 0 and rec["record"]["code_versions"]["train_baseline"]["hash"]
    assert {"losses.csv", "samples.png", "snapshots.json"} <= {p.name for p in (wf / "records/digits/vae/seed0").iterdir()}
    assert json.loads((wf / "records/digits/nsgan/seed0/metrics.json").read_text())["status"] == "diverged"
    check = subprocess.run([str(Path(sys.executable).with_name("glann")), "check-records", "records"], cwd=wf,
                           capture_output=True, text=True)
    assert check.returncode == 0 and f"{len(records)} records" in check.stdout, check.stdout + check.stderr

    fresh = copy_workflow(tmp_path / "fresh")
    shutil.copy2(wf / "config/config.yaml", fresh / "config/config.yaml")
    shutil.copytree(wf / "records", fresh / "records")
    plan = snakemake(fresh, "-n", *QUICK).stdout
    assert not set(_rules_run(plan)) & {"prepare_data", "train_glo", "train_imle", "train_baseline", "sample",
                                        "evaluate", "evaluate_snapshots"}, _rules_run(plan)
    snakemake(fresh, *QUICK)
    assert (fresh / "results/summary/table.md").read_text() == (wf / "results/summary/table.md").read_text()
    assert (fresh / "results/summary/sweep.md").read_text() == (wf / "results/summary/sweep.md").read_text()
    assert not (fresh / "data").exists()

    # a record whose key_config was edited: refused by the check, and its run is planned again
    path = fresh / "records/digits/vae/seed0/metrics.json"
    edited = json.loads(path.read_text())
    edited["record"]["key_config"]["seed"] = 7
    path.write_text(json.dumps(edited))
    check = subprocess.run([str(Path(sys.executable).with_name("glann")), "check-records", "records"], cwd=fresh,
                           capture_output=True, text=True)
    assert check.returncode == 1 and "vae" in check.stdout
    assert "train_baseline" in _rules_run(snakemake(fresh, "-n", *QUICK).stdout)
