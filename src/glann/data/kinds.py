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


READABLE_CHECK_LIMIT = 20000  # folders up to this many files are decoded at the start check


def folder_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def unreadable_images(files) -> list[tuple[Path, str]]:
    """The files PIL cannot decode, with the reason (each is opened and fully decoded)."""
    from PIL import Image

    bad = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
            bad.append((f, f"{type(exc).__name__}: {exc}"))
    return bad


def folder_readable(opts: dict) -> tuple[int, list] | None:
    """(readable images, [(file, reason) skipped]) of a folder dataset, decoding every file when
    there are at most READABLE_CHECK_LIMIT (else every file is counted); None without the folder."""
    root = Path(os.path.expanduser(str(opts.get("path"))))
    if not opts.get("path") or not root.is_dir():
        return None
    files = folder_files(root)
    bad = unreadable_images(files) if len(files) <= READABLE_CHECK_LIMIT else []
    return len(files) - len(bad), bad


def carved_test_size(opts: dict, kind: str) -> tuple[int, str, int] | None:
    """How many images the test split will hold (sklearn's rule: ceil(test_size * n) for a
    fraction), how that was worked out, and the images in all; None where it cannot be known
    before reading."""
    if kind not in CARVED_SPLITS:
        return None
    n, test_size = CARVED_SPLITS[kind]
    test_size = opts.get("test_size", test_size)
    if kind == "folder":
        readable = folder_readable(opts)
        if readable is None:
            return None  # prepare_data says so, naming the key
        n = readable[0]  # readable images, not file names: what prepare_data will keep
    what = "readable images" if kind == "folder" else "images"
    if isinstance(test_size, float) and test_size < 1:
        return math.ceil(test_size * n), f"test_size {test_size} of {n} {what}", n
    return min(int(test_size), n), f"test_size {int(test_size)} of {n} {what}", n


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
