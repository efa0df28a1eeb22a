"""Run records: a study that survives interruption (docs/studies.md).

With ``records.dir`` set, every finished (dataset, method, setting, seed) run leaves a small
record under ``<records.dir>/<dataset>/<method>[/hp<k>]/seed<S>/``, meant to be committed:

- ``metrics.json``: the run's metrics, plus ``record``: its *key* (the SHA-256 of the canonical
  JSON of everything that fixes its result: the dataset and its options, the method's config
  sections with the setting applied, the seed, the runtime, sampling and evaluation sections;
  ``key_config`` holds that JSON), the code it came from (git commit and whether the tree was
  dirty, and the code version of every step the run went through), its training wall and CPU
  seconds (Snakemake's benchmarks of its training jobs) and when it was recorded;
- the run's training CSVs and its ``samples.png`` grid.

Model files are not kept. A later invocation (any machine, a fresh clone) reads a run's record
instead of training it when the record's key_config is :func:`compatible` with the run it would
train (the same values; a key added to the code since at its default); the
summary, sweep tables and figures are rebuilt from the records. :func:`verify_records` tells which
records were made by code other than the code checked out now.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from glann.atomic import write_json

TRAIN_BENCHMARKS = ("train_glo", "train_imle", "train_baseline", "fit_gaussian")


def run_key(key_config: dict) -> str:
    """The SHA-256 of ``key_config``'s canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(key_config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def compatible(recorded, current, default) -> bool:
    """Whether a record made under ``recorded`` (its key_config) stands for the run ``current``
    describes: every value the record has is the same now, and a key the record does not have (a
    setting added to the code since) is at its default (``default``: the same structure, from the
    schema's defaults), so that adding a key that keeps the old behaviour re-keys no record."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for k, v in current.items():
            if k in recorded:
                if not compatible(recorded[k], v, (default or {}).get(k) if isinstance(default, dict) else None):
                    return False
            elif not isinstance(default, dict) or k not in default or default[k] != v:
                return False
        return True
    return recorded == current


def read_key_config(record_dir) -> dict | None:
    """The key_config of the record in ``record_dir`` (None where there is none or it cannot be read)."""
    path = Path(record_dir) / "metrics.json"
    try:
        rec = json.loads(path.read_text())["record"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rec.get("key") != run_key(rec.get("key_config", {})):
        return None  # edited by hand: not trusted (glann check-records names it)
    return rec["key_config"]


def read_key(record_dir) -> str | None:
    """The key of the record in ``record_dir`` (None where there is none or it cannot be read)."""
    path = Path(record_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())["record"]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def git_commit(cwd=".") -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether the tracked code differs from it); (None, None) outside a git checkout.

    The code is what runs: src/, workflow/ and the Snakefile. A study writes its records into the
    checkout it runs from (docs/studies/...), which must not make every later record "dirty"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":/src", ":/workflow", ":/Snakefile"], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


def training_compute(log_dirs) -> dict:
    """Wall and CPU seconds of a run's training jobs, from Snakemake's benchmark files in its log folders."""
    wall = cpu = 0.0
    found = []
    for folder in log_dirs:
        for name in TRAIN_BENCHMARKS:
            path = Path(folder) / f"{name}.bench.tsv"
            if not path.exists():
                continue
            rows = list(csv.DictReader(path.open(), delimiter="\t"))
            if rows:
                wall += float(rows[-1].get("s") or 0)
                cpu += float(rows[-1].get("cpu_time") or 0)
                found.append(str(path))
    return {"train_wall_seconds": wall if found else None, "train_cpu_seconds": cpu if found else None,
            "benchmarks": found}


def write(record_dir, metrics: dict, meta: dict, files=(), log_dirs=()) -> Path:
    """Write a run's record: ``metrics`` with ``record`` = ``meta`` (key, key_config, code
    versions) plus the commit and the training compute; ``files`` (CSVs, the sample grid) copied."""
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        if Path(f).exists():
            shutil.copyfile(f, record_dir / Path(f).name)
    commit, dirty = git_commit()
    record = {**meta, "code_commit": commit, "code_dirty": dirty, **training_compute(log_dirs),
              "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if record.get("key") != run_key(record.get("key_config", {})):
        raise ValueError(f"record for {record_dir}: its key does not match its key_config")
    write_json(record_dir / "metrics.json", {**metrics, "record": record}, record=False)
    return record_dir / "metrics.json"


def verify_records(records_dir, src_dir) -> dict:
    """Each record's integrity (its key is the hash of its key_config) and whether each step's
    recorded code version equals the version of the code in ``src_dir`` now."""
    from glann.pipeline.codehash import code_hash

    out = {"records": 0, "bad_key": [], "other_code": {}}
    for path in sorted(Path(records_dir).rglob("metrics.json")):
        try:
            rec = json.loads(path.read_text())["record"]
        except (ValueError, KeyError):
            continue
        out["records"] += 1
        if rec.get("key") != run_key(rec.get("key_config", {})):
            out["bad_key"].append(str(path))
        for step, info in sorted((rec.get("code_versions") or {}).items()):
            now = code_hash(Path(src_dir), info["step"], tuple(info.get("extra", ())))
            if now != info["hash"]:
                out["other_code"].setdefault(str(path.parent), []).append(step)
    return out


def format_check(result: dict) -> str:
    lines = [f"{result['records']} records"]
    if result["bad_key"]:
        lines.append(f"{len(result['bad_key'])} whose key is not the hash of their key_config (edited by hand?):")
        lines += [f"  {p}" for p in result["bad_key"]]
    if result["other_code"]:
        lines.append(f"{len(result['other_code'])} made by code that differs from the checkout in these steps:")
        lines += [f"  {run}: {', '.join(steps)}" for run, steps in result["other_code"].items()]
    else:
        lines.append("every record's steps match the code checked out now")
    return "\n".join(lines)


def planned_runs(cfg: dict) -> list[str]:
    """The record folders (``dataset/method[/hp<k>]/seed<S>``) a study's config trains, as the
    workflow plans them (:func:`glann.methods.search_space.plan`): each method's configured setting
    for every seed, and each sweep setting that trains runs of its own for every seed. ``cfg``: the
    full config (config/config.yaml with the study layered on, defaults filled)."""
    from glann.methods import search_space

    trials = search_space.plan(cfg)["trials"]
    return [f"{dataset}/{method}{hp}/seed{seed}" for dataset in cfg["datasets"] for method in cfg["methods"]
            for hp in ["", *(search_space.hp_suffix(k) for m, k in trials if m == method)] for seed in cfg["seeds"]]


def missing_runs(records_dir, cfg: dict) -> list[dict]:
    """Each planned run (:func:`planned_runs`) that has no record, with the training seconds it is
    expected to take: the mean of the same method's recorded runs of drawn settings (``hp<k>``),
    else of its configured ones, else unknown (``None``)."""
    records_dir = Path(records_dir)
    seconds: dict = {}
    for path in sorted(records_dir.rglob("metrics.json")):
        run = path.parent.relative_to(records_dir).parts  # dataset, method, [hp<k>,] seed<S>
        try:
            wall = json.loads(path.read_text()).get("record", {}).get("train_wall_seconds")
        except ValueError:
            continue
        if wall:
            seconds.setdefault((run[0], run[1], "drawn" if len(run) == 4 else "configured"), []).append(float(wall))
    out = []
    for run in planned_runs(cfg):
        if (records_dir / run / "metrics.json").is_file():
            continue
        dataset, method = run.split("/")[:2]
        for basis in ("drawn", "configured"):
            got = seconds.get((dataset, method, basis))
            if got:
                out.append({"run": run, "method": method, "seconds": sum(got) / len(got),
                            "basis": f"mean of {len(got)} recorded {basis} runs"})
                break
        else:
            out.append({"run": run, "method": method, "seconds": None, "basis": "no recorded run of the method"})
    return out


def format_missing(missing: list[dict], planned: int) -> str:
    """A markdown list of the runs :func:`missing_runs` found, per method, with their estimated cost."""
    lines = [f"{planned - len(missing)} of {planned} planned runs recorded; {len(missing)} missing.", ""]
    if not missing:
        return "\n".join(lines)
    lines += ["| method | runs missing | estimated training seconds each | from | estimated total |",
              "|---|---|---|---|---|"]
    by_method: dict = {}
    for m in missing:
        by_method.setdefault(m["method"], []).append(m)
    total, unknown = 0.0, 0
    for method, runs in by_method.items():
        each = runs[0]["seconds"]
        names = ", ".join(r["run"].split("/", 2)[2] for r in runs)
        if each is None:
            unknown += len(runs)
            lines.append(f"| {method} | {len(runs)}: {names} | unknown | {runs[0]['basis']} | unknown |")
        else:
            total += each * len(runs)
            lines.append(f"| {method} | {len(runs)}: {names} | {each:,.0f} | {runs[0]['basis']} | "
                         f"{each * len(runs):,.0f} s |")
    lines += ["", f"Estimated training time of the missing runs: {total:,.0f} s ({total / 3600:.1f} CPU-hours at "
              f"one thread per job{f'; {unknown} runs of unknown cost' if unknown else ''}), sampling and scoring "
              "not counted."]
    return "\n".join(lines)
