# Config validation (before any job runs), target computation, and small helpers.
import json
import os
import shlex
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import glann  # noqa: E402  (installed: the Snakefile checked; the jobs' `glann` runs the same package)
from glann.pipeline.codehash import code_hash  # noqa: E402
from glann.pipeline.config import config_errors, coerce, cuda_visible, fill_defaults, load_schema  # noqa: E402
from glann.pipeline.watchdog import export_snakemake_pid  # noqa: E402
from glann.tracking.tracker import export_tracking  # noqa: E402
from glann.methods.registry import METHODS as REGISTRY  # noqa: E402
from glann.methods import search_space  # noqa: E402

SCHEMA_PATH = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
_schema = load_schema(SCHEMA_PATH)
_typed = coerce(config, _schema)
config.clear()
config.update(_typed)
_errors = config_errors(config, _schema)
if _errors:
    sys.stderr.write("\n".join(_errors) + "\n(fix the config file or --config override; nothing was run)\n")
    sys.exit(1)
# config_errors() is the JSON-schema validation (jsonschema, Draft 2020-12, the same schema file that
# snakemake.utils.validate would read) with one message per mistake that names the key path;
# fill_defaults() then sets the schema's defaults. A second pass through snakemake.utils.validate
# would repeat both at every start, no-op included.
_filled = fill_defaults(config, _schema)
config.clear()
config.update(_filled)
if workflow.is_main_process:
    from glann.pipeline.config import start_warnings

    for _line in start_warnings(config):
        sys.stderr.write(f"{_line}\n")

if config["fid"]["require_inception"] and config["fid"]["inception"]:
    from glann.hub import inception_weights_path  # no torch import: every start pays for one

    _path, _why = inception_weights_path(config["fid"]["inception_weights"])
    if _path is None:
        sys.stderr.write(f"config error at fid.require_inception: {_why}. Nothing was run.\n")
        sys.exit(1)

DATASETS = config["datasets"]
METHODS = config["methods"]
SEEDS = config["seeds"]
# Sweeps (glann.methods.search_space): K settings per swept method, drawn here once; setting k of a
# method trains as results/{dataset}/{method}/hp{k}/seed{S}/ through the same rules ({hp} = hp_suffix(k);
# "" for the method's configured setting).
# (a method that shares another's settings, GLO+Gaussian, needs that method's jobs: GLANN's GLO). A
# setting that leaves the method's sections as configured (v1's sample 0 is v1's default) trains
# nothing: the sweep's summary reads the configured runs for it (search_space.is_configured).
SWEEP = config["sweep"]
_PLAN = search_space.plan(config)
SWEPT, SETTINGS = _PLAN["swept"], _PLAN["settings"]
TRIALS = [(m, search_space.hp_suffix(k)) for m, k in _PLAN["trials"]]

# Inputs before outputs: Snakemake deletes a job's outputs just before running it, so a corrupt
# prepared split found by the job itself would already have cost the checkpoints it replaces.
# Checked here, in the main process only (a cluster node's job process has nothing to add).
if workflow.is_main_process:
    from glann.pipeline.preflight import preflight_problems

    _problems = preflight_problems(DATASETS)
    if _problems:
        sys.stderr.write("\n".join(_problems) + "\n")
        sys.exit(1)


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    seed=r"\d+",
    method="|".join(REGISTRY),
    hp=r"(/hp\d+)?",


# the src/ folder of the package that runs (with `pip install -e .`, this checkout's src/; with
# PYTHONPATH set to another src/, that one): the code hashes describe the code the jobs run
PACKAGE_SRC = Path(glann.__file__).resolve().parents[1]


def code_version(step, extra_modules=()):
    """Hash of exactly the source `glann <step>` runs (glann.pipeline.codehash): editing it reruns the step."""
    return code_hash(PACKAGE_SRC, step, tuple(extra_modules))


def trainer_code(wildcards):
    """train-baseline's code plus the trainer module the registry names for the method."""
    return code_version("train-baseline", [REGISTRY[wildcards.method].trainer.split(":")[0]])


def dataset_options(dataset):
    return dict(config["data"].get(dataset) or {})


