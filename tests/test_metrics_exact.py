"""Metric and summary helpers against hand computations (written from mutation-testing survivors)."""

import math

import numpy as np
import pytest

from glann.methods.losses import default_levels
from glann.evaluation.metrics import birthday_test, duplicate_threshold, max_f_beta, prd_curve, prd_from_features
from glann.evaluation.summary import aggregate, format_cell, mean_std, render_csv


def test_prd_curve_is_sajjadis_definition():
    """alpha(l) = sum_i min(l p_ref(i), p_eval(i)), beta(l) = alpha(l) / l, for l = tan(angle)."""
    ref, ev = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.1, 0.4, 0.4])
    p, r = prd_curve(ref, ev, num_angles=7, eps=1e-10)
    assert p.shape == r.shape == (7,)
    angles = np.linspace(1e-10, math.pi / 2 - 1e-10, 7)
    for k, a in enumerate(angles):
        lam = math.tan(a)
        alpha = sum(min(lam * x, y) for x, y in zip(ref, ev))
        assert p[k] == pytest.approx(min(alpha, 1.0), abs=1e-9)
        assert r[k] == pytest.approx(min(alpha / lam, 1.0), abs=1e-9)
    assert p[0] == pytest.approx(0, abs=1e-8) and r[-1] == pytest.approx(0, abs=1e-8)
    # the largest precision is the shared mass: sum min(ref, eval) at lambda -> inf
    assert p.max() == pytest.approx(np.minimum(ref * 1e12, ev).sum(), abs=1e-6)


def test_prd_from_features_uses_sajjadis_clustering_settings():
    """Sajjadi et al.'s settings, computed independently: 20 clusters of real+fake together by
    mini-batch k-means with 10 initialisations, histograms as densities, 1001 angles, the curve
    averaged over 10 clusterings (run r seeded seed + r)."""
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(120, 5)), rng.normal(0.3, 1.2, size=(90, 5))
    curves = []
    for r in range(10):
        labels = MiniBatchKMeans(n_clusters=20, n_init=10, random_state=7 + r).fit(
            np.vstack([real, fake])).labels_
        ref_hist = np.histogram(labels[:120], bins=20, range=(0, 20), density=True)[0]
        eval_hist = np.histogram(labels[120:], bins=20, range=(0, 20), density=True)[0]
        lam = np.tan(np.linspace(1e-10, math.pi / 2 - 1e-10, 1001))
        alpha = np.array([np.minimum(l * ref_hist, eval_hist).sum() for l in lam])
        curves.append((np.clip(alpha, 0, 1), np.clip(alpha / lam, 0, 1)))
    p, r = prd_from_features(real, fake, seed=7)
    assert p.shape == r.shape == (1001,)
    np.testing.assert_allclose(p, np.mean([c[0] for c in curves], 0), atol=1e-12)
    np.testing.assert_allclose(r, np.mean([c[1] for c in curves], 0), atol=1e-12)


