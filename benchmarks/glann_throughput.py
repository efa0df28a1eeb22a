"""GLANN and GAN training throughput at the paper's settings on MNIST-sized data.

    python benchmarks/glann_throughput.py --data data/prepared/mnist5k --tile 12 --glo-epochs 3 \
        --gan-kinds nsgan,wgan_gp --gan-epochs 3 --repeats 3

Trains GLO (batch 128, latent 64, loss lap1 -- vgg needs ImageNet weights) on the
prepared training split tiled ``--tile`` times (mnist5k x 12 = 48,000 images, the
size of MNIST's train split minus validation), then IMLE for a few epochs, then
each baseline of ``--gan-kinds`` (any of the seven GANs and the VAE: the pipeline's own
train_gan / train_vae with compare_gan v1's settings, the schema's defaults: batch 64; 5
critic steps for WGAN and WGAN-GP, 5 D steps for BEGAN), and prints images/s (steady epochs: the first
is warm-up), seconds per IMLE epoch, peak GPU memory and the projected time of
the paper preset per seed (200 GLO + 50 IMLE epochs; 20 epochs of each baseline). Each figure is the median over
``--repeats`` runs. Writes JSON to --out.

Share of time outside the GPU (CUDA only): one more epoch of GLO and of each baseline
runs under torch.profiler; the summed device time of its kernels, divided by the
steady epoch's wall time measured without the profiler, is the GPU-busy share;
the rest (Python, kernel launches, data indexing, .item() syncs, checkpointing)
is time outside the GPU.
"""

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from glann.atomic import save_npz, write_json  # noqa: E402
from glann.atomic import sha256_of as sha256_file  # noqa: E402
from glann.pipeline.config import fill_defaults, load_schema  # noqa: E402
from glann.data.datasets import load_prepared  # noqa: E402
from glann.methods.gans import train_gan  # noqa: E402
from glann.methods.glo import train_glo  # noqa: E402
from glann.methods.imle import train_imle  # noqa: E402
from glann.methods.training import TrainContext  # noqa: E402
from glann.methods.vae import train_vae  # noqa: E402
from glann.runtime import resolve_device, setup_torch  # noqa: E402

# the schema's defaults (the paper's values), as the pipeline's jobs get them; GLO with lap1
BASELINES = ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae")
_CFG = fill_defaults({"datasets": ["mnist5k"], "methods": ["glann", *BASELINES], "seeds": [0]},
                     load_schema(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"))
GLO = {**_CFG["glo"], "loss": "lap1"}
IMLE = _CFG["imle"]
GAN_CFG = {kind: _CFG[kind] for kind in BASELINES}  # compare_gan v1's settings (the schema's defaults)


def train_baseline(kind: str, work: Path, cfg: dict, ctx: TrainContext) -> dict:
    """The pipeline's own trainer of a GAN (glann.methods.gans.train_gan) or the VAE."""
    return train_vae(work, cfg, ctx) if kind == "vae" else train_gan(kind, work, cfg, ctx)


def steady_epoch_seconds(result: dict) -> float:
    epoch_s = [r["seconds"] for r in result["history"]]
    return float(np.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s))


def kernel_seconds(fn, device) -> float | None:
    """Seconds during which the GPU ran fn's kernels, memcpys or memsets (None off CUDA).

    The union of the device-side activity intervals that torch.profiler records (events with
    device_type CUDA; the CPU-side ops that launched them are not counted again), so overlapping
    activity on several streams is counted once.
    """
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == DeviceType.CUDA)
    busy_us, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            busy_us += b - max(a, end)
            end = b
    return busy_us / 1e6


