"""Deferred tracking (``tracking.live: false``): a job appends its run's events to a JSON-lines
journal, ``.glann/tracking/*.jsonl``, and never imports MLflow; the Snakemake process replays
every journal into the store when the invocation ends (and at the next start, for the journals
of an invocation that was killed), then deletes it. Same runs, same parent, same timestamps. A
journal whose job died before it finished becomes a KILLED run; one whose job is still running
(its writer, named in the journal by host, pid and start time, is alive: another invocation's job)
is left alone; one that cannot be imported (store unreachable) is kept and retried next time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from glann.tracking.mlflow_store import get_or_create_experiment, log_dataset, reachable, tracking_on, with_retry

log = logging.getLogger(__name__)

JOURNAL_ENV = "GLANN_TRACKING_JOURNAL"  # folder of deferred-tracking journals
DEFAULT_JOURNAL = ".glann/tracking"


class JournalRun:
    """Appends the run's events to a JSON-lines journal, replayed into MLflow later
    (``tracking.live: false``): the job never imports MLflow."""

    run_id = None

    def __init__(self, uri: str, dataset: str, run_name: str, tags: dict, label: str):
        folder = journal_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(time.time() * 1000)}-{label}-{os.getpid()}.jsonl"
        self.file = open(path, "a", encoding="utf-8")
        self._event("start", uri=uri, dataset=dataset, run_name=run_name, tags=tags, writer=writer())

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


def writer() -> dict:
    """This process, as a journal names its writer: host, pid and start time (a reused pid differs)."""
    import socket

    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "born": psutil.Process().create_time()}


def writer_alive(who: dict | None) -> bool:
    """Whether the process that wrote a journal is still running (on this host; a journal from
    another host, or from before journals named their writer, counts as not running)."""
    import socket

    import psutil

    if not who or who.get("host") != socket.gethostname():
        return False
    try:
        proc = psutil.Process(int(who["pid"]))
        return abs(proc.create_time() - float(who["born"])) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


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
    run = with_retry(client.create_run, exp_id, start_time=start["time_ms"], tags=start["tags"],
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
                with_retry(client.log_artifact, run_id, ev["path"], ev.get("artifact_path"))
        elif ev["e"] == "dataset":
            with_retry(log_dataset, client, run_id, ev["dataset"], ev["context"])
        elif ev["e"] == "tags":
            for k, v in ev["tags"].items():
                with_retry(client.set_tag, run_id, k, v)
        elif ev["e"] == "end":
            end = ev
    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        with_retry(client.log_batch, run_id, params=items[i:i + 100])
    for i in range(0, len(metrics), 1000):
        with_retry(client.log_batch, run_id, metrics=metrics[i:i + 1000])
    status, end_ms = (end["status"], end["time_ms"]) if end else ("KILLED", events[-1]["time_ms"])
    with_retry(client.set_terminated, run_id, status, end_time=end_ms)
    return run_id


def import_journals(directory=None) -> int:
    """Replay deferred-tracking journals into MLflow; returns how many runs were imported.

    Each journal is deleted once its run is in the store; one that fails stays for the next call.
    Never raises: tracking must not fail the workflow.
    """
    folder = Path(directory) if directory else journal_dir()
    if not tracking_on() or not folder.is_dir():
        return 0
    imported, clients, kept = 0, {}, {}
    for path in sorted(folder.glob("*.jsonl")):
        try:
            events = _read_journal(path)
            if not events or events[0].get("e") != "start":
                path.unlink()  # the job died before its first event: nothing to record
                continue
            if not any(ev.get("e") == "end" for ev in events) and writer_alive(events[0].get("writer")):
                continue  # its job is still running (another invocation's): imported when it has ended
            uri = events[0]["uri"]
            if uri in kept:
                kept[uri] += 1
                continue
            if uri not in clients:
                if not reachable(uri):
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


def list_journals(directory=None) -> list[dict]:
    """The kept journals: file, run name, tracking URI, events, whether the job ended, whether it runs."""
    folder = Path(directory) if directory else journal_dir()
    out = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        events = _read_journal(path)
        start = events[0] if events and events[0].get("e") == "start" else {}
        out.append({"path": str(path), "run_name": start.get("run_name"), "uri": start.get("uri"),
                    "events": len(events), "ended": any(ev.get("e") == "end" for ev in events),
                    "running": writer_alive(start.get("writer"))})
    return out


def discard_journals(directory=None) -> int:
    """Delete the kept journals whose job is not running; returns how many."""
    gone = 0
    for j in list_journals(directory):
        if not j["running"]:
            Path(j["path"]).unlink()
            gone += 1
    return gone

