"""The Table-1 style summary: methods as rows, datasets as columns, mean ± std over seeds.

Its files are end products (no step reads them), written without integrity records.

Published Inception FIDs are GLANN's Table 1 (Hoshen, Li & Malik, CVPR 2019),
whose GAN/VAE rows are Lucic et al. 2018's best of 100 wide-range settings (re-run with 50
seeds), not v1's default settings that the paper presets train; they sit
beside ours only where we measured Inception FID (never beside fid_domain,
which is on other features and another scale).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from glann.atomic import write_json, write_text
from glann.evaluation.budgets import budget_section
from glann.evaluation.figures import compute_figure, summary_figures
from glann.evaluation.verdicts import (differences_section, equal_compute_section, first_learned_section,
                                      format_cell, glann_section, mean_interval, method_table, sizes_and_floor,
                                      status_section)

# GLANN paper, Table 1 (Inception FID; lower is better). "glo_gauss" is GLO's row.
PAPER_FID = {
    "mnist": {"glann": 8.6, "glo_gauss": 49.6, "nsgan": 6.8, "lsgan": 7.8, "wgan_gp": 20.3, "vae": 23.8},
    "fashion": {"glann": 13.0, "glo_gauss": 57.7, "nsgan": 26.5, "lsgan": 30.7, "wgan_gp": 24.5, "vae": 58.7},
    "cifar10": {"glann": 46.5, "glo_gauss": 65.4, "nsgan": 58.5, "lsgan": 87.1, "wgan_gp": 55.8, "vae": 155.7},
    "celeba64": {"glann": 46.3, "glo_gauss": 52.4, "nsgan": 55.0, "lsgan": 53.9, "wgan_gp": 30.0, "vae": 85.7},
}

METRICS = [  # (key, heading, lower is better?)
    ("fid_domain", "fid_domain (evaluator features) ↓", True),
    ("kid_domain", "KID (evaluator features; ± over seeds, then its std over subsets) ↓", True),
    ("fid_domain_infinity", "FID∞ (fid_domain extrapolated to n → ∞; eval.fid_infinity) ↓", True),
    ("inception_fid", "Inception FID ↓", True),
    ("inception_kid", "Inception KID (± over seeds, then its std over subsets) ↓", True),
    ("precision", "precision ↑", False),
    ("recall", "recall ↑", False),
    ("density", "density ↑", False),
    ("coverage", "coverage ↑", False),
    ("prd_f8", "PRD F8 (recall) ↑", False),
    ("prd_f1_8", "PRD F1/8 (precision) ↑", False),
    ("classes_covered", "classes covered ↑", False),
    ("class_kl", "KL(class hist ‖ train) ↓", True),
    ("duplicates_per_batch", "duplicate pairs per batch ↓", True),
    ("support_estimate", "estimated support (birthday) ↑", False),
    ("train_seconds", "training seconds (GLANN = GLO + IMLE; glo_gauss = GLO + fit)", True),
    ("network_evals", "network evaluations per sample (GLANN: T and G; flow: its ODE solver's)", True),
    ("sample_seconds_per_1000", "sampling seconds per 1,000 images", True),
]


def mean_std(values):
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    import numpy as np

    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def collect(metric_files) -> list[dict]:
    rows = []
    for path in metric_files:
        path = Path(path)
        seed_dir, method_dir, ds_dir = path.parent, path.parent.parent, path.parent.parent.parent
        m = json.loads(path.read_text())
        rows.append({"dataset": ds_dir.name, "method": method_dir.name,
                     "seed": int(seed_dir.name.removeprefix("seed")), **m})
    return rows


def row_mark(statuses: list[str]) -> str:
    """The mark of a row from its seeds' statuses (glann.evaluation.status): '' when every seed
    learned, else e.g. 'did not learn' or 'did not learn: 1 of 3 seeds'."""
    from glann.evaluation.status import mark

    bad = [s for s in statuses if s != "learned"]
    if not bad:
        return ""
    worst = max(set(bad), key=bad.count)
    text = mark(worst) if len(set(bad)) == 1 else ", ".join(sorted({mark(s) for s in bad}))
    return text if len(bad) == len(statuses) else f"{text}: {len(bad)} of {len(statuses)} seeds"


def aggregate(rows: list[dict]) -> dict:
    """{(dataset, method): {metric: (mean, std, n), 'diverged': [epochs], 'status': [per seed], 'mark': str}}."""
    import numpy as np

    out = {}
    for key in sorted({(r["dataset"], r["method"]) for r in rows}):
        group = [r for r in rows if (r["dataset"], r["method"]) == key]
        cell = {m: mean_std([r.get(m) for r in group]) for m, _, _ in METRICS}
        cell["diverged"] = [r.get("diverged_epoch") for r in group if r.get("diverged")]
        # a metrics.json from before the status existed: its divergence mark, else learned
        cell["status"] = [r.get("status") or ("diverged" if r.get("diverged") else "learned") for r in group]
        cell["reasons"] = [r.get("status_reason") or "" for r in group]
        cell["mark"] = row_mark(cell["status"])
        for name in ("fid_domain_ci", "kid_domain_ci"):  # the seeds' 95% intervals, ends averaged
            cell[name] = mean_interval(group, name)
        for name in ("kid_domain_std", "inception_kid_std"):  # KID's own std over its subsets, mean over seeds
            stds = [float(r[name]) for r in group if r.get(name) is not None]
            cell[name] = float(np.mean(stds)) if stds else None
        for name in ("n_samples", "n_test", "floor_n", "floor_fid_domain", "floor_kid_domain"):
            cell[name] = group[0].get(name)
        cell["seeds"] = sorted(r["seed"] for r in group)
        cell["device"] = ",".join(sorted({str(r["train_device"]) for r in group if r.get("train_device")}))
        out[key] = cell
    return out


BUDGETS = {  # config key budgets: what the table compares (workflow/schemas/config.schema.yaml)
    "learned": "each method trains long enough to cover at least 9 of 10 classes, so training seconds "
               "differ by method (see \"training seconds\"); the quality-at-GLANN's-budget comparison is "
               "config/equal_compute.yaml",
    "equal_compute": "equal compute: each method's epochs set so that its training seconds are within 25% of "
                     "GLANN's; a method that needs more to learn is marked, not given more",
    "paper": "the papers' budgets (GLANN's released recipe; compare_gan v1's epochs)",
    "converged": "the converged study's: its pilot's long budgets, then each method's epochs chosen on the validation "
                 "split from its pilot curve by the rule of docs/studies.md (\"Budgets from the curves\"); a run "
                 "still improving at its budget is marked in \"Budgets from the validation curves\"",
    "custom": "as this config sets them",
}


def render_markdown(agg: dict, datasets: list[str], methods: list[str], budgets: str = "custom",
                    curve_rows=None) -> str:
    lines = ["# Results", "",
             f"**Budgets** (`budgets: {budgets}`): {BUDGETS[budgets]}.", "",
             "Mean ± sample std over seeds. `fid_domain` is the Fréchet distance on the pipeline's own "
             "evaluator features and is **not comparable** with Inception FID. Paper numbers: GLANN "
             "(Hoshen et al. 2019) Table 1, Inception FID. A run marked **did not learn**, **diverged** "
             "or **degenerate** is not a result (docs/evaluation.md, \"Run status\").", ""]
    lines += sizes_and_floor(agg, datasets, methods) + status_section(agg, datasets, methods)
    lines += first_learned_section(curve_rows or [], datasets, methods)
    lines += budget_section(curve_rows or [], datasets, methods)
    lines += equal_compute_section(curve_rows or [], datasets, methods)
    lines += differences_section(agg, datasets, methods)
    lines += glann_section(agg, datasets, methods)
    for key, heading, _ in METRICS:
        present = [agg.get((d, m), {}).get(key, (None,))[0] for d in datasets for m in methods]
        if all(v is None for v in present) and key == "inception_fid":
            lines += [f"## {heading}", "", "Not measured: Inception weights unavailable "
                      "(see each metrics.json's `inception_fid_reason`).", ""]
            continue
        if all(v is None for v in present) and key in ("inception_kid", "fid_domain_infinity"):
            continue  # Inception KID: said once, above; FID∞: only when eval.fid_infinity asks for it
        lines += method_table(heading, agg, datasets, methods, lambda d, m, cell, key=key: metric_cell(d, m, cell, key))
    return "\n".join(lines)


def metric_cell(d: str, m: str, cell: dict, key: str) -> str:
    """One cell of a metric's table: mean ± std, the run's mark, the device, the paper's number."""
    text = format_cell(*cell[key])
    if key in ("kid_domain", "inception_kid") and cell[key][0] is not None and cell.get(f"{key}_std") is not None:
        text += f" (subsets ± {cell[f'{key}_std']:.2g})"
    if cell["diverged"]:
        text += f" (diverged, epoch {', '.join(str(e) for e in cell['diverged'])})"
    elif cell.get("mark"):
        text += f" (**{cell['mark']}**)"
    if key in ("train_seconds", "sample_seconds_per_1000") and cell.get("device") and cell[key][0] is not None:
        text += f" ({cell['device']})"
    if key == "inception_fid" and cell[key][0] is not None:
        paper = PAPER_FID.get(d, {}).get(m)
        if paper is not None:
            text += (f" (paper {paper})" if m in ("glann", "glo_gauss")
                     else f" (Table 1: {paper}, Lucic et al.'s best of 100 settings)")
    return text


