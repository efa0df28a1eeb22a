"""Metrics checked against independent references."""

import json
import math

import numpy as np
import pytest
import torch

from glann.methods.training import TrainContext
from glann.evaluation.inception import inception_features, load_inception
from glann.evaluation.metrics import (birthday_test, duplicate_threshold, frechet_distance, frechet_distance_to_features,
                          gaussian_stats, mode_coverage)
from glann.errors import WeightsError
from glann.evaluation.summary import aggregate, render_markdown
from glann.evaluation.context import Reference as Ref, Scoring as How


def test_frechet_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_scipy_and_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 16)), rng.normal(1.0, 1.5, size=(400, 16))
    (m1, s1), (m2, s2) = gaussian_stats(a), gaussian_stats(b)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    ours = frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(ref, rel=1e-8)
    assert ours == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-8)


def _frechet_by_symmetric_roots(f, mu2, s2):
    """Independent reference: Tr((S1 S2)^(1/2)) = Tr((S2^(1/2) S1 S2^(1/2))^(1/2)), both by eigh."""
    m1, s1 = gaussian_stats(f)
    w, v = np.linalg.eigh(s2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s1 @ root)
    return np.sum((m1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()


@pytest.mark.parametrize("n", [2, 12, 40, 41, 300])
def test_frechet_to_features_is_exact_for_few_and_many_samples(n):
    """Fewer samples than dimensions (rank-deficient S1, the CPU case) and more (the papers' case)."""
    rng = np.random.default_rng(n)
    d = 40
    real = rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) * 0.3
    fake = rng.normal(0.2, 1.0, size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    mu2, s2 = gaussian_stats(real)
    ours = frechet_distance_to_features(fake, mu2, s2)
    # (the reference takes square roots of rounding-level eigenvalues: ~1e-7 relative)
    assert ours == pytest.approx(_frechet_by_symmetric_roots(fake, mu2, s2), rel=1e-6)
    if n > d:  # the full-rank route is pytorch-fid's own computation
        from pytorch_fid.fid_score import calculate_frechet_distance

        assert ours == pytest.approx(calculate_frechet_distance(*gaussian_stats(fake), mu2, s2), rel=1e-8)
    assert frechet_distance_to_features(real[:n], *gaussian_stats(real[:n])) == pytest.approx(0, abs=1e-6)


def test_frechet_to_features_guards():
    f = np.random.default_rng(0).normal(size=(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_to_features(f[:1], np.zeros(8), np.eye(8))
    with pytest.raises(ValueError, match="8 dimensions"):
        frechet_distance_to_features(f, np.zeros(7), np.eye(7))
    with pytest.raises(ValueError, match="eigenvalue"):  # not a covariance: no real square root
        frechet_distance_to_features(f, np.zeros(8), -np.eye(8))


def _random_inception_file(path):
    """Code-path check only: pytorch-fid's FID InceptionV3 with random weights, saved to a file."""
    from weights import save_random_inception

    save_random_inception(path)


def test_inception_code_path_with_random_weights(tmp_path):
    import pytorch_fid.inception as pfi

    path = tmp_path / "pt_inception-random.pth"
    _random_inception_file(path)
    model = load_inception(path, torch.device("cpu"))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    ours = inception_features(model, imgs, torch.device("cpu"), batch=3)
    assert ours.shape == (6, 2048)
    # pytorch-fid's own network on the same tensors, loaded by its own code from the same weights
    state = torch.load(path, weights_only=True)
    orig = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: state
    try:
        ref_model = pfi.InceptionV3([3]).eval()
    finally:
        pfi.load_state_dict_from_url = orig
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255).repeat(1, 3, 1, 1)
    with torch.no_grad():
        ref = ref_model(x)[0].squeeze(-1).squeeze(-1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    # built without random init: every tensor is the file's, and torch.nn.init is itself again
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    w = torch.empty(64, 32)
    torch.nn.init.kaiming_uniform_(w)
    assert w.abs().max() > 0 and torch.nn.init.zeros_(w).abs().max() == 0


def test_inception_weights_truncated_or_wrong(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="truncated"):
        load_inception(bad, torch.device("cpu"))
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(WeightsError, match="not pytorch-fid's"):
        load_inception(wrong, torch.device("cpu"))
    # one tensor short: refused, never left as the uninitialised memory it was built with
    full = tmp_path / "full.pth"
    _random_inception_file(full)
    state = torch.load(full, weights_only=True)
    state.pop(next(k for k in state if k.endswith("running_var")))
    torch.save(state, wrong)
    with pytest.raises(WeightsError, match="not pytorch-fid's"):
        load_inception(wrong, torch.device("cpu"))


def test_fid_domain_real_vs_real_far_below_real_vs_noise(mnist5k_dir, tmp_path):
    from glann.data.datasets import load_prepared
    from glann.evaluation.evaluator import evaluator_outputs, load_evaluator, train_evaluator

    info = train_evaluator(mnist5k_dir, {"arch": "auto", "epochs": 4, "batch_size": 128,
                                                             "lr": 1e-3}, TrainContext(tmp_path / "ev.pt", 0, torch.device("cpu")))
    assert info["test_accuracy"] > 0.85
    net, _ = load_evaluator(tmp_path / "ev.pt", torch.device("cpu"))
    x, _ = load_prepared(mnist5k_dir, "train")
    xt, yt = load_prepared(mnist5k_dir, "test")
    fa, _ = evaluator_outputs(net, x[:1000], torch.device("cpu"))
    fb, _ = evaluator_outputs(net, x[1000:2000], torch.device("cpu"))
    noise = np.random.default_rng(0).integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8)
    fn, _ = evaluator_outputs(net, noise, torch.device("cpu"))
    real_real = frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
    real_noise = frechet_distance(*gaussian_stats(fa), *gaussian_stats(fn))
    assert real_real * 10 < real_noise
    # mode coverage flags a "generator" that returns real images of one class
    feats, pred = evaluator_outputs(net, xt[yt == 3], torch.device("cpu"))
    cov = mode_coverage(pred, {str(i): 400 for i in range(10)}, 0.02)
    assert cov["classes_covered"] <= 3 and cov["class_kl"] > 1.5
    _, pred_all = evaluator_outputs(net, xt, torch.device("cpu"))
    assert mode_coverage(pred_all, {str(i): 400 for i in range(10)}, 0.02)["classes_covered"] == 10


def test_prdc_identical_sets_give_one():
    from prdc import compute_prdc

    f = np.random.default_rng(0).normal(size=(200, 8))
    m = compute_prdc(f, f.copy(), 5)
    assert m["precision"] == 1 and m["recall"] == 1


def test_birthday_test_finds_planted_duplicates():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 16))
    tau = duplicate_threshold(real, 0.01)
    diverse = rng.normal(size=(2000, 16))
    collapsed = np.repeat(rng.normal(size=(20, 16)), 100, axis=0) + 1e-3 * rng.normal(size=(2000, 16))
    d = birthday_test(diverse, tau, 50, 10)
    c = birthday_test(collapsed, tau, 50, 10)
    assert c["duplicate_batch_rate"] == 1.0 and c["duplicates_per_batch"] > 20
    assert d["duplicates_per_batch"] < 1 and c["support_estimate"] < d["support_estimate"]
    assert c["support_estimate"] < 200  # 20 modes planted


def test_table_renders_mean_and_std_over_two_seeds():
    rows = [{"dataset": "mnist5k", "method": "glann", "seed": s, "fid_domain": v, "precision": 0.5}
            for s, v in ((0, 10.0), (1, 14.0))]
    rows.append({"dataset": "mnist5k", "method": "nsgan", "seed": 0, "fid_domain": 30.0, "diverged": True,
                 "diverged_epoch": 7})
    md = render_markdown(aggregate(rows), ["mnist5k"], ["glann", "nsgan"])
    assert "| glann | 12 ± 2.8 |" in md  # mean 12, sample std sqrt(8) = 2.83
    assert "30 (diverged, epoch 7)" in md


# --------------------------------------------------------------------------- metrics on features with known answers
def _mixture(rng, centres, per, scale=0.3):
    labels = np.repeat(np.arange(len(centres)), per)
    return centres[labels] + scale * rng.normal(size=(len(labels), centres.shape[1])), labels


@pytest.fixture
def synthetic_eval(tmp_path, monkeypatch):
    """evaluate() with the evaluator replaced by given features: real = 10 well-separated
    clusters, fake = fresh draws from clusters 0-4 only (a generator that drops half the modes)."""
    from glann.evaluation import scoring as evaluation
    from glann.atomic import save_npz

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 8)) * 10
    real, _ = _mixture(rng, centres, 100)
    fake_feats, fake_labels = _mixture(rng, centres[:5], 100)
    train, train_labels = _mixture(rng, centres, 60)
    save_npz(tmp_path / "real.npz", mu=real.mean(0), sigma=np.cov(real, rowvar=False), features=real,
             train_features=train, train_labels=train_labels)
    save_npz(tmp_path / "inc.npz", available=np.array(False), reason=np.array("test"))
    save_npz(tmp_path / "samples.npz", images=np.zeros((len(fake_feats), 4, 4, 1), np.uint8))
    (tmp_path / "manifest.json").write_text(json.dumps({"class_counts": {"train": {str(i): 50 for i in range(10)}}}))
    monkeypatch.setattr(evaluation, "load_evaluator", lambda p, d: (None, {"task": "classes", "test_accuracy": 1.0}))
    monkeypatch.setattr(evaluation, "evaluator_outputs", lambda net, x, d: (fake_feats, fake_labels))
    cfg = {"fid": {"num_samples": 10}, "eval": {"prdc_max_samples": 500, "prdc_k": 5, "prd_runs": 3,
                                                "min_class_share": 0.02, "duplicate_quantile": 0.01,
                                                "birthday_batch_size": 20, "birthday_batches": 5,
                                                "kid_subsets": 10, "kid_subset_size": 100,
                                                "bootstrap_resamples": 10, "fid_infinity": True}}
    m = evaluation.evaluate(tmp_path / "samples.npz", Ref(tmp_path, None, tmp_path / "real.npz", tmp_path / "inc.npz"),
                            How(cfg, torch.device("cpu")))
    return m, real, fake_feats


