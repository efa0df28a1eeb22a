"""Quality against compute: every snapshot a trainer kept, scored like the final model.

Each trainer keeps ``snapshots.count`` copies of its generator, evenly spaced over its
budget (glann.methods.training.snapshot_epochs), each with the training seconds and images
processed so far. ``score_snapshots`` samples ``snapshots.num_samples`` images from each
through the same :class:`~glann.methods.sampling.Sampler` as the final model and scores them
with the same evaluator features and Fréchet distance as ``evaluate`` (fid_domain), plus
the classes covered and KID (over :data:`SNAPSHOT_KID_SUBSETS` subset pairs; its mean is unbiased at
any subset count). A curve's points are scored at ``snapshots.num_samples``, which may be fewer
than the table's ``sample.num_samples``: each point records its n (``n_samples``), and the
curve's CSV and figure state it. Compute is the whole method's: GLANN's points are GLO's full
training plus IMLE so far; glo_gauss's are GLO so far (plus its Gaussian fit, which takes
milliseconds and is not timed).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from glann.atomic import load_npz, load_torch
from glann.data.datasets import read_manifest
from glann.errors import DataError
from glann.evaluation.context import Reference, Scoring
from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
from glann.methods.registry import get
from glann.evaluation.metrics import frechet_distance_to_features, kernel_inception_distance, mode_coverage
from glann.methods.sampling import BN_BATCHES, Sampler

log = logging.getLogger(__name__)
SNAPSHOT_KID_SUBSETS = 20


def _gaussian_of(glo: dict) -> dict:
    codes = glo["codes"].double()
    return {"mean": codes.mean(0), "cov": torch.cov(codes.T), "diverged": False}


def score_snapshots(method: str, snapshot_path, fixed_paths: dict, ref: Reference, how: Scoring,
                    tracker=None) -> dict:
    """One point per snapshot: epoch, train_seconds, images_processed, fid_domain, classes_covered.

    ``ref.stats`` holds the real statistics of the split the curve is scored on: the validation
    split (data.<name>.val_size carved one; the one budgets are chosen on) or the test split;
    ``how.cfg``: ``num_samples``, ``split`` (which of the two, recorded in the curve),
    ``min_class_share`` (default 0.02) and, for compare_gan v1's generators, ``bn_stats`` and
    ``bn_batches`` (glann.methods.sampling)."""
    cfg, device, seed = how.cfg, how.device, how.seed
    num_samples, split = int(cfg["num_samples"]), cfg.get("split", "test")
    bn_stats, bn_batches = cfg.get("bn_stats", "recalibrated"), int(cfg.get("bn_batches", BN_BATCHES))
    share = float(cfg.get("min_class_share", 0.02))
    m = get(method)
    snaps = load_torch(snapshot_path)
    fixed = {role: load_torch(p) for role, p in fixed_paths.items()}
    offset_s = sum(float(b.get("train_seconds", 0.0)) for b in fixed.values())
    offset_n = sum(int(b.get("images_processed", 0)) for b in fixed.values())
    net, ev = load_evaluator(ref.evaluator, device)
    with load_npz(ref.stats) as z:
        if "available" in z and not bool(z["available"]):
            raise DataError(f"{ref.stats} holds no statistics: the dataset has no validation split "
                            "(data.<name>.val_size is 0); score the snapshots on the test split's statistics")
        mu_r, sigma_r = z["mu"], z["sigma"]
        real_feats = z["features"].astype(np.float64) if "features" in z else None
    train_counts = read_manifest(ref.data_dir)["class_counts"]["train"] if ev["task"] == "classes" else None

    points = []
    for snap in snaps["snapshots"]:
        blob = {**{k: snaps[k] for k in ("config", "kind", "seed")}, **snap}
        blobs = {**fixed, m.snapshot_role: blob}
        if m.sampler == "glo_gauss":
            blobs["model"] = _gaussian_of(blob)
        sampler = Sampler(method, {}, device, blobs=blobs, bn_stats=bn_stats, bn_batches=bn_batches)
        images = sampler.generate(num_samples, seed)
        feats, pred = evaluator_outputs(net, images, device)
        point = {"epoch": int(snap["epoch"]),
                 "train_seconds": offset_s + float(snap["train_seconds"]),
                 "images_processed": offset_n + int(snap["images_processed"]),
                 "fid_domain": frechet_distance_to_features(feats, mu_r, sigma_r), "n_samples": int(num_samples),
                 "kid_domain": None if real_feats is None else kernel_inception_distance(
                     feats, real_feats, SNAPSHOT_KID_SUBSETS, seed=seed)["mean"]}
        if train_counts is not None:
            point["classes_covered"] = mode_coverage(pred, train_counts, share)["classes_covered"]
        points.append(point)
        log.info("snapshot at epoch %d: %s", point["epoch"], point)
        if tracker is not None:  # MLflow: the curve with images processed as its step
            tracker.log_metrics({"snapshot_fid_domain": point["fid_domain"],
                                 "snapshot_train_seconds": point["train_seconds"]},
                                step=point["images_processed"])
    return {"method": method, "seed": seed, "split": split, "diverged": bool(snaps["diverged"]),
            "diverged_epoch": snaps["diverged_epoch"], "epochs": snaps["epochs"], "points": points}