def test_prd_from_features_on_planted_modes():
    """20 far-apart modes; the fake set covers 10 of them: precision reaches 1, recall 1/2."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 8)) * 50
    real = np.repeat(centres, 15, axis=0) + rng.normal(size=(300, 8))
    fake = np.repeat(centres[:10], 20, axis=0) + rng.normal(size=(200, 8))
    p, r = prd_from_features(real, fake)
    assert p.max() == pytest.approx(1.0, abs=0.03)
    assert r.max() == pytest.approx(0.5, abs=0.05)
    assert max_f_beta(p, r, 8.0) < 0.55 < max_f_beta(p, r, 1 / 8)


def test_max_f_beta_is_zero_where_both_are_zero():
    assert max_f_beta(np.array([0.0, 0.5]), np.array([0.0, 0.5]), 8.0) == pytest.approx(0.5)
    assert max_f_beta(np.array([0.0]), np.array([0.0]), 8.0) == 0.0


def test_duplicate_threshold_by_hand_with_and_without_subsampling():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(60, 4))
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert duplicate_threshold(feats, 0.25) == pytest.approx(np.quantile(d.min(1), 0.25), rel=1e-9)
    sub = feats[np.random.default_rng(7).choice(60, 40, replace=False)]
    ds = ((sub[:, None] - sub[None]) ** 2).sum(-1)
    np.fill_diagonal(ds, np.inf)
    assert duplicate_threshold(feats, 0.5, max_n=40, seed=7) == pytest.approx(np.quantile(ds.min(1), 0.5), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_birthday_counts_by_hand(seed):
    """The batches are the seed's draws: three seeds of 60 batches each match a hand count."""
    feats = np.repeat(np.arange(5.0)[:, None] * 10, 4, axis=0)  # 5 modes, 4 copies each
    out = birthday_test(feats, threshold=1.0, batch_size=6, num_batches=60, seed=seed)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(60):
        idx = rng.choice(20, 6, replace=False)
        modes = idx // 4
        pairs.append(sum(modes[i] == modes[j] for i in range(6) for j in range(i + 1, 6)))
    assert out["duplicates_per_batch"] == pytest.approx(np.mean(pairs))
    assert out["duplicate_batch_rate"] == pytest.approx(np.mean([p > 0 for p in pairs]))
    assert out["support_estimate"] == pytest.approx(15 * 60 / max(sum(pairs), 1))
    assert out["birthday_batch_size"] == 6 and out["birthday_batches"] == 60
    assert out["support_is_lower_bound"] == (sum(pairs) == 0)


