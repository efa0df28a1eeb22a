"""The colour paper presets end to end (tests/presets.py): CIFAR-10 (32x32) and CelebA (64x64),
all 11 methods each."""

import pytest

from presets import make_torch_home, run_preset


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    return make_torch_home(tmp_path_factory.mktemp("torch_home"))


@pytest.mark.pipeline
@pytest.mark.parametrize("preset", ["cifar10", "celeba64"])
def test_paper_preset_end_to_end(preset, tmp_path, torch_home):
    run_preset(preset, tmp_path, torch_home)