def render_csv(agg: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "metric", "mean", "std", "n_seeds", "diverged_epochs", "status"])
    for (d, m), cell in sorted(agg.items()):
        for key, _, _ in METRICS:
            mean, std, n = cell[key]
            w.writerow([d, m, key, "" if mean is None else f"{mean:.6g}",
                        "" if std is None else f"{std:.6g}", n, " ".join(str(e) for e in cell["diverged"]),
                        cell.get("mark") or "learned"])
    return buf.getvalue()


LOSS_COLUMNS = ("loss", "g_loss", "elbo")  # the objective each training CSV logs first


def curve_name(loss_csv) -> str:
    """results/D/M/seedS/glo_losses.csv -> D_M_seedS_glo.csv (losses.csv -> ..._train.csv)."""
    path = Path(loss_csv)
    run, method, dataset = path.parent.name, path.parent.parent.name, path.parent.parent.parent.name
    step = path.stem.replace("_losses", "") if path.stem != "losses" else "train"
    return f"{dataset}_{method}_{run}_{step}.csv"


def write_curves(loss_csvs, out_dir) -> list[Path]:
    """One ``epoch,loss`` CSV per training job (DVC plots), named by :func:`curve_name`.

    ``loss`` is the job's objective: GLO/IMLE loss, the generator loss of a GAN,
    and -ELBO for the VAE (so that lower is better everywhere).
    """
    out_dir = Path(out_dir)
    written = []
    for path in loss_csvs or []:
        rows = list(csv.DictReader(Path(path).open()))
        col = next((c for c in LOSS_COLUMNS if rows and c in rows[0]), None)
        buf = io.StringIO()
        buf.write("epoch,loss\n")
        for r in rows if col else []:
            value = float(r[col])
            buf.write(f"{int(float(r['epoch']))},{-value if col == 'elbo' else value:.6g}\n")
        target = out_dir / curve_name(path)
        write_text(target, buf.getvalue(), record=False)
        written.append(target)
    return written


