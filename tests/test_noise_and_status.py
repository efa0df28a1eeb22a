"""KID against an independent computation, the bootstrap intervals, the real-vs-real floor and the
mode-dropping curve, and the one place that decides a run's status (glann.evaluation.status)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glann.evaluation.metrics import bootstrap_interval, kernel_inception_distance, polynomial_mmd2
from glann.evaluation.scoring import noise_of_metrics, sample_spread
from glann.evaluation.status import decide, exploded_loss, threshold
from glann.evaluation.summary import aggregate, render_markdown, row_mark
from glann.evaluation.verdicts import holds

CFG = {"eval": {"kid_subsets": 20, "kid_subset_size": 60, "bootstrap_resamples": 30}}


def mmd2_loops(x, y):
    """The unbiased MMD² with k(a, b) = (a·b/d + 1)³, written as the O(n²) double sums."""
    d = len(x[0])

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_polynomial_mmd2_matches_the_double_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 5)), rng.normal(0.4, 1.2, size=(9, 5))
    assert polynomial_mmd2(x, y) == pytest.approx(mmd2_loops(x.tolist(), y.tolist()), rel=1e-10)
    # symmetric, and the unbiased estimator is not the biased one (diagonals excluded)
    assert polynomial_mmd2(x, y) == pytest.approx(polynomial_mmd2(y, x), rel=1e-12)
    d = x.shape[1]
    biased = ((x @ x.T / d + 1) ** 3).mean() + ((y @ y.T / d + 1) ** 3).mean() - 2 * ((x @ y.T / d + 1) ** 3).mean()
    assert abs(polynomial_mmd2(x, y) - biased) > 1e-3


def test_kid_averages_subsets_drawn_as_documented():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)), rng.normal(0.3, 1, size=(30, 4))
    out = kernel_inception_distance(x, y, subsets=5, subset_size=25, seed=7)
    draw = np.random.default_rng(7)
    vals = []
    for _ in range(5):
        xi = x[draw.choice(40, 25, replace=False)]
        yi = y[draw.choice(30, 25, replace=False)]
        vals.append(mmd2_loops(xi.tolist(), yi.tolist()))
    assert out["mean"] == pytest.approx(np.mean(vals), rel=1e-9)
    assert out["std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
    assert out["subset_size"] == 25 and out["subsets"] == 5
    # the subset size is capped at the smaller set
    assert kernel_inception_distance(x, y, subsets=2, subset_size=1000)["subset_size"] == 30


def test_kid_known_cases():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(600, 8))
    same = rng.normal(size=(600, 8))
    near, far = same + 0.1, same + 1.0
    k_same = kernel_inception_distance(same, real, subsets=30, subset_size=300)
    k_near = kernel_inception_distance(near, real, subsets=30, subset_size=300)
    k_far = kernel_inception_distance(far, real, subsets=30, subset_size=300)
    assert abs(k_same["mean"]) < 3 * k_same["std"]  # one distribution: 0 within its std (unbiased)
    assert k_far["mean"] > k_near["mean"] > k_same["mean"]
    assert k_far["mean"] > 10 * k_near["mean"]


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 3)), rng.normal(0.5, 1, size=(150, 3))
    lo, hi = bootstrap_interval(polynomial_mmd2, x, y, resamples=50, seed=4)
    assert lo < polynomial_mmd2(x, y) < hi
    assert [lo, hi] == bootstrap_interval(polynomial_mmd2, x, y, resamples=50, seed=4)
    assert [lo, hi] != bootstrap_interval(polynomial_mmd2, x, y, resamples=50, seed=5)
    # more samples: a narrower interval
    x2, y2 = rng.normal(size=(2000, 3)), rng.normal(0.5, 1, size=(1500, 3))
    lo2, hi2 = bootstrap_interval(polynomial_mmd2, x2, y2, resamples=50, seed=4)
    assert hi2 - lo2 < hi - lo


def test_floor_and_mode_drop_curve():
    """The floor is real-vs-real at the samples' n; the curve rises as classes are dropped."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(10, 6)) * 5
    labels = np.repeat(np.arange(10), 80)
    train = centres[labels] + rng.normal(size=(800, 6))
    test = centres[np.repeat(np.arange(10), 30)] + rng.normal(size=(300, 6))
    fake = train[:500] + 3.0
    out = noise_of_metrics(fake, test, train, CFG, seed=0, train_labels=labels)
    assert out["floor_n"] == 500
    curve = out["mode_drop_fid_domain"]
    assert len(curve) == 10 and curve[-1] == pytest.approx(out["floor_fid_domain"], rel=0.5)
    assert curve[0] > curve[4] > curve[9]  # fewer classes kept: further from the test split
    single = out["single_class_fid_domain"]
    assert len(single) == 10 and single[0] == pytest.approx(curve[0], rel=0.3) and min(single) > curve[9]
    assert out["fid_domain_ci"][0] < out["fid_domain_ci"][1]
    assert out["floor_kid_domain"] < out["kid_domain"]
    assert noise_of_metrics(fake, test, train, {"eval": {**CFG["eval"], "bootstrap_resamples": 0}},
                            seed=0)["fid_domain_ci"] is None


