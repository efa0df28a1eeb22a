"""Sampling every method the same way, plus the grids a researcher looks at.

- glann:      e ~ N(0, I_32), z = T(e), x = G(z)          (GLANN Sec. 3.3)
- glo_gauss:  z ~ N(mu, Sigma) fitted to GLO's codes (full covariance), projected
              onto the sphere as the codes were, x = G(z)  (GLO paper, Sec. 4)
- imle_pixel, nsgan, lsgan, wgan_gp, vae:  z ~ N(0, I_64), x = G(z)

Outputs: samples.npz (uint8 NHWC), samples.png (8x8 grid), interpolation.png
(rows walk linearly between two noise vectors), nearest.png (each sample beside
its nearest training image in pixels: the memorisation check).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .atomic import save_npz, torch_save
from .datasets import load_prepared
from .glo import load_glo_generator, project_to_sphere
from .grids import save_grid
from .models import IMLEMapping, make_generator, to_float_images, to_uint8_images
from .nn_search import nearest_neighbors

log = logging.getLogger(__name__)


def fit_gaussian(glo_path, out_path) -> dict:
    """Full-covariance Gaussian fit to GLO's trained codes (no retraining)."""
    glo = torch.load(glo_path, map_location="cpu", weights_only=False)
    codes = glo["codes"].double()
    mean = codes.mean(0)
    cov = torch.cov(codes.T)
    model = {"kind": "glo_gauss", "mean": mean, "cov": cov, "glo_path": str(glo_path),
             "diverged": False}
    torch_save(out_path, model)
    return model


def gaussian_sampler(mean: torch.Tensor, cov: torch.Tensor, jitter: float = 1e-6):
    """A function n, gen -> n draws of N(mean, cov) (Cholesky of cov + jitter*I)."""
    d = mean.shape[0]
    L = torch.linalg.cholesky(cov.double() + jitter * torch.eye(d, dtype=torch.float64))

    def draw(n: int, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, d, generator=gen, dtype=torch.float64)
        return (mean.double() + eps @ L.T).float()

    return draw


class Sampler:
    """noise -> images for one trained method; ``noise(n, gen)`` draws its input noise."""

    def __init__(self, method: str, paths: dict, device):
        self.device = device
        self.method = method
        if method in ("glann", "glo_gauss"):
            glo = torch.load(paths["glo"], map_location="cpu", weights_only=False)
            self.G = load_glo_generator(glo, device)
            self.image_shape = glo["image_shape"]
            if method == "glann":
                imle = torch.load(paths["imle"], map_location="cpu", weights_only=False)
                self.T = IMLEMapping(imle["noise_dim"], imle["latent_dim"], imle["config"]["hidden"])
                self.T.load_state_dict(imle["mapping"])
                self.T = self.T.to(device).eval()
                self.noise_dim = imle["noise_dim"]
                self.meta = {"diverged": False}
            else:
                fit = torch.load(paths["model"], map_location="cpu", weights_only=False)
                self._draw = gaussian_sampler(fit["mean"], fit["cov"])
                self.noise_dim = fit["mean"].shape[0]
                self.meta = {"diverged": False}
        else:
            model = torch.load(paths["model"], map_location="cpu", weights_only=False)
            cfg = model["config"]
            self.G = make_generator(model["noise_dim"], model["image_shape"], cfg["generator"]["arch"],
                                    cfg["generator"]["batchnorm"])
            self.G.load_state_dict(model["generator"])
            self.G = self.G.to(device).eval()
            self.image_shape = model["image_shape"]
            self.noise_dim = model["noise_dim"]
            self.meta = {"diverged": bool(model.get("diverged")), "diverged_epoch": model.get("diverged_epoch")}

    def noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.method == "glo_gauss":
            return self._draw(n, gen)
        return torch.randn(n, self.noise_dim, generator=gen)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor) -> torch.Tensor:
        noise = noise.to(self.device)
        if self.method == "glann":
            z = self.T(noise)
        elif self.method == "glo_gauss":
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


def sample(method: str, paths: dict, data_dir, out_dir, n: int, seed: int, device,
           batch_size: int = 1000) -> dict:
    out_dir = Path(out_dir)
    sampler = Sampler(method, paths, device)
    images = sampler.generate(n, seed, batch_size)
    save_npz(out_dir / "samples.npz", images=images)
    save_grid(images[:64], out_dir / "samples.png", nrow=8)
    save_grid(interpolation(sampler, seed), out_dir / "interpolation.png", nrow=10)
    train, _ = load_prepared(data_dir, "train")
    save_grid(nearest_training(images[:16], train, device), out_dir / "nearest.png", nrow=8)
    return {"n": n, **sampler.meta}


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
