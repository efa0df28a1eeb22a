"""A sweep's summary: each method's population of settings, and its best by validation.

Inputs: every setting's ``metrics.json`` (results/{dataset}/{method}/hp{k}/seed{S}/) and each
method's ``results/{dataset}/sweep/{method}.json`` (the settings drawn). Outputs, in the
summary folder (:data:`OUTPUTS`):

- ``sweep.md`` / ``sweep.json``: per dataset and method, the setting with the lowest mean
  validation fid_domain (``val_fid_domain``) over seeds, and its *test* metrics, mean ± std
  over seeds; the spread of test fid_domain over the K settings; the share of runs that
  diverged or covered fewer than 9 classes; the share of its runs no other method's run beats
  in both precision and recall; sweep.md then lists every setting with its results;
- ``sweep.csv``: one row per run (dataset, method, setting, seed) with its sampled values and
  metrics (DVC plots it as precision against recall); without a sweep, its header only;
- ``sweep_fid.png``: the distribution of test fid_domain over each method's settings (box plot,
  as Lucic et al. 2018);
- ``sweep_budget.png``: the expected test fid_domain of the setting picked by validation among
  n settings drawn at random from the K, against n (Lucic et al.'s quality against search
  budget), with a 5-95% band; sweep.md's "Quality against search budget" gives the same
  numbers, the lowest mean at each n in bold;
- ``sweep_pr.png``: precision against recall of every run, GLANN's as stars (GLANN's Figure 2).

A config without a sweep writes every one of them too, each saying so (sweep.md a sentence,
sweep.json ``{"swept": false}``, the figures that sentence): the summary's files are the same
list with and without a sweep, so DVC versions all of them and a pulled clone has nothing to redo.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from glann.atomic import write_json, write_text
from glann.evaluation.verdicts import mean_interval, sweep_differences

OUTPUTS = ("sweep.md", "sweep.json", "sweep_fid.png", "sweep_budget.png", "sweep_pr.png")  # always written
CSV = "sweep.csv"  # always written (only its header without a sweep): a DVC plot
NO_SWEEP = "No sweep in this config (sweep.settings is 0): nothing was swept. docs/sweeps.md says how to run one."
RUN_METRICS = ("val_fid_domain", "fid_domain", "kid_domain", "kid_domain_std", "precision", "recall", "density", "coverage",
               "classes_covered", "diverged", "status", "n_samples", "n_test", "floor_fid_domain",
               "floor_kid_domain")
FEW_CLASSES = 9  # "covered fewer than 9 classes": GLANN's and Lucic et al.'s mode-dropping mark on 10 classes
BOOTSTRAP = 2000


def _finite(v) -> float:
    """A metric as a float; a missing, NaN or infinite value as +inf (never the best)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.inf
    return f if math.isfinite(f) else math.inf


def _run_row(path: Path, dataset: str, method: str, k: int, **extra) -> dict:
    m = json.loads(path.read_text())
    return {"dataset": dataset, "method": method, "k": k, "seed": int(path.parent.name.removeprefix("seed")),
            **{key: m.get(key) for key in RUN_METRICS},
            **{key: m.get(key) for key in ("fid_domain_ci", "kid_domain_ci")}, **extra}


def collect_trials(metric_files, sweep_files=(), configured_files=()) -> list[dict]:
    """One row per run of a sweep setting: results/D/M/hpK/seedS/metrics.json; and, for a setting
    the sweep file marks ``configured`` (it leaves the method's sections as configured, so it trains
    nothing of its own), a row per configured run of that method (D/M/seedS/metrics.json)."""
    rows = []
    for path in metric_files or []:
        path = Path(path)
        hp_dir = path.parent.parent
        if not re.fullmatch(r"hp\d+", hp_dir.name):
            raise ValueError(f"{path} is not a sweep run's metrics (results/<dataset>/<method>/hp<k>/seed<S>/)")
        rows.append(_run_row(path, hp_dir.parent.parent.name, hp_dir.parent.name, int(hp_dir.name[2:])))
    configured = {}
    for path in map(Path, configured_files or []):
        configured.setdefault((path.parent.parent.parent.name, path.parent.parent.name), []).append(path)
    for path in sweep_files or []:
        s = json.loads(Path(path).read_text())
        for setting in s["settings"]:
            if setting.get("configured"):
                rows += [_run_row(p, s["dataset"], s["method"], setting["k"], configured_run=True)
                         for p in configured.get((s["dataset"], s["method"]), [])]
    return rows


