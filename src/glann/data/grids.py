"""Image grids people look at: samples, interpolations, reconstructions, nearest neighbours."""

from __future__ import annotations

import numpy as np

from glann.atomic import save_with


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (rows*H', nrow*W', C) mosaic, row-major."""
    n, h, w, c = images.shape
    rows = int(np.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    return grid


def save_image(array: np.ndarray, path, scale: int = 1) -> None:
    from PIL import Image

    arr = array[..., 0] if array.shape[-1] == 1 else array
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    # zlib level 1: slightly larger files than the default level 6, written several times faster
    save_with(path, lambda tmp: img.save(tmp, format="PNG", compress_level=1))


def save_grid(images: np.ndarray, path, nrow: int = 8) -> None:
    size = images.shape[1]
    save_image(make_grid(images, nrow), path, scale=max(1, 64 // size))
