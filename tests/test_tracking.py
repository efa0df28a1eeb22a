"""MLflow tracking: browse through a real `mlflow server`, survive an unreachable
server, and lose no run when parallel jobs share one SQLite store."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import copy_workflow, snakemake

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base, route, **query):
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{base}{route}?{urlencode(query)}", timeout=10) as r:
        return json.loads(r.read())


def _post(base, route, body):
    req = urllib.request.Request(f"{base}{route}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.pipeline
def test_mlflow_server_rest_api_lists_the_pipeline_runs(quick_run, tmp_path):
    wf = quick_run["wf"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{wf}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
                time.sleep(0.5)
            time.sleep(0.5)
        exp = _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="glann/digits")["experiment"]
        runs = _post(base, "/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
        by_name = {}
        for r in runs:
            by_name.setdefault(r["info"]["run_name"], []).append(r)
        glo = next(r for r in by_name["train_glo:glann:seed0"] if r["info"]["status"] == "FINISHED")
        tags = {t["key"]: t["value"] for t in glo["data"]["tags"]}
        assert tags["glann.dataset"] == "digits" and tags["glann.method"] == "glann" and tags["glann.seed"] == "0"
        assert tags["glann.step"] == "train_glo" and "mlflow.source.git.commit" in tags
        parent_runs = [r for rs in by_name.values() for r in rs
                       if {t["key"]: t["value"] for t in r["data"]["tags"]}.get("glann.step") == "pipeline"]
        parents = {r["info"]["run_id"] for r in parent_runs}
        assert tags["mlflow.parentRunId"] in parents
        # 1. the experiment opens on the runs table (MLflow 3's model-training kind)
        exp_tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
        # 3. the parent run is named after what ran and carries who won
        done = [r for r in parent_runs if r["info"]["status"] == "FINISHED"]
        assert done and all(r["info"]["run_name"].startswith("config.yaml · digits · ") for r in done)
        won = {m["key"]: m["value"] for m in done[-1]["data"]["metrics"]}
        assert {"fid_domain.glann", "recall.nsgan", "train_seconds.vae"} <= won.keys()
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=done[-1]["info"]["run_id"], path="summary")
        assert {"summary/table.md", "summary/fid.png"} <= {f["path"] for f in arts.get("files", [])}
        params = {p["key"]: p["value"] for p in glo["data"]["params"]}
        assert params["epochs"] == "6" and params["loss"] == "lap1" and params["latent_dim"] == "64"
        hist = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=glo["info"]["run_id"], metric_key="loss")
        assert [m["step"] for m in hist["metrics"]][-1] == 6
        metric_keys = {m["key"] for m in glo["data"]["metrics"]}
        assert {"loss", "lr_generator", "lr_codes", "seconds"} <= metric_keys
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=glo["info"]["run_id"])
        names = {f["path"] for f in arts.get("files", [])}
        assert "glo_losses.csv" in names and "checkpoint" not in names, names  # one copy: DVC's
        glo_tags = {t["key"]: t["value"] for t in glo["data"]["tags"]}
        assert glo_tags["checkpoint.glo.pt"].endswith("results/digits/glann/seed0/glo.pt")
        assert len(glo_tags["checkpoint.glo.pt.sha256"]) == 64
        ev = next(r for r in by_name["evaluate:glann:seed0"] if r["info"]["status"] == "FINISHED")
        ev_tags = {t["key"]: t["value"] for t in ev["data"]["tags"]}
        assert (ev_tags["method"], ev_tags["dataset"], ev_tags["seed"]) == ("glann", "digits", "0")  # 4.
        # 2. the dataset input: name, the manifest's digest, split sizes
        inputs = ev["inputs"]["dataset_inputs"]
        assert inputs and inputs[0]["dataset"]["name"] == "digits"
        assert len(inputs[0]["dataset"]["digest"]) == 16 and '"train": 1293' in inputs[0]["dataset"]["profile"]
        assert glo["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "digits"
        ev_metrics = {m["key"]: m["value"] for m in ev["data"]["metrics"]}
        assert ev_metrics["fid_domain"] > 0 and 0 <= ev_metrics["precision"] <= 1
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=ev["info"]["run_id"])
        assert "metrics.json" in {f["path"] for f in arts.get("files", [])}
        sm = next(r for r in by_name["sample:glann:seed0"] if r["info"]["status"] == "FINISHED")
        arts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=sm["info"]["run_id"], path="samples")
        assert "samples/samples.png" in {f["path"] for f in arts.get("files", [])}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _glann(*args, env):
    return subprocess.run([str(BIN / "glann"), *args], capture_output=True, text=True, env=env, timeout=600)


def test_unreachable_tracking_server_does_not_fail_training(digits_dir, tmp_path):
    """Reliability 7: tracking down -> a warning, and the job's outputs as usual."""
    port = _free_port()  # nothing listens there
    job = {"dataset": "digits", "method": "vae", "seed": 0, "device": "cpu",
           "runtime": {"deterministic": True}, "tracking": {"enabled": True, "uri": f"http://127.0.0.1:{port}"},
           "params": {"epochs": 1, "batch_size": 64, "lr": 1e-3, "betas": [0.5, 0.999], "latent_dim": 64,
                      "encoder_batchnorm": True, "likelihood": "bernoulli", "sigma": 0.1}}
    env = {**os.environ, "GLANN_TRACKING": "1", "GLANN_TRACKING_JOURNAL": str(tmp_path / "journal")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = _glann("train-baseline", "--job", json.dumps(job), "--threads", "1", "--data", str(digits_dir),
                  "--out", str(tmp_path / "model.pt"), "--csv", str(tmp_path / "losses.csv"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "unreachable" in proc.stderr and "journaled" in proc.stderr
    assert (tmp_path / "model.pt").stat().st_size > 0 and (tmp_path / "losses.csv").exists()
    assert len(list((tmp_path / "journal").glob("*.jsonl"))) == 1  # the run is kept, not lost


@pytest.mark.pipeline
def test_parallel_jobs_share_one_sqlite_store_without_losing_runs(tmp_path):
    """Reliability 8 / tracking: --cores 4, four training jobs at once (one per seed), each
    opening the store itself; every run recorded, no 'database is locked'."""
    wf = copy_workflow(tmp_path / "wf")
    # live tracking: every job opens the store itself (quick.yaml defers it to the end of the invocation)
    (wf / "par.yaml").write_text("methods: [vae]\nseeds: [0, 1, 2, 3]\nvae: {epochs: 1}\n"
                                 "tracking: {live: true}\n")
    proc = snakemake(wf, "--cores", "4", "--configfile", "config/quick.yaml", "par.yaml",
                     "--until", "train_baseline",
                     env={"GLANN_TRACKING": "1"})
    logs = "".join(p.read_text() for p in (wf / "logs").rglob("*.log"))
    assert "database is locked" not in (logs + proc.stdout + proc.stderr).lower()
    assert "tracking skipped" not in logs
    con = sqlite3.connect(wf / "mlflow.db")
    names = [n for (n, s) in con.execute("select name, status from runs") if s == "FINISHED"]
    for seed in range(4):
        assert f"train_vae:vae:seed{seed}" in names
    assert con.execute("select count(distinct run_uuid) from metrics where key='elbo'").fetchone()[0] == 4


# --------------------------------------------------------------------------- deferred tracking (live: false)
def _deferred_job(tmp_path, uri, *, finish=True):
    """Run a Tracker(live=False) in a fresh process; returns (journal folder, 'mlflow imported?')."""
    journal = tmp_path / "journal"
    (tmp_path / "art.txt").write_text("artifact\n")
    code = f"""
import sys
from glann.tracking.tracker import Tracker
t = Tracker("train_glo", {{"dataset": "digits", "method": "glann", "seed": 0}},
            params={{"epochs": 2, "opt": {{"lr": 0.01}}}}, settings={{"uri": {uri!r}, "live": False}})
t.log_metrics({{"loss": 0.5, "seconds": 1.0}}, step=1)
t.log_metrics({{"loss": 0.25, "seconds": 1.0}}, step=2)
t.log_artifact({str(tmp_path / "art.txt")!r}, "files")
if {finish!r}:
    t.finish()
else:
    t.backend.file.write('{{"e": "metrics", "time_ms": 1, "st')  # a half-written line, as kill -9 leaves it
    t.backend.file.flush()
print("mlflow" in sys.modules)
"""
    env = {**os.environ, "GLANN_TRACKING": "1", "GLANN_TRACKING_JOURNAL": str(journal),
           "GLANN_PARENT_RUNS": json.dumps({"digits": "parent123"})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return journal, proc.stdout.strip()


def test_deferred_tracking_journals_without_importing_mlflow_and_imports_later(tmp_path, monkeypatch):
    from glann.tracking import journal as tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    journal, mlflow_imported = _deferred_job(tmp_path, uri)
    assert mlflow_imported == "False"
    files = list(journal.glob("*.jsonl"))
    assert len(files) == 1 and "train_glo-digits-glann-seed0" in files[0].name
    monkeypatch.setenv("GLANN_TRACKING", "1")
    assert tracking.import_journals(journal) == 1
    assert not list(journal.glob("*.jsonl"))
    assert tracking.import_journals(journal) == 0  # nothing twice

    con = sqlite3.connect(tmp_path / "mlflow.db")
    (run_id, name, status, start, end), = con.execute(
        "select run_uuid, name, status, start_time, end_time from runs")
    assert (name, status) == ("train_glo:glann:seed0", "FINISHED") and start <= end
    tags = dict(con.execute("select key, value from tags where run_uuid=?", (run_id,)))
    assert tags["mlflow.parentRunId"] == "parent123" and tags["glann.step"] == "train_glo"
    params = dict(con.execute("select key, value from params where run_uuid=?", (run_id,)))
    assert params == {"epochs": "2", "opt.lr": "0.01"}
    hist = con.execute("select step, value from metrics where run_uuid=? and key='loss' order by step",
                       (run_id,)).fetchall()
    assert hist == [(1, 0.5), (2, 0.25)]
    (root,), = con.execute("select artifact_uri from runs")
    from urllib.parse import urlparse

    assert (Path(urlparse(root).path) / "files" / "art.txt").read_text() == "artifact\n"


def test_deferred_journal_of_a_killed_job_becomes_a_killed_run(tmp_path, monkeypatch):
    from glann.tracking import journal as tracking

    journal, _ = _deferred_job(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", finish=False)
    monkeypatch.setenv("GLANN_TRACKING", "1")
    assert tracking.import_journals(journal) == 1
    con = sqlite3.connect(tmp_path / "mlflow.db")
    assert con.execute("select status from runs").fetchall() == [("KILLED",)]
    assert con.execute("select count(*) from metrics where key='loss'").fetchone()[0] == 2


def test_deferred_journal_is_kept_while_the_server_is_unreachable(tmp_path, monkeypatch, caplog):
    from glann.tracking import journal as tracking

    journal, _ = _deferred_job(tmp_path, f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("GLANN_TRACKING", "1")
    with caplog.at_level("WARNING"):
        assert tracking.import_journals(journal) == 0
    assert len(list(journal.glob("*.jsonl"))) == 1
    assert "unreachable" in caplog.text and "1 tracking journal(s) kept" in caplog.text


def test_a_unique_constraint_race_is_retried_once(monkeypatch):
    """Parallel jobs logging the same dataset: MLflow's look-up-then-insert can lose the race
    (UNIQUE constraint failed); the second try finds the row. Any other error, or the same one
    twice, is raised."""
    from glann.tracking import mlflow_store as tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky(failures, message):
        def fn():
            calls.append(1)
            if len(calls) <= failures:
                raise RuntimeError(message)
            return "ok"
        return fn

    race = "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name"
    assert tracking.with_retry(flaky(1, race)) == "ok" and len(calls) == 2
    calls.clear()
    with pytest.raises(RuntimeError, match="UNIQUE"):
        tracking.with_retry(flaky(2, race))
    assert len(calls) == 2
    calls.clear()
    assert tracking.with_retry(flaky(3, "database is locked")) == "ok" and len(calls) == 4
    calls.clear()
    with pytest.raises(RuntimeError, match="no such table"):
        tracking.with_retry(flaky(1, "no such table: runs"))
    assert len(calls) == 1


def test_a_journal_whose_job_still_runs_is_left_to_its_own_invocation(tmp_path, monkeypatch):
    """Two invocations on non-overlapping targets: the second one's start imports journals; a job of
    the first still running (its writer alive) must not become a KILLED run of 1 ms. Once that job
    has ended, its journal is imported as it finished."""
    from glann.tracking import journal as tracking

    journal = tmp_path / "journal"
    monkeypatch.setenv("GLANN_TRACKING_JOURNAL", str(journal))
    monkeypatch.setenv("GLANN_TRACKING", "1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = tracking.JournalRun(uri, "digits", "train_glo:glann:seed0", {"method": "glann"}, "glann")
    run.metrics({"loss": 0.5}, step=1)  # this process: a job that is still running
    assert tracking.import_journals(journal) == 0
    assert len(list(journal.glob("*.jsonl"))) == 1
    run.metrics({"loss": 0.25}, step=2)
    run.finish("FINISHED")
    assert tracking.import_journals(journal) == 1
    con = sqlite3.connect(tmp_path / "mlflow.db")
    assert con.execute("select status from runs").fetchall() == [("FINISHED",)]
    assert con.execute("select count(*) from metrics where key='loss'").fetchone()[0] == 2
    # a writer that is gone (another pid, or another start time): its unfinished journal is imported
    assert not tracking.writer_alive({**tracking.writer(), "born": 1.0})
    assert not tracking.writer_alive({**tracking.writer(), "host": "elsewhere"}) and not tracking.writer_alive(None)


def test_journals_command_lists_imports_and_discards(tmp_path, monkeypatch):
    """`glann journals list|import|discard`: what a user does with journals kept for an unreachable server."""
    journal, _ = _deferred_job(tmp_path, f"http://127.0.0.1:{_free_port()}")
    env = {**os.environ, "GLANN_TRACKING": "1", "GLANN_TRACKING_JOURNAL": str(journal)}
    listed = _glann("journals", "list", "--dir", str(journal), env=env)
    assert listed.returncode == 0 and "train_glo:glann:seed0" in listed.stdout and "ended" in listed.stdout
    imported = _glann("journals", "import", "--dir", str(journal), env=env)
    assert "0 run(s) imported" in imported.stdout and len(list(journal.glob("*.jsonl"))) == 1  # still down
    gone = _glann("journals", "discard", "--dir", str(journal), env=env)
    assert "1 journal(s) deleted" in gone.stdout and not list(journal.glob("*.jsonl"))


def test_live_tracking_journals_what_it_cannot_send(tmp_path, monkeypatch):
    """tracking.live with the server down: the run goes to a journal (not lost), imported later."""
    from glann.tracking.tracker import Tracker

    monkeypatch.setenv("GLANN_TRACKING", "1")
    monkeypatch.setenv("GLANN_TRACKING_JOURNAL", str(tmp_path / "journal"))
    t = Tracker("train_vae", {"dataset": "digits", "method": "vae", "seed": 0}, params={"lr": 1.0},
                settings={"uri": f"http://127.0.0.1:{_free_port()}", "live": True})
    t.log_metrics({"loss": 1.0}, step=1)
    t.finish()
    files = list((tmp_path / "journal").glob("*.jsonl"))
    assert len(files) == 1 and '"loss": 1.0' in files[0].read_text()


def test_a_sigterm_stop_ends_the_invocation_killed_and_a_failure_failed(monkeypatch, capsys, tmp_path):
    """Snakemake stopped by SIGTERM (its log says it finished the running jobs, and no job failed):
    the invocation's MLflow run ends KILLED with one line; a log with a failed job stays FAILED."""
    from glann.tracking import invocation

    ended = []
    monkeypatch.setattr(invocation, "end_invocation", lambda parents, uri, status, summary: ended.append(status))
    monkeypatch.setattr(invocation, "import_journals", lambda: 0)
    stopped = tmp_path / "stopped.log"
    stopped.write_text("Will exit after finishing currently running jobs (scheduler).\n" * 5
                       + "At least one job did not complete successfully.\n")
    failed = tmp_path / "failed.log"
    failed.write_text(stopped.read_text() + "Error in rule train_glo:\n")
    invocation.on_end({"uri": None}, "FAILED", log_path=failed)
    invocation.on_end({"uri": None}, "FAILED", log_path=[str(stopped)])  # onerror's `log`: a list of paths
    invocation.on_end({"uri": None}, "FAILED", log_path=None)
    assert ended == ["FAILED", "KILLED", "FAILED"]
    assert capsys.readouterr().err.count("stopped (SIGTERM)") == 1


@pytest.mark.pipeline
def test_two_invocations_at_once_each_import_only_their_own_journals(tmp_path):
    """Reliability / tracking: two `snakemake` invocations on non-overlapping targets in one
    workflow folder at once, with deferred tracking (journals). The one that ends first imports
    its own runs and leaves the other's journals, whose job is still running, alone: the other
    invocation's training run ends FINISHED in MLflow, not KILLED. The first invocation's training
    job is paused (SIGSTOP) while the second runs from start to end, so that the overlap is certain."""
    import signal

    import psutil

    def cmdline(proc):
        try:
            return " ".join(proc.cmdline())
        except psutil.Error:  # a process that ended between the listing and the question
            return ""

    wf = copy_workflow(tmp_path / "wf")
    (wf / "two.yaml").write_text("methods: [vae, nsgan]\nvae: {epochs: 30}\nnsgan: {epochs: 1}\n"
                                 "snapshots: {count: 0}\ntracking: {live: false}\n")
    args = ["--configfile", "config/quick.yaml", "two.yaml"]
    env = {**os.environ, "GLANN_TRACKING": "1"}
    exe = str(Path(sys.executable).with_name("snakemake"))
    # the shared inputs first (prepared data, evaluator, real statistics): afterwards the two
    # invocations' outputs do not overlap, so Snakemake lets them run side by side
    snakemake(wf, "--cores", "2", *args, "--until", "real_stats", env={"GLANN_TRACKING": "1"})
    with open(wf / "a.log", "w") as fh:
        a = subprocess.Popen([exe, "results/digits/vae/seed0/metrics.json", "--cores", "1", *args], cwd=wf,
                             stdout=fh, stderr=subprocess.STDOUT, env=env)
    jobs = []
    try:
        deadline = time.time() + 300
        while not jobs and time.time() < deadline:
            assert a.poll() is None, (wf / "a.log").read_text()[-3000:]
            if list((wf / "results/digits/vae/seed0").glob("*.resume")):  # its first epoch is done
                # every process whose command line names the job: Snakemake's shell around it and the
                # process that trains, where they are two (stopping the shell alone leaves it training)
                jobs = [p for p in psutil.Process(a.pid).children(recursive=True) if "train-baseline" in cmdline(p)]
            time.sleep(0.2)
        assert jobs, "the VAE's training job was not seen running"
        for job in jobs:
            job.send_signal(signal.SIGSTOP)
        try:
            b = snakemake(wf, "results/digits/nsgan/seed0/metrics.json", "--cores", "1", *args,
                          env={"GLANN_TRACKING": "1"})
            con = sqlite3.connect(wf / "mlflow.db")
            names = {n: st for n, st in con.execute("select name, status from runs")}
            con.close()
            assert names.get("evaluate:nsgan:seed0") == "FINISHED", (names, b.stdout[-2000:])
            assert "train_vae:vae:seed0" not in names, names  # still journalling: left to its own invocation
        finally:
            for job in jobs:
                job.send_signal(signal.SIGCONT)
        assert a.wait(timeout=600) == 0, (wf / "a.log").read_text()[-3000:]
    finally:
        if a.poll() is None:
            a.kill()
    con = sqlite3.connect(wf / "mlflow.db")
    names = {n: st for n, st in con.execute("select name, status from runs")}
    assert names["train_vae:vae:seed0"] == "FINISHED" and names["evaluate:vae:seed0"] == "FINISHED", names
    assert "KILLED" not in names.values(), names
