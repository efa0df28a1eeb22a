"""Flow matching (conditional flow matching with the straight, "rectified" path).

Lipman et al. 2023 ("Flow Matching for Generative Modeling", ICLR) and Liu et al. 2023
("Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow", ICLR).
Noise x0 ~ N(0, I) of the image's shape, data x1 (pixels mapped to [-1, 1]), t ~ U(0, 1):

    x_t = (1 - (1 - sigma_min) t) x0 + t x1                (Lipman et al. eq. 22, the OT path)
    u_t = x1 - (1 - sigma_min) x0                          (its target velocity, eq. 23)
    loss = mean over the batch and every pixel of (v_theta(x_t, t) - u_t)^2

(Lipman et al.'s CFM loss, eq. 9 with eq. 23's target, averaged over the pixels rather than
summed: a constant factor of C*H*W, the learning rate absorbs it); ``sigma_min = 0`` is Liu et
al.'s rectified flow (their eq. 1, X_t = t X1 + (1 - t) X0, target X1 - X0). Samples: the ODE
dx/dt = v_theta(x, t) integrated from t = 0 (noise) to t = 1 with ``steps`` equal steps of
Euler's method (``steps`` network evaluations per image) or Heun's (``2 * steps``), then mapped
back to [0, 1].

The velocity field is a small convolutional U-Net (Ronneberger et al. 2015; the
time-conditioned residual blocks of Ho et al. 2020's DDPM U-Net, without attention): 2x2
patches in and out (pixel (un)shuffle), two resolution levels (H/2 and H/4; image size divisible
by 4: 16x16 to 64x64, and MNIST's 28), a residual block per level on the way down, in the middle
and on the way up, skip connections by concatenation, GroupNorm and SiLU, a sinusoidal time
embedding added in every block, and a zero-initialised output convolution (the untrained
field is 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glann.methods.models import to_float_images
from glann.methods.training import Loop, TrainContext, descend, epoch_batches, fit, load_train_images, seeded
from glann.runtime import autocast, to_device

SOLVERS = ("euler", "heun")


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017; DDPM's, with t scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + the time embedding's projection, GroupNorm-SiLU-conv, + skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, temb):
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class VelocityUNet(nn.Module):
    """v_theta(x, t): images (N, C, H, W) in [-1, 1]-scale and times (N,) -> velocities (N, C, H, W).

    The image enters as 2x2 patches (pixel unshuffle: 4C channels at H/2, as a patch-size-2
    stem) and leaves through the inverse shuffle, so the convolutions run at H/2 and H/4: a
    quarter of a full-resolution U-Net's arithmetic, which is what a CPU can afford."""

    def __init__(self, channels: int, size: int, width: int = 32):
        super().__init__()
        if size % 4:
            raise ValueError(f"flow: image size {size} must be divisible by 4 (2x2 patches, then one 2x downsampling)")
        self.channels, self.size, self.width = channels, size, width
        w1, w2 = width, 2 * width
        t_dim = 4 * width
        self.emb_dim = width  # the sinusoidal embedding's length, before the MLP
        self.time_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * channels, w1, 3, padding=1))
        self.down0 = ResBlock(w1, w1, t_dim)
        self.pool = nn.Conv2d(w1, w1, 3, stride=2, padding=1)
        self.down1 = ResBlock(w1, w2, t_dim)
        self.mid = ResBlock(w2, w2, t_dim)
        self.up1 = ResBlock(w2 + w2, w2, t_dim)
        self.up0 = ResBlock(w2 + w1, w1, t_dim)
        self.unpool = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Sequential(_norm(w1), nn.SiLU(), nn.Conv2d(w1, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, t):
        temb = self.time_mlp(time_embedding(t, self.emb_dim))
        h0 = self.down0(self.stem(x), temb)                       # H/2
        h1 = self.down1(self.pool(h0), temb)                      # H/4
        h = self.mid(h1, temb)                                    # H/4
        h = self.up1(torch.cat([h, h1], 1), temb)                 # H/4
        h = self.up0(torch.cat([self.unpool(h), h0], 1), temb)    # H/2
        return self.out(h)                                        # H


def straight_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float = 0.0):
    """(x_t, u_t) of the OT / rectified path between noise ``x0`` and data ``x1`` at times ``t`` (N,)."""
    tt = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    x_t = (1 - (1 - sigma_min) * tt) * x0 + tt * x1
    return x_t, x1 - (1 - sigma_min) * x0


