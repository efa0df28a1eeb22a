"""MLflow tracking that never breaks training.

One experiment per dataset (``glann/<dataset>``); every job is a run tagged
with dataset, method, seed, step, git commit and the Snakemake invocation id,
nested under that invocation's parent run (tag ``mlflow.parentRunId``), which
the Snakefile creates once in ``onstart`` before any job starts, so parallel
jobs never race to create the schema or the experiment.

Every call goes through ``_safe``: a backend that is unreachable or fails makes
the job log one warning and carry on untracked. SQLite's "database is locked"
under parallel writers is retried with back-off before giving up.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_ENV = "GLANN_PARENT_RUNS"        # json {dataset: parent run id}; our own variable, not MLFLOW_RUN_ID
INVOCATION_ENV = "GLANN_INVOCATION_ID"

# Fail fast against an unreachable server instead of MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def tracking_uri(configured: str | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_URI


def experiment_name(dataset: str) -> str:
    return f"glann/{dataset}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _reachable(uri: str) -> bool:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=3):
            return True
    except OSError:
        return False


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def _with_retry(fn, *args, attempts: int = 8, **kwargs):
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * (2 ** i) * (0.5 + random.random()))


def get_or_create_experiment(client, dataset: str, uri: str) -> str:
    name = experiment_name(dataset)
    exp = _with_retry(client.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    try:
        # experimentKind: MLflow 3's UI then opens on the training-runs table, not the GenAI view.
        return _with_retry(client.create_experiment, name, artifact_location=_artifact_root(uri),
                           tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:
        exp = _with_retry(client.get_experiment_by_name, name)  # another process won the race
        if exp is None:
            raise
        return exp.experiment_id


def start_invocation(datasets, configured_uri: str | None, invocation_id: str) -> dict:
    """Create the store, experiments and one parent run per dataset; returns {dataset: run id}."""
    if os.environ.get("GLANN_TRACKING", "1") == "0":
        return {}
    uri = tracking_uri(configured_uri)
    if not _reachable(uri):
        log.warning("MLflow tracking server %s is unreachable: tracking skipped for this invocation", uri)
        return {}
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        parents = {}
        for ds in datasets:
            exp_id = get_or_create_experiment(client, ds, uri)
            run = _with_retry(client.create_run, exp_id, run_name=f"snakemake {invocation_id}", tags={
                "glann.invocation": invocation_id, "glann.dataset": ds, "glann.step": "pipeline",
                "mlflow.source.git.commit": git_commit()})
            parents[ds] = run.info.run_id
        return parents
    except Exception as exc:
        log.warning("MLflow tracking unavailable (%s): tracking skipped", exc)
        return {}


def end_invocation(parents: dict, configured_uri: str | None, status: str = "FINISHED") -> None:
    if not parents:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri(configured_uri))
        for run_id in parents.values():
            _with_retry(client.set_terminated, run_id, status)
    except Exception as exc:
        log.warning("could not close MLflow parent runs (%s)", exc)


class Tracker:
    """A job's MLflow run; every method is a no-op once tracking has failed."""

    def __init__(self, dataset: str, method: str, seed, step: str, params: dict | None = None,
                 uri: str | None = None, enabled: bool = True):
        self.run_id = None
        self.client = None
        self.enabled = enabled and os.environ.get("GLANN_TRACKING", "1") != "0"
        if not self.enabled:
            return
        self.uri = tracking_uri(uri)
        if not _reachable(self.uri):
            self._disable(f"tracking server {self.uri} is unreachable")
            return
        tags = {"glann.dataset": dataset, "glann.method": method, "glann.seed": str(seed),
                "glann.step": step, "mlflow.source.git.commit": git_commit(),
                "glann.invocation": os.environ.get(INVOCATION_ENV, "manual")}
        parent = json.loads(os.environ.get(PARENT_ENV, "{}") or "{}").get(dataset)
        if parent:
            tags["mlflow.parentRunId"] = parent

        def start():
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            exp_id = get_or_create_experiment(self.client, dataset, self.uri)
            run = _with_retry(self.client.create_run, exp_id, run_name=f"{step}:{method}:seed{seed}", tags=tags)
            self.run_id = run.info.run_id
            if params:
                self.log_params(params)

        self._safe(start)

    def _disable(self, why: str):
        if self.enabled:
            log.warning("MLflow tracking skipped: %s. Training continues; outputs are unaffected.", why)
        self.enabled = False

    def _safe(self, fn, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return _with_retry(fn, *args, **kwargs)
        except Exception as exc:
            self._disable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return None

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self._safe(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
              if isinstance(v, (int, float)) and v is not None]
        if ms and self.run_id:
            self._safe(lambda: self.client.log_batch(self.run_id, metrics=ms))

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        if self.run_id and Path(path).exists():
            self._safe(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._safe(self.client.set_terminated, self.run_id, status)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