def test_mean_std_and_cells():
    assert mean_std([1.0, None, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_std([5.0]) == (5.0, 0.0, 1)
    assert mean_std([None]) == (None, None, 0)
    assert format_cell(None, None, 0) == "n/a"
    assert format_cell(12.345, 0.0, 1) == "12.3"
    assert format_cell(12.345, 1.234, 3) == "12.3 ± 1.2"
    assert format_cell(12345.0, 678.0, 2) == "1.23e+04 ± 6.8e+02"
    assert format_cell(12345.0, 0.0, 1) == "1.23e+04"


def test_aggregate_and_csv_by_hand():
    rows = [{"dataset": "a", "method": "m", "seed": 1, "fid_domain": 4.0, "train_device": "cpu"},
            {"dataset": "a", "method": "m", "seed": 0, "fid_domain": 2.0, "diverged": True, "diverged_epoch": 3,
             "train_device": "cpu"},
            {"dataset": "b", "method": "m", "seed": 0, "fid_domain": 10.0}]
    agg = aggregate(rows)
    assert set(agg) == {("a", "m"), ("b", "m")}
    assert agg[("a", "m")]["fid_domain"] == (3.0, pytest.approx(math.sqrt(2)), 2)
    assert agg[("a", "m")]["seeds"] == [0, 1] and agg[("a", "m")]["diverged"] == [3]
    assert agg[("a", "m")]["device"] == "cpu" and agg[("b", "m")]["device"] == ""
    assert agg[("b", "m")]["fid_domain"] == (10.0, 0.0, 1) and agg[("b", "m")]["diverged"] == []
    lines = render_csv(agg).splitlines()
    assert lines[0] == "dataset,method,metric,mean,std,n_seeds,diverged_epochs,status"
    assert "a,m,fid_domain,3,1.41421,2,3,diverged: 1 of 2 seeds" in lines and "b,m,fid_domain,10,0,1,,learned" in lines
    assert "a,m,precision,,,0,3,diverged: 1 of 2 seeds" in lines


@pytest.mark.parametrize("size,levels", [(4, 1), (8, 1), (16, 2), (28, 2), (32, 3), (64, 4)])
def test_default_pyramid_levels(size, levels):
    assert default_levels(size) == levels


def test_loss_curves_for_dvc_plots(tmp_path):
    """One epoch,loss CSV per training job; the VAE's -ELBO so that lower is better everywhere."""
    from glann.evaluation.summary import curve_name, write_curves

    run = tmp_path / "results/digits/vae/seed1"
    run.mkdir(parents=True)
    (run / "losses.csv").write_text("epoch,elbo,nll,kl,seconds\n1,-120.5,100,20.5,1\n2,-100.25,90,10.25,1\n")
    glo = tmp_path / "results/digits/glann/seed0"
    glo.mkdir(parents=True)
    (glo / "glo_losses.csv").write_text("epoch,loss,lr_codes\n1,0.5,0.01\n")
    gan = tmp_path / "results/digits/nsgan/seed0"
    gan.mkdir(parents=True)
    (gan / "losses.csv").write_text("epoch,d_loss,g_loss,images\n1,1.3,0.7,1408\n")
    assert curve_name(run / "losses.csv") == "digits_vae_seed1_train.csv"
    assert curve_name(glo / "glo_losses.csv") == "digits_glann_seed0_glo.csv"
    out = write_curves([run / "losses.csv", glo / "glo_losses.csv", gan / "losses.csv"], tmp_path / "curves")
    assert [p.name for p in out] == ["digits_vae_seed1_train.csv", "digits_glann_seed0_glo.csv",
                                     "digits_nsgan_seed0_train.csv"]
    assert out[0].read_text() == "epoch,loss\n1,120.5\n2,100.25\n"
    assert out[1].read_text() == "epoch,loss\n1,0.5\n"
    assert out[2].read_text() == "epoch,loss\n1,0.7\n"  # a GAN's curve is its generator loss


GOLDEN_ROWS = [
    {"dataset": "mnist", "method": "glann", "seed": 0, "fid_domain": 10.0, "inception_fid": 9.0, "precision": 0.5,
     "train_seconds": 100.0, "train_device": "cpu", "kid_domain": 20.0, "kid_domain_std": 3.0},
    {"dataset": "mnist", "method": "glann", "seed": 1, "fid_domain": 14.0, "inception_fid": 11.0, "precision": 0.7,
     "train_seconds": 120.0, "train_device": "cpu", "kid_domain": 30.0, "kid_domain_std": 5.0},
    {"dataset": "mnist", "method": "nsgan", "seed": 0, "fid_domain": 3000.0, "diverged": True, "diverged_epoch": 4},
]


def test_results_table_matches_the_checked_golden_file():
    """The whole table text, checked by hand once: means, sample stds (12 ± 2.8: sqrt(8)), the paper's
    number beside Inception FID only, diverged marks, missing cells, training seconds with the device,
    KID with the spread over seeds and then its own std over subsets (mean of the seeds' 3 and 5)."""
    from pathlib import Path

    golden = (Path(__file__).parent / "data" / "summary_golden.md").read_text()
    assert render_markdown_for(GOLDEN_ROWS) == golden
    assert "| glann | 10 ± 1.4 (paper 8.6) |" in golden and "| glann | 110 ± 14 (cpu) |" in golden
    assert "| glann | 25 ± 7.1 (subsets ± 4) |" in golden


def render_markdown_for(rows):
    from glann.evaluation.summary import render_markdown

    return render_markdown(aggregate(rows), ["mnist"], ["glann", "nsgan", "vae"])


def test_inception_not_measured_is_said_once():
    md = render_markdown_for([{**r, "inception_fid": None} for r in GOLDEN_ROWS])
    assert "## Inception FID ↓\n\nNot measured: Inception weights unavailable" in md
    assert "(paper" not in md


def test_summarize_writes_every_file(tmp_path):
    import json

    from glann.evaluation.summary import RunFiles, summarize

    files = []
    for r in GOLDEN_ROWS:
        p = tmp_path / "results" / r["dataset"] / r["method"] / f"seed{r['seed']}" / "metrics.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({k: v for k, v in r.items() if k not in ("dataset", "method", "seed")}))
        files.append(p)
    out = tmp_path / "summary"
    flat = summarize(RunFiles(files, losses=[]), out, ["mnist"], ["glann", "nsgan"])
    assert flat["mnist/glann/fid_domain"] == 12.0 and flat["mnist/glann/train_seconds"] == 110.0
    assert "mnist/nsgan/precision" not in flat  # not measured: left out, not written as null
    assert json.loads((out / "fid.json").read_text()) == [
        {"dataset": "mnist", "method": "glann", "fid_domain": 12.0},
        {"dataset": "mnist", "method": "nsgan", "fid_domain": 3000.0}]
    assert "| nsgan | 3e+03 (diverged, epoch 4) |" in (out / "table.md").read_text()
    for name in ("table.md", "table.csv", "summary.json", "fid.png", "precision_recall.png", "samples.png"):
        assert (out / name).stat().st_size > 0, name


def test_cells_rows_and_csv_edges():
    # four digits and up: 3 significant digits in any precision
    assert format_cell(1000.0, 0.0, 1, digits=5) == "1e+03"
    assert format_cell(999.5, 0.0, 1, digits=5) == "999.5"
    rows = [{"dataset": "a", "method": "m", "seed": 0, "fid_domain": 1.0, "train_device": "cuda",
             "diverged": True, "diverged_epoch": 3},
            {"dataset": "a", "method": "m", "seed": 1, "fid_domain": 2.0, "train_device": "cpu",
             "diverged": True, "diverged_epoch": 4}]
    agg = aggregate(rows)
    assert agg[("a", "m")]["device"] == "cpu,cuda"
    text = render_csv(agg)
    assert "\r" not in text and "a,m,fid_domain,1.5,0.707107,2,3 4,diverged\n" in text


def test_markdown_over_two_datasets():
    """Several datasets and divergences, a dataset without paper numbers, a missing cell, and
    Inception FID measured nowhere (its section says so and the rest of the table follows)."""
    from glann.evaluation.summary import render_markdown

    rows = [{"dataset": "mnist", "method": "glann", "seed": 0, "fid_domain": 1.0, "inception_fid": 9.0},
            {"dataset": "mnist", "method": "nsgan", "seed": 0, "fid_domain": 5.0, "diverged": True,
             "diverged_epoch": 2},
            {"dataset": "mnist", "method": "nsgan", "seed": 1, "fid_domain": 7.0, "diverged": True,
             "diverged_epoch": 6},
            {"dataset": "digits", "method": "glann", "seed": 0, "fid_domain": 2.0, "inception_fid": 4.0},
            {"dataset": "digits", "method": "vae", "seed": 0, "fid_domain": 3.0}]
    md = render_markdown(aggregate(rows), ["mnist", "digits"], ["glann", "nsgan", "vae"])
    assert ("## fid_domain (evaluator features) ↓\n\n| method | mnist | digits |\n|---|---|---|\n"
            "| glann | 1 | 2 |\n| nsgan | 6 ± 1.4 (diverged, epoch 2, 6) | — |\n| vae | — | 3 |\n\n") in md
    assert "| glann | 9 (paper 8.6) | 4 |\n" in md  # no paper number for digits
    unmeasured = render_markdown(aggregate([{**r, "inception_fid": None} for r in rows]),
                                 ["mnist", "digits"], ["glann", "nsgan", "vae"])
    assert ("## Inception FID ↓\n\nNot measured: Inception weights unavailable (see each metrics.json's "
            "`inception_fid_reason`).\n\n## precision ↑\n\n") in unmeasured
    assert unmeasured.endswith("| vae | — | n/a |\n")


def test_summary_files_snapshots_and_curves_by_hand(tmp_path):
    """summarize() on metrics, loss CSVs and snapshot curves: every file's content by hand; the
    end products carry no integrity records."""
    import json

    from glann.evaluation.summary import RunFiles, summarize

    res = tmp_path / "results"
    metrics, snaps = [], []
    for method, seed, fid in (("glann", 0, 2.0), ("vae", 1, 4.0)):
        run = res / "digits" / method / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"fid_domain": fid}))
        metrics.append(run / "metrics.json")
    (res / "digits/vae/seed1/losses.csv").write_text("epoch,elbo\n1,-90\n")
    (res / "digits/glann/seed0/glo_losses.csv").write_text("epoch,other\n1,0.5\n")  # no known column
    (res / "digits/glann/seed0/snapshots.json").write_text(json.dumps({
        "method": "glann", "seed": 0, "diverged": False, "points": [
            {"epoch": 1, "train_seconds": 1.5, "images_processed": 100, "fid_domain": 9.0, "classes_covered": 7},
            {"epoch": 2, "train_seconds": 3.0, "images_processed": 200, "fid_domain": 5.0, "classes_covered": 9}]}))
    (res / "digits/vae/seed1/snapshots.json").write_text(json.dumps({
        "method": "vae", "seed": 1, "split": "val", "diverged": True, "points": [
            {"epoch": 1, "train_seconds": 2.0, "images_processed": 50, "fid_domain": 8.0},
            {"epoch": 2, "train_seconds": 4.0, "images_processed": 100, "fid_domain": 6.0}]}))
    snaps = [res / "digits/glann/seed0/snapshots.json", res / "digits/vae/seed1/snapshots.json"]
    out = tmp_path / "summary"
    losses = [res / "digits/vae/seed1/losses.csv", res / "digits/glann/seed0/glo_losses.csv"]
    flat = summarize(RunFiles(metrics, losses=losses, snapshots=snaps), out, ["digits"], ["glann", "vae"])
    assert flat == {"digits/glann/fid_domain": 2.0, "digits/vae/fid_domain": 4.0,
                    "digits/glann/status": "learned", "digits/vae/status": "learned"}
    assert (out / "curves" / "digits_vae_seed1_train.csv").read_text() == "epoch,loss\n1,90\n"
    assert (out / "curves" / "digits_glann_seed0_glo.csv").read_text() == "epoch,loss\n"
    assert (out / "fid_vs_compute.csv").read_text() == (
        "dataset,method,seed,split,epoch,train_seconds,images_processed,n_samples,fid_domain,kid_domain,"
        "classes_covered,diverged\n"
        "digits,glann,0,test,1,1.5,100,,9.0,,7,False\n"  # a curve from before the split was recorded: test
        "digits,glann,0,test,2,3.0,200,,5.0,,9,False\n"
        "digits,vae,1,val,1,2.0,50,,8.0,,,False\n"
        "digits,vae,1,val,2,4.0,100,,6.0,,,True\n")  # the mark on the last snapshot before divergence
    assert json.loads((out / "summary.json").read_text()) == flat
    assert (out / "fid_vs_compute.png").stat().st_size > 0
    assert not [p.name for p in out.rglob(".*")]  # end products: no .<name>.sha256 records
    # the table says what its budgets are, and when each curve first covers >= 9 classes: GLANN's
    # second snapshot (9 classes at 3 s); the VAE's curve has no class counts, so no row
    table = (out / "table.md").read_text()
    assert "**Budgets** (`budgets: custom`): as this config sets them." in table
    section = table.split("## Training seconds until a method first covers ≥ 9 classes")[1].split("\n## ")[0]
    assert "| digits | glann | 3 s (epoch 2) |\n" in section and "| digits | vae |" not in section
    summarize(RunFiles(metrics, snapshots=snaps[:1]), out, ["digits"], ["glann", "vae"], budgets="equal_compute")
    assert "**Budgets** (`budgets: equal_compute`): equal compute" in (out / "table.md").read_text()


