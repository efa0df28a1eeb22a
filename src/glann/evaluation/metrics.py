"""The metrics as pure functions of features (numpy in, numbers out); the same code scores every method.

- ``frechet_distance``: FID's distance between Gaussians (Heusel et al. 2017),
      d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  On pytorch-fid's InceptionV3 pool3 features it is the Inception FID of GLANN's
  Table 1; on the offline evaluator's penultimate features it is ``fid_domain``,
  which is NOT comparable with Inception FID (other features, other scale).
  The features come from glann.evaluation.evaluator (the offline evaluator) or glann.evaluation.inception.
- precision, recall, density, coverage (Naeem et al. 2020, the ``prdc`` package, k=5).
- ``kernel_inception_distance``: KID (Bińkowski et al. 2018), the unbiased MMD² with the cubic
  polynomial kernel, averaged over random subsets; on the evaluator's features it is
  ``kid_domain``, on Inception features ``inception_kid``.
- ``bootstrap_interval``: a percentile interval of a two-sample metric over resampled sets.
- PRD (Sajjadi et al. 2018): F_8 (recall-like) and F_1/8 (precision-like).
- mode coverage: classes receiving at least ``min_class_share`` of the samples, and
  KL(predicted class histogram || train class histogram).
- birthday paradox test (Arora & Zhang 2017): near-duplicate pairs in batches of
  s samples, a pair counting as duplicate when its feature distance is below the
  ``duplicate_quantile`` of real test images' nearest-neighbour distances; the
  support size is estimated from the mean number of duplicate pairs per batch,
  N ~= C(s, 2) / E[pairs] (s uniform draws from N modes collide in C(s, 2)/N
  pairs on average); with no pair seen it is a lower bound, C(s, 2) * batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    With pytorch-fid's guards: means and covariances must have matching shapes; a
    singular product is regularised with ``eps`` on the diagonals; a square root
    with an imaginary component above 1e-3 is refused (numerical failure), a
    smaller one is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"Fréchet distance: mean vectors have different lengths {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"Fréchet distance: covariances {sigma1.shape} and {sigma2.shape} do not match "
                         f"the mean length {mu1.shape[0]}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps  # singular product: regularise as pytorch-fid does
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: the matrix square root has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g} (numerically unstable statistics)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_to_features(features, mu2, sigma2) -> float:
    """``frechet_distance(*gaussian_stats(features), mu2, sigma2)``, exact for any sample count.

    With no more samples n than feature dimensions d (a few hundred Inception features of
    2048 dimensions, as on a CPU), S1 = A^T A with A the n x d centred features over
    sqrt(n - 1), so S1 S2 has rank < n and its nonzero eigenvalues are those of the n x n
    symmetric positive semi-definite A S2 A^T: Tr((S1 S2)^(1/2)) is the sum of their square
    roots. That is the same number as the d x d square root computes, without the
    square root of a singular product (inaccurate, and seconds per call at d = 2048). With
    more samples than dimensions (the papers' 10,000) it is ``frechet_distance`` itself.
    """
    f = np.asarray(features, dtype=np.float64)
    mu2, sigma2 = np.atleast_1d(mu2).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"Fréchet distance: need at least 2 feature vectors, got an array of shape {f.shape}")
    n, d = f.shape
    if n > d:
        return frechet_distance(*gaussian_stats(f), mu2, sigma2)
    if mu2.shape != (d,) or sigma2.shape != (d, d):
        raise ValueError(f"Fréchet distance: features of {d} dimensions against statistics of shapes "
                         f"{mu2.shape} and {sigma2.shape}")
    mu1 = f.mean(0)
    a = (f - mu1) / math.sqrt(n - 1)
    m = a @ sigma2 @ a.T
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    if not np.isfinite(ev).all() or ev.min() < -1e-6 * max(1.0, ev.max()):
        raise ValueError(f"Fréchet distance: the covariance product has an eigenvalue {ev.min():.3g} < 0 "
                         "(numerically unstable statistics)")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.sum(a * a) + np.trace(sigma2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def _cubic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel matrix k(a_i, b_j) = (a_i·b_j / d + 1)³, d the feature length."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of two samples with k(a, b) = (a·b / d + 1)³ (d: the feature length):

        MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j).

    Unbiased: its expectation is the population MMD², zero when both samples come from one
    distribution, so it can come out slightly negative.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"KID: need two sets of at least 2 feature vectors of one length, got {x.shape} and {y.shape}")
    kxx, kyy, kxy = _cubic(x, x), _cubic(y, y), _cubic(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


# Sets of up to this many vectors keep their kernel matrices (float64: 200 MB at 5,000), so that
# each subset's or resample's MMD² is three quadratic forms of counts instead of three matrix
# products: the same numbers (up to the order of summation), 10-30x faster at 1,000-2,000.
KERNEL_LIMIT = 5000


class CubicKernels:
    """The kernel matrices K_xx, K_yy, K_xy of :func:`polynomial_mmd2`'s kernel on two fixed sets,
    and the MMD² of any multisets of their points given as index arrays (a subset without
    replacement, or a bootstrap resample with repeats):

        Σ_{p≠q} k(x_{a_p}, x_{a_q}) = wᵀ K_xx w - Σ_i w_i k(x_i, x_i),   w_i = #{p: a_p = i},

    so a subset costs O(N²) instead of O(N² d), and its value is :func:`polynomial_mmd2` of the
    gathered vectors exactly, up to the order of summation."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.kxx, self.kyy, self.kxy = _cubic(x, x), _cubic(y, y), _cubic(x, y)
        self.dxx, self.dyy = np.diag(self.kxx).copy(), np.diag(self.kyy).copy()

    def mmd2(self, ix: np.ndarray, iy: np.ndarray) -> float:
        wx = np.bincount(ix, minlength=len(self.kxx)).astype(np.float64)
        wy = np.bincount(iy, minlength=len(self.kyy)).astype(np.float64)
        m, n = len(ix), len(iy)
        sxx = wx @ self.kxx @ wx - wx @ self.dxx
        syy = wy @ self.kyy @ wy - wy @ self.dyy
        return float(sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * (wx @ self.kxy @ wy) / (m * n))


def _mmd2_of_indices(fake, real):
    """(ix, iy) -> polynomial_mmd2(fake[ix], real[iy]): through :class:`CubicKernels` for sets up
    to KERNEL_LIMIT vectors, directly above it (where the matrices would not fit)."""
    if max(len(fake), len(real)) <= KERNEL_LIMIT:
        return CubicKernels(fake, real).mmd2
    return lambda ix, iy: polynomial_mmd2(fake[ix], real[iy])


def kernel_inception_distance(fake, real, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """KID (Bińkowski et al. 2018, as torch-fidelity and clean-fid compute it): the mean and std of
    :func:`polynomial_mmd2` over ``subsets`` pairs of random subsets of ``min(subset_size, m, n)``
    vectors each (drawn without replacement within a subset, from a generator seeded ``seed``)."""
    fake, real = np.asarray(fake, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1] or len(fake) < 2 or len(real) < 2:
        raise ValueError(f"KID: need two sets of at least 2 feature vectors of one length, got {fake.shape} "
                         f"and {real.shape}")
    size = min(int(subset_size), len(fake), len(real))
    rng = np.random.default_rng(seed)
    mmd2 = _mmd2_of_indices(fake, real)
    values = np.array([mmd2(rng.choice(len(fake), size, replace=False), rng.choice(len(real), size, replace=False))
                       for _ in range(subsets)])
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if subsets > 1 else 0.0,
            "subset_size": size, "subsets": int(subsets)}


def kid_bootstrap_interval(fake, real, resamples: int = 100, seed: int = 0, level: float = 0.95) -> list:
    """:func:`bootstrap_interval` of :func:`polynomial_mmd2`, the same resamples (the same
    generator calls), each scored through :class:`CubicKernels`."""
    fake, real = np.asarray(fake, dtype=np.float64), np.asarray(real, dtype=np.float64)
    rng = np.random.default_rng(seed)
    mmd2 = _mmd2_of_indices(fake, real)
    values = []
    for _ in range(resamples):
        ix = rng.integers(len(fake), size=len(fake))
        iy = rng.integers(len(real), size=len(real))
        values.append(mmd2(ix, iy))
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def bootstrap_interval(metric, fake, real, resamples: int = 100, seed: int = 0, level: float = 0.95) -> list:
    """The ``level`` percentile interval of ``metric(fake*, real*)`` over ``resamples`` draws of both
    sets with replacement (each at its own size), from a generator seeded ``seed``: the noise of a
    number due to which samples and which test images were drawn."""
    fake, real = np.asarray(fake), np.asarray(real)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        f = fake[rng.integers(len(fake), size=len(fake))]
        r = real[rng.integers(len(real), size=len(real))]
        values.append(metric(f, r))
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def fid_infinity(fake, mu_r, sigma_r, points: int = 5, seed: int = 0) -> dict:
    """FID∞ (Chong & Forsyth 2020): the Fréchet distance of random subsets of ``fake`` at
    ``points`` sizes n from n_max/5 to n_max (n_max = len(fake)), fitted as FID(n) = a + b/n by
    least squares; ``a``, the extrapolation to n -> infinity, removes the 1/n bias that differs
    from model to model. Returns {"fid_infinity": a, "slope": b, "sizes": [...]}."""
    rng, n_max = np.random.default_rng(seed), len(fake)
    sizes = sorted({max(2, int(round(n_max * f))) for f in np.linspace(0.2, 1.0, points)})
    fids = [frechet_distance_to_features(fake[rng.choice(n_max, n, replace=False)], mu_r, sigma_r) for n in sizes]
    slope, intercept = np.polyfit(1.0 / np.array(sizes, dtype=np.float64), np.array(fids), 1)
    return {"fid_infinity": float(intercept), "slope": float(slope), "sizes": sizes}


def gaussian_stats(features: np.ndarray):
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


# --------------------------------------------------------------------------- PRD (Sajjadi et al. 2018)
def prd_curve(ref_hist: np.ndarray, eval_hist: np.ndarray, num_angles: int = 1001, eps: float = 1e-10):
    slopes = np.tan(np.linspace(eps, math.pi / 2 - eps, num_angles))
    precision = np.minimum(ref_hist[None] * slopes[:, None], eval_hist[None]).sum(1)
    recall = precision / slopes
    return np.clip(precision, 0, 1), np.clip(recall, 0, 1)


def prd_from_features(real, fake, num_clusters: int = 20, num_runs: int = 10, seed: int = 0):
    """PRD curve averaged over ``num_runs`` k-means clusterings of real+fake (Sajjadi et al.'s defaults)."""
    from sklearn.cluster import MiniBatchKMeans

    ps, rs = [], []
    data = np.concatenate([real, fake])
    for run in range(num_runs):
        km = MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=seed + run).fit(data)
        labels = km.labels_
        ref = np.bincount(labels[: len(real)], minlength=num_clusters) / len(real)
        ev = np.bincount(labels[len(real):], minlength=num_clusters) / len(fake)
        p, r = prd_curve(ref, ev)
        ps.append(p)
        rs.append(r)
    return np.mean(ps, 0), np.mean(rs, 0)


