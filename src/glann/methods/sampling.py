"""Sampling every method the same way, plus the grids a researcher looks at.

- glann:      e ~ N(0, I_32), z = T(e), x = G(z)          (GLANN Sec. 3.3)
- glo_gauss:  z ~ N(mu, Sigma) fitted to GLO's codes (full covariance), projected
              onto the sphere as the codes were, x = G(z)  (GLO paper, Sec. 4)
- imle_pixel, vae:  z ~ N(0, I_64), x = G(z)
- the GANs:         z ~ U(-1, 1)^64, x = G(z)   (compare_gan v1's z_generator)
- flow:             z ~ N(0, I_CHW), x = the ODE of its velocity field solved from z (glann.methods.flow)
Every network samples in eval mode, as the reference code does (v1's
``generator(z, is_training=False)``, GLANN's ``.eval()``). A generator checkpoint names
its own noise (``noise``: uniform | normal).

Batch-norm statistics of the GAN and VAE generators (``bn_stats``): v1's moving
averages use decay 0.999, so they forget their initial values (mean 0, variance 1) only
after a few thousand steps; at v1's budgets (about 19,000 steps on MNIST) they are the
statistics of the final weights, at a CPU budget of a few hundred steps they are still
mostly the initial values and eval-mode samples are washed out. ``recalibrated`` (the
default) re-estimates them on the final weights from ``bn_batches`` (default 50) batches
of 64 draws of the method's own sampling noise before sampling (what the averages converge to);
``running`` samples with the averages as trained (v1 exactly). GLO's generator (GLANN's
``_netG``, PyTorch's momentum 0.1) always uses its running statistics, as GLANN does.

Outputs: samples.npz (uint8 NHWC), samples.png (8x8 grid), interpolation.png
(rows walk linearly between two noise vectors), nearest.png (each sample beside
its nearest training image in pixels: the memorisation check).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glann.atomic import load_torch, save_npz
from glann.data.datasets import load_prepared
from glann.methods.flow import build_flow_generator
from glann.methods.gaussian import gaussian_sampler
from glann.methods.glo import load_glo_generator, project_to_sphere
from glann.data.grids import save_grid
from glann.methods.registry import get
from glann.methods.models import IMLEMapping, build_generator, recalibrate_batchnorm, to_float_images, to_uint8_images
from glann.methods.nn_search import nearest_neighbors

log = logging.getLogger(__name__)


BN_STATS = ("recalibrated", "running")
BN_BATCHES, BN_BATCH_SIZE = 50, 64


class Sampler:
    """noise -> images for one trained method; ``noise(n, gen)`` draws its input noise.

    ``paths`` maps the registry's checkpoint roles (glo, imle, model) to files; how
    the method samples (``glann``, ``glo_gauss`` or a plain ``generator``) is the
    registry's ``sampler`` field.
    """

    def __init__(self, method: str, paths: dict, device, blobs: dict | None = None,
                 bn_stats: str = "recalibrated", bn_batches: int = BN_BATCHES):
        if bn_stats not in BN_STATS:
            raise ValueError(f"bn_stats must be one of {', '.join(BN_STATS)}, not {bn_stats!r}")
        if bn_batches < 1:
            raise ValueError(f"bn_batches must be at least 1, not {bn_batches}")
        self.device = device
        self.kind = get(method).sampler
        self.uniform = False  # a GAN checkpoint says "noise": "uniform"
        # blobs: checkpoints already in memory (a snapshot standing in for one role)
        blobs = {**{role: load_torch(p) for role, p in paths.items() if p}, **(blobs or {})}
        if self.kind in ("glann", "glo_gauss"):
            glo = blobs["glo"]
            self.G = load_glo_generator(glo, device)
            self.image_shape = glo["image_shape"]
            final = blobs["imle"] if self.kind == "glann" else blobs["model"]
            if self.kind == "glann":
                self.T = IMLEMapping(final["noise_dim"], final["latent_dim"], final["config"]["hidden"])
                self.T.load_state_dict(final["mapping"])
                self.T = self.T.to(device).eval()
                self.noise_dim = final["noise_dim"]
            else:
                self._draw = gaussian_sampler(final["mean"], final["cov"])
                self.noise_dim = final["mean"].shape[0]
        else:
            final = blobs["model"]
            # a flow's "generator" solves its ODE from the noise (glann.methods.flow)
            self.G = build_flow_generator(final) if final.get("generator_arch") == "flow_unet" else build_generator(final)
            self.G.load_state_dict(final["generator"])
            self.G = self.G.to(device).eval()
            self.image_shape = final["image_shape"]
            self.noise_dim = final["noise_dim"]
            self.uniform = final.get("noise", "normal") == "uniform"
            if bn_stats == "recalibrated" and final.get("generator_arch") == "compare_gan_v1":
                # its own generator: the sampling seed's noise stream stays as it was
                gen = torch.Generator().manual_seed(int(final.get("seed", 0)) + 4242)
                noise = torch.cat([self.noise(BN_BATCH_SIZE, gen) for _ in range(bn_batches)])
                recalibrate_batchnorm(self.G, noise.to(device), BN_BATCH_SIZE)
        # Network evaluations per image: GLANN's T then G; a flow its ODE solver's steps (1 or 2 each).
        self.network_evals = int(final.get("network_evals", 2 if self.kind == "glann" else 1))
        # Compute of the whole method: GLANN = GLO + IMLE, glo_gauss = GLO + its fit.
        self.meta = {"diverged": bool(final.get("diverged")), "diverged_epoch": final.get("diverged_epoch"),
                     "train_seconds": float(sum(b.get("train_seconds", 0.0) for b in blobs.values())),
                     "images_processed": int(sum(b.get("images_processed", 0) for b in blobs.values())),
                     "train_device": ",".join(sorted({str(b["device"]) for b in blobs.values() if b.get("device")}))}

    def noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.kind == "glo_gauss":
            return self._draw(n, gen)
        if self.uniform:
            return torch.rand(n, self.noise_dim, generator=gen) * 2 - 1
        return torch.randn(n, self.noise_dim, generator=gen)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor) -> torch.Tensor:
        noise = noise.to(self.device)
        if self.kind == "glann":
            z = self.T(noise)
        elif self.kind == "glo_gauss":
            z = project_to_sphere(noise)
        else:
            z = noise
        return self.G(z).float()

    @torch.no_grad()
    def generate(self, n: int, seed: int, batch_size: int = 1000) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, n, batch_size):
            out.append(to_uint8_images(self.decode(self.noise(min(batch_size, n - i), gen))).cpu())
        return torch.cat(out).numpy()


@dataclass(frozen=True)
class Draw:
    """What to draw from a trained method: ``n`` images from noise seeded by ``seed``, in batches
    of ``batch_size``, with a compare_gan v1 generator's batch-norm statistics as ``bn_stats``
    and ``bn_batches`` say (:class:`Sampler`)."""

    n: int
    seed: int = 0
    batch_size: int = 1000
    bn_stats: str = "recalibrated"
    bn_batches: int = BN_BATCHES


def sample(method: str, paths: dict, data_dir, out_dir, draw: Draw, device) -> dict:
    """samples.npz (the images, with the run's divergence and compute), samples.png,
    interpolation.png and nearest.png (each sample beside its nearest training image) in ``out_dir``."""
    n, seed = draw.n, draw.seed
    out_dir = Path(out_dir)
    sampler = Sampler(method, paths, device, bn_stats=draw.bn_stats, bn_batches=draw.bn_batches)
    t0 = time.perf_counter()
    images = sampler.generate(n, seed, draw.batch_size)
    seconds = time.perf_counter() - t0
    # diverged and the sampling cost travel with the samples: evaluate needs no second look at the model
    meta = {**sampler.meta, "network_evals": sampler.network_evals, "sample_seconds_per_1000": 1000.0 * seconds / n}
    save_npz(out_dir / "samples.npz", images=images, diverged=np.array(meta["diverged"]),
             diverged_epoch=np.array(meta["diverged_epoch"] or 0), train_seconds=np.array(meta["train_seconds"]),
             images_processed=np.array(meta["images_processed"]), train_device=np.array(meta["train_device"]),
             network_evals=np.array(meta["network_evals"]),
             sample_seconds_per_1000=np.array(meta["sample_seconds_per_1000"]))
    save_grid(images[:64], out_dir / "samples.png", nrow=8)
    save_grid(interpolation(sampler, seed), out_dir / "interpolation.png", nrow=10)
    train, _ = load_prepared(data_dir, "train")
    save_grid(nearest_training(images[:16], train, device), out_dir / "nearest.png", nrow=8)
    return {"n": n, **meta}


@torch.no_grad()
def interpolation(sampler: Sampler, seed: int, rows: int = 8, steps: int = 10) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed + 12345)
    a, b = sampler.noise(rows, gen), sampler.noise(rows, gen)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    path = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, -1)
    return to_uint8_images(sampler.decode(path)).cpu().numpy()


@torch.no_grad()
def nearest_training(samples: np.ndarray, train: np.ndarray, device) -> np.ndarray:
    """Pairs (sample, its nearest training image in pixel L2), interleaved."""
    q = to_float_images(torch.from_numpy(samples).to(device)).flatten(1)
    p = to_float_images(torch.from_numpy(train).to(device)).flatten(1)
    idx, _ = nearest_neighbors(q, p)
    pairs = np.stack([samples, train[idx.cpu().numpy()]], 1)
    return pairs.reshape(-1, *samples.shape[1:])