def test_first_learned_is_the_earliest_snapshot_covering_9_classes():
    from glann.evaluation.verdicts import first_learned, first_learned_section

    pts = [{"train_seconds": 30.0, "epoch": 3, "classes_covered": 10},
           {"train_seconds": 10.0, "epoch": 1, "classes_covered": 8},
           {"train_seconds": 20.0, "epoch": 2, "classes_covered": 9}]
    assert first_learned(pts)["epoch"] == 2
    assert first_learned(pts[:2]) ["epoch"] == 3
    assert first_learned([pts[1]]) is None
    rows = [{"dataset": "d", "method": "m", "seed": 0, **pts[1]}, {"dataset": "d", "method": "m", "seed": 1, **pts[2]}]
    lines = first_learned_section(rows, ["d"], ["m", "other"])
    assert "| d | m | not within 10 s | 20 s (epoch 2) |" in lines and not any("other" in x for x in lines)
    assert first_learned_section([{**rows[0], "classes_covered": None}], ["d"], ["m"]) == []


def _features_with_product_eigenvalues(l1, l2):
    """3 features in 3 dimensions and statistics S = diag(l1, l2, 1) such that the n x n product
    A S A^T of ``frechet_distance_to_features`` has eigenvalues exactly {l1, l2, 0}: the centred
    rows of A are orthonormal vectors orthogonal to (1, 1, 1), times the first two unit axes."""
    u1 = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    u2 = np.array([1.0, 1.0, -2.0]) / np.sqrt(6)
    a = np.outer(u1, [1.0, 0, 0]) + np.outer(u2, [0, 1.0, 0])
    return a * np.sqrt(2) + 5.0, np.zeros(3), np.diag([l1, l2, 1.0])


