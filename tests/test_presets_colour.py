"""The colour paper presets (tests/presets.py): CIFAR-10 (32x32) and CelebA (64x64), each end
to end through the real Snakefile: GLANN on both (its colour VGG loss and its generators at 32
and 64, the evaluators at 32 and 64) and BEGAN on CelebA (a v1 baseline at 64x64, with its BN
re-estimation). Every method `glann train-baseline` trains is trained and sampled in process at
CIFAR-10's shape with the config its job gets."""

import pytest

from presets import run_preset, train_and_sample_every_trainer

PIPELINE_METHODS = {"cifar10": ["glann"], "celeba64": ["glann", "began"]}


@pytest.mark.pipeline
@pytest.mark.parametrize("preset", ["cifar10", "celeba64"])
def test_paper_preset_end_to_end(preset, tmp_path, torch_home):
    run_preset(preset, tmp_path, torch_home, methods=PIPELINE_METHODS[preset])


def test_every_trained_method_trains_and_samples_in_colour(tmp_path):
    """At 32x32x3; at 64x64 (CelebA) a step costs ~10 s per model on a CPU: there
    test_models.py checks every network's layer list and output shape, and the pipeline run
    trains BEGAN."""
    train_and_sample_every_trainer("cifar10", tmp_path)