def test_evaluate_on_features_with_known_precision_recall_and_modes(synthetic_eval):

    m, real, fake = synthetic_eval
    # every fake lies on the real manifold, half the real manifold has no fakes
    assert m["precision"] > 0.9 and m["density"] > 0.8
    assert 0.3 < m["recall"] < 0.65 and 0.35 < m["coverage"] < 0.6
    assert m["prd_f1_8"] > 0.9 and m["prd_f8"] < 0.7 and m["prd_f1_8"] > m["prd_f8"] + 0.25
    assert m["classes_covered"] == 5 and m["num_classes"] == 10
    assert m["class_kl"] == pytest.approx(math.log(2), abs=1e-6)  # KL(uniform over 5 || uniform over 10)
    assert m["fid_domain"] == pytest.approx(frechet_distance(*gaussian_stats(fake), *gaussian_stats(real)), rel=1e-9)
    assert m["diverged"] is False
    from glann.evaluation.metrics import fid_infinity  # asked for by eval.fid_infinity: on the same features

    assert m["fid_domain_infinity"] == fid_infinity(fake, real.mean(0), np.cov(real, rowvar=False))["fid_infinity"]
    # the floor: 500 real training features at the samples' n (500); the samples are one constant image
    assert m["floor_n"] == 500 and m["floor_fid_domain"] < m["fid_domain"] and m["kid_domain"] > m["floor_kid_domain"]
    assert len(m["single_class_fid_domain"]) == 10 and m["status"] == "degenerate"  # checked before the classes