def test_frechet_to_features_tolerates_rounding_relative_to_the_scale_only():
    from glann.evaluation.metrics import frechet_distance_to_features

    f, mu, s = _features_with_product_eigenvalues(1e4, -1e-3)  # -1e-7 of the scale: rounding
    # |mu1|^2 + Tr S1 + Tr S2 - 2 sum sqrt(max(ev, 0)), with Tr S1 = |A|^2 = 2
    assert frechet_distance_to_features(f, mu, s) == pytest.approx(75.0 + 2.0 + (1e4 + 1.0 - 1e-3) - 2 * 100.0,
                                                                   rel=1e-9)
    for l1, l2 in ((10.0, -1.0), (1.0, -1.5e-6)):  # negative beyond 1e-6 of max(1, largest)
        f, mu, s = _features_with_product_eigenvalues(l1, l2)
        with pytest.raises(ValueError, match=r"eigenvalue .* < 0 \(numerically unstable statistics\)$"):
            frechet_distance_to_features(f, mu, s)


def test_frechet_to_features_in_float64_without_a_square_root_of_a_singular_product(monkeypatch):
    import glann.evaluation.metrics as gm

    rng = np.random.default_rng(5)
    f32 = (rng.normal(size=(8, 8)) + 100).astype(np.float32)
    mu, s = rng.normal(size=8).astype(np.float32), np.cov(rng.normal(size=(40, 8)), rowvar=False)
    exact = gm.frechet_distance(*gm.gaussian_stats(f32.astype(np.float64)), mu.astype(np.float64), s)

    def no_sqrtm(*a, **k):
        raise AssertionError("n <= d must not take the d x d square root")

    monkeypatch.setattr(gm.linalg, "sqrtm", no_sqrtm)
    assert gm.frechet_distance_to_features(f32, mu, s.astype(np.float32)) == pytest.approx(exact, rel=1e-9)
    with pytest.raises(ValueError, match="statistics of shapes"):
        gm.frechet_distance_to_features(f32, mu[:7], s)


