# One sampling rule for every method: N images, a grid, interpolations, nearest neighbours.


rule sample:
    input:
        unpack(sample_inputs),
    output:
        samples="results/{dataset}/{method}{hp}/seed{seed}/samples.npz",
        grid=report(
            "results/{dataset}/{method}{hp}/seed{seed}/samples.png",
            caption="../report/samples.rst",
            category="Samples",
            labels={"dataset": "{dataset}", "method": "{method}{hp}", "seed": "{seed}"},
        ),
        interpolation="results/{dataset}/{method}{hp}/seed{seed}/interpolation.png",
        nearest="results/{dataset}/{method}{hp}/seed{seed}/nearest.png",
    params:
        job=lambda w: job(w, None, params=sample_params(w.method, "sample")),
        models=lambda w, input: sample_args(w, input),
        code=code_version("sample"),
    log:
        "logs/{dataset}/{method}{hp}/seed{seed}/sample.log",
    benchmark:
        "logs/{dataset}/{method}{hp}/seed{seed}/sample.bench.tsv",
    priority: 10  # a finished training's run is scored (and recorded) before more training starts
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu,
    shell:
        "glann sample --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out-dir results/{wildcards.dataset}/{wildcards.method}{wildcards.hp}/seed{wildcards.seed} {params.models} > {log} 2>&1"
