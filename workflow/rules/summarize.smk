# The Table-1 style summary across datasets, methods and seeds.
from glann.evaluation.summary import curve_name
from glann.evaluation.sweeps import OUTPUTS as SWEEP_OUTPUTS


rule summarize:
    input:
        metrics=[run_file(d, m, "", s, "metrics.json") for d in DATASETS for m in METHODS for s in SEEDS],
        grids=[run_file(d, m, "", SEEDS[0], "samples.png") for d in DATASETS for m in METHODS],
        losses=loss_csvs(),
        snapshots=snapshot_curves(),
        trials=trial_metrics(),
        sweeps=sweep_files(),
    output:
        table=report(
            "results/summary/table.md",
            caption="../report/table.rst",
            category="Summary",
            labels={"figure": "table (markdown)"},
        ),
        csv=report(
            "results/summary/table.csv",
            caption="../report/table.rst",
            category="Summary",
            labels={"figure": "table"},
        ),
        json="results/summary/summary.json",
        curves=[f"results/summary/curves/{curve_name(f)}" for f in loss_csvs()],
        fid_json="results/summary/fid.json",
        fid=report(
            "results/summary/fid.png",
            caption="../report/fid.rst",
            category="Summary",
            labels={"figure": "fid_domain per method"},
        ),
        pr=report(
            "results/summary/precision_recall.png",
            caption="../report/precision_recall.rst",
            category="Summary",
            labels={"figure": "precision vs recall"},
        ),
        samples=report(
            "results/summary/samples.png",
            caption="../report/all_samples.rst",
            category="Summary",
            labels={"figure": "samples, every method"},
        ),
        compute=report(
            "results/summary/fid_vs_compute.png",
            caption="../report/fid_vs_compute.rst",
            category="Summary",
            labels={"figure": "fid_domain against training seconds"},
        ),
        compute_csv="results/summary/fid_vs_compute.csv",
        sweep_csv="results/summary/sweep.csv",  # every sweep run (only a header without a sweep)
        # a sweep's table (best setting by validation, test metrics) and its three figures; without
        # a sweep, each saying so (the same files either way: DVC versions them all)
        sweep=[report(f"results/summary/{f}", caption="../report/sweep.rst", category="Sweeps",
                      labels={"figure": f}) if f.endswith(".png") else f"results/summary/{f}"
               for f in SWEEP_OUTPUTS],
    params:
        job=lambda w: json.dumps({"params": {"datasets": DATASETS, "methods": METHODS, "budgets": config["budgets"]}}),
        code=code_version("summarize"),
    log:
        "logs/summarize.log",
    benchmark:
        "logs/summarize.bench.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "glann summarize --job {params.job:q} --out-dir results/summary --metrics {input.metrics}"
        " --grids {input.grids} --losses {input.losses} --snapshots {input.snapshots}"
        " --trials {input.trials} --sweeps {input.sweeps} > {log} 2>&1"