def job(wildcards, section, method=None, params=None, snapshots=False, fault_key=None):
    """The JSON config slice handed to `glann <step> --job`: only what changes a result.

    ``method``: the method the job belongs to (default: the {method} wildcard); a step that
    serves every method (prepare_data, train_evaluator, real_stats) has none. ``fault_key``: the
    ``fault_injection`` key that poisons this job's loss (default: the method).
    Bookkeeping (tracking, threads) stays out, so switching it reruns nothing: threads
    come through --threads, tracking through GLANN_TRACKING_CONFIG (set below).
    """
    method = method or getattr(wildcards, "method", None)
    fault = config["fault_injection"].get(fault_key or method)
    runtime = {k: config["runtime"][k] for k in ("amp", "deterministic")}
    trial = trial_of(wildcards, method)
    if params is None:
        params = search_space.apply(config[section], section, trial["values"]) if trial else config[section]
    return json.dumps(
        {
            "dataset": wildcards.dataset,
            **({"method": method} if method else {}),
            "seed": int(getattr(wildcards, "seed", 0)),
            "device": config["device"],
            "runtime": runtime,
            "params": params,
            "fault": {"nan_at_epoch": fault} if fault else None,
            # a sweep's settings keep no snapshots: their curves are the configured setting's
            **({"snapshots": 0 if trial else config["snapshots"]["count"]} if snapshots else {}),
            **({"trial": trial} if trial else {}),
        },
        sort_keys=True,
    )


def trial_of(wildcards, method):
    """{"k": k, "values": setting} for a job of setting k of a sweep ({hp} = hp_suffix(k)), else None."""
    hp = getattr(wildcards, "hp", "")
    k = search_space.hp_index(hp)
    if k is None:
        return None
    if method not in SETTINGS or k >= len(SETTINGS[method]):
        raise ValueError(f"{method}{hp}: no such sweep setting (sweep.settings = {SWEEP['settings']}, "
                         f"swept: {', '.join(SWEPT) or 'none'})")
    return {"k": k, "values": SETTINGS[method][k]}


def sample_params(method, section):
    """A sampling section's params; ``bn_stats`` and ``bn_batches`` only for the v1 generators
    they apply to, so changing them reruns nothing else."""
    params = dict(config[section])
    if not REGISTRY[method].v1_generator:
        params.pop("bn_stats", None)
        params.pop("bn_batches", None)
    return params


def sample_inputs(w):
    """The prepared data and the checkpoints the registry lists for this method."""
    return {"data": f"data/prepared/{w.dataset}/manifest.json",
            **REGISTRY[w.method].checkpoint_paths(w.dataset, w.seed, w.hp)}


def snapshot_split(dataset):
    """The split the snapshot curves are scored on: the validation split where data.<dataset>.val_size
    carves one (budgets are chosen on the curves), else the test split."""
    return "val" if dataset_options(dataset).get("val_size", 0) else "test"


def snapshot_inputs(w):
    """A method's snapshot file, the checkpoints they are used with, the evaluator and real stats."""
    m = REGISTRY[w.method]
    return {"data": f"data/prepared/{w.dataset}/manifest.json", "snapshots": m.snapshot_path(w.dataset, w.seed, w.hp),
            "evaluator": f"results/{w.dataset}/evaluator/model.pt",
            "stats_evaluator": f"results/{w.dataset}/stats/"
                               + ("evaluator_val.npz" if snapshot_split(w.dataset) == "val" else "evaluator.npz"),
            **{f"fixed_{role}": p for role, p in m.snapshot_fixed_paths(w.dataset, w.seed, w.hp).items()}}


def fixed_args(w, input):
    return " ".join(f"{k[len('fixed_'):]}={input[k]}" for k in input.keys() if k.startswith("fixed_"))


def snapshot_curves():
    """Every run's scored snapshots (none when snapshots.count is 0)."""
    if not config["snapshots"]["count"]:
        return []
    # a recorded run's curve is its record's copy; a record made before its curve was scored
    # takes it from results/ (scored there, then copied into the record by evaluate_snapshots)
    out = []
    for d, m, s in ((d, m, s) for d in DATASETS for m in METHODS for s in SEEDS):
        path = run_file(d, m, "", s, "snapshots.json")
        out.append(path if Path(path).exists() else f"results/{d}/{m}/seed{s}/snapshots.json")
    return out


