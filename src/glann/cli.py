"""``glann <step>``: the one entry point the workflow rules call.

Each step gets its paths as options and its slice of the configuration as one
JSON object (``--job``): dataset, method, seed, device, runtime switches
and ``params`` (the step's own hyper-parameters). A user
error (GlannError) prints one line, ``error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from .errors import GlannError

log = logging.getLogger("glann")


def _job(args) -> dict:
    job = json.loads(args.job) if args.job else {}
    job.setdefault("seed", 0)
    job.setdefault("device", "auto")
    job.setdefault("runtime", {})
    job.setdefault("tracking", {})
    job.setdefault("params", {})
    return job


def _setup(job: dict, threads: int | None):
    from .runtime import resolve_device, setup_torch

    rt = job["runtime"]
    setup_torch(threads, rt.get("deterministic", False), int(job["seed"]))
    return resolve_device(job["device"])




@contextlib.contextmanager
def tracked_run(job: dict, step: str, data=None, context: str = "training"):
    """An MLflow run (or journal) for one step: FINISHED on success, FAILED on any exception.
    ``data``: the prepared dataset folder, logged as the run's dataset input."""
    from .config import TRACKING_ENV  # the Snakefile's tracking section, as JSON
    from .tracking import Tracker

    tr = {**json.loads(os.environ.get(TRACKING_ENV) or "{}"), **job.get("tracking", {})}
    run_dir = None
    if job.get("dataset") and job.get("method") not in (None, "-", "evaluator"):
        run_dir = Path("results") / job["dataset"] / job["method"] / f"seed{job['seed']}"
    tracker = Tracker(job.get("dataset", "?"), job.get("method", "-"), job["seed"], step,
                      params={**job["params"], "device": job["device"], "runtime": job["runtime"]},
                      uri=tr.get("uri"), enabled=tr.get("enabled", True), live=tr.get("live", True))
    try:
        if run_dir is not None and run_dir.is_dir():  # where `glann generate --run-id` finds the model
            tracker.set_tags({"glann.run_dir": str(run_dir.resolve())})
        if data:
            tracker.log_dataset(data, context)
        yield tracker
    except KeyboardInterrupt:  # Ctrl-C, or the snakemake that started the job is gone (_die_with_snakemake)
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()


def _snapshots(job: dict, args) -> dict:
    """How many generator snapshots a trainer keeps (job's ``snapshots``) and where (--snapshots)."""
    return {"snapshots": int(job.get("snapshots") or 0), "snapshot_path": args.snapshots}


def cmd_prepare(args):
    from .datasets import prepare

    job = _job(args)
    m = prepare(job["dataset"], job["params"], args.out_dir)
    log.info("prepared %s: %s from %s", job["dataset"], m["shapes"], m["source"])


def cmd_restore_data(args):
    from .preflight import restore_prepared

    print(restore_prepared(args.data_dir))


def cmd_train_glo(args):
    from .glo import reconstructions, train_glo
    from .grids import save_grid

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_glo", args.data) as tracker:
        glo = train_glo(args.data, args.out, job["params"], int(job["seed"]), device, tracker,
                        args.csv, job["runtime"].get("amp", "auto"), job.get("fault"), **_snapshots(job, args))
        save_grid(reconstructions(glo, args.data, device).cpu().numpy(), args.recon, nrow=8)
        for p in (args.recon, args.csv):
            tracker.log_artifact(p)
        tracker.log_artifact(args.out, "checkpoint")


def cmd_train_imle(args):
    from .imle import train_imle

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_imle") as tracker:
        train_imle(args.glo, args.out, job["params"], int(job["seed"]), device, tracker, args.csv,
                   job.get("fault"), **_snapshots(job, args))
        tracker.log_artifact(args.csv)
        tracker.log_artifact(args.out, "checkpoint")


def cmd_fit_gaussian(args):
    from .gaussian import fit_gaussian

    job = _job(args)
    with tracked_run(job, "fit_gaussian") as tracker:
        fit_gaussian(args.glo, args.out, int(job["seed"]))
        tracker.log_artifact(args.out, "checkpoint")