def _settings(sweep_files) -> dict:
    """{(dataset, method): [values of setting k, ...]} from the sweep files."""
    out = {}
    for path in sweep_files or []:
        s = json.loads(Path(path).read_text())
        out[(s["dataset"], s["method"])] = [t["values"] for t in s["settings"]]
    return out


def per_setting(rows: list[dict]) -> dict:
    """{(dataset, method): {k: {"val": mean val fid, "test": mean test fid, "runs": [rows]}}}."""
    out = {}
    for r in rows:
        out.setdefault((r["dataset"], r["method"]), {}).setdefault(r["k"], []).append(r)
    return {key: {k: {"val": float(np.mean([_finite(r["val_fid_domain"]) for r in runs])),
                      "test": float(np.mean([_finite(r["fid_domain"]) for r in runs])), "runs": runs}
                  for k, runs in sorted(by_k.items())}
            for key, by_k in out.items()}


def best_setting(settings: dict) -> int:
    """The setting with the lowest mean validation fid_domain (ties: the lower k)."""
    return min(settings, key=lambda k: (settings[k]["val"], k))


def budget_curve(settings: dict, seed: int = 0, draws: int = BOOTSTRAP) -> list[dict]:
    """For n = 1..K: the test fid_domain of the best-by-validation setting among n settings drawn
    without replacement, over ``draws`` draws: mean, 5th and 95th percentile."""
    ks = sorted(settings)
    val = np.array([settings[k]["val"] for k in ks])
    test = np.array([settings[k]["test"] for k in ks])
    rng = np.random.default_rng(seed)
    curve = []
    for n in range(1, len(ks) + 1):
        picks = np.array([rng.choice(len(ks), n, replace=False) for _ in range(draws)])
        # lowest validation fid in each draw; ties go to the lower setting index, as best_setting
        order = np.lexsort((picks, val[picks]), axis=1)[:, 0]
        chosen = test[picks[np.arange(draws), order]]
        finite = chosen[np.isfinite(chosen)]
        if len(finite) == 0:
            curve.append({"n": n, "mean": None, "p5": None, "p95": None})
            continue
        curve.append({"n": n, "mean": float(np.mean(finite)), "p5": float(np.percentile(finite, 5)),
                      "p95": float(np.percentile(finite, 95))})
    return curve


def _mean_std(values):
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def undominated_share(rows: list[dict], dataset: str, method: str) -> float | None:
    """The share of ``method``'s runs that no run of another method dominates in precision and
    recall (at least as high in both, higher in one): how much of GLANN's Figure 2 claim holds."""
    def pr(r):
        return (float(r["precision"]), float(r["recall"]))

    usable = [r for r in rows if r["dataset"] == dataset and None not in (r["precision"], r["recall"])]
    own = [pr(r) for r in usable if r["method"] == method]
    others = [pr(r) for r in usable if r["method"] != method]
    if not own:
        return None
    beaten = [any(p2 >= p and r2 >= r and (p2, r2) != (p, r) for p2, r2 in others) for p, r in own]
    return 1.0 - float(np.mean(beaten))


