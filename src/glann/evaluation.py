"""Metrics, computed by identical code for every method.

- ``frechet_distance``: FID's distance between Gaussians (Heusel et al. 2017),
      d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  On pytorch-fid's InceptionV3 pool3 features it is the Inception FID of GLANN's
  Table 1; on the offline evaluator's penultimate features it is ``fid_domain``,
  which is NOT comparable with Inception FID (other features, other scale).
- the offline evaluator: a LeNet-style classifier (images <= 28 px) or a small
  ResNet (32/64 px) trained on the labelled train split; for an unlabelled folder
  the same net is trained to predict image rotation (0/90/180/270 degrees,
  Gidaris et al. 2018) and its penultimate features are used.
- precision, recall, density, coverage (Naeem et al. 2020, the ``prdc`` package, k=5).
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

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from .datasets import load_prepared, read_manifest
from .errors import WeightsError
from .models import to_float_images

log = logging.getLogger(__name__)

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception weights


# --------------------------------------------------------------------------- Frechet distance
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


def gaussian_stats(features: np.ndarray):
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


# --------------------------------------------------------------------------- evaluator nets
class LeNetEvaluator(nn.Module):
    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNetEvaluator(nn.Module):
    """A small ResNet (3 stages of basic blocks) for 32x32 and 64x64 images."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            _Block(32, 32, 1), _Block(32, 64, 2), _Block(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def make_evaluator(image_shape, num_classes: int, arch: str = "auto") -> nn.Module:
    size, _, channels = image_shape
    if arch == "auto":
        arch = "lenet" if size <= 28 else "resnet"
    return {"lenet": LeNetEvaluator, "resnet": ResNetEvaluator}[arch](channels, num_classes)


def _rotate_batch(x: torch.Tensor, gen: torch.Generator):
    k = torch.randint(0, 4, (x.shape[0],), generator=gen).to(x.device)
    out = torch.stack([torch.rot90(im, int(r), dims=(1, 2)) for im, r in zip(x, k)])
    return out, k


def train_evaluator(data_dir, out_path, cfg: dict, seed: int, device, tracker=None, fault=None) -> dict:
    """Train the offline evaluator (resumable, through the one training loop); returns
    {task, num_classes, test_accuracy, ...} and saves the net with it."""
    from .training import fit, seeded

    manifest = read_manifest(data_dir)
    xtr, ytr = load_prepared(data_dir, "train")
    xte, yte = load_prepared(data_dir, "test")
    labelled = manifest["num_classes"] > 1 and (ytr >= 0).all()
    task = "classes" if labelled else "rotation"
    k = manifest["num_classes"] if labelled else 4
    gen = seeded(seed)
    net = make_evaluator(manifest["image_shape"], k, cfg["arch"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    x = torch.from_numpy(xtr).to(device)
    y = torch.from_numpy(ytr).to(device)

    def step(epoch: int, poison: bool) -> dict:
        net.train()
        perm = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), cfg["batch_size"]):
            idx = perm[i: i + cfg["batch_size"]]
            xb, yb = to_float_images(x[idx]), y[idx]
            if task == "rotation":
                xb, yb = _rotate_batch(xb, gen)
            loss = F.cross_entropy(net(xb), yb)
            if poison:
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return {"loss": total / len(x)}

    def final() -> dict:
        net.eval()
        with torch.no_grad():
            xt = to_float_images(torch.from_numpy(xte).to(device))
            if task == "rotation":
                xt, yt = _rotate_batch(xt, gen)
            else:
                yt = torch.from_numpy(yte).to(device)
            pred = torch.cat([net(xt[i: i + 1000]).argmax(1) for i in range(0, len(xt), 1000)])
        return {"state": net.state_dict(), "task": task, "num_classes": k,
                "test_accuracy": (pred == yt).float().mean().item(), "arch": cfg["arch"],
                "image_shape": manifest["image_shape"]}

    out = fit("train_evaluator", "evaluator", out_path, cfg, seed, {"net": net, "opt": opt}, gen, step, final,
              tracker=tracker, fault=fault, hint="Lower evaluator.lr.")
    return {key: out[key] for key in ("task", "num_classes", "test_accuracy", "arch", "image_shape", "epochs")}


def load_evaluator(path, device) -> tuple[nn.Module, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    net = make_evaluator(blob["image_shape"], blob["num_classes"], blob["arch"])
    net.load_state_dict(blob["state"])
    return net.to(device).eval(), blob


@torch.no_grad()
def evaluator_outputs(net, images_uint8: np.ndarray, device, batch: int = 1000):
    """(penultimate features, predicted class) for uint8 NHWC images."""
    feats, preds = [], []
    for i in range(0, len(images_uint8), batch):
        x = to_float_images(torch.from_numpy(images_uint8[i: i + batch]).to(device))
        f = net.features(x)
        feats.append(f.cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(preds).numpy()


# --------------------------------------------------------------------------- Inception (pytorch-fid)
def inception_weights_path(configured: str | None):
    """(path, None) when the FID Inception weights are available, else (None, reason)."""
    if configured:
        p = Path(os.path.expanduser(str(configured)))
        if p.is_file():
            return p, None
        return None, f"fid.inception_weights {p} does not exist"
    p = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if p.is_file():
        return p, None
    return None, (f"pytorch-fid's Inception weights {p} are missing (offline); run pytorch-fid once "
                  "with network, or set fid.inception_weights to a copy of that file")


def load_inception(path: Path, device) -> nn.Module:
    """pytorch-fid's InceptionV3 (pool3, 2048-d) with its FID weights read from ``path``."""
    import pytorch_fid.inception as pfi

    def from_file(*args, **kwargs):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"cannot read Inception weights {path} ({type(exc).__name__}): the file is truncated "
                f"or not a torch checkpoint. Replace it with pytorch-fid's {INCEPTION_FILE}."
            ) from exc

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = from_file
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"{path} is not pytorch-fid's FID InceptionV3 state dict ({str(exc).splitlines()[0]}). "
            f"Replace it with {INCEPTION_FILE}."
        ) from exc
    finally:
        pfi.load_state_dict_from_url = original
    return model.to(device).eval()


