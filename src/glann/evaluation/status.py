"""A run's status, decided here and nowhere else: ``learned``, ``did_not_learn``, ``diverged`` or
``degenerate`` (docs/evaluation.md, "Run status").

In order, the first that applies:

- **diverged**: a loss became non-finite (the trainer stopped and kept the last finished
  epoch's weights), or a logged loss *exploded*: its magnitude passed :data:`LOSS_BOUND` (times
  the image's pixel count for losses summed over pixels, :data:`PIXEL_SUMS`), or grew to
  :data:`LOSS_GROWTH` times its first epoch's magnitude (at least 1). A Wasserstein critic's
  values have no scale of their own (weight clipping at c scales them with c to the power of the
  depth), so WGAN's and WGAN-GP's losses are judged by the growth alone (:data:`SCALE_FREE`);
- **degenerate**: the samples are (near-)constant: the mean over pixels of their std across
  samples (``sample_spread``, on [0, 1]) is below :data:`MIN_SPREAD` (real MNIST digits: about 0.3);
- **did_not_learn**: fewer than 90% of the classes covered (fewer than 9 of 10; GLANN's and
  Lucic et al.'s mode-dropping mark), or fid_domain above the run's own *did-not-learn
  threshold*: the median over the classes of the fid_domain of real training images of a single
  class, at the same n and against the same test split (``single_class_fid_domain``, computed by
  the evaluation): a model further from the test images than real images of one class (the top
  of the mode-dropping curve, ``mode_drop_fid_domain``) has not learned the data;
- **learned** otherwise.

Every table, the report, MLflow and the sample grids show this status beside the numbers.
"""

from __future__ import annotations

import math

STATUSES = ("learned", "did_not_learn", "diverged", "degenerate")
MARKS = {"learned": "", "did_not_learn": "did not learn", "diverged": "diverged", "degenerate": "degenerate"}
LOSS_BOUND = 1e3
LOSS_GROWTH = 1e3
MIN_SPREAD = 0.01
CLASS_SHARE = 0.9
LOSS_COLUMNS = ("loss", "d_loss", "g_loss", "elbo", "nll", "kl")
PIXEL_SUMS = {"vae": ("elbo", "nll", "kl"), "imle_pixel": ("loss",)}  # losses summed over an image's pixels
SCALE_FREE = ("wgan", "wgan_gp")  # critics whose values have no natural scale: growth only


def exploded_loss(rows: list[dict], pixels: int = 1, summed: tuple = (), bounded: bool = True) -> dict | None:
    """The first (epoch, column, value) at which a logged loss exploded, or None.

    ``rows``: a training CSV's rows (dicts with ``epoch`` and loss columns); ``summed``: the
    columns that sum over the image's ``pixels`` (their bound scales with it); ``bounded``:
    False for losses judged by their growth alone."""
    first: dict = {}
    for row in rows:
        for col in LOSS_COLUMNS:
            if col not in row or row[col] in (None, ""):
                continue
            v = float(row[col])
            if not math.isfinite(v):
                return {"epoch": int(float(row["epoch"])), "column": col, "value": v}
            base = first.setdefault(col, max(abs(v), 1.0))
            bound = LOSS_BOUND * (pixels if col in summed else 1)
            if (bounded and abs(v) > bound) or abs(v) > LOSS_GROWTH * base:
                return {"epoch": int(float(row["epoch"])), "column": col, "value": v}
    return None


def threshold(metrics: dict) -> float | None:
    """The run's did-not-learn fid_domain: the median over classes of real single-class sets'
    (None where it was not computed: a dataset without labels)."""
    single = [v for v in metrics.get("single_class_fid_domain") or [] if v is not None]
    if not single:
        return None
    ordered = sorted(single)
    mid = len(ordered) // 2
    return float(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2)


def decide(metrics: dict, losses: dict | None = None, method: str | None = None) -> dict:
    """``{"status", "reason", "epoch"}`` of one run from its metrics.json content and its training
    CSVs' rows (``losses``: {name: rows}); ``method`` picks the losses summed over pixels."""
    shape = metrics.get("image_shape") or [1]
    pixels = int(math.prod(shape))
    if metrics.get("diverged"):
        return {"status": "diverged", "epoch": metrics.get("diverged_epoch"),
                "reason": f"non-finite loss in epoch {metrics.get('diverged_epoch')}"}
    method = method or metrics.get("method", "")
    for name, rows in sorted((losses or {}).items()):
        hit = exploded_loss(rows, pixels, PIXEL_SUMS.get(method, ()), method not in SCALE_FREE)
        if hit:
            return {"status": "diverged", "epoch": hit["epoch"],
                    "reason": f"{name} {hit['column']} = {hit['value']:.3g} in epoch {hit['epoch']} (exploded)"}
    spread = metrics.get("sample_spread")
    if spread is not None and spread < MIN_SPREAD:
        return {"status": "degenerate", "epoch": None,
                "reason": f"near-constant samples (pixel std across samples {spread:.3g} < {MIN_SPREAD})"}
    covered, total = metrics.get("classes_covered"), metrics.get("num_classes")
    if covered is not None and total and covered < math.ceil(CLASS_SHARE * total):
        return {"status": "did_not_learn", "epoch": None,
                "reason": f"{covered} of {total} classes covered (< {math.ceil(CLASS_SHARE * total)})"}
    limit, fid = threshold(metrics), metrics.get("fid_domain")
    if limit is not None and fid is not None and (not math.isfinite(fid) or fid > limit):
        return {"status": "did_not_learn", "epoch": None,
                "reason": f"fid_domain {fid:.3g} above the threshold {limit:.3g} (real images of a single class)"}
    return {"status": "learned", "epoch": None, "reason": ""}


def mark(status: str | None) -> str:
    """The short mark a table prints after a run's numbers ('' for a learned run)."""
    status = status or "learned"
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; known: {', '.join(STATUSES)}")
    return MARKS[status]
