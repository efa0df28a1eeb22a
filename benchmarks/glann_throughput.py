"""GLANN training throughput at the paper's settings on MNIST-sized data.

    python benchmarks/glann_throughput.py --data data/prepared/mnist5k --tile 12 --glo-epochs 3

Trains GLO (batch 128, latent 64, loss lap1 -- vgg needs ImageNet weights) on the
prepared training split tiled ``--tile`` times (mnist5k x 12 = 48,000 images, the
size of MNIST's train split minus validation), then IMLE for a few epochs, and
prints images/s, seconds per IMLE epoch, peak GPU memory and the projected time
of the paper preset (200 GLO + 50 IMLE epochs). Writes JSON to --out.
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
from glann.datasets import load_prepared, sha256_file  # noqa: E402
from glann.glo import train_glo  # noqa: E402
from glann.imle import train_imle  # noqa: E402
from glann.runtime import resolve_device, setup_torch  # noqa: E402

GLO = {"latent_dim": 64, "batch_size": 128, "lr_codes": 0.01, "lr_generator": 0.001, "betas": [0.5, 0.999],
       "lr_halve_every": 20, "init_std": 0.01, "loss": "lap1", "vgg_weights": None, "lap_levels": None,
       "generator": {"arch": "auto", "batchnorm": "auto"}}
IMLE = {"noise_dim": 32, "hidden": 128, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-5,
        "samples_factor": 2.0, "nn_backend": "torch"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tile", type=int, default=12)
    ap.add_argument("--glo-epochs", type=int, default=3)
    ap.add_argument("--imle-epochs", type=int, default=3)
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
    glo = train_glo(work, work / "glo.pt", {**GLO, "epochs": args.glo_epochs}, 0, device, amp=args.amp)
    epoch_s = [r["seconds"] for r in glo["history"]]
    steady = float(np.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s))
    imle = train_imle(work / "glo.pt", work / "imle.pt", {**IMLE, "epochs": args.imle_epochs}, 0, device)
    imle_epoch = float(np.median([r["seconds"] for r in imle["history"]]))
    res = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "amp": args.amp,
        "train_images": int(len(x)), "glo_epochs": args.glo_epochs,
        "glo_images_per_s": len(x) / steady, "glo_seconds_per_epoch": steady,
        "imle_seconds_per_epoch": imle_epoch,
        "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
        "projected_paper_hours_glo200_imle50": (200 * steady + 50 * imle_epoch) / 3600,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