def test_sample_spread():
    assert sample_spread(np.zeros((20, 4, 4, 1), np.uint8)) == 0.0
    imgs = np.zeros((2, 2, 2, 1), np.uint8)
    imgs[1] = 255
    assert sample_spread(imgs) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------- status
LEARNED = {"fid_domain": 30.0, "classes_covered": 10, "num_classes": 10, "sample_spread": 0.3,
           "single_class_fid_domain": [900, 700, 500, 400, 300, 310, 150, 100, 50, 5], "image_shape": [28, 28, 1]}


def rows(col, values):
    return [{"epoch": str(i + 1), col: str(v)} for i, v in enumerate(values)]


def test_status_learned_and_each_mark_in_order():
    assert decide(LEARNED)["status"] == "learned"
    assert threshold(LEARNED) == 305  # the median of the single-class sets' fid_domain
    over = decide({**LEARNED, "fid_domain": 306.0})
    assert over["status"] == "did_not_learn" and "threshold 305" in over["reason"]
    assert decide({**LEARNED, "fid_domain": 304.0})["status"] == "learned"
    assert threshold({"single_class_fid_domain": [3.0, 9.0, 4.0]}) == 4.0
    assert threshold({}) is None and decide({**LEARNED, "single_class_fid_domain": None,
                                              "fid_domain": 1e6})["status"] == "learned"
    few = decide({**LEARNED, "classes_covered": 8})
    assert few["status"] == "did_not_learn" and "8 of 10" in few["reason"]
    assert decide({**LEARNED, "classes_covered": 9})["status"] == "learned"
    flat = decide({**LEARNED, "sample_spread": 0.0, "classes_covered": 1})
    assert flat["status"] == "degenerate"  # checked before the classes
    div = decide({**LEARNED, "diverged": True, "diverged_epoch": 3, "sample_spread": 0.0})
    assert div == {"status": "diverged", "epoch": 3, "reason": "non-finite loss in epoch 3"}
    assert decide({**LEARNED, "fid_domain": float("nan")})["status"] == "did_not_learn"


