"""The summary's figures (matplotlib): presentation only.

Every number they draw comes from ``summary.py`` (the aggregated table) or the
snapshot rows, which the tests check against hand computations; this module is
outside the mutation-testing scope of the science code (tests/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glann.atomic import save_with


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed), imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def message_figure(path, text: str):
    """A small PNG that holds only ``text``: a figure whose subject this run does not have."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    save_with(Path(path), lambda p: fig.savefig(p, format="png", dpi=100), record=False)
    plt.close(fig)


def compute_figure(rows, path, datasets, methods):
    """fid_vs_compute.png: fid_domain against training seconds, mean ± std over seeds per snapshot."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            runs = {}
            for r in rows:
                if r["dataset"] == d and r["method"] == m:
                    runs.setdefault(r["seed"], []).append(r)
            if not runs:
                continue
            # mean ± std over seeds at each snapshot index (seeds that diverged stop early)
            n = max(len(v) for v in runs.values())
            xs, ys, es = [], [], []
            for i in range(n):
                pts = [v[i] for v in runs.values() if len(v) > i]
                xs.append(np.mean([p["train_seconds"] for p in pts]))
                ys.append(np.mean([p["fid_domain"] for p in pts]))
                es.append(np.std([p["fid_domain"] for p in pts]) if len(pts) > 1 else 0.0)
            line = ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=2, label=m)
            for v in runs.values():
                if v[-1]["diverged"]:
                    ax.plot(v[-1]["train_seconds"], v[-1]["fid_domain"], "x", ms=12, mew=2,
                            color=line[0].get_color())
                    ax.annotate(f"{m} diverged after epoch {v[-1]['epoch']}",
                                (v[-1]["train_seconds"], v[-1]["fid_domain"]), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("training seconds (whole method)")
        splits = sorted({r.get("split", "test") for r in rows if r["dataset"] == d})
        split = {"val": "validation"}.get(splits[0], splits[0]) if len(splits) == 1 else "/".join(splits or ["test"])
        ax.set_ylabel(f"fid_domain on the {split} split (lower is better)")
        ns = sorted({int(r["n_samples"]) for r in rows if r["dataset"] == d and r.get("n_samples")})
        ax.set_title(f"{d}: quality against compute" + (f" (n = {', '.join(map(str, ns))} samples per point)"
                                                        if ns else ""))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no snapshots (snapshots.count: 0)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    save_with(path, lambda p: fig.savefig(p, format="png", dpi=100), record=False)
    plt.close(fig)


def summary_figures(agg, sample_grids, out_dir, datasets, methods):
    """fid.png, precision_recall.png and samples.png from the aggregated table."""
    plt = _pyplot()
    from PIL import Image

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        ms = [m for m in methods if (d, m) in agg]
        vals = [agg[(d, m)]["fid_domain"][0] or 0 for m in ms]
        errs = [agg[(d, m)]["fid_domain"][1] or 0 for m in ms]
        ax.bar(ms, vals, yerr=errs, color=["tab:red" if agg[(d, m)].get("mark") else "tab:blue" for m in ms])
        ax.set_title(f"{d}: fid_domain (lower is better)")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    save_with(out_dir / "fid.png", lambda p: fig.savefig(p, format="png", dpi=100), record=False)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            if (d, m) in agg and None not in (agg[(d, m)]["precision"][0], agg[(d, m)]["recall"][0]):
                ax.scatter(agg[(d, m)]["recall"][0], agg[(d, m)]["precision"][0], s=40)
                ax.annotate(m, (agg[(d, m)]["recall"][0], agg[(d, m)]["precision"][0]), fontsize=8)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{d}: precision vs recall (k=5)")
    fig.tight_layout()
    save_with(out_dir / "precision_recall.png", lambda p: fig.savefig(p, format="png", dpi=100), record=False)
    plt.close(fig)

    fig, axes = plt.subplots(len(datasets), len(methods), figsize=(2.6 * len(methods), 2.9 * len(datasets)),
                             squeeze=False)
    for i, d in enumerate(datasets):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            ax.axis("off")
            path = sample_grids.get((d, m))
            if path and Path(path).exists():
                ax.imshow(np.asarray(Image.open(path)), cmap="gray")
            label = (agg.get((d, m)) or {}).get("mark", "")
            ax.set_title(f"{m}\n{d}" + (f"\n[{label}]" if label else ""), fontsize=9,
                         color="tab:red" if label else "black")
    fig.tight_layout()
    save_with(out_dir / "samples.png", lambda p: fig.savefig(p, format="png", dpi=110), record=False)
    plt.close(fig)


def sweep_figures(rows, settings, result, out_dir):
    """sweep_fid.png, sweep_budget.png and sweep_pr.png (glann.evaluation.sweeps)."""
    plt = _pyplot()
    datasets = sorted({d for d, _ in settings})
    save = lambda fig, name: save_with(Path(out_dir) / name, lambda p: fig.savefig(p, format="png", dpi=100),  # noqa: E731
                                       record=False)

    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        ms = sorted(m for dd, m in settings if dd == d)
        data = [[s["test"] for s in settings[(d, m)].values() if np.isfinite(s["test"])] for m in ms]
        ax.boxplot([v or [np.nan] for v in data], showfliers=True)
        for i, v in enumerate(data, start=1):  # every setting as a dot over its box
            ax.plot(np.full(len(v), i) + np.linspace(-0.12, 0.12, len(v)), v, ".", color="k", alpha=0.5, ms=4)
        ax.set_xticks(range(1, len(ms) + 1))
        ax.set_xticklabels([f"{m}\n{result[f'{d}/{m}']['diverged_share']:.0%} div." for m in ms], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("test fid_domain over the settings (lower is better)")
        ax.set_title(f"{d}: fid_domain over each method's sweep")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save(fig, "sweep_fid.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in sorted(m for dd, m in settings if dd == d):
            curve = [c for c in result[f"{d}/{m}"]["budget"] if c["mean"] is not None]
            if not curve:
                continue
            n = [c["n"] for c in curve]
            line, = ax.plot(n, [c["mean"] for c in curve], marker="o", ms=3, label=m)
            ax.fill_between(n, [c["p5"] for c in curve], [c["p95"] for c in curve], color=line.get_color(), alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("settings tried (best picked on validation)")
        ax.set_ylabel("test fid_domain of the pick (mean, 5-95%)")
        ax.set_title(f"{d}: quality against search budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "sweep_budget.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.8), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in sorted({r["method"] for r in rows if r["dataset"] == d}):
            pts = [(r["recall"], r["precision"]) for r in rows if r["dataset"] == d and r["method"] == m
                   and None not in (r["recall"], r["precision"])]
            if not pts:
                continue
            x, y = zip(*pts)
            glann = m == "glann"
            ax.scatter(x, y, marker="*" if glann else "o", s=160 if glann else 22, label=m,
                       edgecolors="k" if glann else "none", zorder=3 if glann else 2, alpha=1 if glann else 0.7)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{d}: every sweep run (GLANN: stars)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save(fig, "sweep_pr.png")
    plt.close(fig)