def analyse(rows: list[dict], drawn: dict) -> dict:
    """Per "dataset/method": the best setting by validation, its test metrics, the spread and the budget curve."""
    out = {}
    for (d, m), settings in sorted(per_setting(rows).items()):
        best = best_setting(settings)
        runs = settings[best]["runs"]
        tests = [s["test"] for s in settings.values() if math.isfinite(s["test"])]
        every = [r for s in settings.values() for r in s["runs"]]
        out[f"{d}/{m}"] = {
            "dataset": d, "method": m, "settings": len(settings), "best_k": best,
            "best_values": (drawn.get((d, m)) or [None] * (best + 1))[best],
            "best_val_fid_domain": settings[best]["val"],
            "best": {key: dict(zip(("mean", "std"), _mean_std([r.get(key) for r in runs])))
                     for key in ("fid_domain", "kid_domain", "precision", "recall", "classes_covered")},
            "kid_subset_std": _mean_std([r.get("kid_domain_std") for r in runs])[0],
            "ci": {key: mean_interval(runs, key) for key in ("fid_domain_ci", "kid_domain_ci")},
            "seeds": sorted(r["seed"] for r in runs),
            "n_samples": runs[0].get("n_samples"), "n_test": runs[0].get("n_test"),
            "floor": {key: [r.get(f"floor_{key}") for r in every if r.get(f"floor_{key}") is not None]
                      for key in ("fid_domain", "kid_domain")},
            "fid_domain_over_settings": {
                "median": float(np.median(tests)) if tests else None,
                "q25": float(np.percentile(tests, 25)) if tests else None,
                "q75": float(np.percentile(tests, 75)) if tests else None,
                "min": min(tests) if tests else None, "max": max(tests) if tests else None},
            "diverged_share": float(np.mean([bool(r["diverged"]) for r in every])),
            "few_classes_share": float(np.mean([r["classes_covered"] is not None
                                                and r["classes_covered"] < FEW_CLASSES for r in every])),
            "undominated_share": undominated_share(rows, d, m),
            "budget": budget_curve(settings),
        }
    return out


