"""``glann generate``: sample any trained method without Snakemake.

    glann generate results/mnist5k/glann/seed0 -n 10000 --out samples/ [--format png|npz]
                   [--seed S] [--device auto|cpu|cuda] [--interpolate K] [--batch-size B]
                   [--bn-stats recalibrated|running]
    glann generate --run-id <mlflow run id> -n 100 --out samples/

The folder is a method's run folder as the pipeline writes it
(``results/<dataset>/<method>/seed<S>``); the registry says which checkpoints the
method needs (GLANN: ``glo.pt`` and ``imle.pt``; glo_gauss: GLANN's ``glo.pt`` and
its ``model.pt``; the others ``model.pt``), and each is verified before use.
Images are generated and written ``--batch-size`` at a time: PNG files
``000000.png, ...``, or ``samples-00000.npz, ...`` shards of uint8 NHWC arrays,
so 100,000 images never sit in memory together. ``--interpolate K`` also writes
``interpolation.png``: K rows walking linearly between two noise vectors.
"""

from __future__ import annotations

import re
from pathlib import Path

from glann.atomic import save_npz, save_with
from glann.errors import GlannError
from glann.methods.registry import METHODS, get


def checkpoints_for(run_dir) -> tuple[str, dict]:
    """(method, {role: path}) for a run folder results/<dataset>/<method>/seed<S> (or a sweep's
    results/<dataset>/<method>/hp<k>/seed<S>); refuses an unfinished one."""
    run_dir = Path(run_dir)
    hp = run_dir.parent.name if re.fullmatch(r"hp\d+", run_dir.parent.name) else ""
    method_dir = run_dir.parent.parent if hp else run_dir.parent
    method, seed = method_dir.name, run_dir.name.removeprefix("seed")
    if method not in METHODS or not seed.isdigit():
        raise GlannError(f"{run_dir} is not a run folder results/<dataset>/<method>/seed<N> (or "
                         f"results/<dataset>/<method>/hp<k>/seed<N>) of a known method ({', '.join(METHODS)})")
    root = run_dir.resolve().parents[4 if hp else 3]  # the folder that holds results/
    paths = {role: root / p for role, p in
             get(method).checkpoint_paths(method_dir.parent.name, seed, f"/{hp}" if hp else "").items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise GlannError(f"{run_dir} has no finished {method} model: {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing. Train it first: run snakemake "
                         "with these files as targets, in the folder that holds results/.")
    return method, paths


def run_dir_of_mlflow_run(run_id: str, uri: str | None = None) -> Path:
    """The run folder an MLflow run recorded (tag ``glann.run_dir``)."""
    from mlflow.tracking import MlflowClient

    from glann.tracking.mlflow_store import tracking_uri

    try:
        run = MlflowClient(tracking_uri=tracking_uri(uri)).get_run(run_id)
    except Exception as exc:
        raise GlannError(f"MLflow run {run_id} not found in {tracking_uri(uri)} ({exc})") from None
    folder = run.data.tags.get("glann.run_dir")
    if not folder:
        raise GlannError(f"MLflow run {run_id} records no run folder (tag glann.run_dir): pick a training, "
                         "sampling or evaluation run of the method")
    return Path(folder)


def generate(run_dir, out_dir, draw, device="cpu", fmt: str = "png", interpolate: int = 0) -> dict:
    """``draw.n`` images of the run in ``run_dir`` (a glann.methods.sampling.Draw) as PNG files or
    npz shards of ``draw.batch_size``; ``interpolate``: also K rows of interpolation.png."""
    method, paths = checkpoints_for(run_dir)  # before torch is imported: a wrong folder is refused at once
    import torch

    from glann.data.grids import save_grid
    from glann.methods.models import to_uint8_images
    from glann.runtime import resolve_device
    from glann.methods.sampling import Sampler, interpolation

    n, seed, batch_size = draw.n, draw.seed, draw.batch_size
    sampler = Sampler(method, paths, resolve_device(str(device)), bn_stats=draw.bn_stats, bn_batches=draw.bn_batches)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    written = 0
    for shard, start in enumerate(range(0, n, batch_size)):
        with torch.no_grad():
            images = to_uint8_images(sampler.decode(sampler.noise(min(batch_size, n - start), gen))).cpu().numpy()
        if fmt == "npz":
            save_npz(out_dir / f"samples-{shard:05d}.npz", images=images)
        else:
            from PIL import Image

            for i, im in enumerate(images):
                pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
                save_with(out_dir / f"{start + i:06d}.png", lambda p, pil=pil: pil.save(p, format="PNG"),
                          record=False)
        written += len(images)
    if interpolate:
        save_grid(interpolation(sampler, seed, rows=interpolate), out_dir / "interpolation.png", nrow=10)
    return {"method": method, "n": written, "format": fmt, "out": str(out_dir), **sampler.meta}


def add_arguments(p) -> None:
    p.add_argument("run_dir", nargs="?", help="results/<dataset>/<method>/seed<N>")
    p.add_argument("--run-id", help="an MLflow run of the method (instead of run_dir)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("-n", type=int, default=64, help="how many images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=("png", "npz"), default="png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--interpolate", type=int, default=0, metavar="K", help="also write K interpolation rows")
    p.add_argument("--bn-stats", choices=("recalibrated", "running"), default="recalibrated",
                   help="batch-norm statistics of a GAN or VAE generator (config sample.bn_stats)")
    p.add_argument("--bn-batches", type=int, default=50,
                   help="batches of 64 noise draws that re-estimate them (config sample.bn_batches)")


def main(args) -> dict:
    if bool(args.run_dir) == bool(args.run_id):
        raise GlannError("give either a run folder (results/<dataset>/<method>/seed<N>) or --run-id")
    if args.n < 1 or args.batch_size < 1 or args.bn_batches < 1:
        raise GlannError("-n, --batch-size and --bn-batches must be at least 1")
    run_dir = args.run_dir or run_dir_of_mlflow_run(args.run_id, args.tracking_uri)
    from glann.methods.sampling import Draw

    draw = Draw(args.n, args.seed, args.batch_size, args.bn_stats, args.bn_batches)
    info = generate(run_dir, args.out, draw, args.device, args.format, args.interpolate)
    print(f"wrote {info['n']} {info['method']} images to {info['out']} ({info['format']})")
    return info
