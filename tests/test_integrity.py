"""Reliability: every file a step reads is verified, one process trains one model, and no
MLflow run is left RUNNING by a killed process (docs/failures.md)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.atomic import integrity_path, load_npz, load_torch, save_npz, torch_save
from glann.pipeline.config import fill_defaults, load_schema
from glann.errors import CorruptFileError, DataError
from glann.evaluation.context import Reference as Ref, Scoring as How

BIN = Path(sys.executable).parent
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")
def FIX(path):
    return (f"{path} is truncated or corrupt: delete it, rebuild it with `snakemake {path} --cores all`, "
            "then run `snakemake --cores all` to update what depends on it.")


def _truncate(path, size=64):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:size])


def _flip(path, offset=-40):
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_checkpoints_and_npz_are_verified(tmp_path, damage):
    ckpt, arr = tmp_path / "imle.pt", tmp_path / "samples.npz"
    torch_save(ckpt, {"w": torch.arange(1000.0)})
    save_npz(arr, images=np.arange(1000, dtype=np.uint8))
    assert torch.equal(load_torch(ckpt)["w"], torch.arange(1000.0))
    damage(ckpt)
    damage(arr)
    with pytest.raises(CorruptFileError) as e:
        load_torch(ckpt)
    assert str(e.value) == FIX(ckpt)
    with pytest.raises(CorruptFileError, match="samples.npz is truncated or corrupt"):
        with load_npz(arr):
            pass


def test_a_foreign_file_is_named(tmp_path):
    foreign = tmp_path / "glo.pt"
    torch.save({"codes": torch.zeros(3, 2)}, foreign)  # not written by the pipeline: no record
    with pytest.raises(CorruptFileError, match=r"glo\.pt has no integrity record \(\.glo\.pt\.sha256\)"):
        load_torch(foreign)


def test_each_step_checks_what_it_reads(digits_dir, tmp_path):
    """Trained model (IMLE reads GLO), resume file, samples and stats (evaluate), prepared data."""
    from glann.evaluation.scoring import evaluate
    from glann.methods.glo import train_glo
    from glann.methods.imle import train_imle

    glo = tmp_path / "glo.pt"
    train_glo(digits_dir, {**CFG["glo"], "loss": "l1", "epochs": 1}, TrainContext(glo, 0, CPU))
    assert integrity_path(glo).exists()
    _truncate(glo, 5000)
    with pytest.raises(CorruptFileError, match=f"{glo} is truncated or corrupt"):
        train_imle(glo, {**CFG["imle"], "epochs": 1}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    assert not (tmp_path / "imle.pt").exists() and not (tmp_path / "imle.pt.resume").exists()

    resume = tmp_path / "g2.pt.resume"
    torch_save(resume, {"epoch": 1})
    _flip(resume)
    with pytest.raises(CorruptFileError, match=r"g2\.pt\.resume is truncated or corrupt: delete it and rerun "
                                               r"snakemake \(training then restarts from epoch 1\)"):
        train_glo(digits_dir, {**CFG["glo"], "loss": "l1", "epochs": 1}, TrainContext(tmp_path / "g2.pt", 0, CPU))

    save_npz(tmp_path / "samples.npz", images=np.zeros((10, 16, 16, 1), np.uint8))
    _truncate(tmp_path / "samples.npz", 30)
    with pytest.raises(CorruptFileError, match="samples.npz is truncated or corrupt"):
        evaluate(tmp_path / "samples.npz", Ref(digits_dir, None, None), How({}, CPU))

    import shutil

    data = tmp_path / "prepared"
    shutil.copytree(digits_dir, data)
    _flip(data / "train.npz")
    with pytest.raises(DataError, match="train.npz does not match its manifest"):
        from glann.data.datasets import load_prepared

        load_prepared(data, "train")


def test_cli_names_a_truncated_checkpoint_in_one_line(tmp_path):
    """`glann sample` on a truncated imle.pt: exit 2, one line with the file and the fix, no outputs."""
    glo, imle = tmp_path / "glo.pt", tmp_path / "imle.pt"
    torch_save(glo, {"codes": torch.zeros(2, 2)})
    torch_save(imle, {"mapping": {}, "pad": torch.zeros(5000)})
    _truncate(imle, 5000)
    job = json.dumps({"dataset": "digits", "method": "glann", "seed": 0, "device": "cpu",
                      "tracking": {"enabled": False}, "params": {"num_samples": 16, "batch_size": 16}})
    proc = subprocess.run([str(BIN / "glann"), "sample", "--job", job, "--data", str(tmp_path), "--out-dir",
                           str(tmp_path / "out"), "--glo", str(glo), "--imle", str(imle)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {FIX(imle)}"
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_one_model_one_trainer(digits_dir, tmp_path):
    """Two real processes asked to train one output: the second stops at once, naming the first."""
    out = tmp_path / "glo.pt"

    def cmd(epochs=50):
        job = json.dumps({"dataset": "digits", "seed": 0, "device": "cpu", "tracking": {"enabled": False},
                          "params": {**CFG["glo"], "loss": "l1", "epochs": epochs}})
        return [str(BIN / "glann"), "train-glo", "--job", job, "--threads", "1", "--data", str(digits_dir),
                "--out", str(out), "--csv", str(tmp_path / "l.csv"), "--recon", str(tmp_path / "r.png")]

    env = {**os.environ, "GLANN_TRACKING": "0"}
    first = subprocess.Popen(cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not Path(f"{out}.resume").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first trainer ended too early"
        second = subprocess.run(cmd(), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {out} is being trained right now by process {first.pid} on "), last
        assert first.poll() is None, "the first trainer must be untouched"
    finally:
        first.kill()
        first.wait()
    # the OS released the dead process's lock: training can go on (and resumes)
    rerun = subprocess.run(cmd(epochs=2), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_runs_left_running_by_dead_processes_are_closed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from glann.tracking import invocation
    from glann.tracking.mlflow_store import get_or_create_experiment

    monkeypatch.setenv("GLANN_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = get_or_create_experiment(client, "digits", uri)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = __import__("socket").gethostname()
    orphan = client.create_run(exp, tags={"glann.pid": str(dead.pid), "glann.host": host}).info.run_id
    alive = client.create_run(exp, tags={"glann.pid": str(os.getpid()), "glann.host": host}).info.run_id
    remote = client.create_run(exp, tags={"glann.pid": str(dead.pid), "glann.host": "elsewhere"}).info.run_id
    assert invocation.close_orphaned_runs(["digits"], uri) == 1
    status = {r: client.get_run(r).info.status for r in (orphan, alive, remote)}
    assert status == {orphan: "KILLED", alive: "RUNNING", remote: "RUNNING"}


def test_a_resumed_job_links_to_the_killed_run_and_keeps_one_history(digits_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from glann.tracking import tracker as tracking
    from glann.methods.glo import train_glo
    from glann.methods.training import EpochLog

    monkeypatch.setenv("GLANN_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = {**CFG["glo"], "loss": "l1", "epochs": 3}
    original = EpochLog.log

    def killed_in_epoch_3(self, epoch, **m):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, **m)

    first = tracking.Tracker("train_glo", {"dataset": "digits", "method": "glann", "seed": 0}, settings={"uri": uri})
    monkeypatch.setattr(EpochLog, "log", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_glo(digits_dir, cfg, TrainContext(tmp_path / "glo.pt", 0, CPU, tracker=first))
    first.finish("KILLED")
    monkeypatch.setattr(EpochLog, "log", original)
    second = tracking.Tracker("train_glo", {"dataset": "digits", "method": "glann", "seed": 0}, settings={"uri": uri})
    train_glo(digits_dir, cfg, TrainContext(tmp_path / "glo.pt", 0, CPU, tracker=second))
    second.finish()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(second.run_id)
    assert run.data.tags["glann.resumed_from_run"] == first.run_id
    assert [m.step for m in client.get_metric_history(second.run_id, "loss")] == [1, 2, 3]
    # the epoch is each metric's step, never a metric (neither replayed nor logged live)
    assert "epoch" not in run.data.metrics and "epoch" not in client.get_run(first.run_id).data.metrics


@pytest.mark.pipeline
def test_kill9_of_snakemake_with_live_tracking_leaves_no_running_run(tmp_path):
    """kill -9 of the snakemake process (not its group) during train_vae, then of the orphaned job;
    the rerun closes both runs left RUNNING as KILLED, resumes the model and logs its epochs as one
    history in a run linked to the killed one."""
    import signal
    import sqlite3

    from conftest import _glann_job, _wait, copy_workflow, quick_config, snakemake

    wf = copy_workflow(tmp_path / "wf")
    (wf / "config/config.yaml").write_text(quick_config({
        "methods": ["vae"], "vae": {"epochs": 8, "batch_size": 256}, "tracking": {"live": True}}))
    env = {**os.environ, "GLANN_TRACKING": "1"}
    exe = str(Path(sys.executable).with_name("snakemake"))
    target = "results/digits/vae/seed0/model.pt"  # the model only: the runs checked are train_vae's
    with open(wf / "first.log", "w") as fh:
        proc = subprocess.Popen([exe, target, "--cores", "2"], cwd=wf, stdout=fh, stderr=subprocess.STDOUT,
                                env=env)
    resume = wf / f"{target}.resume"
    try:
        _wait("train_vae to checkpoint an epoch", lambda: resume.exists() and integrity_path(resume).exists())
        job = _wait("the train_vae process", lambda: _glann_job(wf, "train-baseline"), timeout=10)
        proc.send_signal(signal.SIGKILL)  # snakemake only: the job is orphaned and keeps training
        proc.wait()
        assert job.is_running()
        job.send_signal(signal.SIGKILL)  # then the orphan too (power loss of the whole node)
        job.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = torch.load(resume, weights_only=False)["epoch"]
    assert 1 <= killed_at < 8
    snakemake(wf, "--unlock", "--cores", "1", env=env)
    snakemake(wf, target, "--cores", "2", env=env)
    con = sqlite3.connect(wf / "mlflow.db")
    assert con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0
    runs = con.execute("select run_uuid, status from runs where name = 'train_vae:vae:seed0' "
                       "order by start_time").fetchall()
    assert [s for _, s in runs] == ["KILLED", "FINISHED"]
    tags = dict(con.execute("select key, value from tags where run_uuid = ?", (runs[1][0],)).fetchall())
    assert tags["glann.resumed_from_run"] == runs[0][0]
    steps = [s for (s,) in con.execute("select step from metrics where run_uuid = ? and key = 'elbo' "
                                       "order by step", (runs[1][0],)).fetchall()]
    assert steps == list(range(1, 9))  # one history: the killed epochs re-logged, then the rest
    parents = con.execute("select r.status from runs r join tags t on r.run_uuid = t.run_uuid "
                          "where t.key = 'glann.step' and t.value = 'pipeline' order by r.start_time").fetchall()
    assert [s for (s,) in parents] == ["KILLED", "FINISHED"]


class _Killed(BaseException):
    """Stands for a kill -9: nothing after it runs."""


@pytest.mark.parametrize("kill_before", [1, 2, 3, 4])
@pytest.mark.parametrize("first_write", [True, False])
def test_a_kill_between_the_renames_leaves_a_file_that_verifies(tmp_path, monkeypatch, kill_before, first_write):
    """atomic_path renames twice or three times (record, file, record): whichever rename a kill
    stops, the file there (old or new) loads, as a resume file must after kill -9."""
    import os

    from glann import atomic

    path = tmp_path / "glo.pt.resume"
    if not first_write:
        torch_save(path, {"epoch": 1})
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_before:
            raise _Killed
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    try:
        torch_save(path, {"epoch": 2})
    except _Killed:
        pass
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert len(calls) == min(kill_before, 3)  # record, file, record: three renames
    if path.exists():
        assert load_torch(path)["epoch"] in ({2} if first_write else {1, 2})
    else:
        assert first_write and kill_before <= 2
    if kill_before == 4:  # not killed: the new file, and a record of it alone
        assert load_torch(path)["epoch"] == 2 and "previous" not in integrity_path(path).read_text()