def test_prd_curve_clips_unnormalised_histograms_to_one():
    p, r = prd_curve(np.array([1.5, 0.5]), np.array([1.5, 0.5]), num_angles=5)
    assert p.max() == 1.0 and r.max() == 1.0 and p.min() >= 0 and r.min() >= 0


def test_pairwise_distances_in_float64():
    from glann.evaluation.metrics import pairwise_sq_dists

    rng = np.random.default_rng(0)
    x = (1000 + rng.normal(size=(40, 3))).astype(np.float32)  # > 25 rows: torch.cdist's matmul path
    x64 = x.astype(np.float64)
    exact = ((x64[:, None] - x64[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_dists(x), exact, rtol=1e-9, atol=1e-9)


def test_birthday_batches_with_exactly_one_or_no_duplicate_pair():
    """Batches of the whole set: each holds the same pairs. A duplicate is strictly closer than the
    threshold; one colliding pair gives support C(s, 2) / 1 and a batch rate of 1."""
    base = np.arange(6.0)[:, None] * 10
    one = np.vstack([base, base[:1] + 0.5])  # 7 points, one pair at squared distance 0.25
    out = birthday_test(one, threshold=0.3, batch_size=7, num_batches=2)
    assert out["duplicates_per_batch"] == 1.0 and out["duplicate_batch_rate"] == 1.0
    assert out["support_estimate"] == 21 * 2 / 2 and out["support_is_lower_bound"] is False
    none = birthday_test(one, threshold=0.25, batch_size=7, num_batches=2)  # at the threshold: not a duplicate
    assert none["duplicates_per_batch"] == 0.0 and none["duplicate_batch_rate"] == 0.0
    assert none["support_estimate"] == 21 * 2 and none["support_is_lower_bound"] is True


def test_mode_coverage_edges():
    """A class with exactly ``min_share`` of the samples is covered; a class absent from the
    training set (count 0) and from the samples adds nothing to the KL."""
    from glann.evaluation.metrics import mode_coverage

    pred = np.array([0] * 5 + [1] * 4 + [2])  # shares 0.5, 0.4, 0.1
    out = mode_coverage(pred, {"0": 50, "1": 40, "2": 10, "3": 0}, min_share=0.1)
    assert out["classes_covered"] == 3 and out["num_classes"] == 4
    assert out["class_kl"] == pytest.approx(0.0, abs=1e-9)
    assert out["class_histogram"] == [0.5, 0.4, 0.1, 0.0]
    thirds = mode_coverage(np.array([0, 1, 2]), {"0": 1, "1": 1, "2": 1}, min_share=0.1)
    assert thirds["class_histogram"] == [0.3333] * 3  # 4 decimals in metrics.json


def test_gaussian_stats_in_float64():
    from glann.evaluation.metrics import gaussian_stats

    f32 = (np.random.default_rng(2).normal(size=(500, 3)) + 1e4).astype(np.float32)
    mu, sigma = gaussian_stats(f32)
    f64 = f32.astype(np.float64)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, f64.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(f64, rowvar=False), rtol=1e-12)


def test_duplicate_threshold_uses_at_most_2000_real_images():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2001, 2))
    sub = feats[np.random.default_rng(4).choice(2001, 2000, replace=False)]
    ds = ((sub[:, None] - sub[None]) ** 2).sum(-1)
    np.fill_diagonal(ds, np.inf)
    assert duplicate_threshold(feats, 0.1, seed=4) == pytest.approx(np.quantile(ds.min(1), 0.1), rel=1e-9)


