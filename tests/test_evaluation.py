"""Metrics checked against independent references."""

import numpy as np
import pytest
import torch

from glann.evaluation import (birthday_test, duplicate_threshold, frechet_distance, gaussian_stats,
                              inception_features, load_inception, mode_coverage)
from glann.errors import WeightsError
from glann.summary import aggregate, render_markdown


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


def _random_inception_file(path):
    """Code-path check only: pytorch-fid's FID InceptionV3 with random weights, saved to a file."""
    from glann.evaluation import save_random_inception

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


def test_inception_weights_truncated_or_wrong(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="truncated"):
        load_inception(bad, torch.device("cpu"))
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(WeightsError, match="not pytorch-fid's"):
        load_inception(wrong, torch.device("cpu"))


def test_fid_domain_real_vs_real_far_below_real_vs_noise(mnist5k_dir, tmp_path):
    from glann.datasets import load_prepared
    from glann.evaluation import evaluator_outputs, load_evaluator, train_evaluator

    info = train_evaluator(mnist5k_dir, tmp_path / "ev.pt", {"arch": "auto", "epochs": 4, "batch_size": 128,
                                                             "lr": 1e-3}, 0, torch.device("cpu"))
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