def test_exploded_losses():
    # NS-GAN at lr 10: a discriminator loss of 14,192 (a BCE mean) is an explosion from epoch 1
    hit = decide(LEARNED, {"losses.csv": rows("d_loss", [14192.0, 9000.0])}, "nsgan")
    assert hit["status"] == "diverged" and hit["epoch"] == 1 and "d_loss" in hit["reason"]
    # growth by three orders of magnitude over the first epoch
    assert exploded_loss(rows("g_loss", [0.7, 2.0, 900.0])) is None
    assert exploded_loss(rows("g_loss", [0.7, 2.0, 1001.0]))["epoch"] == 3
    summed = {"pixels": 784, "summed": ("loss",)}  # pixel IMLE's loss: bound 784,000, growth 5,000
    assert exploded_loss(rows("loss", [5.0, 5001.0]), **summed)["epoch"] == 2
    assert exploded_loss(rows("loss", [5.0, 4999.0]), **summed) is None
    assert exploded_loss(rows("loss", [5.0, 4999.0]))["epoch"] == 2  # a mean: the absolute bound 1,000
    # the VAE's ELBO sums over the pixels: -550 on 28x28 is normal, its bound scales
    vae = rows("elbo", [-550.0, -200.0, -120.0])
    assert decide(LEARNED, {"losses.csv": vae}, "vae")["status"] == "learned"
    assert decide(LEARNED, {"losses.csv": rows("elbo", [-550.0, -8e5])}, "vae")["status"] == "diverged"
    assert exploded_loss(rows("d_loss", [1.0, float("inf")]))["epoch"] == 2
    # a WGAN critic with a large clip starts in the thousands (measured: -2,200 in epoch 1): growth only
    wgan = rows("g_loss", [-2199.6, -4167.5, 274.3])
    assert decide(LEARNED, {"losses.csv": wgan}, "wgan")["status"] == "learned"
    assert decide(LEARNED, {"losses.csv": wgan}, "nsgan")["status"] == "diverged"
    assert decide(LEARNED, {"losses.csv": rows("d_loss", [-0.5, -1001.0])}, "wgan_gp")["status"] == "diverged"
    # non-loss columns (BEGAN's k, learning rates, seconds) are not judged
    assert exploded_loss([{"epoch": "1", "k": "5e9", "seconds": "1e5"}]) is None


def test_row_marks_and_table():
    assert row_mark(["learned", "learned"]) == ""
    assert row_mark(["did_not_learn"]) == "did not learn"
    assert row_mark(["learned", "did_not_learn", "learned"]) == "did not learn: 1 of 3 seeds"
    base = {"n_samples": 100, "n_test": 50, "floor_fid_domain": 2.0, "floor_kid_domain": 0.001,
            "fid_domain_ci": [9.0, 11.0], "kid_domain_ci": [0.01, 0.02]}
    runs = [{"dataset": "d", "method": "glann", "seed": 0, "fid_domain": 10.0, "kid_domain": 0.015,
             "status": "learned", **base},
            {"dataset": "d", "method": "nsgan", "seed": 0, "fid_domain": 2500.0, "kid_domain": 3.0,
             "status": "did_not_learn", "status_reason": "1 of 10 classes covered (< 9)",
             **{**base, "fid_domain_ci": [2400.0, 2600.0]}},
            {"dataset": "d", "method": "vae", "seed": 0, "fid_domain": 10.5, "kid_domain": 0.016,
             "status": "learned", **{**base, "fid_domain_ci": [9.5, 11.5]}}]
    agg = aggregate(runs)
    md = render_markdown(agg, ["d"], ["glann", "nsgan", "vae"])
    assert "2.5e+03 (**did not learn**)" in md
    assert "| glann | 10 |" in md  # a learned row: no mark
    assert "| d | 100 | 50 | 2 | 0.001 |" in md  # n and the floor beside the table
    assert "1 of 10 classes covered" in md
    assert "d, fid_domain: best **glann**" in md
    assert holds(agg[("d", "glann")], agg[("d", "vae")], "fid_domain").startswith("within noise")
    assert holds(agg[("d", "glann")], agg[("d", "nsgan")], "fid_domain") == "yes"
    assert "| nsgan (did not learn) | 2.5e+03 | 100 | not a result |" in md  # the interval's half-width


def test_holds_needs_both_seed_spread_and_bootstrap():
    best = {"fid_domain": (10.0, 1.0, 3), "fid_domain_ci": [9.0, 11.0]}
    assert holds(best, {"fid_domain": (12.5, 1.0, 3), "fid_domain_ci": [11.5, 13.0]}, "fid_domain") == "yes"
    assert holds(best, {"fid_domain": (11.5, 1.0, 3), "fid_domain_ci": [11.2, 12.0]},
                 "fid_domain") == "within noise (seeds)"
    assert holds(best, {"fid_domain": (13.0, 1.0, 3), "fid_domain_ci": [10.5, 15.0]},
                 "fid_domain") == "within noise (bootstrap)"
    # resampling with replacement puts each interval above its estimate, by an amount of its own:
    # the intervals are compared by their widths around the estimates, not where they lie
    shifted = {"fid_domain": (10.0, 0.0, 1), "fid_domain_ci": [13.0, 15.0]}
    assert holds(shifted, {"fid_domain": (12.5, 0.0, 1), "fid_domain_ci": [12.6, 14.6]}, "fid_domain") == "yes"
    assert holds(shifted, {"fid_domain": (11.5, 0.0, 1), "fid_domain_ci": [16.0, 18.0]},
                 "fid_domain") == "within noise (bootstrap)"
    assert math.isclose(threshold({"single_class_fid_domain": [3.0]}), 3.0)


