"""The table's verdicts: the sample sizes and the real-vs-real floor beside it, each run's status,
whether each row's difference from the best exceeds the noise (over seeds and the bootstrap), and
how many training seconds each method needed before it covered 9 classes."""

from __future__ import annotations


def format_cell(mean, std, n, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    if abs(mean) >= 1000:
        body = f"{mean:.3g}"
        return body if n < 2 else f"{body} ± {std:.2g}"
    return f"{mean:.{digits}g}" if n < 2 else f"{mean:.{digits}g} ± {std:.2g}"


def sizes_and_floor(agg: dict, datasets, methods) -> list[str]:
    """Each dataset's n (samples and test images) and the real-vs-real floor beside the table."""
    lines = ["## Sample sizes and the real-vs-real floor", "",
             "Every distance of a dataset is computed at the same n. **floor**: the same metric between "
             "n real training images and the test split, the smallest distance the metric can tell apart "
             "at this n.", "", "| dataset | generated samples n | test images | floor fid_domain | floor KID |",
             "|---|---|---|---|---|"]
    for d in datasets:
        cells = [agg[(d, m)] for m in methods if (d, m) in agg]
        if not cells:
            continue
        ns = sorted({c.get("n_samples") for c in cells if c.get("n_samples") is not None})
        c = cells[0]
        lines.append(f"| {d} | {', '.join(str(n) for n in ns) or 'n/a'} | {c.get('n_test') or 'n/a'} | "
                     f"{_num(c.get('floor_fid_domain'))} | {_num(c.get('floor_kid_domain'))} |")
    return lines + [""]


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def method_table(heading: str, agg: dict, datasets, methods, text) -> list[str]:
    """A markdown section: one row per method, one column per dataset, ``text(dataset, method, cell)``
    in each cell the aggregate has ("—" where it has none)."""
    lines = [f"## {heading}", "", "| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = ["—" if agg.get((d, m)) is None else text(d, m, agg[(d, m)]) for d in datasets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def status_section(agg: dict, datasets, methods) -> list[str]:
    def text(_, __, cell):
        reasons = sorted({r for r in cell["reasons"] if r})
        return (cell["mark"] or "learned") + (f" ({'; '.join(reasons)})" if reasons else "")

    return method_table("Run status", agg, datasets, methods, text)


def mean_interval(runs: list[dict], key: str) -> list[float] | None:
    """The seeds' bootstrap intervals of ``key`` (e.g. ``fid_domain_ci``), ends averaged; None without any."""
    cis = [r[key] for r in runs if r.get(key)]
    return [sum(c[0] for c in cis) / len(cis), sum(c[1] for c in cis) / len(cis)] if cis else None


def half_width(ci) -> float | None:
    """Half the width of a bootstrap interval (None without one)."""
    return None if ci is None else (ci[1] - ci[0]) / 2


def holds(best: dict, other: dict, key: str) -> str:
    """Whether ``other``'s difference from the best row on ``key`` exceeds the noise: 'yes' when its
    mean is further than both rows' seed std together and further than the half-widths of their
    95% bootstrap intervals together (the two intervals, each placed around its own estimate, do
    not overlap); else 'within noise' (with the test that failed).

    The intervals are compared by width, not where they lie: resampling with replacement repeats
    images, which raises a Fréchet distance (and KID) by an amount of its own, so a percentile
    interval of resampled values sits above its estimate, by a different amount for each row
    (docs/evaluation.md)."""
    (mb, sb, _), (mo, so, _) = best[key], other[key]
    if mb is None or mo is None:
        return "n/a"
    seeds_ok = abs(mo - mb) > (sb or 0) + (so or 0)
    hb, ho = half_width(best.get(f"{key}_ci")), half_width(other.get(f"{key}_ci"))
    boot_ok = hb is None or ho is None or abs(mo - mb) > hb + ho
    if seeds_ok and boot_ok:
        return "yes"
    return "within noise (" + " and ".join(w for w, ok in (("seeds", seeds_ok), ("bootstrap", boot_ok)) if not ok) + ")"


def differences_section(agg: dict, datasets, methods) -> list[str]:
    """Per dataset and metric (fid_domain, KID): the best learned row, and for every other row whether
    its difference from the best exceeds the spread over seeds and the bootstrap interval."""
    lines = ["## Which differences hold", "",
             "Best: the lowest mean among rows whose every seed learned. **holds**: the difference from the "
             "best exceeds both rows' std over seeds added, and the half-widths of their 95% bootstrap intervals "
             "(over samples and test images) added. **bootstrap ±**: that half-width (resampling with replacement "
             "repeats images and raises each value by an amount of its own, so the intervals are compared by "
             "width around each estimate; docs/evaluation.md).", ""]
    for d in datasets:
        for key, name in (("fid_domain", "fid_domain"), ("kid_domain", "KID")):
            rows = {m: agg[(d, m)] for m in methods if (d, m) in agg and agg[(d, m)][key][0] is not None}
            learned = {m: c for m, c in rows.items() if not c["mark"]}
            if not rows:
                continue  # not measured (a metrics.json from before KID)
            if not learned:
                lines += [f"{d}, {name}: no row learned.", ""]
                continue
            best = min(learned, key=lambda m: learned[m][key][0])
            lines += [f"{d}, {name}: best **{best}**", "", "| method | mean | bootstrap ± | vs best: holds? |",
                      "|---|---|---|---|"]
            for m, c in rows.items():
                ci = c.get(f"{key}_ci")
                verdict = "best" if m == best else "not a result" if c["mark"] else holds(learned[best], c, key)
                lines.append(f"| {m}{' (' + c['mark'] + ')' if c['mark'] else ''} | {format_cell(*c[key])} | "
                             f"{'n/a' if ci is None else f'{half_width(ci):.3g}'} | {verdict} |")
            lines.append("")
        apart = disagreements(agg, d, methods)
        lines += ([f"{d}: fid_domain and KID order these learned rows differently: " + "; ".join(apart) + ".", ""]
                  if apart else [])
    return lines


def glann_section(agg: dict, datasets, methods, reference: str = "glann") -> list[str]:
    """Per dataset, GLANN against every other row, on fid_domain and KID: which is lower, by how much
    (means over seeds), and whether the difference exceeds the noise (:func:`holds`). A row that did
    not learn is no comparison; nothing when GLANN is not in the table or did not learn."""
    lines = []
    for d in datasets:
        ref = agg.get((d, reference))
        if ref is None or ref["mark"] or ref["fid_domain"][0] is None:
            continue
        lines += [f"{d}: {reference} {format_cell(*ref['fid_domain'])} fid_domain, "
                  f"{format_cell(*ref['kid_domain'])} KID.", "",
                  "| against | fid_domain | " + reference + " is | holds? | KID | " + reference + " is | holds? |",
                  "|---|---|---|---|---|---|---|"]
        for m in methods:
            c = agg.get((d, m))
            if m == reference or c is None:
                continue
            if c["mark"]:
                lines.append(f"| {m} ({c['mark']}) | {format_cell(*c['fid_domain'])} | not a result | | "
                             f"{format_cell(*c['kid_domain'])} | not a result | |")
                continue
            cells = []
            for key in ("fid_domain", "kid_domain"):
                if c[key][0] is None or ref[key][0] is None:
                    cells += ["n/a", "n/a", "n/a"]
                    continue
                diff = ref[key][0] - c[key][0]
                side = f"lower by {-diff:.3g}" if diff < 0 else f"higher by {diff:.3g}"
                cells += [format_cell(*c[key]), side, holds(c, ref, key)]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if not lines:
        return []
    return ["## GLANN against each method", "",
            f"Lower is better. **holds** as in \"Which differences hold\": the difference exceeds both rows' std "
            "over seeds added, and the half-widths of their 95% bootstrap intervals added.", "", *lines]


def disagreements(agg: dict, dataset: str, methods) -> list[str]:
    """Pairs of learned rows that fid_domain and KID order differently (means over seeds)."""
    rows = [(m, agg[(dataset, m)]) for m in methods if (dataset, m) in agg and not agg[(dataset, m)]["mark"]
            and agg[(dataset, m)]["fid_domain"][0] is not None and agg[(dataset, m)]["kid_domain"][0] is not None]
    out = []
    for i, (a, ca) in enumerate(rows):
        for b, cb in rows[i + 1:]:
            if (ca["fid_domain"][0] - cb["fid_domain"][0]) * (ca["kid_domain"][0] - cb["kid_domain"][0]) < 0:
                out.append(f"{a} vs {b}: fid_domain {ca['fid_domain'][0]:.3g} vs {cb['fid_domain'][0]:.3g}, "
                           f"KID {ca['kid_domain'][0]:.3g} vs {cb['kid_domain'][0]:.3g}")
    return out


LEARNED_CLASSES = 9  # "covers >= 9 of 10 classes": the run-status mark (glann.evaluation.status)


def first_learned(points: list[dict], classes: int = LEARNED_CLASSES) -> dict | None:
    """The first snapshot (in training seconds) that covers at least ``classes`` classes, or None."""
    for pt in sorted(points, key=lambda p: p["train_seconds"]):
        if pt.get("classes_covered") is not None and pt["classes_covered"] >= classes:
            return pt
    return None


def first_learned_section(curve_rows: list[dict], datasets, methods) -> list[str]:
    """Per dataset and method, the training seconds (and epoch) of each seed's first snapshot that
    covers >= 9 classes: how much budget a method needs before it is a result. Nothing without
    snapshot curves or class labels."""
    rows = [r for r in curve_rows if r.get("classes_covered") is not None]
    if not rows:
        return []
    lines = [f"## Training seconds until a method first covers ≥ {LEARNED_CLASSES} classes", "",
             "From the snapshot curves (fid_vs_compute.csv; the split each curve was scored on): per seed, "
             "the first snapshot covering at least 9 of 10 classes, with its epoch; *not within N s* where no "
             "snapshot of the run does (N: its last snapshot's training seconds).", "",
             "| dataset | method | " + " | ".join(f"seed {s}" for s in sorted({r["seed"] for r in rows})) + " |",
             "|---|---|" + "---|" * len({r["seed"] for r in rows})]
    seeds = sorted({r["seed"] for r in rows})
    for d in datasets:
        for m in methods:
            cells = []
            for seed in seeds:
                pts = [r for r in rows if (r["dataset"], r["method"], r["seed"]) == (d, m, seed)]
                if not pts:
                    cells.append("-")
                    continue
                hit = first_learned(pts)
                cells.append(f"{hit['train_seconds']:.0f} s (epoch {hit['epoch']})" if hit else
                             f"not within {max(p['train_seconds'] for p in pts):.0f} s")
            if any(c != "-" for c in cells):
                lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def equal_compute_section(curve_rows: list[dict], datasets, methods, reference: str = "glann") -> list[str]:
    """Per dataset, method and seed: the snapshot with the most training seconds within GLANN's
    (the same seed's last snapshot), and its fid_domain beside GLANN's: every method at GLANN's
    training compute, read from the snapshot curves (all scored at the curves' n, on the curves'
    split). Nothing without GLANN's curves."""
    lines = []
    for d in datasets:
        refs = {r["seed"]: r for r in curve_rows if r["dataset"] == d and r["method"] == reference
                and r["train_seconds"] == max(q["train_seconds"] for q in curve_rows
                                              if (q["dataset"], q["method"], q["seed"]) == (d, reference, r["seed"]))}
        if not refs:
            continue
        seeds = sorted(refs)
        lines += [f"{d}: {reference}'s training seconds per seed: " +
                  ", ".join(f"seed {s} {refs[s]['train_seconds']:.0f} s (fid_domain {refs[s]['fid_domain']:.3g})"
                            for s in seeds) + ".", "",
                  "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
        for m in methods:
            if m == reference:
                continue
            cells = []
            for seed in seeds:
                pts = [r for r in curve_rows if (r["dataset"], r["method"], r["seed"]) == (d, m, seed)]
                within = [r for r in pts if r["train_seconds"] <= refs[seed]["train_seconds"]]
                if not pts:
                    cells.append("-")
                elif not within:
                    cells.append(f"no snapshot by then (first at {min(r['train_seconds'] for r in pts):.0f} s)")
                else:
                    at = max(within, key=lambda r: r["train_seconds"])
                    cells.append(f"{at['fid_domain']:.3g} (epoch {at['epoch']}, {at['train_seconds']:.0f} s)")
            if any(c != "-" for c in cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if not lines:
        return []
    split = sorted({r.get("split", "test") for r in curve_rows})
    return ["## At GLANN's training compute", "",
            "From the snapshot curves (split: " + ", ".join(split) + "; each point's n as the curves state): "
            "each method's fid_domain at its last snapshot within GLANN's training seconds (same seed), "
            "beside GLANN's last snapshot. Seconds are each job's own, measured beside the other jobs of the "
            "invocation: an equal-compute comparison to the nearest snapshot, not a benchmark.", "", *lines]


def sweep_differences(result: dict) -> list[str]:
    """A sweep table's verdicts: per dataset and metric, the method whose best setting (picked on
    validation) has the lowest test value, and whether each other method's best differs from it by
    more than the noise (:func:`holds`: the spread over seeds and the bootstrap intervals)."""
    lines = ["", "## Which differences hold", "",
             "Between the methods' best settings, on test, as in the summary's table: **holds** when the "
             "difference exceeds both rows' std over seeds added and the half-widths of their 95% bootstrap "
             "intervals added (docs/evaluation.md).", ""]
    for d in sorted({r["dataset"] for r in result.values()}):
        rows = {r["method"]: r for r in result.values() if r["dataset"] == d}
        for key, name in (("fid_domain", "fid_domain"), ("kid_domain", "KID")):
            cells = {m: {key: (r["best"][key]["mean"], r["best"][key]["std"], len(r["seeds"])),
                         f"{key}_ci": r["ci"].get(f"{key}_ci")}
                     for m, r in rows.items() if r["best"][key]["mean"] is not None}
            if not cells:
                continue
            best = min(cells, key=lambda m: cells[m][key][0])
            others = "; ".join(f"{m}: {holds(cells[best], c, key)}" for m, c in cells.items() if m != best)
            lines += [f"{d}, {name}: best **{best}**; {others or 'no other method swept'}.", ""]
    return lines
