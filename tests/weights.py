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
    """torchvision's VGG16 state dict with random weights (torchvision's own init), saved where
    ``glo.vgg_weights`` can point.

    Built without the full model: initialising the classifier's 120M parameters through
    ``nn.Linear`` first costs seconds; its tensors are drawn directly (normal(0, 0.01), zero
    bias, as ``torchvision.models.VGG`` initialises them). Keys and shapes are checked against
    torchvision's VGG16 built on the meta device (no memory, no init).
    """
    import torchvision
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    features = make_layers(cfgs["D"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    for i, (n_out, n_in) in zip((0, 3, 6), ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096))):
        state[f"classifier.{i}.weight"] = torch.empty(n_out, n_in).normal_(0, 0.01)
        state[f"classifier.{i}.bias"] = torch.zeros(n_out)
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None).state_dict()
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in reference.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