def test_mode_coverage_kl_direction():
    """KL(generated || train): finite when generated classes are a subset of the train classes."""
    pred = np.array([0] * 30 + [1] * 10)
    cov = mode_coverage(pred, {"0": 50, "1": 25, "2": 25}, 0.02)
    p, q = np.array([0.75, 0.25]), np.array([0.5, 0.25])
    assert cov["class_kl"] == pytest.approx(float(np.sum(p * np.log(p / q))), abs=1e-6)
    assert cov["classes_covered"] == 2


def test_max_f_beta_weights_recall_for_beta_8():
    """F_8 weighs recall; F_1/8 weighs precision (Sajjadi et al. 2018, Eq. 4)."""
    from glann.evaluation.metrics import max_f_beta

    p, r = np.array([0.9]), np.array([0.2])
    f8, f18 = max_f_beta(p, r, 8.0), max_f_beta(p, r, 1 / 8)
    assert f8 == pytest.approx(65 * 0.9 * 0.2 / (64 * 0.9 + 0.2))
    assert f18 == pytest.approx((1 + 1 / 64) * 0.9 * 0.2 / (0.9 / 64 + 0.2))
    assert f8 < 0.25 < 0.8 < f18


def test_birthday_support_estimate_is_unbiased_for_known_support():
    """s uniform draws from N equally likely modes collide in C(s, 2)/N pairs on average."""
    rng = np.random.default_rng(1)
    n_modes, copies = 500, 100
    modes = rng.normal(size=(n_modes, 16)) * 10
    features = np.repeat(modes, copies, axis=0) + 1e-4 * rng.normal(size=(n_modes * copies, 16))
    out = birthday_test(features, threshold=1e-3, batch_size=50, num_batches=400, seed=0)
    assert not out["support_is_lower_bound"]
    assert out["support_estimate"] == pytest.approx(n_modes, rel=0.12)
    assert out["duplicates_per_batch"] == pytest.approx(50 * 49 / 2 / n_modes, rel=0.12)


