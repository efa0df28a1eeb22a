"""The MLflow store: where it is, reaching it, retrying under parallel writers, experiments, and
the backend that writes a job's run as it goes (``tracking.live: true``).

Every MLflow import is inside a function: a job with deferred tracking (glann.tracking.journal) and the
Snakefile's start never import MLflow. SQLite's "database is locked" under parallel writers is
retried with back-off (:func:`with_retry`).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3 records an experiment's kind in this tag; without it `mlflow ui` opens the GenAI
# (traces) view. custom_model_development = the model-training view, which lands on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

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


def reachable(uri: str) -> bool:
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


def with_retry(fn, *args, attempts: int = 8, **kwargs):
    """``fn`` retried with backoff while SQLite says "database is locked" (another process
    writes). A UNIQUE constraint failure on the first try is the other race of parallel jobs:
    MLflow's store looks a row up (a dataset of the run's inputs), finds none and inserts it
    while another job inserts the same row; the second try finds it. Retried once only."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            msg = str(exc).lower()
            race = i == 0 and "unique constraint failed" in msg
            if not ("locked" in msg or race) or i == attempts - 1:
                raise
            time.sleep(0.2 * (2 ** i) * (0.5 + random.random()))


def get_or_create_experiment(client, dataset: str, uri: str) -> str:
    name = experiment_name(dataset)
    exp = with_retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # e.g. made by an older version
            with_retry(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        # experimentKind: MLflow 3's UI then opens on the training-runs table, not the GenAI view.
        return with_retry(client.create_experiment, name, artifact_location=_artifact_root(uri),
                           tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:
        exp = with_retry(client.get_experiment_by_name, name)  # another process won the race
        if exp is None:
            raise
        return exp.experiment_id


def log_dataset(client, run_id: str, ds: dict, context: str) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**ds), tags=[InputTag("mlflow.data.context", context)])])


def tracking_on() -> bool:
    return os.environ.get("GLANN_TRACKING", "1") != "0"



class LiveRun:
    """Writes a run to the MLflow store as the job goes (``tracking.live: true``)."""

    def __init__(self, uri: str, dataset: str, run_name: str, tags: dict):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp_id = get_or_create_experiment(self.client, dataset, uri)
        self.run_id = with_retry(self.client.create_run, exp_id, run_name=run_name, tags=tags).info.run_id

    def params(self, flat: dict):
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            with_retry(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def metrics(self, numeric: dict, step: int):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        with_retry(self.client.log_batch, self.run_id, metrics=[Metric(k, v, ts, step) for k, v in numeric.items()])

    def tags(self, tags: dict):
        for k, v in tags.items():
            with_retry(self.client.set_tag, self.run_id, k, v)

    def dataset(self, ds: dict, context: str):
        with_retry(log_dataset, self.client, self.run_id, ds, context)

    def artifact(self, path: str, artifact_path: str | None):
        with_retry(self.client.log_artifact, self.run_id, path, artifact_path)

    def finish(self, status: str):
        with_retry(self.client.set_terminated, self.run_id, status)
