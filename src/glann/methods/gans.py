"""The GAN baselines of GLANN's Table 1, as compare_gan v1 trains them (Lucic et al. 2018).

Reference: google/compare_gan, ``compare_gan/src/gans/{GAN,LSGAN,WGAN,WGAN_GP,DRAGAN,
BEGAN,abstract_gan}.py`` and ``src/params.py`` (v1's default settings: sample 0 of its
search, not the best-of-100 settings behind the FIDs GLANN's Table 1 copies). With s = sigmoid, D's raw output l and the same batch of reals x and fakes G(z):

- mmgan   (GAN_MINMAX; Goodfellow et al. 2014, Eq. 1): L_D = -log s(l_x) - log(1 - s(l_G));
          L_G = log(1 - s(l_G)) (the saturating minimax loss, = -L_D's fake term).
- nsgan   (GAN): L_D as mmgan; L_G = -log s(l_G) (non-saturating).
- lsgan   (Mao et al. 2017 Eq. 2, a=0, b=c=1, on D's *sigmoid* output as v1's LSGAN.py):
          L_D = 1/2 E[(s(l_x) - 1)^2] + 1/2 E[s(l_G)^2]; L_G = 1/2 E[(s(l_G) - 1)^2].
- wgan    (Arjovsky et al. 2017): L_D = E[l_G] - E[l_x]; L_G = -E[l_G]; every D parameter
          clipped to [-c, c] after each D step (c = 0.01); 5 D steps per G step.
- wgan_gp (Gulrajani et al. 2017): WGAN's losses + lambda E[(||grad l(xhat)|| - 1)^2] at
          xhat = x + alpha (G(z) - x), alpha ~ U(0, 1) per image; ||.|| = sqrt(1e-4 + sum
          g^2) as v1; no BN in the critic; fresh z for the G step (v1's
          ``resample_before_generator``).
- dragan  (Kodali et al. 2017): nsgan's losses + lambda E[(||grad s(l(xhat))|| - 1)^2] at
          xhat = x + alpha (x_p - x), x_p = x + 0.5 std(x) u, u ~ U[0, 1) per pixel (v1
          perturbs real data only and differentiates D's sigmoid output).
- began   (Berthelot et al. 2017): D is an auto-encoder, e(v) = mean |AE(v) - v|;
          L_D = e(x) - k_t e(G(z)); L_G = e(G(z)); after every step
          k_{t+1} = k_t + lambda_k (gamma e(x) - e(G(z))) (v1 does not clip k); the
          convergence measure M = e(x) + |gamma e(x) - e(G(z))| is logged.

Every kind, as v1's ``run_single_train_step``: D is called separately on the real and
the fake batch (``d_joint_batch: true`` is compare_gan's later single call on both);
one D step per batch, a G step on global steps 0, 1, 1 + n, 1 + 2n, ... (n =
``critic_steps``) with the D step's z unless the kind resamples; z ~ U(-1, 1)^64; Adam
(lr, beta1, beta2 0.999) for D and G. The networks and their init are in
:mod:`glann.methods.models`.

A non-finite loss ends training: the weights of the last finished epoch are kept and
the output records ``diverged: true`` and the epoch, so the pipeline goes on with
every other method and the summary marks this one as diverged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from glann.methods.gan_losses import (bce_d_loss, began_losses, dragan_penalty, dragan_perturbed, gradient_penalty,
                                      ls_d_loss, ls_g_loss, minimax_g_loss, nonsaturating_g_loss,
                                      reconstruction_error, wasserstein_d_loss, wasserstein_g_loss)
from glann.methods.optim import TFRMSProp
from glann.methods.models import BEGANDiscriminator, Discriminator, V1Generator, to_float_images
from glann.runtime import autocast, to_device
from glann.methods.training import Loop, Slot, descend, epoch_batches, fit, load_train_images, seeded, TrainContext

log = logging.getLogger(__name__)


def uniform_noise(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """z ~ U(-1, 1)^dim (v1's AbstractGAN.z_generator)."""
    return torch.rand(n, dim, generator=gen) * 2 - 1


def wgan_gp_term(critic, real, fake, gen):
    """WGAN-GP's penalty with alpha ~ U(0, 1) per image, drawn from the job's generator."""
    alpha = to_device(torch.rand(len(real), 1, 1, 1, generator=gen), real.device)
    return gradient_penalty(critic, real, fake, alpha)


def dragan_term(critic, real, fake, gen):
    """DRAGAN's penalty: u ~ U[0, 1) per pixel, then alpha ~ U(0, 1) per image (v1's order)."""
    u = to_device(torch.rand(real.shape, generator=gen), real.device)
    alpha = to_device(torch.rand(len(real), 1, 1, 1, generator=gen), real.device)
    return dragan_penalty(critic, real, dragan_perturbed(real, u), alpha)


def d_loss(kind: str, d_real, d_fake):
    """The discriminator's loss of ``kind`` from its raw outputs on a real and a fake batch."""
    objective = KINDS.get(kind)
    if not isinstance(objective, LogitObjective):
        raise ValueError(f"d_loss: unknown kind {kind!r} (began: began_losses)")
    return objective.d_loss(d_real, d_fake)


def g_loss(kind: str, d_fake):
    """The generator's loss of ``kind`` from D's raw output on a fake batch."""
    objective = KINDS.get(kind)
    if not isinstance(objective, LogitObjective):
        raise ValueError(f"g_loss: unknown kind {kind!r} (began: began_losses)")
    return objective.g_loss(d_fake)


def _optimizer(params, cfg: dict):
    if cfg.get("optimizer", "adam") == "rmsprop":  # v1 WGAN's option: TF1's RMSProp (glann.methods.optim)
        return TFRMSProp(params, lr=cfg["lr"])
    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]))


