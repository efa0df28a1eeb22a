"""The evaluation steps: real statistics once per dataset, then every method's metrics.

The same code scores every method (glann.evaluation.metrics: the formulas; glann.evaluation.evaluator:
the offline feature net; glann.evaluation.inception: pytorch-fid's network).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from glann.atomic import load_npz
from glann.errors import DataError
from glann.evaluation.context import Reference, Scoring
from glann.data.datasets import load_prepared, read_manifest
from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
from glann.hub import inception_weights_path
from glann.evaluation.inception import inception_features, load_inception
from glann.evaluation.metrics import (birthday_test, bootstrap_interval, duplicate_threshold, fid_infinity,
                                     frechet_distance, frechet_distance_to_features, gaussian_stats,
                                     kernel_inception_distance, kid_bootstrap_interval, max_f_beta, mode_coverage,
                                     prd_from_features)

log = logging.getLogger(__name__)


def real_stats(ref: Reference, device, inception_weights=None, use_inception: bool = True):
    """The real images' statistics, written to ``ref``'s files: the test split's in evaluator
    features (``ref.stats``; every reported metric) and in Inception features (``ref.inception``;
    FID), the validation split's in evaluator features (``ref.val``, when given: what the
    snapshot curves are scored on; ``available`` False where data.<name>.val_size carves none),
    and the training images' evaluator features and labels (the real-vs-real floor's real set and
    the mode-dropping curve; labels -1 without classes)."""
    from glann.atomic import save_npz

    data_dir = ref.data_dir
    xte, _ = load_prepared(data_dir, "test")
    net, ev = load_evaluator(ref.evaluator, device)
    feats, _ = evaluator_outputs(net, xte, device)
    mu, sigma = gaussian_stats(feats)
    # the training images' features: the real-vs-real floor's real set and the mode-dropping curve
    xtr, ytr = load_prepared(data_dir, "train")
    train_feats, _ = evaluator_outputs(net, xtr, device)
    labels = ytr if ev["task"] == "classes" and ytr is not None else np.full(len(xtr), -1)
    save_npz(ref.stats, mu=mu, sigma=sigma, features=feats.astype(np.float32),
             train_features=train_feats.astype(np.float32), train_labels=np.asarray(labels, dtype=np.int64))
    if ref.val is not None:
        xva, _ = load_prepared(data_dir, "val")
        if len(xva) < 2:
            save_npz(ref.val, available=np.array(False))
        else:
            fv, _ = evaluator_outputs(net, xva, device)
            mu_v, sigma_v = gaussian_stats(fv)
            save_npz(ref.val, available=np.array(True), mu=mu_v, sigma=sigma_v,
                     features=fv.astype(np.float32))
    path, reason = inception_weights_path(inception_weights) if use_inception else (None, "fid.inception: false")
    if path is None:
        save_npz(ref.inception, available=np.array(False), reason=np.array(reason))
        log.warning("Inception FID unavailable: %s", reason)
        return
    model = load_inception(path, device)
    f = inception_features(model, xte, device)
    mu, sigma = gaussian_stats(f)
    save_npz(ref.inception, available=np.array(True), reason=np.array(""), mu=mu, sigma=sigma,
             features=f.astype(np.float32), weights=np.array(str(path)))


def _fid(fake, real) -> float:
    return frechet_distance(*gaussian_stats(fake), *gaussian_stats(real))


def _kid(fake, real, cfg: dict, seed: int) -> dict:
    return kernel_inception_distance(fake, real, cfg["eval"]["kid_subsets"], cfg["eval"]["kid_subset_size"], seed)


def noise_of_metrics(feats, real_feats, train_feats, cfg: dict, seed: int, train_labels=None) -> dict:
    """KID, the bootstrap intervals of fid_domain and KID, the real-vs-real floor and the
    mode-dropping curve, on evaluator features: ``feats`` (the generated samples), ``real_feats``
    (the test split), ``train_feats`` (training images: the floor's real set, drawn at the
    samples' n; with ``train_labels``, ``mode_drop_fid_domain[c - 1]`` is the fid_domain of
    training images of classes 0..c-1 only, and ``single_class_fid_domain[c]`` that of class c
    alone, at the same n where that many exist)."""
    kid = _kid(feats, real_feats, cfg, seed)
    b = cfg["eval"]["bootstrap_resamples"]
    out = {"kid_domain": kid["mean"], "kid_domain_std": kid["std"], "kid_subset_size": kid["subset_size"],
           "kid_subsets": kid["subsets"], "bootstrap_resamples": b,
           "fid_domain_ci": bootstrap_interval(_fid, feats, real_feats, b, seed) if b else None,
           "kid_domain_ci": kid_bootstrap_interval(feats, real_feats, b, seed) if b else None}
    rng = np.random.default_rng(seed)
    n = min(len(feats), len(train_feats))
    floor = train_feats[rng.choice(len(train_feats), n, replace=False)]
    out.update({"floor_n": int(n), "floor_fid_domain": _fid(floor, real_feats),
                "floor_kid_domain": _kid(floor, real_feats, cfg, seed)["mean"], "mode_drop_fid_domain": None,
                "single_class_fid_domain": None})
    if train_labels is not None:
        labels = np.asarray(train_labels)
        curve = []
        for c in range(1, int(labels.max()) + 2):
            pool = np.flatnonzero(labels < c)
            pick = pool[rng.choice(len(pool), min(n, len(pool)), replace=False)]
            curve.append(_fid(train_feats[pick], real_feats) if len(pick) > 1 else float("inf"))
        out["mode_drop_fid_domain"] = curve
        single = []
        for c in range(int(labels.max()) + 1):
            pool = np.flatnonzero(labels == c)
            pick = pool[rng.choice(len(pool), min(n, len(pool)), replace=False)]
            single.append(_fid(train_feats[pick], real_feats) if len(pick) > 1 else float("inf"))
        out["single_class_fid_domain"] = single
    return out


def _inception_metrics(fake, stats_inception, cfg: dict, device, seed: int) -> dict:
    """Inception FID and KID against ``stats_inception`` (None, or statistics marked unavailable:
    both None, with the reason)."""
    out = {"inception_fid": None, "inception_fid_reason": "no Inception statistics given", "inception_fid_samples": 0,
           "inception_kid": None, "inception_kid_std": None}
    if stats_inception is None:
        return out
    with load_npz(stats_inception) as z:
        if not bool(z["available"]):
            return {**out, "inception_fid_reason": str(z["reason"])}
        model = load_inception(Path(str(z["weights"])), device)
        n = min(cfg["fid"]["num_samples"], len(fake))
        f = inception_features(model, fake[:n], device)
        out.update(inception_fid=frechet_distance_to_features(f, z["mu"], z["sigma"]), inception_fid_reason=None,
                   inception_fid_samples=int(n))
        if "features" in z:
            kid = _kid(f, z["features"], cfg, seed)
            out.update(inception_kid=kid["mean"], inception_kid_std=kid["std"])
    return out


def sample_spread(images: np.ndarray) -> float:
    """The mean over pixels of the std across samples, on [0, 1]: 0 when every sample is the same image."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    return float(x.reshape(len(x), -1).std(0).mean()) if len(x) > 1 else 0.0


