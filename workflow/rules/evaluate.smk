# Evaluation: offline evaluator, real statistics (once per dataset), per-run metrics.


rule train_evaluator:
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/evaluator/model.pt",
        metrics="results/{dataset}/evaluator/metrics.json",
    params:
        job=lambda w: job(w, "evaluator", fault_key="evaluator"),
        code=code_version("train-evaluator"),
    log:
        "logs/{dataset}/train_evaluator.log",
    benchmark:
        "logs/{dataset}/train_evaluator.bench.tsv",
    priority: 10  # a finished training's run is scored (and recorded) before more training starts
    threads: train_threads()
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu,
    shell:
        "glann train-evaluator --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --metrics {output.metrics} > {log} 2>&1"


rule real_stats:
    input:
        data=rules.prepare_data.output,
        evaluator="results/{dataset}/evaluator/model.pt",
    output:
        evaluator="results/{dataset}/stats/evaluator.npz",
        inception="results/{dataset}/stats/inception.npz",
        evaluator_val="results/{dataset}/stats/evaluator_val.npz",
    params:
        # only what changes its output: fid.num_samples and require_inception do not
        job=lambda w: job(w, None,
                          params={k: config["fid"][k] for k in ("inception", "inception_weights")}),
        code=code_version("real-stats"),
    log:
        "logs/{dataset}/real_stats.log",
    benchmark:
        "logs/{dataset}/real_stats.bench.tsv",
    priority: 10  # a finished training's run is scored (and recorded) before more training starts
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu,
    shell:
        "glann real-stats --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --evaluator {input.evaluator} --out-evaluator {output.evaluator}"
        " --out-inception {output.inception} --out-evaluator-val {output.evaluator_val} > {log} 2>&1"


rule evaluate:
    input:
        samples="results/{dataset}/{method}{hp}/seed{seed}/samples.npz",
        evaluator="results/{dataset}/evaluator/model.pt",
        stats_evaluator="results/{dataset}/stats/evaluator.npz",
        stats_inception="results/{dataset}/stats/inception.npz",
        stats_evaluator_val="results/{dataset}/stats/evaluator_val.npz",
        losses=run_loss_csvs,
    output:
        metrics="results/{dataset}/{method}{hp}/seed{seed}/metrics.json",
    params:
        job=lambda w: job(w, None, params={"fid": config["fid"], "eval": config["eval"]}),
        code=code_version("evaluate"),
        record=record_meta,
    log:
        "logs/{dataset}/{method}{hp}/seed{seed}/evaluate.log",
    benchmark:
        "logs/{dataset}/{method}{hp}/seed{seed}/evaluate.bench.tsv",
    priority: 10  # a finished training's run is scored (and recorded) before more training starts
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=gpu,
    shell:
        "glann evaluate --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --samples {input.samples} --evaluator {input.evaluator}"
        " --stats-evaluator {input.stats_evaluator} --stats-inception {input.stats_inception}"
        " --stats-evaluator-val {input.stats_evaluator_val} --losses {input.losses} {params.record}"
        " --out {output.metrics} > {log} 2>&1"


rule evaluate_snapshots:
    input:
        unpack(snapshot_inputs),
    output:
        curve="results/{dataset}/{method}{hp}/seed{seed}/snapshots.json",
    params:
        job=lambda w: job(w, None, params={**config["snapshots"], "min_class_share": config["eval"]["min_class_share"],
                                           "split": snapshot_split(w.dataset),
                                           **({k: config["sample"][k] for k in ("bn_stats", "bn_batches")}
                                              if REGISTRY[w.method].v1_generator else {})}),
        fixed=lambda w, input: fixed_args(w, input),
        code=code_version("evaluate-snapshots"),
        record=lambda w: f"--record {RECORDS}/{w.dataset}/{w.method}{w.hp}/seed{w.seed}" if RECORDS else "",
    log:
        "logs/{dataset}/{method}{hp}/seed{seed}/evaluate_snapshots.log",
    benchmark:
        "logs/{dataset}/{method}{hp}/seed{seed}/evaluate_snapshots.bench.tsv",
    priority: 10  # a finished training's run is scored (and recorded) before more training starts
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu,
    shell:
        "glann evaluate-snapshots --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --snapshots {input.snapshots} --evaluator {input.evaluator} --stats-evaluator {input.stats_evaluator}"
        " --fixed {params.fixed} {params.record} --out {output.curve} > {log} 2>&1"
