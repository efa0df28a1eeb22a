"""The colour paper presets (tests/presets.py): CIFAR-10 (32x32) and CelebA (64x64). Each runs
end to end through the real Snakefile with three methods (GLANN, GLO with a Gaussian, BEGAN:
every kind of job, GLANN's colour VGG loss and generators, a v1 baseline with its BN
re-estimation, the evaluators at 32 and 64); every method `glann train-baseline` trains is
trained and sampled in process at CIFAR-10's shape with the config its job gets."""

import math

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from formats import WRITERS
from presets import make_torch_home, run_preset

PIPELINE_METHODS = ["glann", "glo_gauss", "began"]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    return make_torch_home(tmp_path_factory.mktemp("torch_home"))


@pytest.mark.pipeline
@pytest.mark.parametrize("preset", ["cifar10", "celeba64"])
def test_paper_preset_end_to_end(preset, tmp_path, torch_home):
    run_preset(preset, tmp_path, torch_home, methods=PIPELINE_METHODS)


@pytest.mark.parametrize("preset", ["cifar10"])
def test_every_trained_method_trains_and_samples_at_the_presets_shape(preset, tmp_path):
    """Pixel IMLE, the seven GANs and the VAE in colour, each with the preset's config over the
    schema's defaults (what its job gets), one epoch on one batch of the preset's own loader
    output (real digits in the dataset's file format; the first step of every trainer steps
    both networks): finite losses, and samples of the preset's shape in [0, 255] that vary.
    At 64x64 (CelebA) a step costs ~10 s per model on a CPU: there test_models.py
    checks every network's layer list and output shape, and the pipeline run trains BEGAN."""
    from glann.data.datasets import load_prepared, prepare
    from glann.methods.registry import METHODS
    from glann.methods.sampling import Sampler
    from glann.methods.training import TrainContext
    from glann.pipeline.config import fill_defaults, load_schema

    cfg = fill_defaults(yaml.safe_load((REPO / "config/paper" / f"{preset}.yaml").read_text()),
                        load_schema(REPO / "workflow/schemas/config.schema.yaml"))
    root = WRITERS[preset](tmp_path / "raw", n_test=16, per_batch=13)  # 65 training images: one full batch

    data = tmp_path / "prepared"
    prepare(preset, {**cfg["data"][preset], "root": str(root), "download": False}, data)
    shape = load_prepared(data, "train")[0].shape[1:]
    assert shape == (32, 32, 3)
    cpu = torch.device("cpu")
    trained = [m for m in cfg["methods"] if METHODS[m].trainer]
    assert len(trained) == 9
    for name in trained:
        method = METHODS[name]
        out = tmp_path / f"{name}.pt"
        extra = {"samples_factor": 1, "staleness": 1} if name == "imle_pixel" else {}
        res = method.train_function()(data, {**cfg[name], "epochs": 1, **extra}, TrainContext(out, 0, cpu))
        row = res["history"][-1]
        assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float)), (name, row)
        x = Sampler(name, {"model": out}, cpu, bn_batches=1).generate(16, seed=0)
        assert x.dtype == np.uint8 and x.shape == (16, *shape), name
        assert x.std() > 0, name