def test_tf_rmsprop_follows_tf1_not_pytorch():
    """v1 WGAN's `optimizer: rmsprop` is TF1's RMSProp: ms starts at ones, epsilon inside the root."""
    import torch

    from glann.methods.optim import TFRMSProp

    w0 = np.array([1.0, -2.0, 0.5])
    grads = [np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.4, -3.0]), np.array([-0.2, 0.0, 1.0])]
    w = torch.tensor(w0, requires_grad=True)
    opt = TFRMSProp([w], lr=0.01)
    ms, ref = np.ones(3), w0.copy()
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
        ms = 0.9 * ms + 0.1 * g ** 2
        ref = ref - 0.01 * g / np.sqrt(ms + 1e-10)
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12)
    # PyTorch's RMSprop (ms from zeros) moves every weight by lr / sqrt(0.1) on its first step,
    # whatever the gradient's size; TF by lr g / sqrt(0.9 + 0.1 g²)
    v = torch.tensor(w0, requires_grad=True)
    torch_opt = torch.optim.RMSprop([v], lr=0.01, alpha=0.9, eps=1e-10)
    v.grad = torch.tensor(grads[0])
    torch_opt.step()
    w1 = torch.tensor(w0, requires_grad=True)
    tf_opt = TFRMSProp([w1], lr=0.01)
    w1.grad = torch.tensor(grads[0])
    tf_opt.step()
    np.testing.assert_allclose(np.abs(v.detach().numpy() - w0), 0.01 / np.sqrt(0.1), rtol=1e-6)
    np.testing.assert_allclose(np.abs(w1.detach().numpy() - w0), 0.01 * np.abs(grads[0]) / np.sqrt(0.9 + 0.1 * grads[0] ** 2),
                               rtol=1e-9)


def test_the_table_says_where_fid_and_kid_order_rows_differently():
    base = {"n_samples": 10, "n_test": 10, "status": "learned"}
    runs = [{"dataset": "d", "method": "a", "seed": 0, "fid_domain": 10.0, "kid_domain": 0.5, **base},
            {"dataset": "d", "method": "b", "seed": 0, "fid_domain": 12.0, "kid_domain": 0.3, **base},
            {"dataset": "d", "method": "c", "seed": 0, "fid_domain": 20.0, "kid_domain": 0.9, **base}]
    md = render_markdown(aggregate(runs), ["d"], ["a", "b", "c"])
    assert "d: fid_domain and KID order these learned rows differently: a vs b: fid_domain 10 vs 12, KID 0.5 vs 0.3." in md
    assert "a vs c" not in md and "b vs c" not in md


def test_the_table_sets_glann_against_each_method_and_says_which_gaps_hold():
    """The converged study's verdict is generated: GLANN against every other row, lower or higher by
    how much, and whether the gap exceeds the seeds' spread and the bootstrap; a row that did not
    learn is no comparison."""
    def run(method, seed, fid, kid, status="learned", ci=None):
        return {"dataset": "d", "method": method, "seed": seed, "fid_domain": fid, "kid_domain": kid,
                "n_samples": 10, "n_test": 10, "status": status,
                "fid_domain_ci": ci or [fid - 1, fid + 1], "kid_domain_ci": ci or [kid - 1, kid + 1]}

    runs = [run("glann", 0, 10.0, 5.0), run("glann", 1, 12.0, 7.0),
            run("far", 0, 30.0, 40.0), run("far", 1, 32.0, 42.0),        # worse, beyond the noise
            run("near", 0, 11.0, 4.0), run("near", 1, 12.5, 5.0),        # within the seeds' spread
            run("gone", 0, 700.0, 900.0, "degenerate"), run("gone", 1, 650.0, 800.0, "degenerate")]
    md = render_markdown(aggregate(runs), ["d"], ["glann", "far", "near", "gone"])
    section = md.split("## GLANN against each method", 1)[1]
    assert "| far | 31 ± 1.4 | lower by 20 | yes | 41 ± 1.4 | lower by 35 | yes |" in section
    assert "| near | 11.8 ± 1.1 | lower by 0.75 | within noise (seeds and bootstrap) | 4.5 ± 0.71 | higher by 1.5 | " \
           "within noise (seeds and bootstrap) |" in section
    assert "| gone (degenerate) |" in section and "not a result" in section
    lonely = render_markdown(aggregate([run("glann", 0, 10.0, 5.0, "did_not_learn"), run("far", 0, 30.0, 40.0)]),
                             ["d"], ["glann", "far"])
    assert "GLANN against each method" not in lonely


