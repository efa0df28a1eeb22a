"""GLO + Gaussian (GLO paper, Bojanowski et al. 2018, Sec. 4): a full-covariance
Gaussian fitted to GLO's trained codes, sampled and projected onto the sphere as
the codes were. The baseline GLANN replaces with IMLE (GLANN Table 1, "GLO").
"""

from __future__ import annotations

import torch

from glann.atomic import load_torch, torch_save


def fit_gaussian(glo_path, out_path, seed: int = 0) -> dict:
    """Mean and covariance of GLO's codes (no retraining), saved as the method's checkpoint."""
    glo = load_torch(glo_path)
    codes = glo["codes"].double()
    model = {"kind": "glo_gauss", "seed": seed, "epochs": 0, "diverged": False, "diverged_epoch": None,
             "config": {}, "history": [], "mean": codes.mean(0), "cov": torch.cov(codes.T),
             "glo_path": str(glo_path)}
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
