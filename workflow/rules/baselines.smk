# Baselines on GLANN's generator: GLO+Gaussian, pixel IMLE, GANs, VAE.


rule fit_gaussian:
    input:
        glo="results/{dataset}/glann{hp}/seed{seed}/glo.pt",
    output:
        model="results/{dataset}/glo_gauss{hp}/seed{seed}/model.pt",
    params:
        job=lambda w: job(w, None, "glo_gauss", {}),
        code=code_version("fit-gaussian"),
    log:
        "logs/{dataset}/glo_gauss{hp}/seed{seed}/fit_gaussian.log",
    benchmark:
        "logs/{dataset}/glo_gauss{hp}/seed{seed}/fit_gaussian.bench.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "glann fit-gaussian --job {params.job:q} --glo {input.glo} --out {output.model} > {log} 2>&1"


rule train_baseline:
    # every method the registry trains through `glann train-baseline` (pixel IMLE, the GANs, the VAE)
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/{method}{hp}/seed{seed}/model.pt",
        losses="results/{dataset}/{method}{hp}/seed{seed}/losses.csv",
        snapshots=temp("results/{dataset}/{method}{hp}/seed{seed}/snapshots.pt"),
    wildcard_constraints:
        method="|".join(m for m in REGISTRY if REGISTRY[m].trainer),
    params:
        job=lambda w: job(w, w.method, snapshots=True),
        code=trainer_code,
    log:
        "logs/{dataset}/{method}{hp}/seed{seed}/train_baseline.log",
    benchmark:
        "logs/{dataset}/{method}{hp}/seed{seed}/train_baseline.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=lambda w: REGISTRY[w.method].mem_mb,
        runtime=24 * 60,
        gpu=gpu,
    shell:
        "glann train-baseline --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --csv {output.losses} --snapshots {output.snapshots} > {log} 2>&1"
