"""One Snakemake invocation in MLflow: a parent run per dataset, created in ``onstart`` before any
job (so parallel jobs never race to create the schema or the experiment) and closed in
``onsuccess``/``onerror`` with the summary attached; the journals of deferred jobs imported; and
the runs left RUNNING by killed processes of this host closed as KILLED.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from glann.tracking.journal import DEFAULT_JOURNAL, JOURNAL_ENV, import_journals
from glann.tracking.mlflow_store import experiment_name, get_or_create_experiment, git_commit, reachable, tracking_on, \
    tracking_uri, with_retry

log = logging.getLogger(__name__)

PARENT_ENV = "GLANN_PARENT_RUNS"        # json {dataset: parent run id}; our own variable, not MLFLOW_RUN_ID
INVOCATION_ENV = "GLANN_INVOCATION_ID"
HEADLINE = ("fid_domain", "inception_fid", "precision", "recall", "coverage", "classes_covered", "train_seconds")


def start_invocation(datasets, configured_uri: str | None, invocation_id: str, label: str = "") -> dict:
    """Create the store, experiments and one parent run per dataset; returns {dataset: run id}."""
    if not tracking_on():
        return {}
    uri = tracking_uri(configured_uri)
    if not reachable(uri):
        log.warning("MLflow tracking server %s is unreachable: tracking skipped for this invocation", uri)
        return {}
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        parents = {}
        for ds in datasets:
            exp_id = get_or_create_experiment(client, ds, uri)
            name = f"{label or 'pipeline'} · {ds} · {time.strftime('%Y-%m-%d %H:%M')}"
            run = with_retry(client.create_run, exp_id, run_name=name, tags={
                "glann.pipeline.config": label,
                "glann.tracking.invocation": invocation_id, "glann.dataset": ds, "glann.step": "pipeline",
                "mlflow.source.git.commit": git_commit(), **owner()})
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
                with_retry(client.log_batch, run_id, metrics=ms)
                for name in ("table.md", "table.csv", "summary.json", "fid.png", "precision_recall.png",
                             "samples.png", "fid_vs_compute.png", "fid_vs_compute.csv", "sweep.md", "sweep.csv",
                             "sweep_fid.png", "sweep_budget.png", "sweep_pr.png"):
                    if (summary / name).is_file():
                        with_retry(client.log_artifact, run_id, str(summary / name), "summary")
            with_retry(client.set_terminated, run_id, status)
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


def owner() -> dict:
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
    if not reachable(uri):
        return 0
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        host, closed = socket.gethostname(), 0
        for ds in datasets:
            exp = with_retry(client.get_experiment_by_name, experiment_name(ds))
            if exp is None:
                continue
            for run in with_retry(client.search_runs, [exp.experiment_id], "attributes.status = 'RUNNING'",
                                   max_results=10000):
                tags = run.data.tags
                pid = tags.get("glann.pid", "")
                if tags.get("glann.host") == host and pid.isdigit() and not _process_alive(int(pid)):
                    with_retry(client.set_terminated, run.info.run_id, "KILLED")
                    closed += 1
        if closed:
            log.warning("closed %d MLflow run(s) left RUNNING by killed processes (now KILLED)", closed)
        return closed
    except Exception as exc:
        log.warning("could not check for runs left RUNNING (%s)", exc)
        return 0


STOPPED = "Will exit after finishing currently running jobs"  # Snakemake's line on SIGTERM
FAILED_JOB = "Error in rule "  # Snakemake's line for a job that failed


def stopped_without_failure(log_path) -> bool:
    """Whether the invocation's Snakemake log (a path, or the list of them ``onerror`` gets) shows a
    stop (SIGTERM) and no failed job."""
    paths = log_path if isinstance(log_path, (list, tuple)) else [log_path]
    text = ""
    for path in paths:
        try:
            text += Path(path).read_text(errors="replace")
        except (OSError, TypeError):
            continue
    return STOPPED in text and FAILED_JOB not in text


def on_start(cfg: dict, datasets, invocation_id: str, label: str = "") -> None:
    """The Snakefile's ``onstart``: environment for the jobs, leftover journals and runs, parent runs."""
    os.environ[INVOCATION_ENV] = invocation_id
    os.environ.setdefault(JOURNAL_ENV, os.path.abspath(DEFAULT_JOURNAL))
    if cfg["enabled"] and tracking_on():
        import_journals()  # deferred runs left by an invocation that was killed
        close_orphaned_runs(datasets, cfg["uri"])  # live runs left by one
        os.environ[PARENT_ENV] = json.dumps(start_invocation(datasets, cfg["uri"], invocation_id, label))


def on_end(cfg: dict, status: str = "FINISHED", summary_dir="results/summary", log_path=None) -> None:
    """The Snakefile's ``onsuccess`` / ``onerror``: import the jobs' journals, close the parent runs
    (with the summary and headline metrics when the invocation succeeded). An invocation that
    Snakemake's log shows stopped by SIGTERM with no failed job ends KILLED, not FAILED, with one line."""
    import_journals()
    if status == "FAILED" and stopped_without_failure(log_path):
        status = "KILLED"
        sys.stderr.write("snakemake was stopped (SIGTERM) after its running jobs finished; no job failed. "
                         "Rerun to go on; the invocation's MLflow run is KILLED.\n")
    end_invocation(json.loads(os.environ.get(PARENT_ENV, "{}")), cfg["uri"], status,
                   summary_dir if status == "FINISHED" else None)