def _fmt(x, std=None, digits=3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" + (f" ± {std:.2g}" if std else "")


def _subsets(std) -> str:
    """KID's own std over its subsets, beside the spread over seeds."""
    return "" if std is None or not math.isfinite(std) else f" (subsets ± {std:.2g})"


def _values(v: dict | None) -> str:
    if not v:
        return "—"
    return ", ".join(f"{k}={val:.3g}" if isinstance(val, float) else f"{k}={val}" for k, val in v.items())


def _sizes(result: dict) -> str:
    """The sample counts behind the table and each dataset's real-vs-real floor ("digits: 2000
    samples against 360 test images; real-vs-real floor fid_domain 3.55, KID -10.6"), or "n/a"."""
    parts = []
    for d in sorted({r["dataset"] for r in result.values()}):
        rows = [r for r in result.values() if r["dataset"] == d]
        pairs = sorted({(r.get("n_samples"), r.get("n_test")) for r in rows} - {(None, None)}, key=str)
        text = ", ".join(f"{a} samples against {b} test images" for a, b in pairs) or "n/a (not recorded)"
        floors = {key: sorted(v for r in rows for v in r.get("floor", {}).get(key, []))
                  for key in ("fid_domain", "kid_domain")}
        if floors["fid_domain"]:
            text += "; real-vs-real floor " + ", ".join(
                f"{name} {_range(floors[key])}" for key, name in (("fid_domain", "fid_domain"), ("kid_domain", "KID"))
                if floors[key])
        parts.append(f"{d}: {text}")
    return "; ".join(parts) or "n/a (not recorded)"


def _range(values: list[float]) -> str:
    lo, hi = values[0], values[-1]
    return _fmt(lo) if _fmt(lo) == _fmt(hi) else f"{_fmt(lo)}-{_fmt(hi)}"


def render_markdown(result: dict, base: dict) -> str:
    """``base``: {(dataset, method): mean test fid_domain of the configured setting}, for contrast."""
    lines = ["# Sweeps", "",
             "Per method, K settings drawn from its search space (docs/sweeps.md). **best**: the setting with "
             "the lowest validation fid_domain (mean over seeds); its test metrics, mean ± std over seeds. "
             "**test KID**: ± over seeds, then KID's own std over its subsets. "
             "**spread**: median [25th-75th percentile] of test fid_domain over the K settings. "
             f"**diverged** / **< {FEW_CLASSES} classes**: share of all runs of the sweep. **undominated**: share "
             "of the method's runs that no run of another method beats in both precision and recall. "
             "Every distance of a dataset is computed at the same n; the **real-vs-real floor** is the same "
             "metric between n real training images and the test split, the smallest distance it can tell "
             f"apart at this n. {_sizes(result)}.", "",
             "| dataset | method | K | best setting | val fid_domain | test fid_domain | test KID | precision | recall | "
             "classes | spread of fid_domain | diverged | < 9 classes | undominated | configured setting's fid_domain |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.values():
        b, spread = r["best"], r["fid_domain_over_settings"]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['settings']} | hp{r['best_k']}: {_values(r['best_values'])} | "
            f"{_fmt(r['best_val_fid_domain'])} | {_fmt(b['fid_domain']['mean'], b['fid_domain']['std'])} | "
            f"{_fmt(b['kid_domain']['mean'], b['kid_domain']['std'])}{_subsets(r.get('kid_subset_std'))} | "
            f"{_fmt(b['precision']['mean'], b['precision']['std'])} | {_fmt(b['recall']['mean'], b['recall']['std'])} | "
            f"{_fmt(b['classes_covered']['mean'], b['classes_covered']['std'])} | "
            f"{_fmt(spread['median'])} [{_fmt(spread['q25'])}-{_fmt(spread['q75'])}] | "
            f"{r['diverged_share']:.0%} | {r['few_classes_share']:.0%} | "
            f"{'n/a' if r['undominated_share'] is None else format(r['undominated_share'], '.0%')} | "
            f"{_fmt(base.get((r['dataset'], r['method'])))} |")
    return "\n".join(lines + sweep_differences(result)) + "\n"


