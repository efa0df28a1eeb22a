# Data preparation: every later step reads only data/prepared/{dataset}/.


rule prepare_data:
    output:
        train="data/prepared/{dataset}/train.npz",
        val="data/prepared/{dataset}/val.npz",
        test="data/prepared/{dataset}/test.npz",
        manifest="data/prepared/{dataset}/manifest.json",
    params:
        job=lambda w: job(w, None, params=dataset_options(w.dataset)),
        code=code_version("prepare"),
    log:
        "logs/{dataset}/prepare_data.log",
    benchmark:
        "logs/{dataset}/prepare_data.bench.tsv",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "glann prepare --job {params.job:q} --out-dir data/prepared/{wildcards.dataset} > {log} 2>&1"
