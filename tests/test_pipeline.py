"""The real Snakefile on config/quick.yaml in a temp dir (about two minutes on 2 cores)."""

import json

import numpy as np
import pytest

from conftest import copy_workflow, snakemake

METHODS = ["glann", "glo_gauss", "imle_pixel", "nsgan", "wgan_gp", "lsgan", "vae"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    wf = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    # nsgan's loss is made NaN in its only epoch: it must be marked diverged, the rest must finish.
    (wf / "nan.yaml").write_text("fault_injection: {nsgan: 1}\n")
    (wf / "split1.yaml").write_text("data: {digits: {size: 16, split_seed: 1}}\n")
    proc = snakemake(wf, "--cores", "2", "--configfile", "config/quick.yaml", "nan.yaml",
                     env={"GLANN_TRACKING": "1"})
    return wf, proc


@pytest.mark.pipeline
def test_quick_pipeline_outputs(quick_run):
    wf, _ = quick_run
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


@pytest.mark.pipeline
def test_rerun_does_nothing_and_param_change_reruns_that_dataset(quick_run):
    wf, _ = quick_run
    proc = snakemake(wf, "-n", "--cores", "2", "--configfile", "config/quick.yaml", "nan.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = snakemake(wf, "-n", "--cores", "2", "--configfile", "config/quick.yaml", "nan.yaml", "split1.yaml")
    out = proc.stdout
    assert "prepare_data" in out and "train_glo" in out


@pytest.mark.pipeline
def test_mlflow_runs_recorded(quick_run):
    import sqlite3

    wf, _ = quick_run
    con = sqlite3.connect(wf / "mlflow.db")
    exps = dict(con.execute("select name, experiment_id from experiments").fetchall())
    assert "glann/digits" in exps
    runs = con.execute("select run_uuid, name from runs where experiment_id=?", (exps["glann/digits"],)).fetchall()
    names = {n for _, n in runs}
    assert "train_glo:glann:seed0" in names and "evaluate:vae:seed0" in names
    parents = {v for (v,) in con.execute("select value from tags where key='mlflow.parentRunId'")}
    assert len(parents) == 1  # one invocation, every job nested under it
    children = con.execute("select count(*) from tags where key='mlflow.parentRunId'").fetchone()[0]
    assert children >= 20
    n_metric = con.execute("select count(*) from metrics where key='loss'").fetchone()[0]
    assert n_metric >= 2
