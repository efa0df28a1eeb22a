# Config validation (before any job runs), target computation, and small helpers.
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from glann.config import check, coerce, fill_defaults, load_schema  # noqa: E402

SCHEMA_PATH = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
_schema = load_schema(SCHEMA_PATH)
_typed = coerce(config, _schema)
config.clear()
config.update(_typed)
_errors = check(config, _schema)
if _errors:
    sys.stderr.write("\n".join(_errors) + "\n(fix the config file or --config override; nothing was run)\n")
    sys.exit(1)
# check() is the JSON-schema validation (jsonschema, Draft 2020-12, the same schema file that
# snakemake.utils.validate would read) with one message per mistake that names the key path;
# fill_defaults() then sets the schema's defaults. A second pass through snakemake.utils.validate
# would repeat both and add ~0.25 s to every start, no-op included.
_filled = fill_defaults(config, _schema)
config.clear()
config.update(_filled)

if config["fid"]["require_inception"] and config["fid"]["inception"]:
    from glann.evaluation import inception_weights_path

    _path, _why = inception_weights_path(config["fid"]["inception_weights"])
    if _path is None:
        sys.stderr.write(f"config error at fid.require_inception: {_why}. Nothing was run.\n")
        sys.exit(1)

DATASETS = config["datasets"]
METHODS = config["methods"]
SEEDS = config["seeds"]
BASELINE_GANS = ["nsgan", "lsgan", "wgan_gp"]


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    seed=r"\d+",
    method="|".join(["glann", "glo_gauss", "imle_pixel", "nsgan", "wgan_gp", "lsgan", "vae"]),


def code_version(*modules):
    """Hash of src/glann modules a step depends on: editing them reruns the step."""
    h = hashlib.sha256()
    for m in ("__init__", "runtime", "atomic") + modules:
        h.update((Path(workflow.basedir) / "src" / "glann" / f"{m}.py").read_bytes())
    return h.hexdigest()[:16]


def dataset_options(dataset):
    return dict(config["data"].get(dataset) or {})


def job(wildcards, section, method=None, params=None):
    """The JSON config slice handed to `glann <step> --job`."""
    method = method or getattr(wildcards, "method", "-")
    fault = config["fault_injection"].get(method)
    return json.dumps(
        {
            "dataset": wildcards.dataset,
            "method": method,
            "seed": int(getattr(wildcards, "seed", 0)),
            "device": config["device"],
            "runtime": config["runtime"],
            "tracking": config["tracking"],
            "params": params if params is not None else config[section],
            "fault": {"nan_at_epoch": fault} if fault else None,
        },
        sort_keys=True,
    )


def train_threads():
    """runtime.threads, capped at --cores (unset for --report or a cluster executor)."""
    want = config["runtime"]["threads"]
    try:
        cores = workflow.cores
    except Exception:
        return want
    return min(want, cores) if isinstance(cores, int) and cores > 0 else want


def gpu(wildcards=None):
    """GPU resource only for GPU jobs: counted by --resources gpu=N and the SLURM profile."""
    return 0 if config["device"] == "cpu" else 1


def model_dir(method):
    return "results/{dataset}/" + method + "/seed{seed}"


def get_final_output():
    out = [
        "results/summary/table.md",
        "results/summary/table.csv",
        "results/summary/summary.json",
        "results/summary/samples.png",
    ]
    out += expand(
        "results/{dataset}/{method}/seed{seed}/metrics.json",
        dataset=DATASETS,
        method=METHODS,
        seed=SEEDS,
    )
    return out


_INVOCATION = os.environ.get("GLANN_INVOCATION_ID") or uuid.uuid4().hex[:12]


onstart:
    from glann import tracking

    os.environ[tracking.INVOCATION_ENV] = _INVOCATION
    os.environ.setdefault(tracking.JOURNAL_ENV, os.path.abspath(tracking.DEFAULT_JOURNAL))
    if config["tracking"]["enabled"]:
        tracking.import_journals()  # deferred runs left by an invocation that was killed
        parents = tracking.start_invocation(DATASETS, config["tracking"]["uri"], _INVOCATION)
        os.environ[tracking.PARENT_ENV] = json.dumps(parents)


onsuccess:
    from glann import tracking

    tracking.import_journals()
    tracking.end_invocation(json.loads(os.environ.get(tracking.PARENT_ENV, "{}")), config["tracking"]["uri"])


onerror:
    from glann import tracking

    tracking.import_journals()
    tracking.end_invocation(
        json.loads(os.environ.get(tracking.PARENT_ENV, "{}")), config["tracking"]["uri"], "FAILED"
    )