def test_the_budget_is_where_the_validation_curve_stops_improving():
    """The converged study's rule (glann.evaluation.budgets): the first snapshot within 5% of the
    curve's best val fid_domain; still improving when the best is the last snapshot and it beat
    the one before by more than 5%."""
    from glann.evaluation.budgets import budget_section, stopping_point

    def curve(fids):
        return [{"epoch": 10 * (i + 1), "train_seconds": 5.0 * (i + 1), "fid_domain": f} for i, f in enumerate(fids)]

    raw = dict(window=1)  # the rule on the raw points
    flat = stopping_point(curve([100.0, 40.0, 30.0, 29.0, 30.5]), **raw)
    assert (flat["epoch"], flat["best"], flat["converged"]) == (30, 29.0, True)  # 30 <= 29 * 1.05 = 30.45
    assert stopping_point(curve([100.0, 40.0, 31.0, 29.0]), **raw)["epoch"] == 40        # 31 > 30.45: not yet
    still = stopping_point(curve([100.0, 60.0, 40.0, 30.0]), **raw)
    assert (still["epoch"], still["converged"]) == (40, False)                     # best only at the end
    assert stopping_point(curve([100.0, 31.0, 30.0]), **raw)["converged"] is True         # 31 <= 31.5
    worse = stopping_point(curve([70.0, 80.0, 79.0, 79.5]), **raw)                      # best first, then worse
    assert (worse["epoch"], worse["converged"]) == (10, True)
    assert stopping_point(curve([50.0, float("nan"), 20.0, 21.0]), **raw)["epoch"] == 30  # NaN points skipped
    assert stopping_point(curve([5.0])) is None
    # smoothed (the default): one lucky draw early does not end the budget. Raw, the 31 at epoch
    # 20 is within 5% of the best 30 and would stop there; the running median of 3 is
    # [65.5, 60, 35, 35, 31, 31, 31, 31.5]: the first within 5% of 31 is epoch 50
    noisy = curve([100.0, 31.0, 60.0, 35.0, 31.0, 30.0, 31.0, 32.0])
    assert stopping_point(noisy, **raw)["epoch"] == 20
    pick = stopping_point(noisy)
    assert (pick["epoch"], pick["best"], pick["converged"], pick["learned"]) == (50, 31.0, True, True)
    # still improving keeps the full budget: 35, 31, 30 at the end (smoothed 35 > 30.5 * 1.05)
    assert stopping_point(curve([100.0, 31.0, 60.0, 35.0, 31.0, 30.0]))["epoch"] == 60
    # one unlucky late draw does not make a falling curve look converged, nor the reverse; a curve
    # still falling by 5% a step is still improving (smoothed [70, 54, 47.8, 46.5]: 54 > 46.5 * 1.05)
    assert stopping_point(curve([90.0, 70.0, 50.0, 40.0, 30.0]))["converged"] is False
    assert stopping_point(curve([65.4, 54.0, 47.8, 45.2]))["converged"] is False
    assert stopping_point(curve([90.0, 60.0, 40.0, 41.0, 39.0, 60.0, 40.0]))["converged"] is True
    # never learned: no snapshot covers 9 classes, so the full budget is kept whatever the curve
    collapsed = [{**p, "classes_covered": c} for p, c in zip(curve([700.0, 650.0, 800.0, 900.0]), (2, 1, 1, 1))]
    gone = stopping_point(collapsed)
    assert (gone["epoch"], gone["learned"]) == (40, False)
    assert stopping_point([{**p, "classes_covered": 9} if i == 2 else p
                           for i, p in enumerate(collapsed)])["learned"] is True
    rows = [{"dataset": "d", "method": "m", "seed": s, "split": "val", **p}
            for s, fids in ((0, [90.0, 50.0, 49.0, 50.0]), (1, [90.0, 70.0, 50.0])) for p in curve(fids)]
    lines = budget_section(rows + [{**rows[0], "method": "t", "split": "test"}], ["d"], ["m", "t"])
    assert "| d | m | epoch 20 | epoch 30 (*still improving*) |" in lines
    assert not any(line.startswith("| d | t |") for line in lines)  # test-split curves choose nothing
    assert budget_section([{**r, "split": "test"} for r in rows], ["d"], ["m"]) == []


