"""VAE baseline (Kingma & Welling 2014) on GLANN's generator.

Encoder: the compare_gan discriminator with a 2*d output (mean and log-variance);
decoder: the same generator G as every other method; prior N(0, I).
Likelihood ``bernoulli`` (default; pixels in [0, 1] read as Bernoulli means, the
usual choice for MNIST-like data) or ``gaussian`` (fixed standard deviation
config ``vae.sigma``). The ELBO per image,
  E_q[log p(x|z)] - KL(q(z|x) || N(0, I)),
is logged every epoch (nats).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from .models import Discriminator, make_generator, to_float_images
from .runtime import autocast
from .training import descend, epoch_batches, fit, load_train_images, seeded

log = logging.getLogger(__name__)


def neg_log_likelihood(x_hat, x, likelihood: str, sigma: float = 0.1):
    """-log p(x | x_hat) per image, always in fp32 outside autocast.

    CUDA autocast refuses ``binary_cross_entropy`` ("unsafe to autocast") and a
    per-image sum over 784-12,288 pixels loses digits in bf16, so mixed precision
    stops here whatever the caller's context.
    """
    with torch.autocast(x_hat.device.type, enabled=False):
        x_hat, x = x_hat.float(), x.float()
        if likelihood == "bernoulli":
            return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="none").flatten(1).sum(1)
        d = x[0].numel()
        return ((x_hat - x).pow(2).flatten(1).sum(1) / (2 * sigma**2)
                + d * (math.log(sigma) + 0.5 * math.log(2 * math.pi)))


def elbo_terms(encoder, decoder, x, likelihood: str, sigma: float, gen=None):
    stats = encoder(x)
    mu, logvar = stats.chunk(2, dim=1)
    logvar = logvar.clamp(-20, 10)
    eps = torch.randn(mu.shape, generator=gen).to(x.device) if gen is not None else torch.randn_like(mu)
    z = mu + eps * (0.5 * logvar).exp()
    nll = neg_log_likelihood(decoder(z), x, likelihood, sigma)
    with torch.autocast(mu.device.type, enabled=False):
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return nll, kl


def train_vae(data_dir, out_path, cfg: dict, seed: int, device: torch.device, tracker=None,
              csv_path=None, amp: str = "auto", fault: dict | None = None,
              snapshots: int = 0, snapshot_path=None) -> dict:
    images = load_train_images(data_dir, device)
    n, h, w, c = images.shape
    gen = seeded(seed)
    d = cfg["latent_dim"]
    enc = Discriminator((h, w, c), batchnorm=True, out_dim=2 * d).to(device)
    dec = make_generator(d, (h, w, c), cfg["generator"]["arch"], cfg["generator"]["batchnorm"]).to(device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=cfg["lr"],
                           betas=tuple(cfg["betas"]))

    def step(epoch: int, poison: bool) -> dict:
        enc.train()
        dec.train()
        tot_nll = tot_kl = 0.0
        seen = 0
        for idx in epoch_batches(n, cfg["batch_size"], gen, device, drop_last=True):
            x = to_float_images(images[idx])
            with autocast(device, amp):
                nll, kl = elbo_terms(enc, dec, x, cfg["likelihood"], cfg["sigma"], gen)
            loss = descend((nll + kl).mean(), poison, opt)
            seen += len(idx)
            if not math.isfinite(loss):
                # the weights are NaN now: the next batch's decoder output would make the Bernoulli
                # likelihood raise (on CUDA, a device-side assert) instead of fit's DivergedError
                return {"elbo": float("nan"), "nll": float("nan"), "kl": float("nan"), "images": seen}
            tot_nll += nll.sum().item()
            tot_kl += kl.sum().item()
        return {"elbo": -(tot_nll + tot_kl) / seen, "nll": tot_nll / seen, "kl": tot_kl / seen, "images": seen}

    def final() -> dict:
        return {"generator": dec.state_dict(), "encoder": enc.state_dict(), "noise_dim": d,
                "image_shape": [h, w, c]}

    return fit("train_vae", "vae", out_path, cfg, seed, {"encoder": enc, "generator": dec, "opt": opt}, gen,
               step, final, tracker=tracker, csv_path=csv_path, fault=fault,
               snapshots=snapshots, snapshot_path=snapshot_path, watch=("elbo",), device=device,
               hint="Lower vae.lr.")
