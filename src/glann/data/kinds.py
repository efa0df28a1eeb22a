"""The dataset kinds and their split sizes, without numpy: the config check reads them at
every Snakemake start (no-op included), the loaders when they prepare a dataset."""

from __future__ import annotations

import math
import os
from pathlib import Path

# Dataset kinds prepare_data knows (glann.data.sources loads each). Here, not there, so that
# checking a config (the Snakefile does it at every start, no-op included) does not import numpy.
KINDS = ("mnist5k", "digits", "mnist", "fashion", "cifar10", "celeba64", "folder")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # what a folder dataset reads (glann.data.sources.load_folder)
# datasets whose test split is carved by ``test_size`` (the others keep their official one):
# image count and default test_size, as glann.data.sources loads them
CARVED_SPLITS = {"mnist5k": (5000, 1000), "digits": (1797, 0.2), "folder": (None, 0.1)}


def carved_test_size(opts: dict, kind: str) -> tuple[int, str, int] | None:
    """How many images the test split will hold (sklearn's rule: ceil(test_size * n) for a
    fraction), how that was worked out, and the images in all; None where it cannot be known
    before reading."""
    if kind not in CARVED_SPLITS:
        return None
    n, test_size = CARVED_SPLITS[kind]
    test_size = opts.get("test_size", test_size)
    if kind == "folder":
        root = Path(os.path.expanduser(str(opts["path"])))
        if not root.is_dir():
            return None  # prepare_data says so, naming the key
        n = sum(1 for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if isinstance(test_size, float) and test_size < 1:
        return math.ceil(test_size * n), f"test_size {test_size} of {n} images", n
    return min(int(test_size), n), f"test_size {int(test_size)} of {n} images", n


def validation_count(val_size, n_train: int) -> int:
    """Images data.<name>.val_size moves from the training split to validation: ceil(share * n)
    for a share below 1 (sklearn's rule, as the test split), else the count itself."""
    return math.ceil(val_size * n_train) if isinstance(val_size, float) and val_size < 1 else int(val_size)


def validation_error(name: str, val_size, n_train: int) -> str | None:
    """The one-line refusal of a validation split too small to score or too large to leave training images."""
    n_val = validation_count(val_size, n_train)
    if 2 <= n_val <= n_train - 2:
        return None
    return (f"config error at data.{name}.val_size: {val_size} of {n_train} training images gives a "
            f"{n_val}-image validation split; it needs at least 2 images and must leave 2 to train on. "
            f"Set data.{name}.val_size to a share such as 0.1 (or 0 for none)")
