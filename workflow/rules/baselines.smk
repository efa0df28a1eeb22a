# Baselines on GLANN's generator: GLO+Gaussian, pixel IMLE, GANs, VAE.


rule fit_gaussian:
    input:
        glo="results/{dataset}/glann/seed{seed}/glo.pt",
    output:
        model="results/{dataset}/glo_gauss/seed{seed}/model.pt",
    params:
        job=lambda w: job(w, None, "glo_gauss", {}),
        code=code_version("fit-gaussian"),
    log:
        "logs/{dataset}/glo_gauss/seed{seed}/fit_gaussian.log",
    benchmark:
        "logs/{dataset}/glo_gauss/seed{seed}/fit_gaussian.bench.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "glann fit-gaussian --job {params.job:q} --glo {input.glo} --out {output.model} > {log} 2>&1"


rule train_imle_pixel:
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/imle_pixel/seed{seed}/model.pt",
        losses="results/{dataset}/imle_pixel/seed{seed}/losses.csv",
        snapshots=temp("results/{dataset}/imle_pixel/seed{seed}/snapshots.pt"),
    params:
        job=lambda w: job(w, "imle_pixel", "imle_pixel", snapshots=True),
        code=trainer_code("imle_pixel"),
    log:
        "logs/{dataset}/imle_pixel/seed{seed}/train_imle_pixel.log",
    benchmark:
        "logs/{dataset}/imle_pixel/seed{seed}/train_imle_pixel.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=12000,
        runtime=24 * 60,
        gpu=gpu,
    shell:
        "glann train-baseline --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --csv {output.losses} --snapshots {output.snapshots} > {log} 2>&1"


rule train_gan:
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/{method}/seed{seed}/model.pt",
        losses="results/{dataset}/{method}/seed{seed}/losses.csv",
        snapshots=temp("results/{dataset}/{method}/seed{seed}/snapshots.pt"),
    wildcard_constraints:
        method="|".join(m for m in METHODS if REGISTRY[m].rule == "train_gan") or "none",
    params:
        job=lambda w: job(w, w.method, snapshots=True),
        code=trainer_code(),
    log:
        "logs/{dataset}/{method}/seed{seed}/train_gan.log",
    benchmark:
        "logs/{dataset}/{method}/seed{seed}/train_gan.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=gpu,
    shell:
        "glann train-baseline --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --csv {output.losses} --snapshots {output.snapshots} > {log} 2>&1"


rule train_vae:
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/vae/seed{seed}/model.pt",
        losses="results/{dataset}/vae/seed{seed}/losses.csv",
        snapshots=temp("results/{dataset}/vae/seed{seed}/snapshots.pt"),
    params:
        job=lambda w: job(w, "vae", "vae", snapshots=True),
        code=trainer_code("vae"),
    log:
        "logs/{dataset}/vae/seed{seed}/train_vae.log",
    benchmark:
        "logs/{dataset}/vae/seed{seed}/train_vae.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=gpu,
    shell:
        "glann train-baseline --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --csv {output.losses} --snapshots {output.snapshots} > {log} 2>&1"