def sample_args(w, input):
    return " ".join(f"--{k} {input[k]}" for k in ("glo", "imle", "model") if k in input.keys())


def loss_csvs(wildcards=None):
    """Every training job's per-epoch loss CSV, as the registry lists them (a recorded run's without
    results/: its record's copy)."""
    return [run_file(d, m, "", s, Path(f).name) if not Path(f).exists() else f
            for d in DATASETS for m in METHODS for s in SEEDS for f in REGISTRY[m].loss_csv_paths(d, s)]


def run_loss_csvs(wildcards):
    """One run's training CSVs (evaluate reads them for the run's status: glann.evaluation.status);
    GLO+Gaussian, which trains nothing of its own, is judged by GLANN's GLO it fits."""
    args = (wildcards.dataset, wildcards.seed, wildcards.hp)
    if wildcards.method == "glo_gauss":
        return REGISTRY["glann"].loss_csv_paths(*args)[:1]
    return REGISTRY[wildcards.method].loss_csv_paths(*args)


def train_threads():
    """runtime.threads, capped at --cores (unset for --report or a cluster executor)."""
    want = config["runtime"]["threads"]
    try:
        cores = workflow.cores
    except Exception:
        return want
    return min(want, cores) if isinstance(cores, int) and cores > 0 else want


# device: auto is resolved once, here: a machine without CUDA declares no GPU for any job, so a
# CPU-only partition is never asked for one. On a cluster whose submit host has no GPU, say
# device: cuda (the paper presets do).
USES_GPU = config["device"] == "cuda" or (config["device"] == "auto" and cuda_visible())


def gpu(wildcards=None):
    """GPU resource only for jobs that will use one: counted by --resources gpu=N and the SLURM profile."""
    return 1 if USES_GPU else 0


def write_sweep_record(output, log, wildcards, params):
    """Rule write_sweep's body: the method's settings and space (glann.methods.search_space.write_record)."""
    search_space.write_record(output.settings, wildcards.dataset, wildcards.method, SWEEP,
                              json.loads(params.space), json.loads(params.settings))
    Path(log[0]).write_text(f"{len(SETTINGS[wildcards.method])} settings of {wildcards.method}\n")


def trial_metrics():
    """Every sweep setting's metrics, for every dataset and seed (its record's where it has one)."""
    return [run_file(d, m, hp, s, "metrics.json") for d in DATASETS for m, hp in TRIALS for s in SEEDS]


# Run records (glann.pipeline.records, docs/studies.md): a run whose record under records.dir has
# the key of the run this config would train is read from there, not trained.
RECORDS = config["records"]["dir"]


def run_key_config(dataset, method, hp, seed, cfg=None):
    """Everything that fixes one run's result (``cfg``: the config, default the run's): the record's
    key is the hash of this."""
    cfg = cfg or config
    trial = trial_of(SimpleNamespace(hp=hp), method)
    sections = {sec: search_space.apply(cfg[sec], sec, trial["values"]) if trial else cfg[sec]
                for sec in search_space.sections(method)}
    sample = dict(cfg["sample"])
    if not REGISTRY[method].v1_generator:
        sample.pop("bn_stats", None)
        sample.pop("bn_batches", None)
    return {"dataset": dataset, "data": dict((cfg["data"].get(dataset) or {})), "method": method, "seed": int(seed),
            "setting": trial["values"] if trial else None, "sections": sections, "device": cfg["device"],
            "runtime": {k: cfg["runtime"][k] for k in ("amp", "deterministic")},
            "sample": sample, "evaluation": {k: cfg[k] for k in ("evaluator", "fid", "eval")}}


# the schema's defaults, for keys a record predates (glann.pipeline.records.compatible)
_DEFAULTS = fill_defaults({"datasets": DATASETS, "methods": METHODS, "seeds": SEEDS}, _schema)


_RECORDED = {}


def recorded(dataset, method, hp, seed):
    """Whether the run has a record with its key under records.dir."""
    if not RECORDS:
        return False
    where = f"{RECORDS}/{dataset}/{method}{hp}/seed{seed}"
    if where not in _RECORDED:
        from glann.pipeline.records import compatible, read_key_config

        had = read_key_config(where)
        _RECORDED[where] = had is not None and compatible(
            had, run_key_config(dataset, method, hp, seed), run_key_config(dataset, method, hp, seed, _DEFAULTS))
    return _RECORDED[where]