def test_summary_on_two_datasets_and_two_seeds(tmp_path):
    """summary.json holds means, table.csv mean and sample std, per (dataset, method), computed by hand."""
    from glann.evaluation.summary import RunFiles, summarize

    values = {("mnist5k", "glann"): (10.0, 14.0), ("mnist5k", "vae"): (40.0, 50.0),
              ("digits", "glann"): (1.0, 2.0), ("digits", "vae"): (7.0, 9.0)}
    files = []
    for (d, m), vals in values.items():
        for seed, v in enumerate(vals):
            p = tmp_path / "results" / d / m / f"seed{seed}" / "metrics.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps({"fid_domain": v, "recall": v / 100}))
            files.append(p)
    flat = summarize(RunFiles(files), tmp_path / "summary", ["mnist5k", "digits"], ["glann", "vae"])
    saved = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert saved == flat
    for (d, m), (a, b) in values.items():
        assert saved[f"{d}/{m}/fid_domain"] == pytest.approx((a + b) / 2)
        assert saved[f"{d}/{m}/recall"] == pytest.approx((a + b) / 200)
    rows = {(r.split(",")[0], r.split(",")[1], r.split(",")[2]): r.split(",")
            for r in (tmp_path / "summary" / "table.csv").read_text().splitlines()[1:]}
    for (d, m), (a, b) in values.items():
        row = rows[(d, m, "fid_domain")]
        assert float(row[3]) == pytest.approx((a + b) / 2)
        assert float(row[4]) == pytest.approx(abs(a - b) / math.sqrt(2), rel=1e-5)  # sample std of 2 values
        assert row[5] == "2"
    md = (tmp_path / "summary" / "table.md").read_text()
    assert "| glann | 12 ± 2.8 | 1.5 ± 0.71 |" in md


def test_make_evaluator_picks_lenet_up_to_28_pixels_and_a_resnet_above():
    import torch

    from glann.evaluation.evaluator import LeNetEvaluator, ResNetEvaluator, make_evaluator

    for shape, arch, kind in (((16, 16, 1), "auto", LeNetEvaluator), ((28, 28, 1), "auto", LeNetEvaluator),
                              ((29, 29, 1), "auto", ResNetEvaluator),  # a folder dataset's size
                              ((32, 32, 3), "auto", ResNetEvaluator), ((64, 64, 3), "auto", ResNetEvaluator),
                              ((28, 28, 1), "resnet", ResNetEvaluator), ((32, 32, 3), "lenet", LeNetEvaluator)):
        net = make_evaluator(shape, 7, arch).eval()
        assert type(net) is kind, (shape, arch)
        x = torch.zeros(2, shape[2], shape[0], shape[1])
        assert net(x).shape == (2, 7) and net.features(x).shape == (2, 128)
