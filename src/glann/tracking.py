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
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
JOURNAL_ENV = "GLANN_TRACKING_JOURNAL"  # folder of deferred-tracking journals
DEFAULT_JOURNAL = ".glann/tracking"
PARENT_ENV = "GLANN_PARENT_RUNS"        # json {dataset: parent run id}; our own variable, not MLFLOW_RUN_ID
INVOCATION_ENV = "GLANN_INVOCATION_ID"
# MLflow 3 records an experiment's kind in this tag; without it `mlflow ui` opens the GenAI
# (traces) view. custom_model_development = the model-training view, which lands on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
HEADLINE = ("fid_domain", "inception_fid", "precision", "recall", "coverage", "classes_covered", "train_seconds")

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
    exp = _with_retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # e.g. made by an older version
            _with_retry(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        # experimentKind: MLflow 3's UI then opens on the training-runs table, not the GenAI view.
        return _with_retry(client.create_experiment, name, artifact_location=_artifact_root(uri),
                           tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:
        exp = _with_retry(client.get_experiment_by_name, name)  # another process won the race
        if exp is None:
            raise
        return exp.experiment_id


def start_invocation(datasets, configured_uri: str | None, invocation_id: str, label: str = "") -> dict:
    """Create the store, experiments and one parent run per dataset; returns {dataset: run id}."""
    if not _tracking_on():
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
            name = f"{label or 'pipeline'} · {ds} · {time.strftime('%Y-%m-%d %H:%M')}"
            run = _with_retry(client.create_run, exp_id, run_name=name, tags={
                "glann.config": label,
                "glann.invocation": invocation_id, "glann.dataset": ds, "glann.step": "pipeline",
                "mlflow.source.git.commit": git_commit(), **_owner()})
            parents[ds] = run.info.run_id
        return parents
    except Exception as exc:
        log.warning("MLflow tracking unavailable (%s): tracking skipped", exc)
        return {}


def end_invocation(parents: dict, configured_uri: str | None, status: str = "FINISHED",
                   summary_dir: str | os.PathLike | None = None) -> None:
    """Close the parent runs; with a summary, attach it and its headline metrics (who won)."""
    if not parents:
        return
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri(configured_uri))
        summary = Path(summary_dir) if summary_dir else None
        flat = {}
        if summary is not None and (summary / "summary.json").is_file():
            flat = json.loads((summary / "summary.json").read_text())
        for ds, run_id in parents.items():
            ts = int(time.time() * 1000)
            ms = [Metric(f"{metric}.{method}", float(v), ts, 0) for key, v in flat.items()
                  for d, method, metric in [key.split("/")] if d == ds and metric in HEADLINE]
            if ms:
                _with_retry(client.log_batch, run_id, metrics=ms)
                for name in ("table.md", "table.csv", "summary.json", "fid.png", "precision_recall.png",
                             "samples.png", "fid_vs_compute.png", "fid_vs_compute.csv"):
                    if (summary / name).is_file():
                        _with_retry(client.log_artifact, run_id, str(summary / name), "summary")
            _with_retry(client.set_terminated, run_id, status)
            exp_id = client.get_run(run_id).info.experiment_id
            sys.stderr.write(f"MLflow runs of {ds}: {runs_url(exp_id)} (after `mlflow ui "
                             f"--backend-store-uri {tracking_uri(configured_uri)}`)\n")
    except Exception as exc:
        log.warning("could not close MLflow parent runs (%s)", exc)


def runs_url(experiment_id, host: str = "http://127.0.0.1:5000") -> str:
    """The runs table of an experiment in `mlflow ui`. MLflow 3.17's UI ignores the experiment's
    kind tag: a global GenAI / Model training switch (URL parameter ``workflowType``, then the
    browser's local storage, GenAI by default) decides, so the link names the mode."""
    return f"{host}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _owner() -> dict:
    """Tags that say which process on which host runs a run (to close it if that process dies)."""
    return {"glann.pid": str(os.getpid()), "glann.host": socket.gethostname()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(datasets, configured_uri: str | None) -> int:
    """Mark KILLED every RUNNING run of these datasets' experiments whose process, on this host,
    no longer exists (a killed job, or the parent run of a killed snakemake). Runs of other hosts
    and of live processes are left alone. Returns how many were closed; never raises."""
    uri = tracking_uri(configured_uri)
    if not _reachable(uri):
        return 0
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        host, closed = socket.gethostname(), 0
        for ds in datasets:
            exp = _with_retry(client.get_experiment_by_name, experiment_name(ds))
            if exp is None:
                continue
            for run in _with_retry(client.search_runs, [exp.experiment_id], "attributes.status = 'RUNNING'",
                                   max_results=10000):
                tags = run.data.tags
                pid = tags.get("glann.pid", "")
                if tags.get("glann.host") == host and pid.isdigit() and not _process_alive(int(pid)):
                    _with_retry(client.set_terminated, run.info.run_id, "KILLED")
                    closed += 1
        if closed:
            log.warning("closed %d MLflow run(s) left RUNNING by killed processes (now KILLED)", closed)
        return closed
    except Exception as exc:
        log.warning("could not check for runs left RUNNING (%s)", exc)
        return 0


def on_start(cfg: dict, datasets, invocation_id: str, label: str = "") -> None:
    """The Snakefile's ``onstart``: environment for the jobs, leftover journals and runs, parent runs."""
    os.environ[INVOCATION_ENV] = invocation_id
    os.environ.setdefault(JOURNAL_ENV, os.path.abspath(DEFAULT_JOURNAL))
    if cfg["enabled"] and _tracking_on():
        import_journals()  # deferred runs left by an invocation that was killed
        close_orphaned_runs(datasets, cfg["uri"])  # live runs left by one
        os.environ[PARENT_ENV] = json.dumps(start_invocation(datasets, cfg["uri"], invocation_id, label))


def on_end(cfg: dict, status: str = "FINISHED", summary_dir="results/summary") -> None:
    """The Snakefile's ``onsuccess`` / ``onerror``: import the jobs' journals, close the parent runs
    (with the summary and headline metrics when the invocation succeeded)."""
    import_journals()
    end_invocation(json.loads(os.environ.get(PARENT_ENV, "{}")), cfg["uri"], status,
                   summary_dir if status == "FINISHED" else None)


class _LiveRun:
    """Writes a run to the MLflow store as the job goes (``tracking.live: true``)."""

    def __init__(self, uri: str, dataset: str, run_name: str, tags: dict):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp_id = get_or_create_experiment(self.client, dataset, uri)
        self.run_id = _with_retry(self.client.create_run, exp_id, run_name=run_name, tags=tags).info.run_id

    def params(self, flat: dict):
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            _with_retry(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def metrics(self, numeric: dict, step: int):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        _with_retry(self.client.log_batch, self.run_id, metrics=[Metric(k, v, ts, step) for k, v in numeric.items()])

    def tags(self, tags: dict):
        for k, v in tags.items():
            _with_retry(self.client.set_tag, self.run_id, k, v)

    def dataset(self, ds: dict, context: str):
        _with_retry(_log_dataset, self.client, self.run_id, ds, context)

    def artifact(self, path: str, artifact_path: str | None):
        _with_retry(self.client.log_artifact, self.run_id, path, artifact_path)

    def finish(self, status: str):
        _with_retry(self.client.set_terminated, self.run_id, status)


class _JournalRun:
    """Appends the run's events to a JSON-lines journal, replayed into MLflow later
    (``tracking.live: false``): the job never imports MLflow."""

    run_id = None

    def __init__(self, uri: str, dataset: str, run_name: str, tags: dict, label: str):
        folder = journal_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(time.time() * 1000)}-{label}-{os.getpid()}.jsonl"
        self.file = open(path, "a", encoding="utf-8")
        self._event("start", uri=uri, dataset=dataset, run_name=run_name, tags=tags)

    def _event(self, kind: str, **fields):
        # One line per event, flushed: a job killed mid-way leaves every event before the kill.
        self.file.write(json.dumps({"e": kind, "time_ms": int(time.time() * 1000), **fields}) + "\n")
        self.file.flush()

    def params(self, flat: dict):
        self._event("params", params=flat)

    def metrics(self, numeric: dict, step: int):
        self._event("metrics", step=step, metrics=numeric)

    def tags(self, tags: dict):
        self._event("tags", tags=tags)

    def dataset(self, ds: dict, context: str):
        self._event("dataset", dataset=ds, context=context)

    def artifact(self, path: str, artifact_path: str | None):
        self._event("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def finish(self, status: str):
        try:
            self._event("end", status=status)
        finally:
            self.file.close()


class Tracker:
    """A job's MLflow run, live or journalled; every method is a no-op once tracking has failed."""

    def __init__(self, dataset: str, method: str, seed, step: str, params: dict | None = None,
                 uri: str | None = None, enabled: bool = True, live: bool = True):
        self.backend = self.run_id = None
        self.enabled = enabled and _tracking_on()
        if not self.enabled:
            return
        uri = tracking_uri(uri)
        tags = {"dataset": dataset, "method": method, "seed": str(seed),  # plain names: group by them in the UI
                "glann.dataset": dataset, "glann.method": method, "glann.seed": str(seed),
                "glann.step": step, "mlflow.source.git.commit": git_commit(),
                "glann.invocation": os.environ.get(INVOCATION_ENV, "manual"), **_owner()}
        parent = json.loads(os.environ.get(PARENT_ENV, "{}") or "{}").get(dataset)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run_name = f"{step}:{method}:seed{seed}"
        if live and not _reachable(uri):
            self._disable(f"tracking server {uri} is unreachable")
            return
        if live:
            self.backend = self._safe(_LiveRun, uri, dataset, run_name, tags)
        else:
            self.backend = self._safe(_JournalRun, uri, dataset, run_name, tags,
                                      f"{step}-{dataset}-{method}-seed{seed}")
        self.run_id = getattr(self.backend, "run_id", None)
        if params:
            self.log_params(params)

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

    def finish(self, status: str = "FINISHED") -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            if isinstance(backend, _JournalRun) and not self.enabled:
                backend.file.close()
            elif self.enabled:
                try:
                    _with_retry(backend.finish, status)
                except Exception as exc:
                    self._disable(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- deferred tracking
def _log_dataset(client, run_id: str, ds: dict, context: str) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**ds), tags=[InputTag("mlflow.data.context", context)])])