def save_random_inception(path, seed: int = 0) -> Path:
    """pytorch-fid's FID InceptionV3 with *random* weights, saved to ``path``.

    For code-path tests and timing benchmarks only (same architecture and cost as
    the real network); a FID computed with it means nothing and is never reported.
    """
    import pytorch_fid.inception as pfi

    orig_url, orig_load = pfi.load_state_dict_from_url, nn.Module.load_state_dict
    pfi.load_state_dict_from_url = lambda *a, **k: {}
    nn.Module.load_state_dict = lambda self, *a, **k: None
    try:
        torch.manual_seed(seed)
        model = pfi.fid_inception_v3()
    finally:
        pfi.load_state_dict_from_url, nn.Module.load_state_dict = orig_url, orig_load
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@torch.no_grad()
def inception_features(model, images_uint8: np.ndarray, device, batch: int = 200) -> np.ndarray:
    """pool3 features of uint8 NHWC images fed as tensors in [0, 1] (no PNG round trip)."""
    out = []
    for i in range(0, len(images_uint8), batch):
        x = to_float_images(torch.from_numpy(images_uint8[i: i + batch]).to(device))
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out.append(model(x)[0].squeeze(-1).squeeze(-1).cpu())
    return torch.cat(out).numpy().astype(np.float64)


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


# --------------------------------------------------------------------------- the evaluate step
def real_stats(data_dir, evaluator_path, inception_weights, out_evaluator, out_inception, device,
               use_inception: bool = True):
    from .atomic import save_npz

    xte, _ = load_prepared(data_dir, "test")
    net, _ = load_evaluator(evaluator_path, device)
    feats, _ = evaluator_outputs(net, xte, device)
    mu, sigma = gaussian_stats(feats)
    save_npz(out_evaluator, mu=mu, sigma=sigma, features=feats.astype(np.float32))
    path, reason = inception_weights_path(inception_weights) if use_inception else (None, "fid.inception: false")
    if path is None:
        save_npz(out_inception, available=np.array(False), reason=np.array(reason))
        log.warning("Inception FID unavailable: %s", reason)
        return
    model = load_inception(path, device)
    f = inception_features(model, xte, device)
    mu, sigma = gaussian_stats(f)
    save_npz(out_inception, available=np.array(True), reason=np.array(""), mu=mu, sigma=sigma,
             weights=np.array(str(path)))


def evaluate(samples_path, evaluator_path, stats_evaluator, stats_inception, data_dir, model_meta: dict,
             cfg: dict, device, seed: int = 0) -> dict:
    from prdc import compute_prdc

    with np.load(samples_path) as z:
        fake = z["images"]
    net, ev = load_evaluator(evaluator_path, device)
    feats, pred = evaluator_outputs(net, fake, device)
    with np.load(stats_evaluator) as z:
        mu_r, sigma_r, real_feats = z["mu"], z["sigma"], z["features"].astype(np.float64)
    mu_f, sigma_f = gaussian_stats(feats)
    metrics = {"n_samples": int(len(fake)), "evaluator_task": ev["task"],
               "evaluator_test_accuracy": ev["test_accuracy"],
               "fid_domain": frechet_distance(mu_f, sigma_f, mu_r, sigma_r)}

    with np.load(stats_inception) as z:
        if bool(z["available"]):
            model = load_inception(Path(str(z["weights"])), device)
            n = min(cfg["fid"]["num_samples"], len(fake))
            f = inception_features(model, fake[:n], device)
            mu_i, sigma_i = gaussian_stats(f)
            metrics["inception_fid"] = frechet_distance(mu_i, sigma_i, z["mu"], z["sigma"])
            metrics["inception_fid_reason"] = None
        else:
            metrics["inception_fid"] = None
            metrics["inception_fid_reason"] = str(z["reason"])

    rng = np.random.default_rng(seed)
    n = min(len(real_feats), len(feats), cfg["eval"]["prdc_max_samples"])
    real_sub = real_feats[rng.choice(len(real_feats), n, replace=False)]
    fake_sub = feats[rng.choice(len(feats), n, replace=False)]
    metrics.update({k: float(v) for k, v in compute_prdc(real_sub, fake_sub, cfg["eval"]["prdc_k"]).items()})
    p, r = prd_from_features(real_sub, fake_sub, num_runs=cfg["eval"]["prd_runs"], seed=seed)
    metrics["prd_f8"] = max_f_beta(p, r, 8.0)
    metrics["prd_f1_8"] = max_f_beta(p, r, 1 / 8)

    if ev["task"] == "classes":
        manifest = read_manifest(data_dir)
        metrics.update(mode_coverage(pred, manifest["class_counts"]["train"], cfg["eval"]["min_class_share"]))
    else:
        metrics.update({"classes_covered": None, "num_classes": None, "class_kl": None})
    tau = duplicate_threshold(real_feats, cfg["eval"]["duplicate_quantile"], seed=seed)
    metrics.update(birthday_test(feats, tau, cfg["eval"]["birthday_batch_size"],
                                 cfg["eval"]["birthday_batches"], seed))
    metrics["duplicate_threshold"] = tau
    metrics["diverged"] = bool(model_meta.get("diverged", False))
    metrics["diverged_epoch"] = model_meta.get("diverged_epoch")
    return metrics