def cmd_train_baseline(args):
    from .methods import get

    job = _job(args)
    device = _setup(job, args.threads)
    method = get(job["method"])
    if method.trainer is None:
        raise GlannError(f"method {method.name!r} is not trained by train-baseline (rule {method.rule})")
    train = method.train_function()
    with tracked_run(job, f"train_{method.name}", args.data) as tracker:
        train(args.data, args.out, job["params"], int(job["seed"]), device, tracker=tracker, csv_path=args.csv,
              amp=job["runtime"].get("amp", "auto"), fault=job.get("fault"), **_snapshots(job, args))
        tracker.log_artifact(args.csv)
        tracker.log_artifact(args.out, "checkpoint")


def cmd_sample(args):
    from .sampling import sample

    job = _job(args)
    device = _setup(job, args.threads)
    paths = {"glo": args.glo, "imle": args.imle, "model": args.model}
    with tracked_run(job, "sample") as tracker:
        info = sample(job["method"], paths, args.data, args.out_dir, int(job["params"]["num_samples"]),
                      int(job["seed"]), device, int(job["params"]["batch_size"]),
                      job["params"].get("bn_stats", "recalibrated"), int(job["params"].get("bn_batches", 50)))
        for name in ("samples.png", "interpolation.png", "nearest.png"):
            tracker.log_artifact(Path(args.out_dir) / name, "samples")
    log.info("sampled %s", info)


def cmd_train_evaluator(args):
    from .atomic import write_json
    from .evaluator import train_evaluator

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_evaluator", args.data) as tracker:
        info = train_evaluator(args.data, args.out, job["params"], int(job["seed"]), device, tracker,
                               job.get("fault"))
        write_json(args.metrics, info)
        tracker.log_metrics({"test_accuracy": info["test_accuracy"]})
        tracker.log_artifact(args.metrics)
    log.info("evaluator (%s): test accuracy %.4f", info["task"], info["test_accuracy"])


def cmd_real_stats(args):
    from .evaluation import real_stats

    job = _job(args)
    device = _setup(job, args.threads)
    fid = job["params"]
    real_stats(args.data, args.evaluator, fid.get("inception_weights"), args.out_evaluator,
               args.out_inception, device, use_inception=fid.get("inception", True),
               out_evaluator_val=args.out_evaluator_val)


def cmd_evaluate(args):
    from .atomic import write_json
    from .evaluation import evaluate

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "evaluate", args.data, "evaluation") as tracker:
        metrics = evaluate(args.samples, args.evaluator, args.stats_evaluator, args.stats_inception,
                           args.data, job["params"], device, int(job["seed"]))
        write_json(args.out, metrics)
        tracker.log_metrics({k: v for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})
        tracker.log_artifact(args.out)
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "class_histogram"})


def cmd_evaluate_snapshots(args):
    from .atomic import write_json
    from .snapshots import score_snapshots

    job = _job(args)
    device = _setup(job, args.threads)
    p = job["params"]
    fixed = dict(kv.split("=", 1) for kv in args.fixed or [])
    with tracked_run(job, "evaluate_snapshots", args.data, "evaluation") as tracker:
        curve = score_snapshots(job["method"], args.snapshots, fixed, args.evaluator, args.stats_evaluator,
                                args.data, int(p["num_samples"]), int(job["seed"]), device,
                                float(p["min_class_share"]), tracker, p.get("bn_stats", "recalibrated"),
                                int(p.get("bn_batches", 50)), split=p.get("split", "test"))
        write_json(args.out, curve)
        tracker.log_artifact(args.out)
    log.info("scored %d snapshots of %s", len(curve["points"]), job["method"])


def cmd_summarize(args):
    from .summary import summarize

    job = _job(args)
    grids = {}
    for path in args.grids or []:
        p = Path(path)
        grids[(p.parent.parent.parent.name, p.parent.parent.name)] = p
    summarize(args.metrics, grids, args.out_dir, job["params"]["datasets"], job["params"]["methods"],
              loss_csvs=args.losses, snapshot_files=args.snapshots)


