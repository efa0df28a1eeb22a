"""MLflow tracking that never breaks training.

One experiment per dataset (``glann/<dataset>``); every job is a run tagged
with dataset, method, seed, step, git commit and the Snakemake invocation id,
nested under that invocation's parent run (tag ``mlflow.parentRunId``), which
the Snakefile creates once in ``onstart`` before any job starts, so parallel
jobs never race to create the schema or the experiment.

Every call goes through ``_safe``: a backend that is unreachable or fails makes
the job log one warning and carry on untracked. SQLite's "database is locked"
under parallel writers is retried with back-off before giving up.

Two ways to get a job's run into MLflow (config ``tracking.live``):

- live (default): the job writes to the store as it trains, so ``mlflow ui``
  shows each epoch as it happens. Each job process pays for importing MLflow
  and opening the store (2-5 s of CPU on a small machine).
- deferred (``live: false``): the job appends its events (tags, params,
  metrics with their own step and timestamp, artifact paths, final status) to a
  JSON-lines journal, ``.glann/tracking/*.jsonl``, and never imports MLflow.
  The Snakemake process replays every journal into the store in ``onsuccess``
  or ``onerror`` (and in the next ``onstart`` for the journals of an
  invocation that was killed), then deletes it. Same runs, same parent, same
  timestamps; they appear when the invocation ends. A journal whose job died
  before it finished becomes a KILLED run. A journal that cannot be imported
  (store unreachable) is kept and retried next time.

This module is the per-job :class:`Tracker` and :func:`tracked_run`, the run of one
``glann <step>``; the store and the live backend are in
glann.tracking.mlflow_store, the journal and its replay in glann.tracking.journal, the invocation's parent runs
and the closing of orphaned runs in glann.tracking.invocation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from glann.tracking.invocation import INVOCATION_ENV, PARENT_ENV, owner
from glann.tracking.journal import JournalRun, journal_dir
from glann.tracking.mlflow_store import LiveRun, git_commit, reachable, tracking_on, tracking_uri, with_retry

log = logging.getLogger(__name__)

TRACKING_ENV = "GLANN_TRACKING_CONFIG"  # the tracking section, handed to every job (not a job param)


def export_tracking(tracking: dict) -> None:
    """Hand the tracking section to the jobs through the environment (called by
    workflow/rules/common.smk): changing it reruns nothing."""
    os.environ[TRACKING_ENV] = json.dumps(tracking, sort_keys=True)


class Tracker:
    """A job's MLflow run, live or journalled; every method is a no-op once tracking has failed."""

    def __init__(self, step: str, job: dict, params: dict | None = None, settings: dict | None = None):
        """The run of ``step`` for ``job``: its ``dataset``, ``seed``, ``method`` (the method the job
        trains, samples or scores; absent for a step that serves every method, train_evaluator:
        its run has no method tag) and ``trial`` (the sweep setting the job belongs to, {"k": k,
        "values": {...}}: tags ``sweep`` (the method) and ``sweep.trial`` (hp{k}), and the sampled
        values as params ``hp.<section.key>``). ``settings``: the config's tracking section
        (``uri``, ``enabled``, ``live``)."""
        settings = settings or {}
        dataset, method, seed, trial = job.get("dataset", "?"), job.get("method"), job.get("seed", 0), job.get("trial")
        live = settings.get("live", True)
        self.backend = self.run_id = None
        self.enabled = settings.get("enabled", True) and tracking_on()
        if not self.enabled:
            return
        uri = tracking_uri(settings.get("uri"))
        tags = {"dataset": dataset, "seed": str(seed),  # plain names: group by them in the UI
                "glann.dataset": dataset, "glann.seed": str(seed),
                "glann.step": step, "mlflow.source.git.commit": git_commit(),
                "glann.tracking.invocation": os.environ.get(INVOCATION_ENV, "manual"), **owner()}
        if method:
            tags.update({"method": method, "glann.method": method})
        hp = f"/hp{trial['k']}" if trial else ""
        if trial:
            tags.update({"sweep": method, "sweep.trial": f"hp{trial['k']}"})
        parent = json.loads(os.environ.get(PARENT_ENV, "{}") or "{}").get(dataset)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run_name = f"{step}:{method}{hp}:seed{seed}" if method else f"{step}:seed{seed}"
        if live and not reachable(uri):  # journal what cannot be sent: imported once it is reachable
            log.warning("MLflow tracking server %s is unreachable: this run is journaled in %s and imported "
                        "by a later snakemake start once the server is up (`glann journals list`)", uri,
                        journal_dir())
            live = False
        if live:
            self.backend = self._safe(LiveRun, uri, dataset, run_name, tags)
        else:
            self.backend = self._safe(JournalRun, uri, dataset, run_name, tags,
                                      f"{step}-{dataset}-{method or 'all'}{hp.replace('/', '-')}-seed{seed}")
        self.run_id = getattr(self.backend, "run_id", None)
        if params:
            self.log_params(params)
        if trial:
            self.log_params({f"hp.{k}": v for k, v in trial["values"].items()})

    def _disable(self, why: str):
        if self.enabled:
            log.warning("MLflow tracking skipped: %s. Training continues; outputs are unaffected.", why)
        self.enabled = False

    def _safe(self, fn, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return with_retry(fn, *args, **kwargs)
        except Exception as exc:
            self._disable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return None

    def _call(self, name: str, *args):
        if self.enabled and self.backend is not None:
            self._safe(getattr(self.backend, name), *args)

    def log_params(self, params: dict) -> None:
        self._call("params", {k: str(v)[:6000] for k, v in _flatten(params).items()})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        if numeric:
            self._call("metrics", numeric, step or 0)

    def log_dataset(self, data_dir, context: str) -> None:
        """The prepared dataset as an MLflow dataset input (the runs table's Dataset column)."""
        if not self.enabled:
            return
        import hashlib

        path = Path(data_dir) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        ds = {"name": manifest.get("dataset", Path(data_dir).name),
              "digest": hashlib.sha256(path.read_bytes()).hexdigest()[:16], "source_type": "local",
              "source": str(manifest.get("source", path.parent)),
              "schema": json.dumps({"image_shape": manifest.get("image_shape"),
                                    "num_classes": manifest.get("num_classes")}),
              "profile": json.dumps({"splits": {k: v[0] for k, v in manifest.get("shapes", {}).items()}})}
        self._call("dataset", ds, context)

    def set_tags(self, tags: dict) -> None:
        self._call("tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("artifact", str(path), artifact_path)

    copy_checkpoints = False  # tracking.copy_checkpoints (set by tracked_run)

    def log_checkpoint(self, path) -> None:
        """A checkpoint: by default referred to, not copied (DVC versions results/, so an MLflow copy
        would be a second one): tags ``checkpoint.<file>`` (its path under results/) and
        ``checkpoint.<file>.sha256``. ``tracking.copy_checkpoints: true`` copies it as an artifact."""
        path = Path(path)
        if not path.exists():
            return
        if self.copy_checkpoints:
            self.log_artifact(path, "checkpoint")
            return
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        self.set_tags({f"checkpoint.{path.name}": str(path), f"checkpoint.{path.name}.sha256": digest.hexdigest()})

    def finish(self, status: str = "FINISHED") -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            if isinstance(backend, JournalRun) and not self.enabled:
                backend.file.close()
            elif self.enabled:
                try:
                    with_retry(backend.finish, status)
                except Exception as exc:
                    self._disable(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def tracked_run(job: dict, step: str, data=None, context: str = "training"):
    """The run of one ``glann <step>`` job (``job``: its ``--job`` slice): FINISHED on success,
    KILLED on Ctrl-C or when its snakemake is gone, FAILED on any other exception. ``data``: the
    prepared dataset folder, logged as the run's dataset input. Tracking settings come from the
    environment (TRACKING_ENV, set by the Snakefile), so changing them reruns nothing."""
    tr = {**json.loads(os.environ.get(TRACKING_ENV) or "{}"), **job.get("tracking", {})}
    method = job.get("method")
    tracker = Tracker(step, job, params={**job["params"], "device": job["device"], "runtime": job["runtime"]},
                      settings=tr)
    tracker.copy_checkpoints = bool(tr.get("copy_checkpoints", False))
    try:
        hp = f"hp{job['trial']['k']}" if job.get("trial") else ""
        run_dir = (Path("results") / job["dataset"] / method / hp / f"seed{job['seed']}"
                   if job.get("dataset") and method else None)
        if run_dir is not None and run_dir.is_dir():  # where `glann generate --run-id` finds the model
            tracker.set_tags({"glann.run_dir": str(run_dir.resolve())})
        if data:
            tracker.log_dataset(data, context)
        yield tracker
    except KeyboardInterrupt:  # Ctrl-C, or the snakemake that started the job is gone
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
