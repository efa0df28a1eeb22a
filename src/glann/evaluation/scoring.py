"""The evaluation steps: real statistics once per dataset, then every method's metrics.

The same code scores every method (glann.evaluation.metrics: the formulas; glann.evaluation.evaluator:
the offline feature net; glann.evaluation.inception: pytorch-fid's network).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from glann.atomic import load_npz
from glann.data.datasets import load_prepared, read_manifest
from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
from glann.hub import inception_weights_path
from glann.evaluation.inception import inception_features, load_inception
from glann.evaluation.metrics import (birthday_test, duplicate_threshold, frechet_distance_to_features, gaussian_stats, max_f_beta,
                      mode_coverage, prd_from_features)

log = logging.getLogger(__name__)


def real_stats(data_dir, evaluator_path, inception_weights, out_evaluator, out_inception, device,
               use_inception: bool = True, out_evaluator_val=None):
    """The real images' statistics: the test split's in evaluator features (every reported metric)
    and in Inception features (FID), and the validation split's in evaluator features (what the
    snapshot curves are scored on; ``available`` False where data.<name>.val_size carves none)."""
    from glann.atomic import save_npz

    xte, _ = load_prepared(data_dir, "test")
    net, _ = load_evaluator(evaluator_path, device)
    feats, _ = evaluator_outputs(net, xte, device)
    mu, sigma = gaussian_stats(feats)
    save_npz(out_evaluator, mu=mu, sigma=sigma, features=feats.astype(np.float32))
    if out_evaluator_val is not None:
        xva, _ = load_prepared(data_dir, "val")
        if len(xva) < 2:
            save_npz(out_evaluator_val, available=np.array(False))
        else:
            fv, _ = evaluator_outputs(net, xva, device)
            mu_v, sigma_v = gaussian_stats(fv)
            save_npz(out_evaluator_val, available=np.array(True), mu=mu_v, sigma=sigma_v)
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


def evaluate(samples_path, evaluator_path, stats_evaluator, stats_inception, data_dir, cfg: dict, device,
             seed: int = 0, stats_evaluator_val=None) -> dict:
    """Every metric of one run's samples against the test split; ``val_fid_domain``: fid_domain
    against the validation split (``stats_evaluator_val``; None where none is carved), what a
    sweep picks its best setting on."""
    from prdc import compute_prdc

    with load_npz(samples_path) as z:
        fake = z["images"]
        diverged = bool(z["diverged"]) if "diverged" in z else False
        diverged_epoch = int(z["diverged_epoch"]) if diverged else None
        compute = {k: z[k].item() for k in ("train_seconds", "images_processed", "train_device") if k in z}
    net, ev = load_evaluator(evaluator_path, device)
    feats, pred = evaluator_outputs(net, fake, device)
    with load_npz(stats_evaluator) as z:
        mu_r, sigma_r, real_feats = z["mu"], z["sigma"], z["features"].astype(np.float64)
    metrics = {"n_samples": int(len(fake)), "evaluator_task": ev["task"],
               "evaluator_test_accuracy": ev["test_accuracy"],
               "fid_domain": frechet_distance_to_features(feats, mu_r, sigma_r), "val_fid_domain": None}
    if stats_evaluator_val is not None:
        with load_npz(stats_evaluator_val) as z:
            if bool(z["available"]):
                metrics["val_fid_domain"] = frechet_distance_to_features(feats, z["mu"], z["sigma"])

    with load_npz(stats_inception) as z:
        if bool(z["available"]):
            model = load_inception(Path(str(z["weights"])), device)
            n = min(cfg["fid"]["num_samples"], len(fake))
            f = inception_features(model, fake[:n], device)
            metrics["inception_fid"] = frechet_distance_to_features(f, z["mu"], z["sigma"])
            metrics["inception_fid_reason"] = None
            metrics["inception_fid_samples"] = int(n)
        else:
            metrics["inception_fid"] = None
            metrics["inception_fid_reason"] = str(z["reason"])
            metrics["inception_fid_samples"] = 0

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
    return metrics
