"""Reliability cases of the README's "What happens when..." table that are not
covered next to their feature (see the table for where each case is tested)."""

import json
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, copy_workflow, snakemake
from glann.methods.training import TrainContext
from glann.pipeline.config import fill_defaults, load_schema
from glann.errors import DataError, DivergedError, GlannError

BIN = Path(sys.executable).parent
# the schema's defaults, as the Snakefile hands them to jobs, with small budgets
DEFAULTS = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]},
                         load_schema(REPO / "workflow/schemas/config.schema.yaml"))
GLO = {**DEFAULTS["glo"], "latent_dim": 16, "loss": "l1", "epochs": 2}


# --------------------------------------------------------------------------- 3. config errors, through snakemake
@pytest.mark.parametrize("override,expect", [
    ("glo: {epochs: 0}\n", "config error at glo.epochs: 0 is out of range"),
    ("glo: {epoch: 3}\n", "config error at glo: unknown key(s) 'epoch'"),
    ("seeds: []\n", "config error at seeds: must list at least 1"),
    ("datasets: [mnsit]\n", "config error at datasets[0]: unknown dataset 'mnsit'"),
    ("fid: {require_inception: true, inception_weights: /nowhere/pt_inception.pth}\n",
     "config error at fid.require_inception: fid.inception_weights /nowhere/pt_inception.pth does not exist"),
])
def test_config_errors_stop_snakemake_before_any_job(tmp_path, override, expect):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "bad.yaml").write_text(override)
    proc = snakemake(wf, "--cores", "1", "--configfile", "config/quick.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("config error")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert not (wf / "data").exists() and not (wf / "results").exists() and not (wf / "logs").exists()


def test_an_embedded_config_that_is_not_yaml_is_named_with_its_line(tmp_path):
    """Snakemake's own message names neither file nor line; the Snakefile reads it first."""
    wf = copy_workflow(tmp_path / "wf")
    cfg = wf / "config/config.yaml"
    cfg.write_text(cfg.read_text() + "\nbroken: [1, 2\nnext: 3\n")
    line_no = cfg.read_text().splitlines().index("next: 3") + 1
    proc = snakemake(wf, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"config error in config/config.yaml, line {line_no}, column 5: not valid YAML"), last
    assert not (wf / "data").exists() and not (wf / "logs").exists()


def test_yaml_error_names_file_line_and_column(tmp_path):
    from glann.pipeline.config import yaml_error

    f = tmp_path / "c.yaml"
    f.write_text("datasets: [digits]\nglo:\n\tepochs: 2\n")
    assert yaml_error(f).startswith(f"config error in {f}, line 3, column 1: not valid YAML")
    f.write_text("- a\n- b\n")
    assert "the top level must be a mapping" in yaml_error(f)
    f.write_text("datasets: [digits]\n")
    assert yaml_error(f) is None and yaml_error(tmp_path / "absent.yaml") is None


# --------------------------------------------------------------------------- 4. data errors
def test_truncated_prepared_split_names_the_file(digits_dir, tmp_path):
    from glann.data.datasets import load_prepared

    d = tmp_path / "digits"
    d.mkdir()
    for f in ("train.npz", "test.npz", "manifest.json"):
        (d / f).write_bytes((digits_dir / f).read_bytes())
    (d / "train.npz").write_bytes((d / "train.npz").read_bytes()[:1000])
    with pytest.raises(DataError, match=r"train\.npz does not match its manifest.*Run `glann restore-data .*` .* rerun snakemake"):
        load_prepared(d, "train")


def test_cli_reports_data_errors_in_one_line(tmp_path):
    job = json.dumps({"dataset": "digits", "seed": 0, "device": "cpu", "tracking": {"enabled": False},
                      "params": GLO})
    proc = subprocess.run([str(BIN / "glann"), "train-glo", "--job", job, "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "g.pt"), "--csv", str(tmp_path / "l.csv"),
                           "--recon", str(tmp_path / "r.png")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert str(tmp_path / "none") in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 6. numerical failure
def test_nan_in_glo_stops_with_epoch_and_hint(digits_dir, tmp_path):
    from glann.methods.glo import train_glo

    with pytest.raises(DivergedError, match=r"train_glo: loss became nan in epoch 2\. Lower glo\.lr_generator"):
        train_glo(digits_dir, {**GLO, "epochs": 3}, TrainContext(tmp_path / "glo.pt", 0, torch.device("cpu"), csv=tmp_path / "l.csv", fault={"nan_at_epoch": 2}))
    assert not (tmp_path / "glo.pt").exists()
    assert torch.load(tmp_path / "glo.pt.resume", weights_only=False)["epoch"] == 1  # epoch 1 kept


def test_nan_in_imle_stops_with_epoch_and_hint(digits_dir, tmp_path):
    from glann.methods.glo import train_glo
    from glann.methods.imle import train_imle

    train_glo(digits_dir, {**GLO, "epochs": 1}, TrainContext(tmp_path / "glo.pt", 0, torch.device("cpu")))
    cfg = {**DEFAULTS["imle"], "noise_dim": 8, "hidden": 32, "epochs": 2}
    with pytest.raises(DivergedError, match=r"train_imle: loss became nan in epoch 1\. Lower imle\.lr"):
        train_imle(tmp_path / "glo.pt", cfg, TrainContext(tmp_path / "imle.pt", 0, torch.device("cpu"), fault={"nan_at_epoch": 1}))


def test_cuda_out_of_memory_message_names_the_batch_size(monkeypatch, capsys):
    """No GPU here: the handler is exercised with the exception torch raises on a real OOM."""
    from glann.pipeline import cli

    def oom(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli, "cmd_train_baseline", oom)
    rc = cli.main(["train-baseline", "--job", json.dumps({"method": "wgan_gp"}), "--data", "x", "--out", "y",
                   "--csv", "z"])
    err = capsys.readouterr().err
    assert rc == 2 and "CUDA out of memory" in err and "Lower wgan_gp.batch_size" in err


# --------------------------------------------------------------------------- 9. atomic writes under a real kill -9
WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {src!r})
    from glann.atomic import write_bytes

    def fsync_then_block(fd):  # the new bytes are written, the rename has not happened yet
        os.fsync.__wrapped__(fd)
        print("written", flush=True)
        sys.stdin.read()  # blocks until the test kills this process

    fsync_then_block.__wrapped__ = os.fsync
    os.fsync = fsync_then_block
    write_bytes({target!r}, bytes(range(256)) * 4096)
""")


def test_kill9_during_a_write_never_leaves_a_partial_output(tmp_path):
    """The writer is blocked mid-write (its temporary file complete, not yet renamed), then killed."""
    target = tmp_path / "samples.npz"
    np.savez_compressed(target, images=np.arange(10, dtype=np.uint8))
    before = target.read_bytes()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(src=str(REPO / "src"), target=str(target)))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "written"
    assert [p.stat().st_size for p in tmp_path.glob(".tmp-samples.npz.*")] == [256 * 4096]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == before, "the earlier output must be untouched"
    with np.load(target) as z:
        assert z["images"].tolist() == list(range(10))


# --------------------------------------------------------------------------- 10. disk full / unwritable folder
def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # writes past 200 kB fail: EFBIG


def test_disk_full_gives_a_clear_error_and_keeps_earlier_outputs(digits_dir, tmp_path):
    """A file-size limit makes every larger write fail the way a full disk does (Python ignores SIGXFSZ)."""
    out = tmp_path / "glo.pt"
    out.write_bytes(b"an earlier, complete output")
    job = json.dumps({"dataset": "digits", "seed": 0, "device": "cpu", "tracking": {"enabled": False},
                      "params": GLO})
    proc = subprocess.run([str(BIN / "glann"), "train-glo", "--job", job, "--threads", "1", "--data",
                           str(digits_dir), "--out", str(out), "--csv", str(tmp_path / "l.csv"),
                           "--recon", str(tmp_path / "r.png")],
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {out}.resume") and "free disk space" in last, last
    assert out.read_bytes() == b"an earlier, complete output"
    assert not list(tmp_path.glob(".tmp-*")), "the failed temporary file is removed"


def test_unwritable_results_folder_is_refused_clearly(tmp_path):
    from glann.atomic import write_json

    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    with pytest.raises(GlannError, match=r"cannot write .*results/digits/metrics\.json.*writable"):
        write_json(blocker / "digits" / "metrics.json", {"a": 1})
    # A read-only folder (root ignores permission bits, so the refusal is faked the way the
    # kernel reports it: mkstemp raising PermissionError).
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.json").write_text("{}")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    import tempfile

    orig = tempfile.mkstemp
    tempfile.mkstemp = refuse
    try:
        with pytest.raises(GlannError, match=r"cannot write .*old\.json: Permission denied.*writable"):
            write_json(ro / "old.json", {"a": 1})
    finally:
        tempfile.mkstemp = orig
    assert (ro / "old.json").read_text() == "{}"


# --------------------------------------------------------------------------- a job's threads, by hand or under snakemake
def test_a_jobs_threads_cap_the_blas_pools_as_snakemake_does():
    """Snakemake sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, ... to a job's threads; a job's
    command run by hand does not, so numpy's BLAS would take every core and a Fréchet distance's
    float64 sums would round in another order. --threads caps those pools itself."""
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_NUM_THREADS") and k not in ("OMP_THREAD_LIMIT",)}
    code = textwrap.dedent("""
        import json, torch
        from threadpoolctl import threadpool_info
        from glann.runtime import setup_torch
        setup_torch(1, False, 0)
        print(json.dumps([torch.get_num_threads()] + [p["num_threads"] for p in threadpool_info()]))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(counts) > 1, "no BLAS pool found: numpy without BLAS?"
    assert set(counts) == {1}, counts
