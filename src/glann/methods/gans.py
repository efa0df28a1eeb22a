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

import torch
import torch.nn.functional as F

from glann.methods.optim import TFRMSProp
from glann.methods.models import BEGANDiscriminator, Discriminator, V1Generator, to_float_images
from glann.runtime import autocast
from glann.methods.training import Slot, descend, epoch_batches, fit, load_train_images, seeded, TrainContext

log = logging.getLogger(__name__)

GAN_KINDS = ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began")
_WASSERSTEIN = ("wgan", "wgan_gp")
_RESAMPLE_FOR_G = ("wgan_gp",)  # v1: WGAN_GP.resample_before_generator() is True
_SLOPE_EPS = 1e-4               # v1 WGAN_GP/DRAGAN: sqrt(0.0001 + sum g^2)


def uniform_noise(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """z ~ U(-1, 1)^dim (v1's AbstractGAN.z_generator)."""
    return torch.rand(n, dim, generator=gen) * 2 - 1


def penalty_slopes(out: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """E[(sqrt(1e-4 + ||grad_points sum(out)||^2) - 1)^2] (per-image gradient norms)."""
    (grad,) = torch.autograd.grad(out.sum(), points, create_graph=True)
    slopes = (_SLOPE_EPS + grad.flatten(1).pow(2).sum(1)).sqrt()
    return (slopes - 1).pow(2).mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty at xhat = real + alpha (fake - real), on the critic's raw output."""
    xhat = (real + alpha * (fake - real)).requires_grad_(True)
    return penalty_slopes(critic(xhat).float(), xhat)


def dragan_perturbed(real: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v1 DRAGAN.get_perturbed_batch: x + 0.5 std(x) u, std over the whole batch, u in [0, 1)."""
    return real + 0.5 * real.std() * u


def dragan_penalty(critic, real: torch.Tensor, perturbed: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """DRAGAN's penalty at xhat = real + alpha (perturbed - real), on D's sigmoid output."""
    xhat = (real + alpha * (perturbed - real)).requires_grad_(True)
    return penalty_slopes(torch.sigmoid(critic(xhat).float()), xhat)


def d_loss(kind: str, d_real, d_fake):
    """The discriminator's loss from its raw outputs on a real and a fake batch."""
    if kind in ("mmgan", "nsgan", "dragan"):
        return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    if kind == "lsgan":
        return 0.5 * ((torch.sigmoid(d_real) - 1).pow(2).mean() + torch.sigmoid(d_fake).pow(2).mean())
    if kind in _WASSERSTEIN:
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"d_loss: unknown kind {kind!r} (began: began_losses)")


def g_loss(kind: str, d_fake):
    """The generator's loss from D's raw output on a fake batch."""
    if kind in ("nsgan", "dragan"):
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    if kind == "mmgan":
        return -F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    if kind == "lsgan":
        return 0.5 * (torch.sigmoid(d_fake) - 1).pow(2).mean()
    if kind in _WASSERSTEIN:
        return -d_fake.mean()
    raise ValueError(f"g_loss: unknown kind {kind!r} (began: began_losses)")


def reconstruction_error(autoencoder, x: torch.Tensor) -> torch.Tensor:
    """BEGAN's e(x) = mean |AE(x) - x| over the batch's pixels (v1 BEGAN.discriminator)."""
    return (autoencoder(x).float() - x.float()).abs().mean()


def began_losses(err_real, err_fake, k: float, gamma: float) -> dict:
    """BEGAN (Berthelot et al. Eq. 4): L_D, L_G, the measure M and the k_t update direction."""
    balance = gamma * err_real - err_fake
    return {"d": err_real - k * err_fake, "g": err_fake, "M": err_real + balance.abs(), "balance": balance}


def _optimizer(params, cfg: dict):
    if cfg.get("optimizer", "adam") == "rmsprop":  # v1 WGAN's option: TF1's RMSProp (glann.methods.optim)
        return TFRMSProp(params, lr=cfg["lr"])
    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]))


def _g_step_due(step: int, n_critic: int) -> bool:
    """v1 ``run_single_train_step``: G steps when ``(counter - 1) % disc_iters == 0`` or it has
    no loss yet (counter 0)."""
    return step == 0 or (step - 1) % n_critic == 0


