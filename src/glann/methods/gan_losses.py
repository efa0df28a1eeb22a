"""The losses of the GAN baselines, as pure functions of D's outputs (glann.methods.gans trains
them; its docstring gives each kind's equations and :data:`glann.methods.gans.KINDS` which
kind uses which)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SLOPE_EPS = 1e-4               # v1 WGAN_GP/DRAGAN: sqrt(0.0001 + sum g^2)


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


def bce_d_loss(d_real, d_fake):
    """-log s(l_x) - log(1 - s(l_G)): mmgan's, nsgan's and dragan's L_D."""
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def minimax_g_loss(d_fake):
    """log(1 - s(l_G)): mmgan's saturating L_G."""
    return -F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))


def nonsaturating_g_loss(d_fake):
    """-log s(l_G): nsgan's and dragan's L_G."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def ls_d_loss(d_real, d_fake):
    """LSGAN's L_D on D's sigmoid output (v1 LSGAN.py)."""
    return 0.5 * ((torch.sigmoid(d_real) - 1).pow(2).mean() + torch.sigmoid(d_fake).pow(2).mean())


def ls_g_loss(d_fake):
    """LSGAN's L_G on D's sigmoid output."""
    return 0.5 * (torch.sigmoid(d_fake) - 1).pow(2).mean()


def wasserstein_d_loss(d_real, d_fake):
    """E[l_G] - E[l_x]: the critic's loss of wgan and wgan_gp."""
    return d_fake.mean() - d_real.mean()


def wasserstein_g_loss(d_fake):
    """-E[l_G]."""
    return -d_fake.mean()


def reconstruction_error(autoencoder, x: torch.Tensor) -> torch.Tensor:
    """BEGAN's e(x) = mean |AE(x) - x| over the batch's pixels (v1 BEGAN.discriminator)."""
    return (autoencoder(x).float() - x.float()).abs().mean()


def began_losses(err_real, err_fake, k: float, gamma: float) -> dict:
    """BEGAN (Berthelot et al. Eq. 4): L_D, L_G, the measure M and the k_t update direction."""
    balance = gamma * err_real - err_fake
    return {"d": err_real - k * err_fake, "g": err_fake, "M": err_real + balance.abs(), "balance": balance}
