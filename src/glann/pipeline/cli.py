"""``glann <step>``: the one entry point the workflow rules call.

Each step gets its paths as options and its slice of the configuration as one
JSON object (``--job``): dataset, method, seed, device, runtime switches
and ``params`` (the step's own hyper-parameters). A user
error (GlannError) prints one line, ``error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from glann.errors import GlannError
from glann.tracking.tracker import tracked_run

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
    from glann.runtime import resolve_device, setup_torch

    rt = job["runtime"]
    setup_torch(threads, rt.get("deterministic", False), int(job["seed"]))
    return resolve_device(job["device"])


def _context(job: dict, args, device, tracker):
    """The trainer context of this job (glann.methods.training.TrainContext), built here once."""
    from glann.methods.training import TrainContext

    return TrainContext(args.out, int(job["seed"]), device, csv=getattr(args, "csv", None), tracker=tracker,
                        amp=job["runtime"].get("amp", "auto"), fault=job.get("fault"),
                        snapshots=int(job.get("snapshots") or 0), snapshot_path=getattr(args, "snapshots", None))


def cmd_prepare(args):
    from glann.data.datasets import prepare

    job = _job(args)
    m = prepare(job["dataset"], job["params"], args.out_dir)
    log.info("prepared %s: %s from %s", job["dataset"], m["shapes"], m["source"])


def cmd_restore_data(args):
    from glann.pipeline.preflight import restore_prepared

    print(restore_prepared(args.data_dir))


def cmd_train_glo(args):
    from glann.methods.glo import reconstructions, train_glo
    from glann.data.grids import save_grid

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_glo", args.data) as tracker:
        glo = train_glo(args.data, job["params"], _context(job, args, device, tracker))
        save_grid(reconstructions(glo, args.data, device).cpu().numpy(), args.recon, nrow=8)
        for p in (args.recon, args.csv):
            tracker.log_artifact(p)
        tracker.log_checkpoint(args.out)


def cmd_train_imle(args):
    from glann.methods.imle import train_imle

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_imle") as tracker:
        train_imle(args.glo, job["params"], _context(job, args, device, tracker))
        tracker.log_artifact(args.csv)
        tracker.log_checkpoint(args.out)


def cmd_fit_gaussian(args):
    from glann.methods.gaussian import fit_gaussian

    job = _job(args)
    with tracked_run(job, "fit_gaussian") as tracker:
        fit_gaussian(args.glo, args.out, int(job["seed"]))
        tracker.log_checkpoint(args.out)


def cmd_train_baseline(args):
    from glann.methods.registry import get

    job = _job(args)
    device = _setup(job, args.threads)
    method = get(job["method"])
    if method.trainer is None:
        raise GlannError(f"method {method.name!r} is not trained by train-baseline (rule {method.rule})")
    train = method.train_function()
    with tracked_run(job, f"train_{method.name}", args.data) as tracker:
        train(args.data, job["params"], _context(job, args, device, tracker))
        tracker.log_artifact(args.csv)
        tracker.log_checkpoint(args.out)


def cmd_sample(args):
    from glann.methods.sampling import Draw, sample

    job = _job(args)
    device = _setup(job, args.threads)
    paths = {"glo": args.glo, "imle": args.imle, "model": args.model}
    with tracked_run(job, "sample") as tracker:
        p = job["params"]
        draw = Draw(int(p["num_samples"]), int(job["seed"]), int(p["batch_size"]), p.get("bn_stats", "recalibrated"),
                    int(p.get("bn_batches", 50)))
        info = sample(job["method"], paths, args.data, args.out_dir, draw, device)
        for name in ("samples.png", "interpolation.png", "nearest.png"):
            tracker.log_artifact(Path(args.out_dir) / name, "samples")
    log.info("sampled %s", info)


def cmd_train_evaluator(args):
    from glann.atomic import write_json
    from glann.evaluation.evaluator import train_evaluator

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "train_evaluator", args.data) as tracker:
        info = train_evaluator(args.data, job["params"], _context(job, args, device, tracker))
        write_json(args.metrics, info)
        tracker.log_metrics({"test_accuracy": info["test_accuracy"]})
        tracker.log_artifact(args.metrics)
    log.info("evaluator (%s): test accuracy %.4f", info["task"], info["test_accuracy"])


def cmd_real_stats(args):
    from glann.evaluation.context import Reference
    from glann.evaluation.scoring import real_stats

    job = _job(args)
    device = _setup(job, args.threads)
    fid = job["params"]
    ref = Reference(args.data, args.evaluator, args.out_evaluator, args.out_inception, args.out_evaluator_val)
    real_stats(ref, device, fid.get("inception_weights"), use_inception=fid.get("inception", True))


def cmd_evaluate(args):
    from glann.atomic import write_json
    from glann.evaluation.context import Reference, Scoring
    from glann.evaluation.scoring import evaluate

    job = _job(args)
    device = _setup(job, args.threads)
    with tracked_run(job, "evaluate", args.data, "evaluation") as tracker:
        ref = Reference(args.data, args.evaluator, args.stats_evaluator, args.stats_inception, args.stats_evaluator_val)
        metrics = evaluate(args.samples, ref, Scoring(job["params"], device, int(job["seed"])), args.losses,
                           job.get("method"))
        write_json(args.out, metrics)
        tracker.log_metrics({k: v for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for key in ("fid_domain_ci", "kid_domain_ci"):  # the 95% bootstrap interval's ends
            if metrics.get(key):
                tracker.log_metrics({f"{key}_low": metrics[key][0], f"{key}_high": metrics[key][1]})
        tracker.set_tags({"status": metrics["status"], "status_reason": metrics["status_reason"]})
        tracker.log_artifact(args.out)
    if args.record:  # the run's record (glann.pipeline.records), once its metrics are written
        from glann.pipeline.records import write as write_record

        write_record(args.record, metrics, json.loads(args.record_meta), args.record_files or [],
                     args.record_logs or [])
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "class_histogram"})


def cmd_evaluate_snapshots(args):
    from glann.atomic import write_json
    from glann.evaluation.context import Reference, Scoring
    from glann.evaluation.snapshots import score_snapshots

    job = _job(args)
    device = _setup(job, args.threads)
    fixed = dict(kv.split("=", 1) for kv in args.fixed or [])
    with tracked_run(job, "evaluate_snapshots", args.data, "evaluation") as tracker:
        ref = Reference(args.data, args.evaluator, args.stats_evaluator)
        curve = score_snapshots(job["method"], args.snapshots, fixed, ref, Scoring(job["params"], device, int(job["seed"])),
                                tracker)
        write_json(args.out, curve)
        tracker.log_artifact(args.out)
    if args.record:  # the curve joins the run's record (glann.pipeline.records)
        Path(args.record).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.record) / "snapshots.json", curve, record=False)
    log.info("scored %d snapshots of %s", len(curve["points"]), job["method"])


def cmd_summarize(args):
    from glann.evaluation.summary import RunFiles, summarize

    job = _job(args)
    grids = {}
    for path in args.grids or []:
        p = Path(path)
        grids[(p.parent.parent.parent.name, p.parent.parent.name)] = p
    files = RunFiles(args.metrics, grids, args.losses, args.snapshots, args.trials, args.sweeps)
    summarize(files, args.out_dir, job["params"]["datasets"], job["params"]["methods"],
              budgets=job["params"].get("budgets", "custom"))


def cmd_check_records(args):
    from glann.pipeline.records import format_check, verify_records

    result = verify_records(args.records_dir, Path(args.src) if args.src else Path(__file__).resolve().parents[2])
    print(format_check(result))
    return 1 if result["bad_key"] else 0


def cmd_budgets(args):
    from glann.evaluation.budgets import format_picks, from_records

    picks = from_records(args.records_dir)
    if not picks:
        raise GlannError(f"{args.records_dir}: no recorded validation curves (snapshots.json with split val); "
                         "run a study with records.dir, snapshots and a validation split first")
    print(format_picks(picks))


def cmd_journals(args):
    from glann.tracking import journal

    if args.action == "import":
        print(f"{journal.import_journals(args.dir)} run(s) imported")
    elif args.action == "discard":
        print(f"{journal.discard_journals(args.dir)} journal(s) deleted (those of running jobs kept)")
    else:
        for j in journal.list_journals(args.dir):
            state = "running" if j["running"] else "ended" if j["ended"] else "killed"
            print(f"{j['path']}: {j['run_name']} -> {j['uri']} ({j['events']} events, {state})")


def cmd_generate(args):
    from glann.pipeline.generate import main as generate

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
    p = add("evaluate", cmd_evaluate, "samples", "evaluator", "stats-evaluator", "stats-inception", "data", "out")
    p.add_argument("--stats-evaluator-val", default=None,
                   help="the validation split's evaluator statistics: val_fid_domain, what sweeps select on")
    p.add_argument("--losses", nargs="*", default=None, help="the run's training CSVs, read for its status")
    p.add_argument("--record", default=None, help="write the run's record into this folder (records.dir)")
    p.add_argument("--record-meta", default="{}", help="the record's key, key_config and code versions (JSON)")
    p.add_argument("--record-files", nargs="*", default=None, help="files copied into the record")
    p.add_argument("--record-logs", nargs="*", default=None, help="log folders with the training jobs' benchmarks")
    p = add("evaluate-snapshots", cmd_evaluate_snapshots, "data", "snapshots", "evaluator", "stats-evaluator",
            "out")
    p.add_argument("--fixed", nargs="*", help="ROLE=PATH checkpoints the snapshots are used with (GLANN's glo)")
    p.add_argument("--record", default=None, help="copy the curve into this run record folder (records.dir)")
    r = sub.add_parser("restore-data", help="rebuild a damaged prepared split, keeping the trained models "
                                            "when the rebuild is byte-identical (glann.pipeline.preflight)")
    r.add_argument("data_dir", help="the prepared dataset folder, e.g. data/prepared/digits")
    r.set_defaults(fn=cmd_restore_data)
    c = sub.add_parser("check-records", help="check a study's run records against the code checked out now "
                                             "(glann.pipeline.records)")
    c.add_argument("records_dir", help="the records folder, e.g. docs/studies/mnist5k_tuning/records")
    c.add_argument("--src", default=None, help="the package source to compare with (default: the one running)")
    c.set_defaults(fn=cmd_check_records)
    b = sub.add_parser("budgets", help="each recorded run's budget by the converged study's rule, from its "
                                       "validation curve (glann.evaluation.budgets)")
    b.add_argument("records_dir", help="the records folder, e.g. docs/studies/digits_converged_pilot/records")
    b.set_defaults(fn=cmd_budgets)
    j = sub.add_parser("journals", help="deferred-tracking journals kept for an unreachable server: list, "
                                        "import them now, or discard them (glann.tracking.journal)")
    j.add_argument("action", choices=("list", "import", "discard"))
    j.add_argument("--dir", default=None, help="the journal folder (default: .glann/tracking)")
    j.set_defaults(fn=cmd_journals)
    g = sub.add_parser("generate", help="sample a trained method without Snakemake (see glann.pipeline.generate)")
    from glann.pipeline.generate import add_arguments

    add_arguments(g)
    g.set_defaults(fn=cmd_generate)
    p = add("summarize", cmd_summarize, "out-dir")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--grids", nargs="*")
    p.add_argument("--losses", nargs="*", default=None, help="per-epoch loss CSVs -> <out-dir>/curves/")
    p.add_argument("--snapshots", nargs="*", default=None, help="scored snapshots -> <out-dir>/fid_vs_compute.*")
    p.add_argument("--trials", nargs="*", default=None, help="sweep settings' metrics.json (results/D/M/hpK/seedS/)")
    p.add_argument("--sweeps", nargs="*", default=None, help="results/{dataset}/sweep/{method}.json -> <out-dir>/sweep*")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        from glann.pipeline.watchdog import die_with_snakemake

        die_with_snakemake()
        rc = args.fn(args)
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
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
