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
from tqdm import tqdm

from .models import Discriminator, make_generator, to_float_images
from .runtime import Checkpointer, autocast, check_finite, rng_state, set_rng_state
from .training import EpochLog, epoch_batches, load_train_images

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
              csv_path=None, amp: str = "auto", fault: dict | None = None) -> dict:
    images = load_train_images(data_dir, device)
    n, h, w, c = images.shape
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d = cfg["latent_dim"]
    enc = Discriminator((h, w, c), batchnorm=True, out_dim=2 * d).to(device)
    dec = make_generator(d, (h, w, c), cfg["generator"]["arch"], cfg["generator"]["batchnorm"]).to(device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=cfg["lr"],
                           betas=tuple(cfg["betas"]))

    ckpt = Checkpointer(out_path)
    state = ckpt.load()
    start, history = 0, []
    if state is not None:
        enc.load_state_dict(state["encoder"])
        dec.load_state_dict(state["generator"])
        opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"], gen)
        start, history = state["epoch"], state["history"]
    elog = EpochLog(csv_path, tracker, history)

    for epoch in tqdm(range(start + 1, cfg["epochs"] + 1), desc="train_vae", initial=start,
                      total=cfg["epochs"], disable=None):
        elog.start_epoch()
        enc.train()
        dec.train()
        tot_nll = tot_kl = 0.0
        for idx in epoch_batches(n, cfg["batch_size"], gen, device, drop_last=True):
            x = to_float_images(images[idx])
            with autocast(device, amp):
                nll, kl = elbo_terms(enc, dec, x, cfg["likelihood"], cfg["sigma"], gen)
            loss = (nll + kl).mean()
            if fault and fault.get("nan_at_epoch") == epoch:
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_nll += nll.sum().item()
            tot_kl += kl.sum().item()
        steps = n - n % cfg["batch_size"]
        elbo = -(tot_nll + tot_kl) / steps
        check_finite(elbo, epoch, "train_vae", "Lower vae.lr.")
        elog.log(epoch, elbo=elbo, nll=tot_nll / steps, kl=tot_kl / steps)
        ckpt.save({"epoch": epoch, "encoder": enc.state_dict(), "generator": dec.state_dict(),
                   "opt": opt.state_dict(), "rng": rng_state(gen), "history": elog.rows, "config": cfg})

    final = {"kind": "vae", "generator": dec.state_dict(), "encoder": enc.state_dict(), "config": cfg,
             "noise_dim": d, "image_shape": [h, w, c], "history": elog.rows, "diverged": False,
             "seed": seed}
    elog.write()  # also when no epoch finished (diverged in the first)
    ckpt.finish(final)
    return final
