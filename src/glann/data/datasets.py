"""The one prepared format every later step reads, and the step that writes it.

Prepared format (``data/prepared/{dataset}/``):
  train.npz, val.npz, test.npz   ``images`` uint8 (N, H, W, C), ``labels`` int64 (-1 = unlabelled)
  manifest.json         source, shapes, class counts, split seed, sha256 of each file

The loaders behind each dataset kind are in :mod:`glann.data.sources`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from glann.atomic import save_npz, sha256_of, write_json
from glann.data.kinds import KINDS, validation_count, validation_error
from glann.data.sources import LOADERS, stratified_split
from glann.errors import DataError, GlannError

log = logging.getLogger(__name__)


def dataset_type(name: str, opts: dict) -> str:
    kind = opts.get("type", name)
    if kind not in LOADERS:
        raise GlannError(
            f"unknown dataset '{name}' (type '{kind}'). Known: {', '.join(KINDS)}; for your own "
            "images add data.<name>: {type: folder, path: ...}."
        )
    return kind


# --------------------------------------------------------------------------- prepare / load
def carve_validation(name: str, x: np.ndarray, y: np.ndarray, opts: dict):
    """Split a validation set off the training images: (train, train labels, val, val labels).

    ``data.<name>.val_size`` is a share (below 1) or an image count; 0 (the default) keeps every
    training image and leaves the validation split empty. Stratified by label like the test split,
    seeded by ``split_seed``. The validation images are never trained on: they are what budgets
    and settings are selected on (the snapshot curves), so the test split stays for reporting.
    """
    val_size = opts.get("val_size", 0)
    if not val_size:
        return x, y, x[:0], y[:0]
    err = validation_error(name, val_size, len(x))
    if err:
        raise DataError(err)
    tr, va = stratified_split(y, validation_count(val_size, len(x)), opts.get("split_seed", 0))
    return x[tr], y[tr], x[va], y[va]


def prepare(name: str, opts: dict, out_dir) -> dict:
    """Load dataset ``name`` with options ``opts`` and write the prepared format."""
    kind = dataset_type(name, opts)
    xtr, ytr, xte, yte, source = LOADERS[kind](opts)
    xtr, ytr, xva, yva = carve_validation(name, xtr, ytr, opts)
    out_dir = Path(out_dir)
    for split, x, y in (("train", xtr, ytr), ("val", xva, yva), ("test", xte, yte)):
        if x.dtype != np.uint8 or x.ndim != 4:
            raise AssertionError(f"loader {kind} returned {x.dtype} {x.shape}")
        save_npz(out_dir / f"{split}.npz", images=x, labels=y.astype(np.int64))

    def counts(y):
        vals, cnt = np.unique(y, return_counts=True)
        return {str(int(v)): int(c) for v, c in zip(vals, cnt)}

    manifest = {
        "dataset": name,
        "type": kind,
        "source": source,
        "options": opts,
        "split_seed": opts.get("split_seed", 0),
        "image_shape": list(xtr.shape[1:]),
        "num_classes": int(max(ytr.max(), yte.max()) + 1) if (ytr >= 0).any() else 0,
        "val_size": opts.get("val_size", 0),
        "shapes": {"train": list(xtr.shape), "val": list(xva.shape), "test": list(xte.shape)},
        "class_counts": {"train": counts(ytr), "val": counts(yva), "test": counts(yte)},
        "sha256": {f: sha256_of(out_dir / f) for f in ("train.npz", "val.npz", "test.npz")},
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_manifest(data_dir) -> dict:
    path = Path(data_dir) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing: rerun snakemake to prepare the data.") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is corrupt ({exc}): delete {path.parent} and rerun snakemake.") from exc


def load_prepared(data_dir, split: str, verify: bool = True):
    """Images (uint8 NHWC) and labels of a prepared split, checked against the manifest."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    path = data_dir / f"{split}.npz"
    if not path.exists():
        raise DataError(f"{path} is missing: run `glann restore-data {data_dir}` (the trained models are kept "
                        "when the rebuilt data is byte-identical), then rerun snakemake.")
    if verify:
        expected = manifest.get("sha256", {}).get(path.name)
        actual = sha256_of(path)
        if expected != actual:
            raise DataError(
                f"{path} does not match its manifest (sha256 {actual[:12]}... != {str(expected)[:12]}...): "
                f"the file was modified or corrupted. Run `glann restore-data {data_dir}` (the trained models "
                "are kept when the rebuilt data is byte-identical) or `dvc pull` it, then rerun snakemake."
            )
    try:
        with np.load(path) as z:
            return z["images"], z["labels"]
    except Exception as exc:
        raise DataError(f"cannot read {path} ({exc}): delete {data_dir} and rerun snakemake.") from exc
