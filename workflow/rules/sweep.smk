# Sweeps: each swept method's K settings, written down once per dataset (glann.methods.search_space).
# The settings themselves train through the other rules, as results/{dataset}/{method}/hp{k}/seed{S}/.


localrules:
    write_sweep,


rule write_sweep:
    output:
        settings="results/{dataset}/sweep/{method}.json",
    params:
        settings=lambda w: json.dumps([{"values": v, "configured": search_space.is_configured(w.method, v, config)}
                                       for v in SETTINGS[w.method]], sort_keys=True),
        space=lambda w: json.dumps(search_space.space_of(w.method, SWEEP["space"], SWEEP["range"]), sort_keys=True),
    log:
        "logs/{dataset}/sweep/{method}.log",
    threads: 1
    resources:
        mem_mb=200,
        runtime=1,
    run:
        write_sweep_record(output, log, wildcards, params)
