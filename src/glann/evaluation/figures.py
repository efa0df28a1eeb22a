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
        ax.set_title(f"{d}: quality against compute")
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
        ax.bar(ms, vals, yerr=errs, color="tab:blue")
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
            ax.set_title(f"{m}\n{d}", fontsize=9)
    fig.tight_layout()
    save_with(out_dir / "samples.png", lambda p: fig.savefig(p, format="png", dpi=110), record=False)
    plt.close(fig)
