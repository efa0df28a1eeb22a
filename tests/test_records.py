"""Run records in process (glann.pipeline.records): the key, what a record holds, the check."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from glann.pipeline import records


def test_key_is_the_hash_of_the_canonical_config():
    a = {"method": "vae", "seed": 0, "sections": {"vae": {"lr": 1e-4, "betas": [0.5, 0.999]}}}
    b = {"sections": {"vae": {"betas": [0.5, 0.999], "lr": 1e-4}}, "seed": 0, "method": "vae"}
    assert records.run_key(a) == records.run_key(b)  # key order does not matter
    assert records.run_key(a) != records.run_key({**a, "seed": 1})
    assert len(records.run_key(a)) == 64


def test_write_then_read_and_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "train_baseline.bench.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n12.5\t0:00:12\t100\t20.25\n")
    (tmp_path / "losses.csv").write_text("epoch,d_loss\n1,0.5\n")
    key_config = {"method": "vae", "seed": 0}
    versions = {"evaluate": {"step": "evaluate", "extra": [], "hash": "x"}}
    meta = {"key": records.run_key(key_config), "key_config": key_config, "code_versions": versions}
    out = records.write(tmp_path / "rec/d/vae/seed0", {"fid_domain": 3.0}, meta, [tmp_path / "losses.csv"], [logs])
    saved = json.loads(out.read_text())
    assert saved["fid_domain"] == 3.0 and saved["record"]["train_wall_seconds"] == 12.5
    assert saved["record"]["train_cpu_seconds"] == 20.25
    assert (tmp_path / "rec/d/vae/seed0/losses.csv").read_text() == "epoch,d_loss\n1,0.5\n"
    assert records.read_key(tmp_path / "rec/d/vae/seed0") == meta["key"]
    assert records.read_key(tmp_path / "rec/d/vae/seed1") is None
    with pytest.raises(ValueError, match="key does not match"):
        records.write(tmp_path / "rec/x", {}, {**meta, "key": "0" * 64})
    # check: the recorded evaluate version "x" is not this checkout's; an edited key_config is refused
    result = records.verify_records(tmp_path / "rec", str(Path(records.__file__).parents[2]))
    assert result["records"] == 1 and not result["bad_key"]
    assert result["other_code"] == {str(tmp_path / "rec/d/vae/seed0"): ["evaluate"]}
    saved["record"]["key_config"]["seed"] = 3
    out.write_text(json.dumps(saved))
    assert records.verify_records(tmp_path / "rec", str(Path(records.__file__).parents[2]))["bad_key"] == [str(out)]
    assert "whose key is not the hash" in records.format_check(
        records.verify_records(tmp_path / "rec", str(Path(records.__file__).parents[2])))


def test_compatible_keys_tolerate_new_settings_at_their_default_only():
    rec = {"sections": {"vae": {"lr": 1e-4}}, "seed": 0}
    default = {"sections": {"vae": {"lr": 5e-5, "sigma": 0.1}}, "seed": 0, "new_section": {"a": 1}}
    assert records.compatible(rec, {"sections": {"vae": {"lr": 1e-4}}, "seed": 0}, default)
    # a key added to the code since the record, at its default: the record still stands
    assert records.compatible(rec, {"sections": {"vae": {"lr": 1e-4, "sigma": 0.1}}, "seed": 0}, default)
    assert records.compatible(rec, {"sections": {"vae": {"lr": 1e-4}}, "seed": 0, "new_section": {"a": 1}}, default)
    # ... but not away from it, and never a changed value
    assert not records.compatible(rec, {"sections": {"vae": {"lr": 1e-4, "sigma": 0.2}}, "seed": 0}, default)
    assert not records.compatible(rec, {"sections": {"vae": {"lr": 2e-4}}, "seed": 0}, default)
    assert not records.compatible(rec, {"sections": {"vae": {"lr": 1e-4}}, "seed": 1}, default)
    assert not records.compatible(rec, {"sections": {"vae": {"lr": 1e-4}}, "seed": 0, "other": 1}, default)


def test_a_job_stops_with_its_snakemake_even_when_started_with_sigint_ignored(tmp_path):
    """A snakemake run in the background of a non-interactive shell (nohup ... &) starts its jobs
    with SIGINT ignored; the watchdog must still stop a job once that snakemake is gone."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import psutil

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    born = psutil.Process(parent.pid).create_time()
    code = ("import time\nfrom glann.pipeline.watchdog import die_with_snakemake\ndie_with_snakemake(0.1)\n"
            "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)\n")
    env = {**__import__("os").environ, "GLANN_SNAKEMAKE_PID": f"{socket.gethostname()}:{parent.pid}:{born!r}"}
    job = subprocess.Popen([sys.executable, "-c", code], env=env,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        time.sleep(1.5)
        assert job.poll() is None  # its snakemake is alive: it runs
        parent.kill()
        parent.wait()
        assert job.wait(timeout=10) == 130
    finally:
        for p in (parent, job):
            if p.poll() is None:
                p.kill()


def test_a_record_is_dirty_only_when_the_code_differs_from_its_commit(tmp_path):
    """code_dirty: src/, workflow/ or the Snakefile changed since HEAD; a study's own records (or
    any other file under docs/) written into the checkout leave it clean."""
    import subprocess

    from glann.pipeline.records import git_commit

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "PATH": __import__("os").environ["PATH"]}
    for d in ("src", "workflow", "docs"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "f.txt").write_text("0\n")
    (tmp_path / "Snakefile").write_text("0\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "c"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env)
    head, dirty = git_commit(tmp_path)
    assert len(head) == 40 and dirty is False
    (tmp_path / "docs/f.txt").write_text("a record\n")
    assert git_commit(tmp_path / "docs") == (head, False)
    for f in ("src/f.txt", "workflow/f.txt", "Snakefile"):
        (tmp_path / f).write_text("edited\n")
        assert git_commit(tmp_path) == (head, True), f
        (tmp_path / f).write_text("0\n")
    assert git_commit(tmp_path) == (head, False)


def test_budgets_are_read_from_the_recorded_validation_curves(tmp_path, capsys):
    """``glann budgets RECORDS``: the converged study's rule on every recorded validation curve
    (settings included), never on a test-split curve; a damaged curve is named, not skipped."""
    from glann.errors import GlannError
    from glann.evaluation.budgets import from_records
    from glann.pipeline.cli import main

    def put(rel, fids, split="val", classes=10):
        d = tmp_path / rel
        d.mkdir(parents=True)
        pts = [{"epoch": 10 * (i + 1), "train_seconds": float(i), "fid_domain": f, "classes_covered": classes}
               for i, f in enumerate(fids)]
        (d / "snapshots.json").write_text(json.dumps({"split": split, "points": pts}))

    put("digits/wgan/seed0", [90.0, 60.0, 40.0, 30.0, 20.0])                    # still falling
    put("digits/nsgan/hp1/seed1", [700.0, 650.0, 800.0], classes=1)             # collapsed: full budget
    put("digits/vae/seed0", [90.0, 40.0, 31.0, 30.0, 30.5, 31.0])               # stops at 30
    put("digits/flow/seed0", [90.0, 10.0, 9.0], split="test")                   # never chooses
    picks = {(p["method"], p["setting"], p["seed"]): p for p in from_records(tmp_path)}
    assert set(picks) == {("wgan", "", 0), ("nsgan", "hp1", 1), ("vae", "", 0)}
    assert (picks["wgan", "", 0]["epoch"], picks["wgan", "", 0]["converged"]) == (50, False)
    assert (picks["nsgan", "hp1", 1]["epoch"], picks["nsgan", "hp1", 1]["learned"]) == (30, False)
    assert (picks["vae", "", 0]["epoch"], picks["vae", "", 0]["ran"]) == (30, 60)  # 31 <= 30.5 * 1.05
    assert main(["budgets", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| digits | wgan | - | 0 | 50 | epoch 50 (*still improving*) |" in out
    assert "| digits | nsgan | hp1 | 1 | 30 | epoch 30 (*never learned*: the full budget) |" in out
    (tmp_path / "digits/vae/seed0/snapshots.json").write_text("{not json")
    with pytest.raises(GlannError, match="vae/seed0/snapshots.json"):
        from_records(tmp_path)
    assert main(["budgets", str(tmp_path / "digits" / "flow")]) == 2


def test_publishing_a_converged_study_writes_its_table_figures_and_budgets(tmp_path):
    """docs/publish_study.py on a study without a sweep: the table under a provenance header, the
    curves and the sample grid, and budgets.md from the records' validation curves; no sweep files."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("publish_study", REPO / "docs" / "publish_study.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    summary, dest = tmp_path / "summary", tmp_path / "study"
    summary.mkdir()
    (summary / "table.md").write_text("# Results\n\n| method | digits |\n")
    (summary / "sweep.md").write_text("# Sweeps\n\nNo sweep in this config\n")
    (summary / "sweep.json").write_text(json.dumps({"swept": False}))
    for name in ("fid_vs_compute.png", "samples.png"):
        (summary / name).write_bytes(b"png")
    run = dest / "records/digits/vae/seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"record": {"code_commit": "abcdef0123", "train_wall_seconds": 7200,
                                                             "train_cpu_seconds": 3600}}))
    pts = [{"epoch": 10 * (i + 1), "train_seconds": 5.0 * (i + 1), "fid_domain": f, "classes_covered": 10}
           for i, f in enumerate([90.0, 40.0, 31.0, 30.0, 30.5, 31.0])]
    (run / "snapshots.json").write_text(json.dumps({"split": "val", "points": pts}))
    assert publish.main([str(summary), str(dest), "--table", "--command", "snakemake x"]) == 0
    table = (dest / "table.md").read_text()
    assert table.startswith("<!-- generated by docs/publish_study.py") and "1 runs" in table
    assert "2.00 hours wall and 1.00 CPU-hours" in table and table.endswith("| method | digits |\n")
    assert (dest / "samples.png").is_file() and (dest / "fid_vs_compute.png").is_file()
    assert not (dest / "sweep.md").exists() and not (dest / "sweep_fid.png").exists()
    assert "| digits | vae | - | 0 | 60 | epoch 30 | 31 (30.5) | 15 |" in (dest / "budgets.md").read_text()


def test_a_study_published_for_some_methods_counts_only_their_records(tmp_path):
    """publish_study's header counts the runs of the methods the summary reports: a method still
    being recorded (in records/, not in the summary) adds no runs, commits or seconds."""
    publish = _publish_module()
    summary, dest = tmp_path / "summary", tmp_path / "study"
    summary.mkdir()
    (summary / "sweep.md").write_text("# Sweeps\n\n| dataset | method |\n")
    (summary / "sweep.json").write_text(json.dumps({"digits/glann": {"method": "glann"}}))
    (summary / "summary.json").write_text(json.dumps({"digits/glann/fid_domain": {}}))
    for run, commit, wall in (("digits/glann/seed0", "aaaaaaa1", 3600), ("digits/glann/hp1/seed0", "aaaaaaa1", 3600),
                              ("digits/wgan_gp/hp1/seed0", "bbbbbbb2", 36000)):
        (dest / "records" / run).mkdir(parents=True)
        (dest / "records" / run / "metrics.json").write_text(json.dumps(
            {"record": {"code_commit": commit, "train_wall_seconds": wall, "train_cpu_seconds": wall}}))
    assert publish.main([str(summary), str(dest), "--command", "snakemake x"]) == 0
    head = (dest / "sweep.md").read_text().splitlines()[1]
    assert "; 2 runs, recorded under `records/` at code commit(s) aaaaaaa;" in head, head
    assert "took 2.00 hours wall and 2.00 CPU-hours" in head, head
    assert publish.published_methods(tmp_path / "nothing") is None  # no summary files: every record counts


def _publish_module():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("publish_study", REPO / "docs" / "publish_study.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    return publish


def test_the_planned_runs_of_a_complete_study_are_its_records():
    """planned_runs reads a study's config as the Snakefile plans it: for every complete study, the
    planned folders are exactly the record folders (the tuning studies' setting 0 is their configured
    setting: the configured runs stand for it, and it has no record of its own)."""
    from conftest import REPO

    publish = _publish_module()
    for study in ("digits_sweep", "digits_converged", "mnist5k_tuning", "mnist5k_began_wide", "mnist5k_flow_lr"):
        cfg = publish.study_config(REPO / "config/study" / f"{study}.yaml")
        recorded = {str(p.parent.relative_to(REPO / cfg["records"]["dir"]))
                    for p in (REPO / cfg["records"]["dir"]).rglob("metrics.json")}
        assert sorted(records.planned_runs(cfg)) == sorted(recorded), study
        assert records.missing_runs(REPO / cfg["records"]["dir"], cfg) == []


def test_missing_runs_are_listed_with_the_cost_of_their_methods_recorded_runs(tmp_path):
    """A run without a record is listed; its estimate is the mean training seconds of the method's
    recorded drawn settings, else of its configured runs, else unknown; the markdown adds them up."""
    from conftest import REPO
    from glann.pipeline.config import fill_defaults, load_schema

    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    cfg = fill_defaults({"datasets": ["digits"], "methods": ["glann", "vae", "flow", "nsgan"], "seeds": [0, 1],
                         "sweep": {"settings": 2, "methods": ["glann", "vae", "nsgan"]}}, schema)
    planned = records.planned_runs(cfg)
    assert len(planned) == 4 * 2 + 3 * 2 * 2 and "digits/flow/seed1" in planned
    assert "digits/vae/hp1/seed0" in planned and not any(r.startswith("digits/flow/hp") for r in planned)

    def rec(run, wall):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "metrics.json").write_text(json.dumps({"record": {"train_wall_seconds": wall}}))

    for run in records.planned_runs({**cfg, "methods": ["glann"], "sweep": {**cfg["sweep"], "methods": ["glann"]}}):
        rec(run, 10)
    rec("digits/vae/seed0", 100)
    rec("digits/vae/hp0/seed0", 300)
    rec("digits/vae/hp1/seed1", 500)
    rec("digits/flow/seed0", 50)
    missing = {m["run"]: m for m in records.missing_runs(tmp_path, cfg)}
    assert set(missing) == {"digits/vae/seed1", "digits/vae/hp0/seed1", "digits/vae/hp1/seed0", "digits/flow/seed1",
                            *(f"digits/nsgan{hp}/seed{s}" for hp in ("", "/hp0", "/hp1") for s in (0, 1))}
    assert missing["digits/vae/seed1"]["seconds"] == 400  # the drawn runs' mean
    assert missing["digits/flow/seed1"]["seconds"] == 50 and missing["digits/nsgan/seed0"]["seconds"] is None
    text = records.format_missing(list(missing.values()), len(planned))
    assert text.startswith(f"{len(planned) - 10} of {len(planned)} planned runs recorded; 10 missing.")
    assert "| vae | 3: seed1, hp0/seed1, hp1/seed0 | 400 | mean of 2 recorded drawn runs | 1,200 s |" in text
    assert "1,250 s" in text and "6 runs of unknown cost" in text


def test_publishing_with_the_plan_lists_the_missing_runs_and_drops_the_list_once_none_are(tmp_path):
    from conftest import REPO

    publish = _publish_module()
    study = yaml.safe_load((REPO / "config/study/digits_sweep.yaml").read_text())
    dest = tmp_path / "study"
    shutil.copytree(REPO / study["records"]["dir"], dest / "records")
    victim = next((dest / "records").rglob("metrics.json"))
    victim.unlink()
    publish.write_missing(dest, REPO / "config/study/digits_sweep.yaml")
    text = (dest / "missing.md").read_text()
    assert "44 of 45 planned runs recorded; 1 missing." in text
    assert str(victim.parent.relative_to(dest / "records")).split("/", 2)[2] in text
    shutil.copytree(REPO / study["records"]["dir"], dest / "records", dirs_exist_ok=True)
    publish.write_missing(dest, REPO / "config/study/digits_sweep.yaml")
    assert not (dest / "missing.md").exists()
