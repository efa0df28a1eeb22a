"""The colour paper presets (tests/presets.py): CIFAR-10 (32x32) and CelebA (64x64). Each runs
end to end through the real Snakefile with two methods (GLANN and BEGAN: GLANN's colour VGG
loss and generators, a v1 baseline with its BN re-estimation, the evaluators at 32 and 64; the
GLO+Gaussian jobs run in the MNIST preset and the shared quick run); every method `glann train-baseline` trains is
trained and sampled in process at CIFAR-10's shape with the config its job gets."""

import pytest

from presets import make_torch_home, run_preset, train_and_sample_every_trainer

PIPELINE_METHODS = ["glann", "began"]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    return make_torch_home(tmp_path_factory.mktemp("torch_home"))


@pytest.mark.pipeline
@pytest.mark.parametrize("preset", ["cifar10", "celeba64"])
def test_paper_preset_end_to_end(preset, tmp_path, torch_home):
    run_preset(preset, tmp_path, torch_home, methods=PIPELINE_METHODS)


def test_every_trained_method_trains_and_samples_in_colour(tmp_path):
    """At 32x32x3; at 64x64 (CelebA) a step costs ~10 s per model on a CPU: there
    test_models.py checks every network's layer list and output shape, and the pipeline run
    trains BEGAN."""
    train_and_sample_every_trainer("cifar10", tmp_path)
