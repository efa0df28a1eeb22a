"""The paper presets end to end, on this CPU, without downloads (tests/test_presets*.py).

For each of ``config/paper/{mnist,fashion,cifar10,celeba64}.yaml``: the real Snakefile runs
the preset with a second ``--configfile`` that only shrinks budgets and points the data root
at fixture files (tests/formats.py: each dataset's own on-disk format, real digits inside),
and with VGG16 and pytorch-fid Inception weight files of the real architectures holding
*random* weights (tests/weights.py) where the presets look for them ($TORCH_HOME's hub
cache). What stays the preset's own: its dataset and loader, ``glo.loss: vgg``,
``fid.require_inception: true``, its GLO generator and evaluator choices (GLANN's
DCGAN-style G and the ResNet evaluator at 64x64, colour without BN). GLANN runs on MNIST (28x28
grey), CIFAR-10 (32x32 colour) and CelebA (64x64 colour); a v1 GAN with its BN re-estimation
runs on Fashion-MNIST (WGAN, two seeds, so the summary's mean ± std over seeds is exercised)
and on CelebA (BEGAN). The other baselines are trained at the MNIST and CIFAR-10 shapes in
process (``train_and_sample_every_trainer``: each pipeline job is a fresh Python process that
spends seconds on imports before any work). The runs are fp32: on a CPU without bf16 units a v1 GAN
step under bf16 autocast is many times slower, so the trainers' bf16 path is
test_faithfulness.py's. Numbers from these runs mean nothing and are never reported.
"""

import json
import math
import os
import sys
from pathlib import Path

import yaml

from conftest import REPO, copy_workflow, snakemake
from formats import WRITERS
from weights import save_random_inception, save_random_vgg16

PRESETS = ["mnist", "fashion", "cifar10", "celeba64"]


METHODS = ["glann", "glo_gauss", "imle_pixel", "mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae",
           "flow"]


def make_torch_home(home: Path) -> Path:
    """$TORCH_HOME with random-weight VGG16 and Inception files at the real file names."""
    from glann.hub import INCEPTION_FILE, VGG16_FILE

    save_random_vgg16(home / "hub/checkpoints" / VGG16_FILE)
    save_random_inception(home / "hub/checkpoints" / INCEPTION_FILE)
    return home


def smoke_override(dataset: str, root, seeds) -> dict:
    """Budgets only (and the data root): everything else stays the preset's."""
    gan = {"epochs": 1}
    return {
        "seeds": seeds,
        "device": "cpu",
        # fp32: on a CPU without bf16 units a v1 GAN step under bf16 autocast is 15-30x slower
        # (one 64x64 backward pass: 73 s against 2 s). Every trainer runs under bf16 in
        # test_faithfulness.py; runtime.amp reaching the job is test_commands.py's.
        "runtime": {"amp": "off", "threads": 1},
        "data": {dataset: {"root": str(root), "download": False}},
        "glo": {"epochs": 1, "lr_halve_every": 1},
        "imle": {"epochs": 1},
        "imle_pixel": {"epochs": 1, "samples_factor": 1, "staleness": 1},
        **{m: gan for m in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began")},
        "vae": {"epochs": 1},
        "flow": {"epochs": 1, "steps": 2},
        "snapshots": {"count": 0},
        "sample": {"num_samples": 16, "batch_size": 16, "bn_batches": 1},
        "evaluator": {"epochs": 1},
        "fid": {"num_samples": 2},  # Inception features of 2 samples per run: the fewest with a finite FID
        "eval": {"prd_runs": 1, "prdc_max_samples": 16, "prdc_k": 3, "birthday_batch_size": 8,
                 "birthday_batches": 2},
        "tracking": {"live": False},
    }


def run_preset(preset: str, tmp_path: Path, torch_home: Path, methods=METHODS, seeds=(0,)) -> None:
    """The preset end to end with ``methods`` and ``seeds``; every run's metrics finite, with
    Inception FID; the summary's rows mean ± std exactly when there are two seeds."""
    cfg_path = REPO / "config/paper" / f"{preset}.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    dataset = cfg["datasets"][0]
    # what the smoke run keeps of the preset
    assert cfg["glo"]["loss"] == "vgg" and cfg["fid"]["require_inception"] is True
    assert cfg["methods"] == METHODS

    wf = copy_workflow(tmp_path / "wf")
    WRITERS[dataset](tmp_path / "data", n_test=16)  # 16 real test images: real_stats' Inception pass
    seeds = list(seeds)
    override = {**smoke_override(dataset, tmp_path / "data", seeds), "methods": list(methods)}
    (wf / "smoke.yaml").write_text(yaml.safe_dump(override))
    env = {**os.environ, "TORCH_HOME": str(torch_home), "GLANN_TRACKING": "0",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    snakemake(wf, "--cores", "2", "--configfile", f"config/paper/{preset}.yaml", "smoke.yaml", env=env)

    for method in methods:
        for seed in seeds:
            run = wf / "results" / dataset / method / f"seed{seed}"
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["inception_fid"] is not None and math.isfinite(metrics["inception_fid"]), (method, seed)
            assert math.isfinite(metrics["fid_domain"]), (method, seed)
            assert metrics["n_samples"] == 16, (method, seed)
    table = (wf / "results/summary/table.md").read_text()
    inception = table.split("## Inception FID")[1].split("\n## ")[0]
    for method in methods:
        row = next(line for line in inception.splitlines() if line.startswith(f"| {method} |"))
        assert ("±" in row) == (len(seeds) == 2), row  # two seeds: mean ± std




ONE_BATCH = {"mnist": {"n_train": 64}, "cifar10": {"per_batch": 13}}  # 64 / 65 training images
SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def train_and_sample_every_trainer(preset: str, tmp_path: Path) -> None:
    """Pixel IMLE, the seven GANs and the VAE (every method `glann train-baseline` trains), each
    with the preset's config over the schema's defaults (what its job gets), one epoch on one
    batch of the preset's own loader output (real digits in the dataset's file format; the
    first step of every trainer steps both networks): finite losses, and samples of the
    preset's shape in [0, 255] that vary. In process: no job start-up."""
    import numpy as np
    import torch

    from glann.data.datasets import load_prepared, prepare
    from glann.methods.registry import METHODS as REGISTRY
    from glann.methods.sampling import Sampler
    from glann.methods.training import TrainContext
    from glann.pipeline.config import fill_defaults, load_schema

    cfg = fill_defaults(yaml.safe_load((REPO / "config/paper" / f"{preset}.yaml").read_text()),
                        load_schema(REPO / "workflow/schemas/config.schema.yaml"))
    root = WRITERS[preset](tmp_path / "raw", n_test=16, **ONE_BATCH[preset])
    data = tmp_path / "prepared"
    prepare(preset, {**cfg["data"][preset], "root": str(root), "download": False}, data)
    shape = load_prepared(data, "train")[0].shape[1:]
    assert shape == SHAPES[preset]
    cpu = torch.device("cpu")
    trained = [m for m in cfg["methods"] if REGISTRY[m].trainer]
    assert len(trained) == 10
    for name in trained:
        out = tmp_path / f"{name}.pt"
        extra = {"samples_factor": 1, "staleness": 1} if name == "imle_pixel" else {}
        res = REGISTRY[name].train_function()(data, {**cfg[name], "epochs": 1, **extra}, TrainContext(out, 0, cpu))
        row = res["history"][-1]
        assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float)), (name, row)
        x = Sampler(name, {"model": out}, cpu, bn_batches=1).generate(16, seed=0)
        assert x.dtype == np.uint8 and x.shape == (16, *shape), name
        assert x.std() > 0, name
