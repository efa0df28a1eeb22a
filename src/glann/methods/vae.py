"""VAE baseline (Kingma & Welling 2014) as compare_gan v1's ``src/gans/VAE.py``.

Encoder: v1's discriminator network with a 2d output, read as the mean and, through
sigma = 1e-6 + softplus(.), the standard deviation of q(z|x) (v1's parameterisation);
decoder: v1's generator with ReLU activations (``VAE.decoder``); prior N(0, I), which
is also the sampling noise. Likelihood ``bernoulli`` (v1): the decoder output clipped
to [1e-8, 1 - 1e-8] and read as Bernoulli means. v1 sums the log-likelihood over the
pixel rows and columns and averages over the batch *and the channels* (its
``reduce_sum(..., [1, 2])`` on NHWC images): for colour images the reconstruction term
is the per-image sum divided by C; for grey images the two are the same. KL(q || p) =
1/2 sum(mu^2 + sigma^2 - log(1e-8 + sigma^2) - 1), as v1 writes it.
``likelihood: gaussian`` (not in v1) uses a fixed standard deviation ``vae.sigma``.
The ELBO per image (nats, in v1's channel-averaged units) is logged every epoch.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from glann.methods.models import Discriminator, V1Generator, to_float_images
from glann.runtime import autocast, to_device
from glann.methods.training import Loop, descend, epoch_batches, fit, load_train_images, seeded, TrainContext

log = logging.getLogger(__name__)

_CLIP = 1e-8  # v1: tf.clip_by_value(out, 1e-8, 1 - 1e-8)


def neg_log_likelihood(x_hat, x, likelihood: str, sigma: float = 0.1):
    """-log p(x | x_hat) per image (summed over pixels, averaged over channels as v1 does),
    always in fp32 outside autocast.

    CUDA autocast refuses ``binary_cross_entropy`` ("unsafe to autocast") and a
    per-image sum over 784-12,288 pixels loses digits in bf16, so mixed precision
    stops here whatever the caller's context.
    """
    with torch.autocast(x_hat.device.type, enabled=False):
        x_hat, x = x_hat.float(), x.float()
        channels = x.shape[1]
        if likelihood == "bernoulli":
            # NaN outputs (weights a diverged step made NaN) read as 0.5: the BCE kernel refuses NaN
            # (on CUDA a device-side assert); the KL is NaN then, and fit reports the divergence
            x_hat = torch.nan_to_num(x_hat, nan=0.5)
            per_pixel = F.binary_cross_entropy(x_hat.clamp(_CLIP, 1 - _CLIP), x, reduction="none")
            return per_pixel.flatten(1).sum(1) / channels
        d = x[0].numel()
        return ((x_hat - x).pow(2).flatten(1).sum(1) / (2 * sigma**2)
                + d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))) / channels


def posterior(stats: torch.Tensor):
    """(mu, sigma) from the encoder's 2d outputs: sigma = 1e-6 + softplus (v1 VAE.encoder)."""
    mu, raw = stats.float().chunk(2, dim=1)
    return mu, 1e-6 + F.softplus(raw)


def elbo_terms(encoder, decoder, x, likelihood: str, sigma: float, gen=None):
    mu, std = posterior(encoder(x))
    eps = to_device(torch.randn(mu.shape, generator=gen), x.device) if gen is not None else torch.randn_like(mu)
    z = mu + std * eps
    nll = neg_log_likelihood(decoder(z), x, likelihood, sigma)
    with torch.autocast(mu.device.type, enabled=False):
        kl = 0.5 * (mu.pow(2) + std.pow(2) - torch.log(1e-8 + std.pow(2)) - 1).sum(1)
    return nll, kl


def train_vae(data_dir, cfg: dict, ctx: TrainContext) -> dict:
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    gen = seeded(ctx.seed)
    d = cfg["latent_dim"]
    enc = Discriminator((h, w, c), batchnorm=cfg["encoder_batchnorm"], out_dim=2 * d).to(ctx.device)
    dec = V1Generator(d, h, c, "relu").to(ctx.device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=cfg["lr"],
                           betas=tuple(cfg["betas"]))

    def step(epoch: int, poison: bool) -> dict:
        enc.train()
        dec.train()
        tot_nll = tot_kl = 0.0
        seen = 0
        for idx in epoch_batches(n, cfg["batch_size"], gen, ctx.device, drop_last=True):
            x = to_float_images(images[idx])
            with autocast(ctx.device, ctx.amp):
                nll, kl = elbo_terms(enc, dec, x, cfg["likelihood"], cfg["sigma"], gen)
            descend((nll + kl).mean(), poison, opt)
            seen += len(idx)
            tot_nll += nll.detach().sum().double()  # on the device: read once per epoch (fit)
            tot_kl += kl.detach().sum().double()
        return {"elbo": -(tot_nll + tot_kl) / seen, "nll": tot_nll / seen, "kl": tot_kl / seen, "images": seen}

    def final() -> dict:
        # the decoder is the generator; the encoder is not stored (nothing samples with it)
        return {"generator": dec.state_dict(), "noise_dim": d,
                "image_shape": [h, w, c], "generator_arch": "compare_gan_v1",
                "generator_activation": dec.activation, "noise": "normal"}

    return fit(Loop("train_vae", "vae", cfg, {"encoder": enc, "generator": dec, "opt": opt}, gen, step, final,
                    watch=("elbo",), hint="Lower vae.lr."), ctx)