def _tracking_on() -> bool:
    return os.environ.get("GLANN_TRACKING", "1") != "0"


def journal_dir() -> Path:
    return Path(os.environ.get(JOURNAL_ENV) or DEFAULT_JOURNAL)


def _read_journal(path: Path) -> list[dict]:
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # the half-written last line of a killed job
    return events


def _replay(client, events: list[dict]) -> str:
    from mlflow.entities import Metric, Param

    start = events[0]
    exp_id = get_or_create_experiment(client, start["dataset"], start["uri"])
    run = _with_retry(client.create_run, exp_id, start_time=start["time_ms"], tags=start["tags"],
                      run_name=start["run_name"])
    run_id = run.info.run_id
    params = {}
    metrics, end = [], None
    for ev in events[1:]:
        if ev["e"] == "params":
            params.update(ev["params"])
        elif ev["e"] == "metrics":
            metrics += [Metric(k, float(v), ev["time_ms"], ev["step"]) for k, v in ev["metrics"].items()]
        elif ev["e"] == "artifact":
            if Path(ev["path"]).exists():
                _with_retry(client.log_artifact, run_id, ev["path"], ev.get("artifact_path"))
        elif ev["e"] == "dataset":
            _with_retry(_log_dataset, client, run_id, ev["dataset"], ev["context"])
        elif ev["e"] == "tags":
            for k, v in ev["tags"].items():
                _with_retry(client.set_tag, run_id, k, v)
        elif ev["e"] == "end":
            end = ev
    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        _with_retry(client.log_batch, run_id, params=items[i:i + 100])
    for i in range(0, len(metrics), 1000):
        _with_retry(client.log_batch, run_id, metrics=metrics[i:i + 1000])
    status, end_ms = (end["status"], end["time_ms"]) if end else ("KILLED", events[-1]["time_ms"])
    _with_retry(client.set_terminated, run_id, status, end_time=end_ms)
    return run_id