def _g_step_due(step: int, n_critic: int) -> bool:
    """v1 ``run_single_train_step``: G steps when ``(counter - 1) % disc_iters == 0`` or it has
    no loss yet (counter 0)."""
    return step == 0 or (step - 1) % n_critic == 0


@dataclass
class Nets:
    """One GAN run's networks and settings, as its objective sees them."""

    G: torch.nn.Module
    D: torch.nn.Module
    cfg: dict
    ctx: TrainContext
    gen: torch.Generator
    k: Slot  # BEGAN's equilibrium variable k_t (k_0 = 0, v1); unused by the other kinds

    def discriminate(self, real, fake):
        """(D(real), D(fake)): two calls (v1), or one on the concatenated batch (d_joint_batch)."""
        if self.cfg["d_joint_batch"]:
            out = self.D(torch.cat([real, fake])).float()
            return out[: len(real)], out[len(real):]
        return self.D(real).float(), self.D(fake).float()


class LogitObjective:
    """A kind whose D outputs one logit per image: L_D and L_G of D's raw outputs, an optional
    penalty (weighted by ``gp_lambda``) and v1's per-kind switches. Adding such a GAN is one
    entry of :data:`KINDS` (plus its losses, and its schema section)."""

    logs = ()  # per-epoch means the kind adds to d_loss and g_loss

    def __init__(self, d_loss, g_loss, penalty=None, *, critic_batchnorm=True, clip=False, resample_for_g=False):
        self.d_loss, self.g_loss, self.penalty = d_loss, g_loss, penalty
        self.critic_batchnorm = critic_batchnorm  # False: never BN in D (v1 WGAN-GP)
        self.clip = clip                          # clip every D weight to [-clip, clip] after each D step
        self.resample_for_g = resample_for_g      # a fresh z for the G step (v1 resample_before_generator)

    def critic(self, shape, cfg: dict) -> torch.nn.Module:
        return Discriminator(shape, batchnorm=self.critic_batchnorm and cfg["d_batchnorm"])

    def d_objective(self, nets: Nets, real, fake) -> torch.Tensor:
        with autocast(nets.ctx.device, nets.ctx.amp):
            logits = nets.discriminate(real, fake)
        loss = self.d_loss(*logits)  # fp32, outside autocast
        if self.penalty is not None:
            loss = loss + nets.cfg["gp_lambda"] * self.penalty(nets.D, real, fake, nets.gen)
        return loss

    def after_d_step(self, nets: Nets) -> None:
        if self.clip:
            with torch.no_grad():
                for p in nets.D.parameters():
                    p.clamp_(-nets.cfg["clip"], nets.cfg["clip"])

    def g_objective(self, nets: Nets, real, z) -> torch.Tensor:
        with autocast(nets.ctx.device, nets.ctx.amp):
            fake = nets.G(z).float()
            out = nets.discriminate(real, fake)[1] if nets.cfg["d_joint_batch"] else nets.D(fake).float()
        return self.g_loss(out)

    def after_step(self, nets: Nets, real, z, sums: dict) -> None:
        pass