def train_gan(kind: str, data_dir, cfg: dict, ctx: TrainContext) -> dict:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN kind {kind!r}; known: {', '.join(GAN_KINDS)}")
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    gen = seeded(ctx.seed)
    latent = cfg["latent_dim"]
    G = V1Generator(latent, h, c, "lrelu").to(ctx.device)
    if kind == "began":
        D = BEGANDiscriminator((h, w, c), batchnorm=cfg["d_batchnorm"]).to(ctx.device)
    else:
        D = Discriminator((h, w, c), batchnorm=(kind != "wgan_gp") and cfg["d_batchnorm"]).to(ctx.device)
    opt_g, opt_d = _optimizer(G.parameters(), cfg), _optimizer(D.parameters(), cfg)
    n_critic, joint, bs = cfg["critic_steps"], cfg["d_joint_batch"], cfg["batch_size"]
    per_epoch = n // bs
    k_t = Slot(torch.zeros((), device=ctx.device))  # BEGAN's equilibrium variable k_t, k_0 = 0 (v1)

    def discriminate(real, fake):
        """(D(real), D(fake)): two calls (v1), or one on the concatenated batch."""
        if joint:
            out = D(torch.cat([real, fake])).float()
            return out[: len(real)], out[len(real):]
        return D(real).float(), D(fake).float()

    def d_objective(real, fake, z_gen) -> torch.Tensor:
        if kind == "began":
            with autocast(ctx.device, ctx.amp):
                err_r, err_f = reconstruction_error(D, real), reconstruction_error(D, fake)
            return began_losses(err_r, err_f, k_t.value, cfg["gamma"])["d"]
        with autocast(ctx.device, ctx.amp):
            logits = discriminate(real, fake)
        loss = d_loss(kind, *logits)  # fp32, outside autocast
        if kind == "wgan_gp":
            alpha = torch.rand(len(real), 1, 1, 1, generator=z_gen).to(ctx.device)
            loss = loss + cfg["gp_lambda"] * gradient_penalty(D, real, fake, alpha)
        elif kind == "dragan":
            u = torch.rand(real.shape, generator=z_gen).to(ctx.device)
            alpha = torch.rand(len(real), 1, 1, 1, generator=z_gen).to(ctx.device)
            loss = loss + cfg["gp_lambda"] * dragan_penalty(D, real, dragan_perturbed(real, u), alpha)
        return loss

    def g_objective(real, z) -> torch.Tensor:
        with autocast(ctx.device, ctx.amp):
            fake = G(z).float()
            if kind == "began":
                return reconstruction_error(D, fake)
            out = discriminate(real, fake)[1] if joint else D(fake).float()
        return g_loss(kind, out)

    def step(epoch: int, poison: bool) -> dict:
        G.train()
        D.train()
        sums = {"d_loss": 0.0, "g_loss": 0.0, **({"M": 0.0, "k": 0.0} if kind == "began" else {})}
        steps = {"d_loss": 0, "g_loss": 0}
        for i, idx in enumerate(epoch_batches(n, bs, gen, ctx.device, drop_last=True)):
            t = (epoch - 1) * per_epoch + i  # v1's global step counter
            real = to_float_images(images[idx])
            z = uniform_noise(len(idx), latent, gen).to(ctx.device)
            with torch.no_grad(), autocast(ctx.device, ctx.amp):
                fake = G(z).float()
            loss_d = d_objective(real, fake, gen)
            sums["d_loss"] += descend(loss_d, poison, opt_d)
            steps["d_loss"] += 1
            if kind == "wgan":
                with torch.no_grad():
                    for p in D.parameters():
                        p.clamp_(-cfg["clip"], cfg["clip"])
            if _g_step_due(t, n_critic):
                if kind in _RESAMPLE_FOR_G:
                    z = uniform_noise(len(idx), latent, gen).to(ctx.device)
                sums["g_loss"] += descend(g_objective(real, z), False, opt_g)
                steps["g_loss"] += 1
            if kind == "began":  # v1 after_training_step_hook: k from the updated nets, same batch
                with torch.no_grad(), autocast(ctx.device, ctx.amp):
                    terms = began_losses(reconstruction_error(D, real), reconstruction_error(D, G(z).float()),
                                         k_t.value, cfg["gamma"])
                k_t.value = k_t.value + cfg["lambda_k"] * terms["balance"].float()
                sums["M"] += terms["M"].double()  # on the device: read once per epoch (fit)
                sums["k"] += k_t.value.double()
        out = {k: sums[k] / max(steps.get(k, steps["d_loss"]), 1) for k in sums}
        return {**out, "images": steps["d_loss"] * bs}

    def final() -> dict:
        return {"generator": G.state_dict(), "noise_dim": latent, "image_shape": [h, w, c],
                "generator_arch": "compare_gan_v1", "generator_activation": G.activation, "noise": "uniform"}

    state = {"generator": G, "discriminator": D, "opt_g": opt_g, "opt_d": opt_d}
    if kind == "began":
        state["k"] = k_t
    return fit(f"train_{kind}", kind, cfg, state, gen, step, final, ctx,
               watch=("d_loss", "g_loss"), rollback="generator")
