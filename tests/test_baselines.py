"""Baselines: WGAN-GP penalty, VAE ELBO, GLO+Gaussian covariance, divergence handling."""

import numpy as np
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.atomic import torch_save
from glann.pipeline.config import fill_defaults, load_schema
from glann.methods.gans import gradient_penalty, train_gan
from glann.methods.imle import train_imle_pixel
from glann.methods.gaussian import fit_gaussian, gaussian_sampler
from glann.methods.sampling import Sampler
from glann.methods.vae import train_vae

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    real, fake = torch.randn(4, 1, 3, 4), torch.randn(4, 1, 3, 4)
    alpha = torch.rand(4, 1, 1, 1)
    expected = 0.0
    for i in range(4):  # one sample at a time, by hand
        x = (alpha[i] * fake[i] + (1 - alpha[i]) * real[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        expected += ((1e-4 + g.pow(2).sum()).sqrt() - 1) ** 2 / 4  # v1: sqrt(1e-4 + |g|^2)
    assert torch.allclose(gradient_penalty(critic, real, fake, alpha), expected, atol=1e-6)


def test_vae_elbo_improves(digits_dir, tmp_path):
    out = train_vae(digits_dir, {**CFG["vae"], "epochs": 4}, TrainContext(tmp_path / "vae.pt", 0, CPU))
    elbos = [r["elbo"] for r in out["history"]]
    assert elbos[-1] > elbos[0] + 5, elbos


def test_glo_gauss_samples_follow_the_fitted_covariance(tmp_path):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 8, generator=g)
    codes = torch.randn(3000, 8, generator=g) @ A.T + 2.0
    torch_save(tmp_path / "glo.pt", {"codes": codes})
    fit = fit_gaussian(tmp_path / "glo.pt", tmp_path / "model.pt")
    np.testing.assert_allclose(fit["cov"].numpy(), np.cov(codes.numpy(), rowvar=False), rtol=1e-6, atol=1e-8)
    draws = gaussian_sampler(fit["mean"], fit["cov"])(200_000, torch.Generator().manual_seed(1)).double()
    emp = torch.cov(draws.T)
    assert torch.allclose(emp, fit["cov"], atol=0.05 * fit["cov"].abs().max().item())
    assert torch.allclose(draws.mean(0), fit["mean"], atol=0.05)


def _check_samples(method, paths, shape):
    s = Sampler(method, paths, CPU)
    x = s.generate(64, seed=0)
    assert x.dtype == np.uint8 and x.shape == (64, *shape)
    assert x.min() >= 0 and x.max() <= 255 and x.std() > 0


def test_each_gan_trains_and_samples(digits_small_dir, tmp_path):
    for kind in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began"):
        out = train_gan(kind, digits_small_dir, {**CFG[kind], "epochs": 1}, TrainContext(tmp_path / f"{kind}.pt", 0, CPU, csv=tmp_path / f"{kind}.csv"))
        assert not out["diverged"] and len(out["history"]) == 1
        assert (tmp_path / f"{kind}.csv").read_text().startswith("epoch,d_loss,g_loss")
        _check_samples(kind, {"model": tmp_path / f"{kind}.pt"}, (16, 16, 1))


def test_imle_pixel_trains_and_samples(digits_dir, tmp_path):
    out = train_imle_pixel(digits_dir, {**CFG["imle_pixel"], "epochs": 2, "samples_factor": 2}, TrainContext(tmp_path / "m.pt", 0, CPU))
    assert out["history"][1]["loss"] < out["history"][0]["loss"]
    _check_samples("imle_pixel", {"model": tmp_path / "m.pt"}, (16, 16, 1))


def test_injected_nan_marks_gan_diverged(digits_small_dir, tmp_path):
    out = train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 3}, TrainContext(tmp_path / "m.pt", 0, CPU, fault={"nan_at_epoch": 2}))
    assert out["diverged"] and out["diverged_epoch"] == 2
    assert len(out["history"]) == 1  # epoch 1's weights kept
    blob = torch.load(tmp_path / "m.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in blob["generator"].values() if v.is_floating_point())
    _check_samples("nsgan", {"model": tmp_path / "m.pt"}, (16, 16, 1))
