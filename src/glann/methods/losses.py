"""Reconstruction losses for GLO (``glo.loss``): lap1, vgg, l1, l2.

lap1 -- GLO's Laplacian-pyramid L1 (Bojanowski et al. 2018, Sec. 3.3):
    Lap1(x, x') = sum_j 2^(-2j) * |L^j(x) - L^j(x')|_1
  L^0 is the finest band-pass level, L^J the low-pass residual; |.|_1 sums over
  the pixels of level j (level j has 4^-j as many pixels as level 0). Two
  readings of the weights (``glo.lap_weighting``):
  - ``sum``: the formula as printed, each level's *summed* L1 times 2^(-2j), all
    divided by level 0's pixel count: a pixel of level j weighs 16^-j, so coarse
    levels are nearly ignored (a global +0.1 offset costs 0.0004, plain L1 0.1);
  - ``mean``: each level's *mean* L1 with equal weight, i.e. 2^(+2j) on the sums
    relative to ``sum`` (the laploss code GLO's authors point to): every scale,
    the global intensity included, counts as much as the finest details.
  README ("Faithfulness") gives the experiment that chose the default.
  The Gaussian kernel is the 5x5 binomial [1 4 6 4 1]^T [1 4 6 4 1] / 256 with
  reflect padding (Burt & Adelson 1983).

vgg -- GLANN's perceptual loss as its released code computes it (yedidh/glann
  ``glo.py`` and ``vgg_metric._VGGDistance``): grey images repeated to 3 channels,
  28x28 zero-padded to 32x32 (in [0, 1]), both images mapped to 2x - 1 (no ImageNet
  mean/std); loss per image = mean |a - b| over those [-1, 1] pixels (padding included)
  + sum of mean |f_l(a) - f_l(b)| over the taps at indices 2, 7, 12, 21, 30 of
  torchvision's vgg16().features, the first 2/3/4 of them for 16/(28, 32)/64-pixel
  images. The reference keeps the tensor each tap returns and runs torchvision's
  *in-place* ReLU on it next, so every tap but the last reads the ReLU'd activation
  (relu1_2, relu2_2, relu3_2, relu4_3) and the last one, with no ReLU run after it,
  the convolution's output; this module computes exactly that.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glann.errors import WeightsError
from glann.hub import VGG16_FILE, checkpoints_dir

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def gaussian_kernel(channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    k = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0
    return k.to(device=device, dtype=dtype).expand(channels, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = gaussian_kernel(x.shape[1], x.device, x.dtype)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[L^0, ..., L^{levels-1}, low-pass residual]; each band = x_j - up(down(blur(x_j)))."""
    pyramid, current = [], x
    for _ in range(levels):
        if min(current.shape[-2:]) < 4:
            break
        low = F.avg_pool2d(_blur(current), 2)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        pyramid.append(current - up)
        current = low
    pyramid.append(current)
    return pyramid


def default_levels(size: int) -> int:
    """Band-pass levels until the residual is under 8 pixels wide (16 -> 2, 28 -> 2, 32 -> 3, 64 -> 4)."""
    levels, s = 0, size
    while s >= 8:
        s //= 2
        levels += 1
    return max(levels, 1)


LAP_WEIGHTINGS = ("sum", "mean")


def lap1_loss(x: torch.Tensor, y: torch.Tensor, levels: int | None = None,
              weighting: str = "mean") -> torch.Tensor:
    """Batch mean of sum_j 2^(-2j) |L^j(x) - L^j(y)|_1 / (C*H*W) (``sum``), or of
    sum_j mean|L^j(x) - L^j(y)| (``mean``: every level weighted equally per pixel)."""
    if weighting not in LAP_WEIGHTINGS:
        raise ValueError(f"unknown lap_weighting {weighting!r}; allowed: {', '.join(LAP_WEIGHTINGS)}")
    levels = default_levels(x.shape[-1]) if levels is None else levels
    px, py = laplacian_pyramid(x, levels), laplacian_pyramid(y, levels)
    n0 = x[0].numel()
    total = x.new_zeros(())
    for j, (a, b) in enumerate(zip(px, py)):
        diff = (a - b).abs().flatten(1)
        if weighting == "sum":
            total = total + (2.0 ** (-2 * j)) * diff.sum(1).mean() / n0
        else:
            total = total + diff.mean(1).mean()
    return total


def l1_loss(x, y):
    return (x - y).abs().mean()


def l2_loss(x, y):
    return (x - y).pow(2).mean()


