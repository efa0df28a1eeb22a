"""Folder images of any mode to uint8 arrays, by one documented rule per mode (config/README.md,
``folder``), and the names of the files that cannot be decoded."""

from __future__ import annotations

import numpy as np


BACKGROUNDS = {"white": 255, "black": 0}


def to_channels(im, channels: int, alpha: str = "white") -> np.ndarray:
    """A PIL image of any mode as uint8 H x W x ``channels``, by documented rules (config/README.md):

    - EXIF orientation applied (a photo is stored as it is shown);
    - 16-bit and 32-bit greyscale (``I;16*``, ``I``) rescaled from 0..65535 to 0..255 (PIL's
      ``convert("L")`` would clamp them: a 16-bit image turns white); float greyscale (``F``)
      read as 0..1;
    - palette (``P``), CMYK, YCbCr and the other modes converted by PIL to RGB(A) first;
    - an alpha channel (RGBA, LA, PA, a palette's transparency) composited over ``alpha``'s
      colour (``white`` or ``black``), or refused with ``alpha: refuse``;
    - then RGB -> grey by ITU-R 601 luma (PIL's ``L``) or grey -> RGB by repetition.
    """
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(grey / 65535.0 * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(grey)
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        if alpha == "refuse":
            raise ValueError("the image has an alpha channel and data.<name>.alpha is refuse")
        bg = Image.new("RGBA", im.size, (BACKGROUNDS[alpha],) * 3 + (255,))
        im = Image.alpha_composite(bg, im).convert("RGB")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    im = im.convert("L" if channels == 1 else "RGB")
    return np.asarray(im, dtype=np.uint8)


def read_folder_image(path, size: int, channels: int, alpha: str = "white") -> np.ndarray:
    """One folder image: decoded, converted (:func:`to_channels`), centre-cropped and resized."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        arr = to_channels(im, channels, alpha)
    out = resize_square(Image.fromarray(arr), size)
    return np.asarray(out, dtype=np.uint8).reshape(size, size, channels)



def name_files(bad: list, first: int = 10) -> str:
    """The first ``first`` skipped files with their reasons, and how many more."""
    shown = "; ".join(f"{f} ({exc})" for f, exc in bad[:first])
    return shown + (f"; and {len(bad) - first} more" if len(bad) > first else "")


def resize_square(img, size: int):
    """Centre-crop a PIL image to a square, then resize to size x size."""
    from PIL import Image

    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return img
