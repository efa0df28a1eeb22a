"""A method's budget, chosen from its own validation curve (the converged study's rule).

The rule (docs/studies.md, "Budgets from the curves"): on a run's snapshot curve scored on the
validation split, with best = the lowest val fid_domain of the curve, the budget is the epoch
of the **first snapshot within ``tolerance`` (5%) of best**: where val fid_domain stops
improving by more than the tolerance. The run is **still improving** at the end of its budget
when its best is its last snapshot and that snapshot improved on the one before by more than
the tolerance: the budget given is too short to say where it stops. Otherwise it has converged
within its budget (a curve that got worse after its best has converged, to its best).
"""

from __future__ import annotations

TOLERANCE = 0.05


def stopping_point(points: list[dict], tolerance: float = TOLERANCE) -> dict | None:
    """{"epoch", "train_seconds", "fid_domain", "best", "converged"} of a curve's points (each
    with epoch, train_seconds, fid_domain); None for a curve without two finite points."""
    pts = sorted((p for p in points if p.get("fid_domain") is not None and p["fid_domain"] == p["fid_domain"]
                  and p["fid_domain"] != float("inf")), key=lambda p: p["epoch"])
    if len(pts) < 2:
        return None
    best = min(p["fid_domain"] for p in pts)
    limit = best * (1 + tolerance)  # fid_domain >= 0
    first = next(p for p in pts if p["fid_domain"] <= limit)
    return {"epoch": first["epoch"], "train_seconds": first["train_seconds"], "fid_domain": first["fid_domain"],
            "best": best, "converged": not (pts[-1]["fid_domain"] == best and
                                             pts[-2]["fid_domain"] > pts[-1]["fid_domain"] * (1 + tolerance))}


def budget_section(curve_rows: list[dict], datasets, methods, tolerance: float = TOLERANCE) -> list[str]:
    """The table's "Budgets from the validation curves" section: per method and seed, the epoch
    the rule picks and whether the run converged within its budget. Only curves scored on the
    validation split count (a budget is never chosen on the split that is reported)."""
    rows = [r for r in curve_rows if r.get("split") == "val"]
    if not rows:
        return []
    seeds = sorted({r["seed"] for r in rows})
    lines = ["## Budgets from the validation curves", "",
             f"Per seed, the epoch of the first snapshot whose validation fid_domain is within "
             f"{tolerance:.0%} of the curve's best (where it stops improving), and *still improving* "
             f"where the best is the last snapshot and it improved on the one before by more than "
             f"{tolerance:.0%}: that run did not converge within its budget (docs/studies.md).", "",
             "| dataset | method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for d in datasets:
        for m in methods:
            cells = []
            for seed in seeds:
                pick = stopping_point([r for r in rows if (r["dataset"], r["method"], r["seed"]) == (d, m, seed)],
                                      tolerance)
                cells.append("-" if pick is None else f"epoch {pick['epoch']}" +
                             ("" if pick["converged"] else " (*still improving*)"))
            if any(c != "-" for c in cells):
                lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    return lines + [""]