# --------------------------------------------------------------------------- VGG
VGG_LAYERS = (2, 7, 12, 21, 30)  # conv1_2, conv2_2, conv3_2, conv4_3, pool5


def find_vgg16_weights(configured: str | None) -> Path:
    """The VGG16 weights file: the configured path, else the torch hub cache."""
    if configured:
        path = Path(os.path.expanduser(str(configured)))
        if not path.is_file():
            raise WeightsError(
                f"glo.vgg_weights points to {path}, which does not exist. Download torchvision's "
                f"ImageNet VGG16 weights ({VGG16_FILE}) there, or use glo.loss: lap1 (no weights)."
            )
        return path
    path = checkpoints_dir() / VGG16_FILE
    if not path.is_file():
        raise WeightsError(
            f"glo.loss: vgg needs ImageNet VGG16 weights: {path} is missing. On a machine with "
            "network run `python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` "
            "(it saves the file there), or set glo.vgg_weights to a copy of it, or use glo.loss: lap1."
        )
    return path


def _first_line(exc: Exception, limit: int = 160) -> str:
    """An exception's first line without terminal colour codes, cut to ``limit`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


class VGG16Features(nn.Module):
    """torchvision's VGG16 convolutional part (``features``) alone.

    The loss never uses the classifier (120M of VGG16's 138M parameters); building and
    initialising it cost seconds per job. The state dict keeps torchvision's key names.
    """

    def __init__(self):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D"], batch_norm=False)


def _read_checkpoint(path: Path):
    """torch.load; memory-mapped when the file is in torch's zip format (torchvision's
    is), so the classifier's tensors are never read from disk. Legacy files load whole."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def load_vgg16_features(path: Path) -> nn.Module:
    """VGG16's ``features`` from torchvision's weights file (or any state dict with its keys).

    The file's ``classifier.*`` tensors, if any, are ignored; every ``features.*`` key must
    be there with torchvision's shape, and no other key may be.
    """
    try:
        state = _read_checkpoint(path)
    except Exception as exc:
        raise WeightsError(
            f"cannot read VGG16 weights {path} ({type(exc).__name__}: {_first_line(exc)}): the file is truncated "
            f"or not a torch checkpoint. Replace it with torchvision's {VGG16_FILE}."
        ) from exc
    model = VGG16Features()
    try:
        if not isinstance(state, dict):
            raise TypeError(f"expected a state dict, found {type(state).__name__}")
        model.load_state_dict({k: v for k, v in state.items() if not str(k).startswith("classifier.")})
    except Exception as exc:
        raise WeightsError(
            f"{path} is not a VGG16 state dict ({_first_line(exc)}). Replace it with "
            f"torchvision's {VGG16_FILE}."
        ) from exc
    return model.features


class VGGLoss(nn.Module):
    """Pixel L1 + L1 on VGG16 features, as GLANN's released ``_VGGDistance`` (module docstring)."""

    def __init__(self, weights_path: Path, image_size: int):
        super().__init__()
        padded = 32 if image_size == 28 else image_size
        self.pad = (padded - image_size) // 2
        n_levels = {16: 2, 32: 3, 64: 4}.get(padded, 5 if padded > 64 else 2)
        self.layers = VGG_LAYERS[:n_levels]
        features = load_vgg16_features(weights_path)
        self.features = features[: self.layers[-1] + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        # what each tap reads: the ReLU after it (run in place in the reference), the last one itself
        self.reads = tuple(i + 1 for i in self.layers[:-1]) + (self.layers[-1],)

    def _prep(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return 2 * x - 1

    def forward(self, x, y):
        hx, hy = self._prep(x), self._prep(y)
        loss = (hx - hy).abs().flatten(1).mean(1)
        for i, layer in enumerate(self.features):
            hx, hy = layer(hx), layer(hy)
            if i in self.reads:
                loss = loss + (hx - hy).abs().flatten(1).mean(1)
        return loss.mean()


def make_loss(name: str, image_size: int, vgg_weights: str | None = None, lap_levels=None,
              lap_weighting: str = "mean"):
    if name == "lap1":
        return lambda x, y: lap1_loss(x, y, lap_levels, lap_weighting)
    if name == "l1":
        return l1_loss
    if name == "l2":
        return l2_loss
    if name == "vgg":
        return VGGLoss(find_vgg16_weights(vgg_weights), image_size)
    raise ValueError(f"unknown loss {name!r}")