def evaluate(samples_path, ref: Reference, how: Scoring, losses=None, method=None) -> dict:
    """Every metric of one run's samples against ``ref``'s test split; ``val_fid_domain``:
    fid_domain against the validation split (``ref.val``; None where none is carved), what a
    sweep picks its best setting on. ``how.cfg``: the config's ``fid`` and ``eval`` sections.
    ``losses``: the run's training CSVs, for its status (glann.evaluation.status: ``status``,
    ``status_reason``, ``status_epoch``) as the status rules of ``method`` read them."""
    from prdc import compute_prdc

    with load_npz(samples_path) as z:
        fake = z["images"]
        diverged = bool(z["diverged"]) if "diverged" in z else False
        diverged_epoch = int(z["diverged_epoch"]) if diverged else None
        compute = {k: z[k].item() for k in ("train_seconds", "images_processed", "train_device", "network_evals",
                                            "sample_seconds_per_1000") if k in z}
    cfg, device, seed, data_dir = how.cfg, how.device, how.seed, ref.data_dir
    net, ev = load_evaluator(ref.evaluator, device)
    feats, pred = evaluator_outputs(net, fake, device)
    with load_npz(ref.stats) as z:
        mu_r, sigma_r, real_feats = z["mu"], z["sigma"], z["features"].astype(np.float64)
        train_feats = z["train_features"].astype(np.float64) if "train_features" in z else None
        train_labels = z["train_labels"] if "train_labels" in z else None
    metrics = {"n_samples": int(len(fake)), "n_test": int(len(real_feats)), "evaluator_task": ev["task"],
               "evaluator_test_accuracy": ev["test_accuracy"],
               "fid_domain": frechet_distance_to_features(feats, mu_r, sigma_r), "val_fid_domain": None,
               "sample_spread": sample_spread(fake)}
    metrics["image_shape"] = [int(v) for v in fake.shape[1:]]
    if cfg["eval"].get("fid_infinity"):  # FID∞: the 1/n bias of fid_domain extrapolated away
        metrics["fid_domain_infinity"] = fid_infinity(feats, mu_r, sigma_r, seed=seed)["fid_infinity"]
    if train_feats is None:  # statistics written before real_stats kept the training features
        raise DataError(f"{ref.stats} holds no training-image features: delete it and rerun snakemake, "
                        "which rebuilds it (real_stats) and re-scores every run")
    labelled = train_labels is not None and ev["task"] == "classes" and int(np.min(train_labels)) >= 0
    metrics.update(noise_of_metrics(feats, real_feats, train_feats, cfg, seed, train_labels if labelled else None))
    if ref.val is not None:
        with load_npz(ref.val) as z:
            if bool(z["available"]):
                metrics["val_fid_domain"] = frechet_distance_to_features(feats, z["mu"], z["sigma"])

    metrics.update(_inception_metrics(fake, ref.inception, cfg, device, seed))

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
    metrics["diverged"] = diverged
    metrics["diverged_epoch"] = diverged_epoch
    metrics.update(compute)  # the method's training seconds, images processed and device
    from glann.evaluation.status import decide

    verdict = decide(metrics, read_losses(losses), method)
    metrics.update({"status": verdict["status"], "status_reason": verdict["reason"], "status_epoch": verdict["epoch"]})
    return metrics


def read_losses(paths) -> dict:
    """{file name: rows} of training CSVs (a missing file: no rows)."""
    import csv

    out = {}
    for path in paths or []:
        path = Path(path)
        out[path.name] = list(csv.DictReader(path.open())) if path.exists() else []
    return out