def render_budget(result: dict) -> list[str]:
    """"Quality against search budget": per dataset, each method's expected test fid_domain of the
    setting picked on validation among n of its K settings drawn at random (sweep_budget.png's
    curves, :func:`budget_curve`), n = 1..K, with the 5th-95th percentile over the draws; the
    lowest mean at each n in bold (several where they round alike). A method with fewer settings
    than the column's n has no entry there."""
    lines = ["", "## Quality against search budget", "",
             "Test fid_domain of the setting picked on validation among n settings drawn at random from the "
             f"method's K ({BOOTSTRAP} draws): mean [5th-95th percentile]. Lower is better; the lowest mean at "
             "each n is in bold. At n = 1 it is the mean over the settings; at n = K, the best setting's test "
             "fid_domain (mean over seeds). sweep_budget.png plots it."]
    for d in sorted({r["dataset"] for r in result.values()}):
        rows = sorted((r for r in result.values() if r["dataset"] == d), key=lambda r: r["method"])
        curves = {r["method"]: {c["n"]: c for c in r["budget"]} for r in rows}
        ns = sorted({n for c in curves.values() for n in c})
        if not ns:
            continue
        lowest = {}
        for n in ns:
            means = [c[n]["mean"] for c in curves.values() if n in c and c[n]["mean"] is not None]
            lowest[n] = _fmt(min(means)) if means else None
        lines += ["", f"{d}:", "", "| method | " + " | ".join(f"n = {n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for m, c in curves.items():
            cells = []
            for n in ns:
                point = c.get(n)
                if point is None or point["mean"] is None:
                    cells.append("")
                    continue
                mean = _fmt(point["mean"])
                cells.append(f"{f'**{mean}**' if mean == lowest[n] else mean} "
                             f"[{_fmt(point['p5'])}-{_fmt(point['p95'])}]")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def render_settings(rows: list[dict], drawn: dict, result: dict) -> list[str]:
    """"Every setting": per method, each setting's values and its validation and test fid_domain
    (mean ± std over seeds), classes covered and how many of its runs learned (``status``): how a
    method fares over its whole space, not only at its best (GLANN's robustness claim)."""
    lines = ["", "## Every setting", "",
             "Each setting's validation and test fid_domain and classes covered, mean ± std over its seeds; "
             "**learned**: its runs whose status is *learned* (docs/evaluation.md: a run that collapsed, "
             "diverged or covers few classes is not). The best setting (by validation) is in bold.", "",
             "| dataset | method | setting | values | val fid_domain | test fid_domain | classes | learned |",
             "|---|---|---|---|---|---|---|---|"]
    for (d, m), settings in sorted(per_setting(rows).items()):
        values = drawn.get((d, m)) or []
        best = result.get(f"{d}/{m}", {}).get("best_k")
        for k, st in settings.items():
            runs = st["runs"]
            fid, classes = _mean_std([r["fid_domain"] for r in runs]), _mean_std([r["classes_covered"] for r in runs])
            name = f"**hp{k}**" if k == best else f"hp{k}"
            name += " (the configured runs)" if any(r.get("configured_run") for r in runs) else ""
            learned = sum(r.get("status") == "learned" for r in runs)
            lines.append(f"| {d} | {m} | {name} | {_values(values[k] if k < len(values) else None)} | "
                         f"{_fmt(_mean_std([r['val_fid_domain'] for r in runs])[0])} | {_fmt(*fid)} | "
                         f"{_fmt(*classes)} | {learned} of {len(runs)} |")
    return lines


def render_csv(rows: list[dict], drawn: dict) -> str:
    keys = sorted({k for v in drawn.values() for s in v for k in s})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "k", "seed", *RUN_METRICS, *keys])
    for r in sorted(rows, key=lambda r: (r["dataset"], r["method"], r["k"], r["seed"])):
        values = (drawn.get((r["dataset"], r["method"])) or [])
        values = values[r["k"]] if r["k"] < len(values) else {}
        w.writerow([r["dataset"], r["method"], r["k"], r["seed"],
                    *("" if r[key] is None else r[key] for key in RUN_METRICS),
                    *("" if values.get(k) is None else values[k] for k in keys)])
    return buf.getvalue()


def summarize_sweeps(trial_files, sweep_files, out_dir, base: dict | None = None, configured_files=()) -> dict:
    """Write :data:`OUTPUTS` and :data:`CSV` into ``out_dir``; returns the analysis (sweep.json's
    content). ``configured_files``: the configured runs' metrics, read for the settings the sweep
    files mark ``configured``. Without trial files: the CSV's header, and each output saying that
    nothing was swept."""
    from glann.evaluation.figures import sweep_figures

    out_dir = Path(out_dir)
    rows, drawn = collect_trials(trial_files, sweep_files, configured_files), _settings(sweep_files)
    write_text(out_dir / CSV, render_csv(rows, drawn), record=False)
    if not rows:
        from glann.evaluation.figures import message_figure

        write_text(out_dir / "sweep.md", f"# Sweeps\n\n{NO_SWEEP}\n", record=False)
        write_json(out_dir / "sweep.json", {"swept": False}, record=False)
        for name in OUTPUTS:
            if name.endswith(".png"):
                message_figure(out_dir / name, NO_SWEEP)
        return {}
    result = analyse(rows, drawn)
    text = (render_markdown(result, base or {})
            + "\n".join(render_budget(result) + render_settings(rows, drawn, result)) + "\n")
    write_text(out_dir / "sweep.md", text, record=False)
    write_json(out_dir / "sweep.json", result, record=False)
    sweep_figures(rows, per_setting(rows), result, out_dir)
    return result
