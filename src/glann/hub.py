"""Where the pretrained weight files are looked up, without importing torch.

The Snakefile checks at start that pytorch-fid's Inception file exists when
``fid.require_inception`` is set; importing torch for ``torch.hub.get_dir()`` would add
about 2 s to every ``snakemake`` start, dry runs included. ``checkpoints_dir()`` follows
``torch.hub.get_dir()``'s rule ($TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else
~/.cache/torch/hub); glann never calls ``torch.hub.set_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception weights
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights file


def checkpoints_dir() -> Path:
    """torch.hub's checkpoints folder, where torchvision and pytorch-fid save downloaded weights."""
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def inception_weights_path(configured: str | None):
    """(path, None) when the FID Inception weights are available, else (None, reason)."""
    if configured:
        p = Path(os.path.expanduser(str(configured)))
        if p.is_file():
            return p, None
        return None, f"fid.inception_weights {p} does not exist"
    p = checkpoints_dir() / INCEPTION_FILE
    if p.is_file():
        return p, None
    return None, (f"pytorch-fid's Inception weights {p} are missing (offline); run pytorch-fid once "
                  "with network, or set fid.inception_weights to a copy of that file")