def cmd_generate(args):
    from .generate import main as generate

    generate(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glann", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)

    def add(name, fn, *opts):
        p = sub.add_parser(name)
        p.add_argument("--job", default="{}", help="the step's config slice as JSON")
        p.add_argument("--threads", type=int, default=None)
        for o in opts:
            p.add_argument(f"--{o}", required=o not in ("imle", "glo", "model", "snapshots"))
        p.set_defaults(fn=fn)
        return p

    add("prepare", cmd_prepare, "out-dir")
    add("train-glo", cmd_train_glo, "data", "out", "csv", "recon", "snapshots")
    add("train-imle", cmd_train_imle, "glo", "out", "csv", "snapshots")
    add("fit-gaussian", cmd_fit_gaussian, "glo", "out")
    add("train-baseline", cmd_train_baseline, "data", "out", "csv", "snapshots")
    add("sample", cmd_sample, "data", "out-dir", "glo", "imle", "model")
    add("train-evaluator", cmd_train_evaluator, "data", "out", "metrics")
    p = add("real-stats", cmd_real_stats, "data", "evaluator", "out-evaluator", "out-inception")
    p.add_argument("--out-evaluator-val", default=None, help="the validation split's evaluator statistics")
    add("evaluate", cmd_evaluate, "samples", "evaluator", "stats-evaluator", "stats-inception", "data", "out")
    p = add("evaluate-snapshots", cmd_evaluate_snapshots, "data", "snapshots", "evaluator", "stats-evaluator",
            "out")
    p.add_argument("--fixed", nargs="*", help="ROLE=PATH checkpoints the snapshots are used with (GLANN's glo)")
    r = sub.add_parser("restore-data", help="rebuild a damaged prepared split, keeping the trained models "
                                            "when the rebuild is byte-identical (glann.preflight)")
    r.add_argument("data_dir", help="the prepared dataset folder, e.g. data/prepared/digits")
    r.set_defaults(fn=cmd_restore_data)
    g = sub.add_parser("generate", help="sample a trained method without Snakemake (see glann.generate)")
    from .generate import add_arguments

    add_arguments(g)
    g.set_defaults(fn=cmd_generate)
    p = add("summarize", cmd_summarize, "out-dir")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--grids", nargs="*")
    p.add_argument("--losses", nargs="*", default=None, help="per-epoch loss CSVs -> <out-dir>/curves/")
    p.add_argument("--snapshots", nargs="*", default=None, help="scored snapshots -> <out-dir>/fid_vs_compute.*")
    return ap


def _batch_key(args) -> str:
    """The config key of the batch size of the step that ran out of memory."""
    step = str(getattr(args, "step", "")).replace("-", "_")
    if step == "train_baseline":
        try:
            return f"{json.loads(args.job)['method']}.batch_size"
        except Exception:
            return "<method>.batch_size"
    return {"train_glo": "glo.batch_size", "train_imle": "imle.batch_size", "sample": "sample.batch_size",
            "train_evaluator": "evaluator.batch_size"}.get(step, "the batch size of this step")


def main(argv=None) -> int:
    """``glann <step>``: parse and run one step in this process."""
    return run(list(sys.argv[1:] if argv is None else argv))


def _die_with_snakemake(interval: float = 0.5) -> None:
    """Stop this job (as Ctrl-C would) once the snakemake process that started it is gone.

    A kill -9 of snakemake leaves its running jobs to finish as orphans: their outputs are then
    recorded as incomplete and recomputed by the rerun, and each finished orphan leaves an MLflow
    run the rerun duplicates. A job that stops with its snakemake writes nothing (outputs are
    atomic), keeps its last epoch in ``.resume``, and marks its run KILLED. The snakemake process
    is named by host, pid and start time (glann.config.export_snakemake_pid); a job on another host
    (an environment passed on to a cluster node) has nothing to watch."""
    from .config import SNAKEMAKE_PID_ENV  # set by workflow/rules/common.smk in each snakemake process

    try:
        host, pid, born = os.environ[SNAKEMAKE_PID_ENV].rsplit(":", 2)
        pid, born = int(pid), float(born)
    except (KeyError, ValueError):
        return
    import socket

    if host != socket.gethostname():
        return
    import signal
    import threading

    import psutil

    def alive() -> bool:
        try:
            p = psutil.Process(pid)
            return abs(p.create_time() - born) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch():
        while alive():
            time.sleep(interval)
        log.error("the snakemake process %s that started this job is gone: stopping (the rerun redoes it)", pid)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="die-with-snakemake", daemon=True).start()


def run(argv: list[str]) -> int:
    """Parse and run one step in this process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        _die_with_snakemake()
        args.fn(args)
    except GlannError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is kept in the .resume file; rerun to continue",
              file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            print(f"error: CUDA out of memory ({str(exc).splitlines()[0]}). Lower {_batch_key(args)} "
                  "in the config, or run fewer GPU jobs at once (--resources gpu=1).", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
