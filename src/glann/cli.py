"""``glann <step>``: the one entry point the workflow rules call.

Each step gets its paths as options and its slice of the configuration as one
JSON object (``--job``): dataset, method, seed, device, runtime switches,
tracking settings and ``params`` (the step's own hyper-parameters). A user
error (GlannError) prints one line, ``error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
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


def _tracker(job: dict, step: str):
    from .tracking import Tracker

    tr = job["tracking"]
    return Tracker(job.get("dataset", "?"), job.get("method", "-"), job["seed"], step,
                   params={**job["params"], "device": job["device"], "runtime": job["runtime"]},
                   uri=tr.get("uri"), enabled=tr.get("enabled", True), live=tr.get("live", True))


def cmd_prepare(args):
    from .datasets import prepare

    job = _job(args)
    m = prepare(job["dataset"], job["params"], args.out_dir)
    log.info("prepared %s: %s from %s", job["dataset"], m["shapes"], m["source"])


def cmd_train_glo(args):
    from .glo import reconstructions, train_glo
    from .grids import save_grid

    job = _job(args)
    device = _setup(job, args.threads)
    tracker = _tracker(job, "train_glo")
    try:
        glo = train_glo(args.data, args.out, job["params"], int(job["seed"]), device, tracker,
                        args.csv, job["runtime"].get("amp", "auto"), job.get("fault"))
        save_grid(reconstructions(glo, args.data, device).cpu().numpy(), args.recon, nrow=8)
        for p in (args.recon, args.csv):
            tracker.log_artifact(p)
        tracker.log_artifact(args.out, "checkpoint")
        tracker.finish()
    except BaseException:
        tracker.finish("FAILED")
        raise


def cmd_train_imle(args):
    from .imle import train_imle

    job = _job(args)
    device = _setup(job, args.threads)
    tracker = _tracker(job, "train_imle")
    try:
        train_imle(args.glo, args.out, job["params"], int(job["seed"]), device, tracker, args.csv,
                   job.get("fault"))
        tracker.log_artifact(args.csv)
        tracker.log_artifact(args.out, "checkpoint")
        tracker.finish()
    except BaseException:
        tracker.finish("FAILED")
        raise


def cmd_fit_gaussian(args):
    from .sampling import fit_gaussian

    job = _job(args)
    tracker = _tracker(job, "fit_gaussian")
    fit_gaussian(args.glo, args.out)
    tracker.log_artifact(args.out, "checkpoint")
    tracker.finish()


def cmd_train_baseline(args):
    from .gans import GAN_KINDS, train_gan
    from .imle import train_imle_pixel
    from .vae import train_vae

    job = _job(args)
    device = _setup(job, args.threads)
    method = job["method"]
    tracker = _tracker(job, f"train_{method}")
    amp = job["runtime"].get("amp", "auto")
    common = dict(data_dir=args.data, out_path=args.out, cfg=job["params"], seed=int(job["seed"]),
                  device=device, tracker=tracker, csv_path=args.csv, amp=amp, fault=job.get("fault"))
    try:
        if method in GAN_KINDS:
            train_gan(method, **common)
        elif method == "vae":
            train_vae(**common)
        elif method == "imle_pixel":
            train_imle_pixel(**common)
        else:
            raise GlannError(f"unknown baseline method {method!r}")
        tracker.log_artifact(args.csv)
        tracker.log_artifact(args.out, "checkpoint")
        tracker.finish()
    except BaseException:
        tracker.finish("FAILED")
        raise


def cmd_sample(args):
    from .sampling import sample

    job = _job(args)
    device = _setup(job, args.threads)
    tracker = _tracker(job, "sample")
    paths = {"glo": args.glo, "imle": args.imle, "model": args.model}
    info = sample(job["method"], paths, args.data, args.out_dir, int(job["params"]["num_samples"]),
                  int(job["seed"]), device, int(job["params"]["batch_size"]))
    for name in ("samples.png", "interpolation.png", "nearest.png"):
        tracker.log_artifact(Path(args.out_dir) / name, "samples")
    tracker.finish()
    log.info("sampled %s", info)


def cmd_train_evaluator(args):
    from .atomic import write_json
    from .evaluation import train_evaluator

    job = _job(args)
    device = _setup(job, args.threads)
    tracker = _tracker(job, "train_evaluator")
    info = train_evaluator(args.data, args.out, job["params"], int(job["seed"]), device, tracker)
    write_json(args.metrics, info)
    tracker.log_metrics({"test_accuracy": info["test_accuracy"]})
    tracker.log_artifact(args.metrics)
    tracker.finish()
    log.info("evaluator (%s): test accuracy %.4f", info["task"], info["test_accuracy"])


def cmd_real_stats(args):
    from .evaluation import real_stats

    job = _job(args)
    device = _setup(job, args.threads)
    fid = job["params"]
    real_stats(args.data, args.evaluator, fid.get("inception_weights"), args.out_evaluator,
               args.out_inception, device, use_inception=fid.get("inception", True))


def cmd_evaluate(args):
    import torch

    from .atomic import write_json
    from .evaluation import evaluate

    job = _job(args)
    device = _setup(job, args.threads)
    tracker = _tracker(job, "evaluate")
    meta = {}
    if args.model:
        blob = torch.load(args.model, map_location="cpu", weights_only=False)
        meta = {"diverged": bool(blob.get("diverged")), "diverged_epoch": blob.get("diverged_epoch")}
    metrics = evaluate(args.samples, args.evaluator, args.stats_evaluator, args.stats_inception,
                       args.data, meta, job["params"], device, int(job["seed"]))
    write_json(args.out, metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    tracker.log_artifact(args.out)
    tracker.finish()
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "class_histogram"})


def cmd_summarize(args):
    from .summary import summarize

    job = _job(args)
    grids = {}
    for path in args.grids or []:
        p = Path(path)
        grids[(p.parent.parent.parent.name, p.parent.parent.name)] = p
    summarize(args.metrics, grids, args.out_dir, job["params"]["datasets"], job["params"]["methods"],
              loss_csvs=args.losses)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glann", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)

    def add(name, fn, *opts):
        p = sub.add_parser(name)
        p.add_argument("--job", default="{}", help="the step's config slice as JSON")
        p.add_argument("--threads", type=int, default=None)
        for o in opts:
            p.add_argument(f"--{o}", required=o not in ("imle", "glo", "model"),
                           nargs="+" if o in ("metrics_list",) else None)
        p.set_defaults(fn=fn)
        return p

    add("prepare", cmd_prepare, "out-dir")
    add("train-glo", cmd_train_glo, "data", "out", "csv", "recon")
    add("train-imle", cmd_train_imle, "glo", "out", "csv")
    add("fit-gaussian", cmd_fit_gaussian, "glo", "out")
    add("train-baseline", cmd_train_baseline, "data", "out", "csv")
    add("sample", cmd_sample, "data", "out-dir", "glo", "imle", "model")
    add("train-evaluator", cmd_train_evaluator, "data", "out", "metrics")
    add("real-stats", cmd_real_stats, "data", "evaluator", "out-evaluator", "out-inception")
    add("evaluate", cmd_evaluate, "samples", "evaluator", "stats-evaluator", "stats-inception", "data",
        "out", "model")
    p = add("summarize", cmd_summarize, "out-dir")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--grids", nargs="*")
    p.add_argument("--losses", nargs="*", default=None, help="per-epoch loss CSVs -> <out-dir>/curves/")
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
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
