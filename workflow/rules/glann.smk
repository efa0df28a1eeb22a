# GLANN: GLO embedding (train_glo), then IMLE mapping noise -> latent (train_imle).


rule train_glo:
    input:
        rules.prepare_data.output,
    output:
        model="results/{dataset}/glann{hp}/seed{seed}/glo.pt",
        losses="results/{dataset}/glann{hp}/seed{seed}/glo_losses.csv",
        snapshots=temp("results/{dataset}/glann{hp}/seed{seed}/glo_snapshots.pt"),
        recon=report(
            "results/{dataset}/glann{hp}/seed{seed}/reconstructions.png",
            caption="../report/reconstructions.rst",
            category="Reconstructions",
            labels={"dataset": "{dataset}", "run": "glann{hp}", "seed": "{seed}"},
        ),
    params:
        job=lambda w: job(w, "glo", "glann", snapshots=True),
        code=code_version("train-glo"),
    log:
        "logs/{dataset}/glann{hp}/seed{seed}/train_glo.log",
    benchmark:
        "logs/{dataset}/glann{hp}/seed{seed}/train_glo.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=gpu,
    shell:
        "glann train-glo --job {params.job:q} --threads {threads} --data data/prepared/{wildcards.dataset}"
        " --out {output.model} --csv {output.losses} --recon {output.recon} --snapshots {output.snapshots} > {log} 2>&1"


rule train_imle:
    input:
        glo="results/{dataset}/glann{hp}/seed{seed}/glo.pt",
    output:
        model="results/{dataset}/glann{hp}/seed{seed}/imle.pt",
        losses="results/{dataset}/glann{hp}/seed{seed}/imle_losses.csv",
        snapshots=temp("results/{dataset}/glann{hp}/seed{seed}/imle_snapshots.pt"),
    params:
        job=lambda w: job(w, "imle", "glann", snapshots=True),
        code=code_version("train-imle"),
    log:
        "logs/{dataset}/glann{hp}/seed{seed}/train_imle.log",
    benchmark:
        "logs/{dataset}/glann{hp}/seed{seed}/train_imle.bench.tsv",
    threads: train_threads()
    resources:
        mem_mb=8000,
        runtime=6 * 60,
        gpu=gpu,
    shell:
        "glann train-imle --job {params.job:q} --threads {threads} --glo {input.glo}"
        " --out {output.model} --csv {output.losses} --snapshots {output.snapshots} > {log} 2>&1"
