"""Nothing lost from a damaged input: a corrupt prepared split or checkpoint found after a
finished run stops the workflow before Snakemake deletes any output, with one line that names
the file and a command, and following that line gives back a complete run with every trained
model kept (glann.pipeline.preflight)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import snakemake

ENV = {"GLANN_TRACKING": "0"}
BIN = Path(sys.executable).parent
MODELS = ["results/digits/glann/seed0/glo.pt", "results/digits/glann/seed0/imle.pt",
          "results/digits/nsgan/seed0/model.pt", "results/digits/evaluator/model.pt"]
SAMPLES = ["results/digits/glann/seed0/samples.npz", "results/digits/nsgan/seed0/samples.npz"]


def _state(wf, files):
    return {f: ((wf / f).stat().st_mtime_ns, (wf / f).read_bytes()) for f in files}


def _command(message: str, prefix: str) -> str:
    m = re.search(rf"`({prefix}[^`]*)`", message)
    assert m, message
    return m.group(1)


def _sh(wf, cmd: str):
    env = {**os.environ, **ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(shlex.split(cmd), cwd=wf, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished(quick_run, tmp_path_factory):
    """A copy of the shared quick run (tests/conftest.py), finished: these tests damage its files."""
    wf = tmp_path_factory.mktemp("lost") / "wf"
    shutil.copytree(quick_run["wf"], wf, symlinks=True)
    return wf


def _refused(wf, *args):
    proc = snakemake(wf, "--cores", "1", *args, env=ENV, check=False)
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.pipeline
def test_a_corrupt_prepared_split_stops_the_run_before_any_output_is_deleted(finished):
    wf = finished
    kept = _state(wf, MODELS + SAMPLES)
    train = wf / "data/prepared/digits/train.npz"
    original = train.stat()
    os.truncate(train, 107746)
    line = _refused(wf)
    assert "data/prepared/digits/train.npz does not match its manifest" in line, line
    assert _state(wf, MODELS + SAMPLES) == kept  # no checkpoint, no samples deleted or rewritten
    # the same with the damaged file's mtime kept, and a forced rerun of the samples
    os.utime(train, ns=(original.st_atime_ns, original.st_mtime_ns))
    line = _refused(wf, "--forcerun", "sample")
    assert "train.npz does not match its manifest" in line and _state(wf, MODELS + SAMPLES) == kept
    # the printed command rebuilds the split; the models trained on it are kept
    out = _sh(wf, _command(line, "glann restore-data"))
    assert "byte-identical" in out and "kept" in out, out
    dry = snakemake(wf, "-n", "--cores", "1", env=ENV)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    assert _state(wf, MODELS + SAMPLES) == kept
    snakemake(wf, "--cores", "1", env=ENV)
    assert _state(wf, MODELS + SAMPLES) == kept and (wf / "results/summary/table.md").exists()


@pytest.mark.pipeline
def test_a_corrupt_checkpoint_stops_the_run_and_its_printed_fix_retrains_only_it(finished):
    wf = finished
    model = "results/digits/nsgan/seed0/model.pt"
    others = [f for f in MODELS if f != model]
    kept = _state(wf, others + ["results/digits/glann/seed0/samples.npz"])
    samples = _state(wf, ["results/digits/nsgan/seed0/samples.npz"])
    os.truncate(wf / model, 5000)
    line = _refused(wf)
    assert line.startswith(f"{model} is truncated or corrupt") and "Nothing was run or deleted" in line, line
    assert _state(wf, ["results/digits/nsgan/seed0/samples.npz"]) == samples  # not deleted before the check
    # the fix as printed: delete it, rebuild it, then the plain run
    (wf / model).unlink()
    _sh(wf, _command(line, "snakemake ").replace("--cores all", "--cores 1"))
    snakemake(wf, "--cores", "1", env=ENV)
    dry = snakemake(wf, "-n", "--cores", "1", env=ENV)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert _state(wf, others + ["results/digits/glann/seed0/samples.npz"]) == kept  # only nsgan retrained
    assert (wf / "results/digits/nsgan/seed0/metrics.json").stat().st_mtime_ns > (wf / model).stat().st_mtime_ns


def test_restore_data_refuses_a_rebuild_that_differs_from_the_manifest(tmp_path):
    from glann.atomic import write_json
    from glann.data.datasets import prepare
    from glann.errors import GlannError
    from glann.pipeline.preflight import preflight_problems, restore_prepared

    d = tmp_path / "data/prepared/digits"
    prepare("digits", {"size": 16}, d)
    assert preflight_problems(["digits"], prepared=tmp_path / "data/prepared", results=tmp_path / "results",
                 cache=tmp_path / "v.json") == []
    assert "nothing to restore" in restore_prepared(d)
    m = yaml.safe_load((d / "manifest.json").read_text())
    m["options"] = {"size": 8}  # the models were trained on other data than this config now gives
    write_json(d / "manifest.json", m)
    os.truncate(d / "test.npz", 100)
    with pytest.raises(GlannError, match="differ from what the manifest records"):
        restore_prepared(d)
    assert (d / "test.npz").stat().st_size == 100  # nothing replaced
    (d / "manifest.json").write_text("{}")  # not what prepare_data wrote
    problems = preflight_problems(["digits"], prepared=tmp_path / "data/prepared", results=tmp_path / "results",
                     cache=tmp_path / "v.json")
    assert len(problems) == 1 and problems[0].startswith(f"{d / 'manifest.json'} is truncated, corrupt or not "
                                                         "written by prepare_data: `dvc pull"), problems
    with pytest.raises(GlannError, match="cannot restore .*: .*manifest.json is truncated, corrupt"):
        restore_prepared(d)


def test_the_verified_cache_does_not_hide_a_rewrite_with_the_same_size_and_mtime(tmp_path):
    from glann.data.datasets import prepare
    from glann.pipeline.preflight import preflight_problems

    d = tmp_path / "data/prepared/digits"
    prepare("digits", {"size": 16}, d)
    kw = dict(prepared=tmp_path / "data/prepared", results=tmp_path / "results", cache=tmp_path / "v.json")
    assert preflight_problems(["digits"], **kw) == []
    f = d / "train.npz"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size
    problems = preflight_problems(["digits"], **kw)
    assert len(problems) == 1 and "train.npz does not match its manifest" in problems[0]


@pytest.mark.pipeline
def test_kill9_of_snakemake_during_evaluate_leaves_no_orphan_to_finish(quick_run, tmp_path):
    """The running evaluate job stops with its snakemake (it would otherwise finish as an orphan,
    and the rerun would redo it: two FINISHED runs of one job); the rerun gives one. On a copy of
    the shared quick run with the VAE's metrics deleted, tracked live (a tracking switch reruns
    nothing)."""
    import signal
    import sqlite3

    from conftest import _glann_job, _wait

    wf = tmp_path / "wf"
    shutil.copytree(quick_run["wf"], wf, symlinks=True)
    target = "results/digits/vae/seed0/metrics.json"
    (wf / target).unlink()
    live = ["--config", "tracking={live: true}"]
    env = {**os.environ, "GLANN_TRACKING": "1"}

    def evaluate_runs():
        con = sqlite3.connect(wf / "mlflow.db")
        return [s for (s,) in con.execute("select status from runs where name = 'evaluate:vae:seed0' "
                                          "order by start_time")]

    before = evaluate_runs()
    assert before == ["FINISHED"], before
    exe = str(Path(sys.executable).with_name("snakemake"))
    with open(wf / "first.log", "w") as fh:
        proc = subprocess.Popen([exe, target, "--cores", "1", *live], cwd=wf, stdout=fh, stderr=subprocess.STDOUT,
                                env=env)
    try:
        job = _wait("the evaluate job", lambda: _glann_job(wf, "evaluate"), timeout=120)
        proc.send_signal(signal.SIGKILL)  # snakemake only, not its jobs
        proc.wait()
        job.wait(timeout=60)  # it stops on its own, soon
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (wf / target).exists(), "the orphaned evaluate job finished"
    snakemake(wf, "--unlock", "--cores", "1", env=env)
    rerun = snakemake(wf, target, "--cores", "1", *live, env=env)
    assert "evaluate" in rerun.stdout + rerun.stderr
    runs = evaluate_runs()
    assert runs.count("FINISHED") == 2 and "RUNNING" not in runs, runs  # the quick run's and the rerun's


@pytest.mark.parametrize("same_host", [True, False])
def test_a_job_whose_snakemake_is_already_gone_stops_before_any_work(tmp_path, same_host):
    """The snakemake process may die before the job's watch starts; a job on another host (an
    environment passed on to a cluster node) has nothing to watch and runs."""
    import json
    import socket

    import psutil

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    born = psutil.Process(gone.pid).create_time()
    gone.wait()
    host = socket.gethostname() if same_host else "elsewhere.invalid"
    env = {**os.environ, **ENV, "GLANN_SNAKEMAKE_PID": f"{host}:{gone.pid}:{born!r}"}
    job = json.dumps({"dataset": "digits", "params": {"size": 8}})
    proc = subprocess.run([str(BIN / "glann"), "prepare", "--job", job, "--out-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, env=env, timeout=300)
    if same_host:
        assert proc.returncode == 130 and "that started this job is gone" in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "d/manifest.json").exists()
    else:
        assert proc.returncode == 0 and (tmp_path / "d/manifest.json").exists(), proc.stderr[-2000:]


def test_a_checkpoint_without_its_integrity_record_is_refused_at_the_start(tmp_path):
    """The start check looks at every checkpoint, samples and statistics file under results/: one
    whose record is missing is named before Snakemake schedules (and so deletes) anything."""
    import numpy as np
    import torch

    from glann.atomic import integrity_path, save_npz
    from glann.pipeline.preflight import preflight_problems

    run = tmp_path / "results/digits/vae/seed0"
    save_npz(run / "samples.npz", images=np.zeros((2, 4, 4, 1), np.uint8))
    (run / "samples.png").write_bytes(b"png")  # not read back by a job: no record needed
    kw = dict(prepared=tmp_path / "data/prepared", results=tmp_path / "results", cache=tmp_path / "v.json")
    assert preflight_problems(["digits"], **kw) == []
    torch.save({"x": 1}, run / "model.pt")  # e.g. copied in by hand
    integrity_path(run / "samples.npz").unlink()
    problems = preflight_problems(["digits"], **kw)
    assert len(problems) == 2 and all("has no integrity record" in p and "Nothing was run or deleted" in p
                                      for p in problems)
    assert {"model.pt", "samples.npz"} == {Path(p.split(" has no")[0]).name for p in problems}
    assert (run / "model.pt").exists() and (run / "samples.npz").exists()
