"""`glann generate`: sample a trained method without Snakemake, from a folder or an MLflow run.

Each check runs ``glann generate`` in its own process, in the shared quick run's folder."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIN = Path(sys.executable).parent


def _generate(*args, cwd):
    return subprocess.run([str(BIN / "glann"), "generate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.pipeline
@pytest.mark.parametrize("method", ["glann", "glo_gauss", "vae", "wgan_gp"])
def test_generate_png_and_npz_from_the_quick_run(quick_run, tmp_path, method):
    wf = quick_run["wf"]
    run = f"results/digits/{method}/seed0"
    png = _generate(run, "-n", "25", "--out", str(tmp_path / "png"), "--batch-size", "10", "--seed", "3",
                    "--interpolate", "3", "--device", "cpu", cwd=wf)
    assert png.returncode == 0, png.stderr[-2000:]
    files = sorted((tmp_path / "png").glob("0*.png"))
    assert len(files) == 25 and Image.open(files[0]).size == (8, 8)
    assert Image.open(tmp_path / "png" / "interpolation.png").size[1] > 8 * 3
    npz = _generate(run, "-n", "25", "--out", str(tmp_path / "npz"), "--format", "npz", "--batch-size", "10",
                    "--seed", "3", cwd=wf)
    assert npz.returncode == 0, npz.stderr[-2000:]
    shards = sorted((tmp_path / "npz").glob("samples-*.npz"))
    assert [len(np.load(s)["images"]) for s in shards] == [10, 10, 5]  # streamed, batch by batch
    images = np.concatenate([np.load(s)["images"] for s in shards])
    assert images.dtype == np.uint8 and images.shape == (25, 8, 8, 1)
    assert np.array_equal(images[0, ..., 0], np.asarray(Image.open(files[0])))  # same seed, same images
    other = _generate(run, "-n", "10", "--out", str(tmp_path / "other"), "--format", "npz", "--seed", "4", cwd=wf)
    assert other.returncode == 0
    assert not np.array_equal(np.load(tmp_path / "other" / "samples-00000.npz")["images"], images[:10])


@pytest.mark.pipeline
def test_generate_from_an_mlflow_run(quick_run, tmp_path):
    wf = quick_run["wf"]
    con = sqlite3.connect(wf / "mlflow.db")
    run_id = con.execute("select r.run_uuid from runs r join tags t on r.run_uuid = t.run_uuid "
                         "where r.name = 'evaluate:glann/hp1:seed0' and t.key = 'glann.run_dir'").fetchone()[0]
    proc = _generate("--run-id", run_id, "--tracking-uri", f"sqlite:///{wf / 'mlflow.db'}", "-n", "5",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)  # a sweep setting's run: results/.../hp1/seed0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 5 glann images" in proc.stdout and len(list((tmp_path / "out").glob("*.png"))) == 5


def test_generate_refuses_a_folder_without_a_finished_model(tmp_path):
    run = tmp_path / "results/digits/glann/seed0"
    run.mkdir(parents=True)
    proc = _generate(str(run), "-n", "3", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {run} has no finished glann model: ") and "glo.pt" in last and "imle.pt" in last
    assert not (tmp_path / "out").exists()
    trial = tmp_path / "results/digits/nsgan/hp3/seed0"  # a sweep setting's folder
    trial.mkdir(parents=True)
    proc = _generate(str(trial), "-n", "3", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2 and f"{trial} has no finished nsgan model: " in proc.stderr
    assert str(tmp_path / "results/digits/nsgan/hp3/seed0/model.pt") in proc.stderr
    proc = _generate(str(tmp_path / "elsewhere"), "-n", "3", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2 and "is not a run folder" in proc.stderr