CURVE_COLUMNS = ("dataset", "method", "seed", "split", "epoch", "train_seconds", "images_processed", "n_samples",
                 "fid_domain", "kid_domain", "classes_covered", "diverged")


def collect_snapshots(snapshot_files) -> list[dict]:
    """One row per scored snapshot (results/D/M/seedS/snapshots.json), in CURVE_COLUMNS."""
    rows = []
    for path in snapshot_files or []:
        path = Path(path)
        curve = json.loads(path.read_text())
        dataset = path.parent.parent.parent.name
        last = len(curve["points"]) - 1
        for i, pt in enumerate(curve["points"]):
            rows.append({"dataset": dataset, "method": curve["method"], "seed": curve["seed"],
                         "split": curve.get("split", "test"), "epoch": pt["epoch"],
                         "train_seconds": pt["train_seconds"], "images_processed": pt["images_processed"],
                         "n_samples": pt.get("n_samples"), "fid_domain": pt["fid_domain"],
                         "kid_domain": pt.get("kid_domain"), "classes_covered": pt.get("classes_covered"),
                         # the last snapshot before a divergence carries the mark
                         "diverged": bool(curve["diverged"]) and i == last})
    return rows


def write_compute_curves(snapshot_files, out_dir, datasets, methods) -> list[dict]:
    """fid_vs_compute.csv (a DVC plot) and .png: every method's fid_domain against training seconds."""
    rows = collect_snapshots(snapshot_files)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_text(Path(out_dir) / "fid_vs_compute.csv", buf.getvalue(), record=False)
    compute_figure(rows, Path(out_dir) / "fid_vs_compute.png", datasets, methods)
    return rows