def import_journals(directory=None) -> int:
    """Replay deferred-tracking journals into MLflow; returns how many runs were imported.

    Each journal is deleted once its run is in the store; one that fails stays for the next call.
    Never raises: tracking must not fail the workflow.
    """
    folder = Path(directory) if directory else journal_dir()
    if not _tracking_on() or not folder.is_dir():
        return 0
    imported, clients, kept = 0, {}, {}
    for path in sorted(folder.glob("*.jsonl")):
        try:
            events = _read_journal(path)
            if not events or events[0].get("e") != "start":
                path.unlink()  # the job died before its first event: nothing to record
                continue
            uri = events[0]["uri"]
            if uri in kept:
                kept[uri] += 1
                continue
            if uri not in clients:
                if not _reachable(uri):
                    kept[uri] = 1
                    continue
                from mlflow.tracking import MlflowClient

                clients[uri] = MlflowClient(tracking_uri=uri)
            _replay(clients[uri], events)
            path.unlink()
            imported += 1
        except Exception as exc:
            log.warning("MLflow: could not import tracking journal %s (%s); it is kept and retried by the next run",
                        path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    for uri, n in kept.items():
        log.warning("MLflow tracking server %s is unreachable: %d tracking journal(s) kept in %s, "
                    "imported by the next run once it is up", uri, n, folder)
    return imported


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
