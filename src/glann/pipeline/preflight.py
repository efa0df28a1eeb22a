"""Check a run's inputs before Snakemake deletes anything, and put a corrupt prepared split back.

Snakemake deletes a job's outputs just before it runs the job. A job whose input turns out to
be corrupt (a truncated ``train.npz``) then stops with a clear line, but the checkpoint it was
about to replace, and those of every other job that reads the same file, are already gone.
So the workflow calls :func:`preflight_problems` when it starts (``workflow/rules/common.smk``), before it
schedules a job: every prepared split is compared with its manifest and every file under
``results/<dataset>/`` with its integrity record (glann.atomic), and the first problems are
reported, each as one line that names the file and the command that recovers it.

Hashing every checkpoint at every start would cost seconds on a large run, so a file that
verified once is remembered by its size, mtime, ctime and inode (``.glann/verified.json``):
any write to it, and any ``touch``, changes its ctime, so it is hashed again.

:func:`restore_prepared` (``glann restore-data DIR``) rebuilds a prepared dataset from the
dataset name and options its manifest records. When the rebuilt files are byte-identical to
the ones the manifest describes, the damaged ones are replaced and given the manifest's
mtime, so Snakemake sees no input newer than the models trained on it and keeps every one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from glann.atomic import integrity_path, sha256_of, verified
from glann.errors import GlannError

CACHE = Path(".glann") / "verified.json"
SPLITS = ("train.npz", "val.npz", "test.npz")


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def restore_command(data_dir) -> str:
    return f"glann restore-data {data_dir}"


def _prepared_problem(data_dir: Path, known: dict, ok: dict) -> str | None:
    """The first problem of a prepared dataset folder (None: every split matches its manifest)."""
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        return None  # not prepared yet (or removed on purpose): prepare_data rebuilds the folder
    try:
        expected = _manifest(manifest_path)["sha256"]
    except GlannError as exc:
        return (f"{exc}: `dvc pull {data_dir}` restores it if DVC tracks it; "
                f"else delete {data_dir} and rerun snakemake, which prepares it again and retrains what "
                "depends on it. Nothing was run or deleted.")
    for name in SPLITS:
        path = data_dir / name
        if name not in expected:  # a manifest of a version without this split: prepare_data reruns
            continue
        if not path.is_file():
            return (f"{path} is missing: run `{restore_command(data_dir)}` to rebuild it (the trained models "
                    "are kept when the rebuilt data is byte-identical), then rerun snakemake. Nothing was run "
                    "or deleted.")
        stamp = _stamp(path)
        if known.get(str(path)) == stamp:
            ok[str(path)] = stamp
            continue
        actual = sha256_of(path)
        if actual != expected[name]:
            return (f"{path} does not match its manifest (sha256 {actual[:12]}... != {str(expected[name])[:12]}...): "
                    f"run `{restore_command(data_dir)}` to rebuild it (the trained models are kept when the "
                    "rebuilt data is byte-identical), then rerun snakemake. Nothing was run or deleted.")
        ok[str(path)] = stamp
    return None


def _manifest(path: Path) -> dict:
    """The manifest, if it is what prepare_data wrote (its integrity record) and complete."""
    try:
        manifest = json.loads(verified(path, fix="-").read_text())
        for key in ("dataset", "options", "sha256"):
            manifest[key]
        return manifest
    except (GlannError, OSError, ValueError, KeyError, TypeError):
        raise GlannError(f"{path} is truncated, corrupt or not written by prepare_data") from None


def _recorded_files(root: Path):
    """Files under ``root`` that carry an integrity record (``.<name>.sha256`` beside them)."""
    for rec in sorted(root.rglob(".*.sha256")):
        path = rec.with_name(rec.name[1:-len(".sha256")])
        if path.is_file():
            yield path


CHECKPOINT_SUFFIXES = (".pt", ".npz")  # what later jobs read back and verify: every one has a record


def _unrecorded_checkpoints(root: Path):
    """Checkpoints, samples and statistics under ``root`` without their integrity record: a job
    would refuse them only after Snakemake has deleted its outputs (and theirs downstream)."""
    for path in sorted(root.rglob("*")):
        if (path.suffix in CHECKPOINT_SUFFIXES and path.is_file() and not path.name.startswith(".")
                and not integrity_path(path).exists()):
            yield path


def preflight_problems(datasets, prepared="data/prepared", results="results", cache=CACHE, limit: int = 5) -> list[str]:
    """One line per problem (at most ``limit``) in the inputs a run of ``datasets`` reads."""
    cache = Path(cache)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    ok: dict = {}
    problems = []
    for ds in datasets:
        problem = _prepared_problem(Path(prepared) / ds, known, ok)
        if problem:
            problems.append(problem)
        root = Path(results) / ds
        if not root.is_dir():
            continue
        for path in _unrecorded_checkpoints(root):
            problems.append(
                f"{path} has no integrity record ({integrity_path(path).name}): it was not written by this "
                f"pipeline, or its record was lost. `dvc pull {path}` restores both if DVC tracks it; else delete "
                f"{path} and rerun snakemake, which rebuilds it and what depends on it. Nothing was run or deleted.")
        for path in _recorded_files(root):
            stamp = _stamp(path)
            if known.get(str(path)) == stamp:
                ok[str(path)] = stamp
                continue
            try:
                verified(path, fix=(f"`dvc pull {path}` restores it if DVC tracks it; else delete it, rebuild it "
                                    f"with `snakemake {path} --cores all` (with this run's --configfile), then "
                                    "rerun snakemake, which updates what depends on it. Nothing was run or "
                                    "deleted"))
            except GlannError as exc:
                problems.append(str(exc))
                continue
            ok[str(path)] = stamp
    if ok != known:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-verified.", dir=cache.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(ok, fh)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only checkout: hash again next time
    return problems[:limit]


def restore_prepared(data_dir) -> str:
    """Rebuild a prepared dataset from its manifest; replace only damaged files, and only when the
    rebuild is byte-identical to what the manifest describes. Returns what was done (one line)."""
    from glann.data.datasets import prepare

    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    try:
        manifest = _manifest(manifest_path)
        name, options, expected = manifest["dataset"], manifest["options"], manifest["sha256"]
    except GlannError as exc:
        raise GlannError(f"cannot restore {data_dir}: {exc}. `dvc pull {data_dir}` "
                         f"restores it if DVC tracks it; else delete {data_dir} and rerun snakemake, which "
                         "prepares it again and retrains what depends on it.") from None
    damaged = [f for f in SPLITS if f in expected and not _matches(data_dir / f, expected[f])]
    if not damaged:
        return f"{data_dir}: every split matches its manifest; nothing to restore"
    build = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir.parent))
    try:
        rebuilt = prepare(name, options, build)
        differ = [f for f in expected if rebuilt["sha256"].get(f) != expected[f]]
        if differ:
            raise GlannError(
                f"cannot restore {data_dir}: the rebuilt {', '.join(differ)} differ from what the manifest "
                "records (the source data or the preparation code changed since), so the trained models do "
                f"not belong to it. `dvc pull {data_dir}` restores the original if DVC tracks it; else delete "
                f"{data_dir} and rerun snakemake, which prepares it again and retrains what depends on it.")
        when = manifest_path.stat()
        for f in damaged:
            for src, dst in ((build / f, data_dir / f), (integrity_path(build / f), integrity_path(data_dir / f))):
                os.replace(src, dst)
                # the manifest's time: no input newer than the models trained on it, nothing reruns
                os.utime(dst, ns=(when.st_atime_ns, when.st_mtime_ns))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return (f"{data_dir}: rebuilt {', '.join(damaged)} byte-identical to the manifest; the trained models are "
            "kept (rerun snakemake)")


def _matches(path: Path, sha: str) -> bool:
    return path.is_file() and sha256_of(path) == sha
