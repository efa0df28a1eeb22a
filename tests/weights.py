"""Test and benchmark fixtures: weight files of the real architectures with *random* weights.

Same architecture and cost as the real networks, so code paths and timings are real;
any number computed with them means nothing and is never reported as a result.
"""

from pathlib import Path

import torch
from torch import nn


def save_random_inception(path, seed: int = 0) -> Path:
    """pytorch-fid's FID InceptionV3 with *random* weights, saved to ``path``.

    For code-path tests and timing benchmarks only (same architecture and cost as
    the real network); a FID computed with it means nothing and is never reported.
    """
    import pytorch_fid.inception as pfi

    orig_url, orig_load = pfi.load_state_dict_from_url, nn.Module.load_state_dict
    pfi.load_state_dict_from_url = lambda *a, **k: {}
    nn.Module.load_state_dict = lambda self, *a, **k: None
    try:
        torch.manual_seed(seed)
        model = pfi.fid_inception_v3()
    finally:
        pfi.load_state_dict_from_url, nn.Module.load_state_dict = orig_url, orig_load
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def save_random_vgg16(path, seed: int = 0) -> Path:
    """torchvision's VGG16 with random weights, saved where ``glo.vgg_weights`` can point."""
    import torchvision

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path
