# glann-pipeline: GLANN (GLO + IMLE) against GAN/VAE baselines, cached step by step.
#   snakemake --cores all                                 embedded default (mnist5k, CPU minutes)
#   snakemake --cores all --configfile config/quick.yaml  tiny preset (tests)
#   snakemake --report results/report.html                HTML report of the last run
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/glann.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/summarize.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
