"""GAN baselines on GLANN's generator: NS-GAN, LSGAN, WGAN-GP (Lucic et al. 2018 setting).

- nsgan: non-saturating GAN (Goodfellow et al. 2014, Sec. 3; DCGAN/compare_gan):
  D maximises log D(x) + log(1 - D(G(z))); G maximises log D(G(z)).
- lsgan: least squares GAN (Mao et al. 2017, Eq. 2 with a=0, b=c=1).
- wgan_gp: WGAN with gradient penalty (Gulrajani et al. 2017, Alg. 1):
  L_D = D(G(z)) - D(x) + lambda * (||grad_xhat D(xhat)||_2 - 1)^2, xhat on the
  segment between a real and a fake image; 5 critic steps per G step; no BN in
  the critic; Adam lr 1e-4, betas (0.5, 0.9).

The discriminator sees each step's real and fake images in one call on the
concatenated batch (compare_gan's default; its separate calls survive only as a
deprecated option), so train-mode BN normalises real and fake together instead
of normalising away whatever all fakes share. ``d_joint_batch: false`` restores
separate calls. The G step passes the same kind of joint batch (fresh fakes
beside the step's reals) and uses the fake half.

A non-finite loss ends training: the weights of the last finished epoch are
kept and the output records ``diverged: true`` and the epoch, so the pipeline
goes on with every other method and the summary marks this one as diverged.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .models import Discriminator, make_generator, to_float_images
from .runtime import autocast
from .training import descend, epoch_batches, fit, load_train_images, seeded

log = logging.getLogger(__name__)

GAN_KINDS = ("nsgan", "lsgan", "wgan_gp")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[(||grad_xhat critic(xhat)||_2 - 1)^2], xhat = alpha*real + (1-alpha)*fake."""
    xhat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = critic(xhat)
    (grad,) = torch.autograd.grad(out.sum(), xhat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def d_loss(kind: str, d_real, d_fake):
    if kind == "nsgan":
        return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    if kind == "lsgan":
        return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())
    return d_fake.mean() - d_real.mean()


def g_loss(kind: str, d_fake):
    if kind == "nsgan":
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    if kind == "lsgan":
        return 0.5 * (d_fake - 1).pow(2).mean()
    return -d_fake.mean()


def train_gan(kind: str, data_dir, out_path, cfg: dict, seed: int, device: torch.device, tracker=None,
              csv_path=None, amp: str = "auto", fault: dict | None = None,
              snapshots: int = 0, snapshot_path=None) -> dict:
    assert kind in GAN_KINDS
    images = load_train_images(data_dir, device)
    n, h, w, c = images.shape
    gen = seeded(seed)
    G = make_generator(cfg["latent_dim"], (h, w, c), cfg["generator"]["arch"],
                       cfg["generator"]["batchnorm"]).to(device)
    D = Discriminator((h, w, c), batchnorm=(kind != "wgan_gp") and cfg["d_batchnorm"]).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    n_critic = cfg["critic_steps"]
    joint = cfg["d_joint_batch"]

    def discriminate(real, fake):
        """(D(real), D(fake)): one call on the concatenated batch, or two calls."""
        if joint:
            out = D(torch.cat([real, fake])).float()
            return out[: len(real)], out[len(real):]
        return D(real).float(), D(fake).float()

    def step(epoch: int, poison: bool) -> dict:
        G.train()
        D.train()
        sums = {"d_loss": 0.0, "g_loss": 0.0}
        steps = {"d_loss": 0, "g_loss": 0}
        for i, idx in enumerate(epoch_batches(n, cfg["batch_size"], gen, device, drop_last=True)):
            real = to_float_images(images[idx])
            z = torch.randn(len(idx), cfg["latent_dim"], generator=gen).to(device)
            with autocast(device, amp):
                fake = G(z).float()
                logits = discriminate(real, fake.detach())
            loss_d = d_loss(kind, *logits)  # fp32, outside autocast
            if kind == "wgan_gp":
                alpha = torch.rand(len(idx), 1, 1, 1, generator=gen).to(device)
                loss_d = loss_d + cfg["gp_lambda"] * gradient_penalty(D, real, fake.detach(), alpha)
            sums["d_loss"] += descend(loss_d, poison, opt_d)
            steps["d_loss"] += 1
            if (i + 1) % n_critic == 0:
                z = torch.randn(len(idx), cfg["latent_dim"], generator=gen).to(device)
                with autocast(device, amp):
                    fake_logits = discriminate(real, G(z).float())[1]
                sums["g_loss"] += descend(g_loss(kind, fake_logits), False, opt_g)
                steps["g_loss"] += 1
        return {**{k: sums[k] / max(steps[k], 1) for k in sums}, "images": steps["d_loss"] * cfg["batch_size"]}

    def final() -> dict:
        return {"generator": G.state_dict(), "noise_dim": cfg["latent_dim"], "image_shape": [h, w, c]}

    return fit(f"train_{kind}", kind, out_path, cfg, seed,
               {"generator": G, "discriminator": D, "opt_g": opt_g, "opt_d": opt_d}, gen, step, final,
               tracker=tracker, csv_path=csv_path, fault=fault,
               snapshots=snapshots, snapshot_path=snapshot_path,
               watch=("d_loss", "g_loss"), rollback="generator",
               device=device)