class EquilibriumObjective:
    """BEGAN: D is an auto-encoder and both losses are of its reconstruction errors, balanced by
    k_t, which moves after every step (v1's after_training_step_hook)."""

    logs = ("M", "k")
    resample_for_g = False

    def critic(self, shape, cfg: dict) -> torch.nn.Module:
        return BEGANDiscriminator(shape, batchnorm=cfg["d_batchnorm"])

    def d_objective(self, nets: Nets, real, fake) -> torch.Tensor:
        with autocast(nets.ctx.device, nets.ctx.amp):
            err_r, err_f = reconstruction_error(nets.D, real), reconstruction_error(nets.D, fake)
        return began_losses(err_r, err_f, nets.k.value, nets.cfg["gamma"])["d"]

    def after_d_step(self, nets: Nets) -> None:
        pass

    def g_objective(self, nets: Nets, real, z) -> torch.Tensor:
        with autocast(nets.ctx.device, nets.ctx.amp):
            return reconstruction_error(nets.D, nets.G(z).float())

    def after_step(self, nets: Nets, real, z, sums: dict) -> None:
        """k from the updated nets on the same batch; M and k summed on the device (read once per epoch)."""
        with torch.no_grad(), autocast(nets.ctx.device, nets.ctx.amp):
            terms = began_losses(reconstruction_error(nets.D, real), reconstruction_error(nets.D, nets.G(z).float()),
                                 nets.k.value, nets.cfg["gamma"])
        nets.k.value = nets.k.value + nets.cfg["lambda_k"] * terms["balance"].float()
        sums["M"] += terms["M"].double()
        sums["k"] += nets.k.value.double()


# Every GAN of Table 1: its losses and switches (the equations are in the module docstring).
KINDS = {
    "mmgan": LogitObjective(bce_d_loss, minimax_g_loss),
    "nsgan": LogitObjective(bce_d_loss, nonsaturating_g_loss),
    "lsgan": LogitObjective(ls_d_loss, ls_g_loss),
    "wgan": LogitObjective(wasserstein_d_loss, wasserstein_g_loss, clip=True),
    "wgan_gp": LogitObjective(wasserstein_d_loss, wasserstein_g_loss, wgan_gp_term,
                              critic_batchnorm=False, resample_for_g=True),
    "dragan": LogitObjective(bce_d_loss, nonsaturating_g_loss, dragan_term),
    "began": EquilibriumObjective(),
}
GAN_KINDS = tuple(KINDS)


def train_gan(kind: str, data_dir, cfg: dict, ctx: TrainContext) -> dict:
    """Train one GAN of :data:`KINDS` with v1's shared step (module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown GAN kind {kind!r}; known: {', '.join(KINDS)}")
    objective = KINDS[kind]
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    gen = seeded(ctx.seed)
    latent = cfg["latent_dim"]
    G = V1Generator(latent, h, c, "lrelu").to(ctx.device)
    D = objective.critic((h, w, c), cfg).to(ctx.device)
    nets = Nets(G, D, cfg, ctx, gen, Slot(torch.zeros((), device=ctx.device)))
    opt_g, opt_d = _optimizer(G.parameters(), cfg), _optimizer(D.parameters(), cfg)
    n_critic, bs = cfg["critic_steps"], cfg["batch_size"]
    per_epoch = n // bs

    def step(epoch: int, poison: bool) -> dict:
        G.train()
        D.train()
        sums = {"d_loss": 0.0, "g_loss": 0.0, **{k: 0.0 for k in objective.logs}}
        steps = {"d_loss": 0, "g_loss": 0}
        for i, idx in enumerate(epoch_batches(n, bs, gen, ctx.device, drop_last=True)):
            t = (epoch - 1) * per_epoch + i  # v1's global step counter
            real = to_float_images(images[idx])
            z = to_device(uniform_noise(len(idx), latent, gen), ctx.device)
            with torch.no_grad(), autocast(ctx.device, ctx.amp):
                fake = G(z).float()
            sums["d_loss"] += descend(objective.d_objective(nets, real, fake), poison, opt_d)
            steps["d_loss"] += 1
            objective.after_d_step(nets)
            if _g_step_due(t, n_critic):
                if objective.resample_for_g:
                    z = to_device(uniform_noise(len(idx), latent, gen), ctx.device)
                sums["g_loss"] += descend(objective.g_objective(nets, real, z), False, opt_g)
                steps["g_loss"] += 1
            objective.after_step(nets, real, z, sums)
        out = {k: sums[k] / max(steps.get(k, steps["d_loss"]), 1) for k in sums}
        return {**out, "images": steps["d_loss"] * bs}

    def final() -> dict:
        return {"generator": G.state_dict(), "noise_dim": latent, "image_shape": [h, w, c],
                "generator_arch": "compare_gan_v1", "generator_activation": G.activation, "noise": "uniform"}

    state = {"generator": G, "discriminator": D, "opt_g": opt_g, "opt_d": opt_d}
    if isinstance(objective, EquilibriumObjective):
        state["k"] = nets.k
    return fit(Loop(f"train_{kind}", kind, cfg, state, gen, step, final,
                    watch=("d_loss", "g_loss"), rollback="generator"), ctx)