def one_run(args, work: Path, device, n_images: int) -> dict:
    res = {}
    glo = train_glo(work, {**GLO, "epochs": args.glo_epochs}, TrainContext(work / "glo.pt", 0, device, amp=args.amp))
    res["glo_seconds_per_epoch"] = steady_epoch_seconds(glo)
    res["glo_images_per_s"] = n_images / res["glo_seconds_per_epoch"]
    if args.imle_epochs:
        imle = train_imle(work / "glo.pt", {**IMLE, "epochs": args.imle_epochs}, TrainContext(work / "imle.pt", 0, device))
        res["imle_seconds_per_epoch"] = float(np.median([r["seconds"] for r in imle["history"]]))
    for kind in filter(None, args.gan_kinds.split(",")):
        cfg = {**GAN_CFG[kind], "epochs": args.gan_epochs}
        out = train_baseline(kind, work, cfg, TrainContext(work / f"{kind}.pt", 0, device, amp=args.amp))
        res[f"{kind}_seconds_per_epoch"] = steady_epoch_seconds(out)
        # images through the generator's training step per second (critic steps see the same images)
        res[f"{kind}_images_per_s"] = n_images / res[f"{kind}_seconds_per_epoch"]
    return res


def busy_shares(args, work: Path, device, res: dict) -> dict:
    shares = {}
    jobs = {"glo": lambda: train_glo(work, {**GLO, "epochs": 1}, TrainContext(work / "p_glo.pt", 0, device, amp=args.amp))}
    for kind in filter(None, args.gan_kinds.split(",")):
        jobs[kind] = (lambda k=kind: train_baseline(k, work, {**GAN_CFG[k], "epochs": 1},
                                                    TrainContext(work / f"p_{k}.pt", 0, device, amp=args.amp)))
    for name, fn in jobs.items():
        busy = kernel_seconds(fn, device)
        if busy is not None:
            share = min(busy / res[f"{name}_seconds_per_epoch"], 1.0)
            shares[f"{name}_gpu_busy_share"] = share
            shares[f"{name}_outside_gpu_share"] = 1.0 - share
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tile", type=int, default=12)
    ap.add_argument("--glo-epochs", type=int, default=3)
    ap.add_argument("--imle-epochs", type=int, default=3)
    ap.add_argument("--gan-kinds", default="nsgan,wgan_gp", help=f"comma list of {','.join(BASELINES)} ('' for none)")
    ap.add_argument("--gan-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/out/glann_throughput.json")
    args = ap.parse_args()
    setup_torch(args.threads, False, 0)
    device = resolve_device(args.device)
    x, y = load_prepared(args.data, "train")
    x, y = np.tile(x, (args.tile, 1, 1, 1)), np.tile(y, args.tile)
    work = Path(tempfile.mkdtemp())
    save_npz(work / "train.npz", images=x, labels=y)
    save_npz(work / "test.npz", images=x[:10], labels=y[:10])
    write_json(work / "manifest.json", {"num_classes": 10, "image_shape": list(x.shape[1:]),
                                        "sha256": {f: sha256_file(work / f) for f in ("train.npz", "test.npz")}})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for i in range(args.repeats):
        for f in work.glob("*.pt"):
            f.unlink()  # no resume between repeats
        runs.append(one_run(args, work, device, len(x)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items()), flush=True)
    res = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    res.update(busy_shares(args, work, device, res))
    res.update({
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "amp": args.amp,
        "train_images": int(len(x)), "glo_epochs": args.glo_epochs, "gan_epochs": args.gan_epochs,
        "repeats": args.repeats, "runs": runs,
        "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
    })
    if "imle_seconds_per_epoch" in res:
        res["projected_paper_hours_glo200_imle50"] = (200 * res["glo_seconds_per_epoch"]
                                                      + 50 * res["imle_seconds_per_epoch"]) / 3600
    # config/paper/mnist.yaml: each baseline 20 epochs (compare_gan v1's MNIST budget), per seed
    for kind in filter(None, args.gan_kinds.split(",")):
        res[f"projected_paper_hours_{kind}20"] = 20 * res[f"{kind}_seconds_per_epoch"] / 3600
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