def flow_matching_loss(velocity: nn.Module, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
                       sigma_min: float = 0.0) -> torch.Tensor:
    """The CFM loss of one batch: mean over the batch and every pixel of (v(x_t, t) - u_t)^2."""
    x_t, target = straight_path(x0, x1, t, sigma_min)
    return (velocity(x_t, t).float() - target.float()).pow(2).mean()


def network_evals(solver: str, steps: int) -> int:
    """Velocity evaluations per sample: Euler one per step, Heun two."""
    if solver not in SOLVERS:
        raise ValueError(f"flow.solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    return steps * (2 if solver == "heun" else 1)


@torch.no_grad()
def integrate(velocity, x0: torch.Tensor, steps: int, solver: str = "euler") -> torch.Tensor:
    """x(1) of dx/dt = velocity(x, t) from x(0) = ``x0``, ``steps`` equal steps of Euler or Heun."""
    network_evals(solver, steps)  # validates the solver
    if steps < 1:
        raise ValueError(f"flow.steps must be at least 1, not {steps}")
    x = x0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((len(x),), i * dt, device=x.device, dtype=x.dtype)
        v = velocity(x, t)
        if solver == "euler":
            x = x + dt * v
        else:
            x_next = x + dt * v
            v_next = velocity(x_next, t + dt)
            x = x + 0.5 * dt * (v + v_next)
    return x


class FlowGenerator(nn.Module):
    """noise (N, C*H*W) -> images (N, C, H, W) in [0, 1]: the ODE solved from the noise, the
    sampler's ``G``. Its parameters are the velocity field's (state dict keys ``velocity.*``)."""

    def __init__(self, image_shape, width: int, steps: int, solver: str):
        super().__init__()
        h, w, c = image_shape
        self.image_shape, self.steps, self.solver = list(image_shape), steps, solver
        self.velocity = VelocityUNet(c, h, width)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        h, w, c = self.image_shape
        x1 = integrate(self.velocity, noise.view(len(noise), c, h, w).float(), self.steps, self.solver)
        return (x1 + 1) / 2


def build_flow_generator(final: dict) -> FlowGenerator:
    """The FlowGenerator a flow checkpoint (or snapshot) holds, with its configured solver."""
    cfg = final["config"]
    return FlowGenerator(final["image_shape"], cfg["width"], cfg["steps"], cfg["solver"])


def train_flow(data_dir, cfg: dict, ctx: TrainContext) -> dict:
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    gen = seeded(ctx.seed)
    network_evals(cfg["solver"], cfg["steps"])  # a bad solver stops before training, not at sampling
    model = FlowGenerator((h, w, c), cfg["width"], cfg["steps"], cfg["solver"]).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))

    def step(epoch: int, poison: bool) -> dict:
        model.train()
        total, seen = 0.0, 0
        for idx in epoch_batches(n, cfg["batch_size"], gen, ctx.device):
            x1 = to_float_images(images[idx]) * 2 - 1
            x0 = to_device(torch.randn(x1.shape, generator=gen), ctx.device)
            t = to_device(torch.rand(len(idx), generator=gen), ctx.device)
            with autocast(ctx.device, ctx.amp):
                loss = flow_matching_loss(model.velocity, x1, x0, t, cfg["sigma_min"])
            total += descend(loss, poison, opt) * len(idx)
            seen += len(idx)
        return {"loss": total / seen, "images": seen}

    def final() -> dict:
        return {"generator": model.state_dict(), "noise_dim": h * w * c, "image_shape": [h, w, c],
                "generator_arch": "flow_unet", "noise": "normal",
                "network_evals": network_evals(cfg["solver"], cfg["steps"])}

    return fit(Loop("train_flow", "flow", cfg, {"generator": model, "opt": opt}, gen, step, final,
                    hint="Lower flow.lr."), ctx)