def test_every_method_is_read_off_its_curve_at_glanns_training_seconds():
    """"At GLANN's training compute": per seed, each method's last snapshot within GLANN's training
    seconds (GLANN's last snapshot), never a later one; a method whose first snapshot comes later says so."""
    from glann.evaluation.verdicts import equal_compute_section

    def pts(method, seed, spans):
        return [{"dataset": "d", "method": method, "seed": seed, "split": "val", "epoch": e, "train_seconds": t,
                 "fid_domain": f} for e, t, f in spans]

    rows = (pts("glann", 0, [(5, 100.0, 40.0), (10, 110.0, 20.0)]) + pts("glann", 1, [(10, 90.0, 25.0)])
            + pts("flow", 0, [(30, 40.0, 60.0), (60, 110.0, 30.0), (90, 150.0, 10.0)])
            + pts("flow", 1, [(30, 40.0, 50.0), (60, 95.0, 9.0)]) + pts("wgan_gp", 0, [(30, 120.0, 12.0)]))
    md = "\n".join(equal_compute_section(rows, ["d"], ["glann", "flow", "wgan_gp"]))
    assert "seed 0 110 s (fid_domain 20), seed 1 90 s (fid_domain 25)" in md
    assert "| flow | 30 (epoch 60, 110 s) | 50 (epoch 30, 40 s) |" in md
    assert "| wgan_gp | no snapshot by then (first at 120 s) | - |" in md
    assert equal_compute_section(pts("flow", 0, [(1, 1.0, 1.0)]), ["d"], ["glann", "flow"]) == []


def test_kid_through_kernel_matrices_is_the_direct_computation(monkeypatch):
    """CubicKernels: the MMD² of subsets and of resamples with repeats, from the kernel matrices
    kept once, equals polynomial_mmd2 of the gathered vectors; KID and its bootstrap interval are
    the same numbers with the matrices kept (sets up to KERNEL_LIMIT) and without."""
    from glann.evaluation import metrics as M

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.3, 1.2, size=(40, 5))
    k = M.CubicKernels(x, y)
    for ix, iy in ((rng.choice(60, 30, replace=False), rng.choice(40, 20, replace=False)),
                   (rng.integers(60, size=60), rng.integers(40, size=40))):  # repeats: a bootstrap resample
        assert k.mmd2(ix, iy) == pytest.approx(M.polynomial_mmd2(x[ix], y[iy]), rel=1e-12, abs=1e-15)
    kept = M.kernel_inception_distance(x, y, 20, 25, seed=4)
    kept_ci = M.kid_bootstrap_interval(x, y, 30, seed=5)
    assert kept_ci == pytest.approx(M.bootstrap_interval(M.polynomial_mmd2, x, y, 30, seed=5), rel=1e-12)
    monkeypatch.setattr(M, "KERNEL_LIMIT", 10)  # above the limit: each subset computed directly
    direct = M.kernel_inception_distance(x, y, 20, 25, seed=4)
    assert kept["mean"] == pytest.approx(direct["mean"], rel=1e-12) and kept["std"] == pytest.approx(direct["std"], rel=1e-9)
    assert M.kid_bootstrap_interval(x, y, 30, seed=5) == pytest.approx(kept_ci, rel=1e-12)
    with pytest.raises(ValueError, match="KID: need two sets"):
        M.kernel_inception_distance(x[:1], y)
