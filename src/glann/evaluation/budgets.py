"""A method's budget, chosen from its own validation curve (the converged study's rule).

The rule (docs/studies.md, "Budgets from the curves"), on a run's snapshot curve scored on the
validation split:

1. **Smooth**: each snapshot's val fid_domain is replaced by the median of it and its two
   neighbours (``window`` 3; at either end the mean of the two there). One snapshot of a small
   validation split moves by 10-30% from the draw alone (digits: 144 images); the median of
   three does not follow a single lucky or unlucky draw.
2. **Stop**: with best = the lowest smoothed value, the budget is the epoch of the **first
   snapshot whose smoothed value is within ``tolerance`` (5%) of best**: where the curve stops
   improving by more than the tolerance.
3. **Still improving**: the run did not converge within its budget when its smoothed best is its
   last snapshot and that beat the smoothed value two snapshots before by more than the tolerance
   (the one just before shares a point with it in the median): the budget given is too short to
   say where it stops. A curve that got worse after its best has converged, to its best.
4. **Never learned**: a run none of whose snapshots covers 9 classes (where the curve has class
   counts) has no point at which it learned, so its curve chooses nothing: it keeps the full
   budget it was given, so that "did not learn" is said at the longest budget tried.

``window=1`` is the rule on the raw points (still improving: against the snapshot just before).
"""

from __future__ import annotations

from statistics import median

from glann.evaluation.verdicts import LEARNED_CLASSES

TOLERANCE = 0.05
WINDOW = 3


def smoothed(values: list[float], window: int = WINDOW) -> list[float]:
    """The running median of ``values`` over ``window`` neighbouring points (odd; 1: unchanged),
    shrunk at the ends to the points that exist there."""
    half = window // 2
    return [median(values[max(0, i - half): i + half + 1]) for i in range(len(values))]


def stopping_point(points: list[dict], tolerance: float = TOLERANCE, window: int = WINDOW) -> dict | None:
    """{"epoch", "train_seconds", "fid_domain", "best", "converged", "learned"} of a curve's points
    (each with epoch, train_seconds, fid_domain; classes_covered where known); None for a curve
    without two finite points. ``fid_domain`` and ``best`` are smoothed values; a curve that never
    covers 9 classes (``learned`` False) or is still improving (``converged`` False) returns its
    last snapshot: the full budget."""
    pts = sorted((p for p in points if p.get("fid_domain") is not None and p["fid_domain"] == p["fid_domain"]
                  and p["fid_domain"] != float("inf")), key=lambda p: p["epoch"])
    if len(pts) < 2:
        return None
    smooth = smoothed([p["fid_domain"] for p in pts], window)
    best = min(smooth)
    counts = [p.get("classes_covered") for p in pts]
    learned = any(c is not None and c >= LEARNED_CLASSES for c in counts) or all(c is None for c in counts)
    back = smooth[max(0, len(smooth) - 1 - (window // 2 + 1))]  # the first point sharing no median with the last
    converged = not (smooth[-1] == best and back > smooth[-1] * (1 + tolerance))
    if not learned or not converged:  # the full budget: it never learned, or it is still improving
        return {"epoch": pts[-1]["epoch"], "train_seconds": pts[-1]["train_seconds"], "fid_domain": smooth[-1],
                "best": best, "converged": converged, "learned": learned}
    limit = best * (1 + tolerance)  # fid_domain >= 0
    i = next(i for i, v in enumerate(smooth) if v <= limit)
    return {"epoch": pts[i]["epoch"], "train_seconds": pts[i]["train_seconds"], "fid_domain": smooth[i],
            "best": best, "converged": converged, "learned": True}


def describe(pick: dict | None) -> str:
    """A budget table's cell for one run's pick."""
    if pick is None:
        return "-"
    if not pick["learned"]:
        return f"epoch {pick['epoch']} (*never learned*: the full budget)"
    return f"epoch {pick['epoch']}" + ("" if pick["converged"] else " (*still improving*)")


def budget_section(curve_rows: list[dict], datasets, methods, tolerance: float = TOLERANCE) -> list[str]:
    """The table's "Budgets from the validation curves" section: per method and seed, the epoch
    the rule picks and whether the run converged within its budget. Only curves scored on the
    validation split count (a budget is never chosen on the split that is reported)."""
    rows = [r for r in curve_rows if r.get("split") == "val"]
    if not rows:
        return []
    seeds = sorted({r["seed"] for r in rows})
    lines = ["## Budgets from the validation curves", "",
             f"Per seed, on the validation curve smoothed by a running median of {WINDOW} snapshots: the "
             f"epoch of the first snapshot within {tolerance:.0%} of the smoothed best (where it stops "
             f"improving); *still improving* where the smoothed best is the last snapshot and it improved "
             f"on the one two snapshots before by more than {tolerance:.0%} (the run did not converge within "
             f"its budget); "
             f"*never learned* where no snapshot covers {LEARNED_CLASSES} classes (docs/studies.md).", "",
             "| dataset | method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for d in datasets:
        for m in methods:
            cells = [describe(stopping_point([r for r in rows if (r["dataset"], r["method"], r["seed"]) == (d, m, seed)],
                                             tolerance)) for seed in seeds]
            if any(c != "-" for c in cells):
                lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def from_records(records_dir) -> list[dict]:
    """The rule applied to every recorded validation curve under ``records_dir``
    (``<dataset>/<method>[/hp<k>]/seed<S>/snapshots.json``): one dict per run with dataset,
    method, setting, seed, the budget it ran (its last snapshot's epoch) and its pick."""
    import json
    from pathlib import Path

    picks = []
    root = Path(records_dir)
    for path in sorted([*root.glob("*/*/seed*/snapshots.json"), *root.glob("*/*/hp*/seed*/snapshots.json")]):
        try:
            curve = json.loads(path.read_text())
            points = list(curve["points"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            from glann.errors import GlannError

            raise GlannError(f"{path}: not a snapshot curve ({exc}); delete the record folder and rerun the "
                             "study to record that run again") from exc
        if curve.get("split") != "val":
            continue  # a budget is never chosen on the reported split
        rel = path.parent.relative_to(root).parts
        pick = stopping_point(points)
        if pick is None:
            continue
        picks.append({"dataset": rel[0], "method": rel[1], "setting": "/".join(rel[2:-1]),
                      "seed": int(rel[-1].removeprefix("seed")), "ran": max(p["epoch"] for p in points), **pick})
    return picks


def format_picks(picks: list[dict]) -> str:
    """``glann budgets``' table: each run's pick, the training seconds its curve took to reach it (what
    a run at that budget costs, as measured in the recorded run), and their total per seed."""
    lines = ["| dataset | method | setting | seed | epochs run | budget by the rule | smoothed val fid_domain there (best) "
             "| training s to the budget |", "|---|---|---|---|---|---|---|---|"]
    for p in picks:
        lines.append(f"| {p['dataset']} | {p['method']} | {p['setting'] or '-'} | {p['seed']} | {p['ran']} | "
                     f"{describe(p)} | {p['fid_domain']:.3g} ({p['best']:.3g}) | {p['train_seconds']:,.0f} |")
    totals = {}
    for p in picks:
        totals[p["seed"]] = totals.get(p["seed"], 0.0) + p["train_seconds"]
    lines += ["", "Training seconds to the budgets, summed: " +
              ", ".join(f"seed {s}: {t:,.0f} s" for s, t in sorted(totals.items())) +
              " (each job's own seconds; sampling and scoring not counted)."]
    return "\n".join(lines)