@dataclass(frozen=True)
class RunFiles:
    """What the summary reads: every run's metrics.json, its sample grid ({(dataset, method):
    samples.png}), and where they exist its loss CSVs, snapshot curves, and a sweep's trial
    metrics and drawn settings (None: not part of this summary)."""

    metrics: list
    grids: dict = field(default_factory=dict)
    losses: list | None = None
    snapshots: list | None = None
    trials: list | None = None
    sweeps: list | None = None


def summarize(files: RunFiles, out_dir, datasets, methods, budgets: str = "custom") -> dict:
    """table.md, table.csv, summary.json, fid.json, the figures, the curves and a sweep's files in
    ``out_dir``; returns summary.json's {dataset/method/metric: mean}. ``budgets``: what the
    runs' epochs are (the table says so)."""
    out_dir = Path(out_dir)
    metric_files, sample_grids, loss_csvs = files.metrics, files.grids, files.losses
    snapshot_files, trial_files, sweep_files = files.snapshots, files.trials, files.sweeps
    if loss_csvs is not None:
        write_curves(loss_csvs, out_dir / "curves")
    curve_rows = write_compute_curves(snapshot_files, out_dir, datasets, methods)
    rows = collect(metric_files)
    agg = aggregate(rows)
    write_text(out_dir / "table.md", render_markdown(agg, datasets, methods, budgets, curve_rows), record=False)
    write_text(out_dir / "table.csv", render_csv(agg), record=False)
    flat = {f"{d}/{m}/{k}": cell[k][0] for (d, m), cell in agg.items() for k, _, _ in METRICS
            if cell[k][0] is not None}
    flat.update({f"{d}/{m}/status": cell["mark"] or "learned" for (d, m), cell in agg.items()})
    write_json(out_dir / "summary.json", flat, record=False)
    fid_rows = [{"dataset": d, "method": m, "fid_domain": cell["fid_domain"][0]}
                for (d, m), cell in sorted(agg.items()) if cell["fid_domain"][0] is not None]
    write_json(out_dir / "fid.json", fid_rows, record=False)
    summary_figures(agg, sample_grids, out_dir, datasets, methods)
    # a sweep: sweep.md, .csv, .json and its figures (glann.evaluation.sweeps); else sweep.csv's header
    from glann.evaluation.sweeps import summarize_sweeps

    summarize_sweeps(trial_files, sweep_files, out_dir, {key: cell["fid_domain"][0] for key, cell in agg.items()},
                     configured_files=metric_files)
    return flat
