"""The paper presets end to end, on this CPU, without downloads.

For each of ``config/paper/{mnist,fashion,cifar10,celeba64}.yaml``: the real Snakefile runs
the preset with a second ``--configfile`` that only shrinks budgets and points the data root
at fixture files (tests/formats.py: each dataset's own on-disk format, real digits inside),
and with VGG16 and pytorch-fid Inception weight files of the real architectures holding
*random* weights (tests/weights.py) where the presets look for them ($TORCH_HOME's hub
cache). What stays the preset's own: its dataset and loader, ``glo.loss: vgg``,
``fid.require_inception: true``, all 11 methods, its GLO generator and evaluator choices
(GLANN's DCGAN-style G and the ResNet evaluator at 64x64, colour without BN). The runs are
fp32: on a CPU without bf16 units a v1 GAN step under bf16 autocast is 15-30x slower, so
the trainers' bf16 path is test_faithfulness.py's. The MNIST preset runs two seeds, so the
summary's mean ± std over seeds is exercised; the other three one. Each run is 40-80 jobs
whose own work takes seconds.
Numbers from these runs mean nothing and are never reported.
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_workflow, snakemake
from formats import WRITERS
from weights import save_random_inception, save_random_vgg16

PRESETS = ["mnist", "fashion", "cifar10", "celeba64"]


METHODS = ["glann", "glo_gauss", "imle_pixel", "mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae"]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """$TORCH_HOME with random-weight VGG16 and Inception files at the real file names."""
    from glann.hub import INCEPTION_FILE
    from glann.hub import VGG16_FILE

    home = tmp_path_factory.mktemp("torch_home")
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
        "snapshots": {"count": 0},
        "sample": {"num_samples": 16, "batch_size": 16, "bn_batches": 1},
        "evaluator": {"epochs": 1},
        "fid": {"num_samples": 2},  # Inception features of 2 samples per run: the fewest with a finite FID
        "eval": {"prd_runs": 1, "prdc_max_samples": 16, "prdc_k": 3, "birthday_batch_size": 8,
                 "birthday_batches": 2},
        "tracking": {"live": False},
    }


@pytest.mark.pipeline
@pytest.mark.parametrize("preset", PRESETS)
def test_paper_preset_end_to_end(preset, tmp_path, torch_home):
    cfg_path = REPO / "config/paper" / f"{preset}.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    dataset = cfg["datasets"][0]
    # what the smoke run keeps of the preset
    assert cfg["glo"]["loss"] == "vgg" and cfg["fid"]["require_inception"] is True
    assert cfg["methods"] == METHODS

    wf = copy_workflow(tmp_path / "wf")
    WRITERS[dataset](tmp_path / "data", n_test=16)  # 16 real test images: real_stats' Inception pass
    seeds = [0, 1] if preset == "mnist" else [0]
    (wf / "smoke.yaml").write_text(yaml.safe_dump(smoke_override(dataset, tmp_path / "data", seeds)))
    env = {**os.environ, "TORCH_HOME": str(torch_home), "GLANN_TRACKING": "0",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    snakemake(wf, "--cores", "2", "--configfile", f"config/paper/{preset}.yaml", "smoke.yaml", env=env)

    for method in METHODS:
        for seed in seeds:
            run = wf / "results" / dataset / method / f"seed{seed}"
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["inception_fid"] is not None and math.isfinite(metrics["inception_fid"]), (method, seed)
            assert math.isfinite(metrics["fid_domain"]), (method, seed)
    glo = json.loads((wf / "results" / dataset / "glann/seed0/metrics.json").read_text())
    assert glo["n_samples"] == 16
    table = (wf / "results/summary/table.md").read_text()
    inception = table.split("## Inception FID")[1].split("\n## ")[0]
    for method in METHODS:
        row = next(line for line in inception.splitlines() if line.startswith(f"| {method} |"))
        assert ("±" in row) == (len(seeds) == 2), row  # two seeds: mean ± std


@pytest.mark.parametrize("preset", PRESETS)
def test_paper_preset_values_are_the_papers(preset):
    """Pinned: a preset edited to 1 seed, loss l2, 2 epochs or no Inception fails here."""
    cfg = yaml.safe_load((REPO / "config/paper" / f"{preset}.yaml").read_text())
    big = preset in ("cifar10", "celeba64")
    assert cfg["datasets"] == [preset] and cfg["methods"] == METHODS and cfg["seeds"] == [0, 1, 2]
    assert cfg["device"] == "cuda"
    assert cfg["glo"] == {"epochs": 500 if big else 200, "lr_halve_every": 50 if big else 20, "loss": "vgg"}
    assert cfg["imle"]["epochs"] == 50 and cfg["imle_pixel"]["epochs"] == 50
    # compare_gan v1's budgets (generate_tasks_lib.TuneParams): 20 MNIST/Fashion, 100 CIFAR-10, 40 CelebA
    gan_epochs = {"mnist": 20, "fashion": 20, "cifar10": 100, "celeba64": 40}[preset]
    assert all(cfg[m] == {"epochs": gan_epochs} for m in METHODS[3:])
    assert cfg["sample"]["num_samples"] == 10000
    assert cfg["fid"] == {"require_inception": True, "num_samples": 10000}
    assert cfg["data"][preset]["download"] is False