def test_fid_infinity_removes_the_small_sample_bias():
    """FID∞ (Chong & Forsyth 2020): fid_domain at 5 subset sizes, fitted linearly in 1/n and read
    at 1/n = 0. Two Gaussians whose Fréchet distance is known (identity covariances, means 1
    apart: d^2 = 1): the plain distance at n = 400 in 32 dimensions is biased upward by about
    d^2/n-order terms, FID∞ lands closer to the truth; on a synthetic FID(n) = a + b/n the fit
    recovers a and b exactly."""
    from unittest import mock

    from glann.evaluation import metrics
    from glann.evaluation.metrics import fid_infinity, frechet_distance_to_features

    rng = np.random.default_rng(0)
    d = 32
    mu_r, sigma_r = np.zeros(d), np.eye(d)
    fake = rng.standard_normal((400, d))
    fake[:, 0] += 1.0
    plain = frechet_distance_to_features(fake, mu_r, sigma_r)
    inf = fid_infinity(fake, mu_r, sigma_r, seed=0)
    assert inf["sizes"] == [80, 160, 240, 320, 400]
    assert abs(inf["fid_infinity"] - 1.0) < abs(plain - 1.0) and plain > 1.5
    with mock.patch.object(metrics, "frechet_distance_to_features", lambda f, mu, s: 3.0 + 50.0 / len(f)):
        exact = fid_infinity(fake, mu_r, sigma_r)
    assert exact["fid_infinity"] == pytest.approx(3.0) and exact["slope"] == pytest.approx(50.0)