def max_f_beta(precision, recall, beta: float) -> float:
    denom = beta**2 * precision + recall
    f = np.where(denom > 0, (1 + beta**2) * precision * recall / np.maximum(denom, 1e-12), 0)
    return float(f.max())


# --------------------------------------------------------------------------- modes, duplicates
def mode_coverage(pred: np.ndarray, train_counts: dict, min_share: float) -> dict:
    k = len(train_counts)
    hist = np.bincount(pred, minlength=k)[:k] / len(pred)
    ref = np.array([train_counts[str(i)] for i in range(k)], dtype=np.float64)
    ref /= ref.sum()
    eps = 1e-10
    kl = float(np.sum(hist * (np.log(hist + eps) - np.log(ref + eps))))
    return {"classes_covered": int((hist >= min_share).sum()), "num_classes": k, "class_kl": kl,
            "class_histogram": hist.round(4).tolist()}


def pairwise_sq_dists(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.asarray(a, dtype=np.float64))
    return torch.cdist(t, t).pow(2).numpy()


def duplicate_threshold(real_features: np.ndarray, quantile: float, max_n: int = 2000, seed: int = 0) -> float:
    """The ``quantile`` of real images' nearest-neighbour distances (squared)."""
    rng = np.random.default_rng(seed)
    f = real_features if len(real_features) <= max_n else real_features[rng.choice(len(real_features), max_n, replace=False)]
    d = pairwise_sq_dists(f)
    np.fill_diagonal(d, np.inf)
    return float(np.quantile(d.min(1), quantile))


def birthday_test(features: np.ndarray, threshold: float, batch_size: int, num_batches: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    s = min(batch_size, len(features))
    pairs, hits = [], 0
    for _ in range(num_batches):
        idx = rng.choice(len(features), s, replace=False)
        d = pairwise_sq_dists(features[idx])
        count = int((d[np.triu_indices(s, 1)] < threshold).sum())
        pairs.append(count)
        hits += count > 0
    p = hits / num_batches
    # s uniform draws from N modes give C(s, 2) / N colliding pairs on average.
    total = sum(pairs)
    lower_bound = total == 0
    support = (s * (s - 1) / 2) * num_batches / max(total, 1)
    return {"duplicates_per_batch": float(np.mean(pairs)), "duplicate_batch_rate": p,
            "support_estimate": float(support), "support_is_lower_bound": bool(lower_bound),
            "birthday_batch_size": s, "birthday_batches": num_batches}