def run_file(dataset, method, hp, seed, name):
    """A run's file (metrics.json, samples.png, a training CSV): the one under results/ where it is
    there (Snakemake keeps it up to date as ever), else its record's copy where the run is recorded
    (a fresh clone, another machine: nothing is trained), else the one under results/ (to make)."""
    results = f"results/{dataset}/{method}{hp}/seed{seed}/{name}"
    if not Path(results).exists() and recorded(dataset, method, hp, seed):
        return f"{RECORDS}/{dataset}/{method}{hp}/seed{seed}/{name}"
    return results


def record_meta(wildcards):
    """evaluate's --record arguments: where the run's record goes, its key and code versions ('' without records)."""
    if not RECORDS:
        return ""
    d, m, hp, s = wildcards.dataset, wildcards.method, wildcards.hp, wildcards.seed
    key_config = run_key_config(d, m, hp, s)
    from glann.pipeline.records import run_key

    trainer = REGISTRY["glann" if m == "glo_gauss" else m]
    steps = {"glann": [("train_glo", "train-glo", []), ("train_imle", "train-imle", [])],
             "glo_gauss": [("train_glo", "train-glo", []), ("fit_gaussian", "fit-gaussian", [])]}.get(
        m, [("train_baseline", "train-baseline", [REGISTRY[m].trainer.split(":")[0]] if REGISTRY[m].trainer else [])])
    versions = {name: {"step": step, "extra": extra, "hash": code_version(step, extra)} for name, step, extra in steps}
    versions.update({name: {"step": name, "extra": [], "hash": code_version(name)} for name in ("sample", "evaluate")})
    meta = {"key": run_key(key_config), "key_config": key_config, "code_versions": versions}
    log_dirs = [f"logs/{d}/{m}{hp}/seed{s}", *([f"logs/{d}/glann{hp}/seed{s}"] if m == "glo_gauss" else [])]
    files = [f"results/{d}/{m}{hp}/seed{s}/samples.png", *run_loss_csvs(wildcards)]
    return (f"--record {RECORDS}/{d}/{m}{hp}/seed{s} --record-meta {shlex.quote(json.dumps(meta, sort_keys=True))}"
            f" --record-files {' '.join(files)} --record-logs {' '.join(log_dirs)}")


def sweep_files():
    return [f"results/{d}/sweep/{m}.json" for d in DATASETS for m in SWEPT]


def get_final_output():
    out = [
        "results/summary/table.md",
        "results/summary/table.csv",
        "results/summary/summary.json",
        "results/summary/samples.png",
    ]
    out += [run_file(d, m, "", s, "metrics.json") for d in DATASETS for m in METHODS for s in SEEDS]
    return out + snapshot_curves() + trial_metrics() + sweep_files() + (
        ["results/summary/sweep.md"] if SWEPT else [])


_INVOCATION = os.environ.get("GLANN_INVOCATION_ID") or uuid.uuid4().hex[:12]
# Jobs stop when this process is gone (glann.pipeline.watchdog): a kill -9 of snakemake leaves
# no orphan to finish a job the rerun would redo. Each process sets its own (a cluster node's too).
export_snakemake_pid()
# Jobs read their tracking settings from the environment, not from params (see job()).
export_tracking(config["tracking"])


onstart:
    from glann.tracking.invocation import on_start

    # device: cuda on a machine without CUDA: one line before any job (a cluster executor
    # submits the jobs to GPU nodes, so only jobs run here are checked).
    if config["device"] == "cuda" and workflow.local_exec and not cuda_visible():
        sys.stderr.write(
            "config error at device: cuda, but this machine has no CUDA GPU (no NVIDIA driver, or "
            "CUDA_VISIBLE_DEVICES hides it): use --config device=auto or device=cpu, or submit the jobs to GPU "
            "nodes with a cluster profile. Nothing was run.\n"
        )
        raise SystemExit(1)

    on_start(config["tracking"], DATASETS, _INVOCATION, " + ".join(Path(f).name for f in workflow.configfiles))


onsuccess:
    from glann.tracking.invocation import on_end

    on_end(config["tracking"])


onerror:
    from glann.tracking.invocation import on_end

    on_end(config["tracking"], "FAILED", log_path=log)
