# glann-pipeline: GLANN (GLO + IMLE) against GAN/VAE baselines, cached step by step.
#   snakemake --cores all                                 embedded default (mnist5k, CPU minutes)
#   snakemake --cores all --configfile config/quick.yaml  tiny preset (tests)
#   snakemake --report results/report.html                HTML report of the last run
from snakemake.utils import min_version

min_version("9.0")

# Snakemake's own message for a config file that is not valid YAML names neither the file nor the
# line; the embedded config is read here first, so its mistakes are named. (Files given with
# --configfile are read by Snakemake before this file runs: see docs/failures.md.)
import sys

try:  # the installed package (pip install -e .): the code the jobs run, and what the code hashes describe
    from glann.pipeline.config import yaml_error
except ImportError as exc:
    sys.stderr.write(f"The glann package is not importable ({exc}): install it into this environment with "
                     "`pip install -e .` in the repository root (README, Install), then rerun snakemake.\n")
    sys.exit(1)

if _yaml_problem := yaml_error("config/config.yaml"):
    sys.stderr.write(f"{_yaml_problem}\n")
    sys.exit(1)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/glann.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/summarize.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
