"""The networks: GLANN's released generator, compare_gan v1's GAN/VAE networks, IMLE's T.

Two generator families, on purpose (docs/methods.md, "Faithfulness ledger"):

- GLO / GLANN / pixel IMLE: GLANN's released ``_netG`` (yedidh/glann ``model.py``):
  fc 1024, LeakyReLU(0.2) (no BN); fc 128*(s/4)^2 [BN], LeakyReLU; deconv 4x4/2 -> 64
  [BN], LeakyReLU; deconv 4x4/2 -> C, sigmoid. BN on for MNIST/Fashion, off for
  CIFAR-10 (``batchnorm: auto``). ``arch: dcgan`` is an optional deeper net for 64x64.
- GANs and the VAE: compare_gan v1 (google/compare_gan ``src/gans/abstract_gan.py``,
  ``VAE.py``, ``BEGAN.py``, ``ops.py``), the networks of Lucic et al. 2018 whose FIDs
  GLANN's Table 1 copies, one family for every image size (CelebA-64 included):
  :class:`V1Generator`: fc 1024, BN, act; fc 128*(s/4)^2, BN, act; deconv 4x4/2 -> 64,
  BN, act; deconv 4x4/2 -> C, sigmoid (act = LeakyReLU(0.2) for the GANs, ReLU for the
  VAE decoder); :class:`Discriminator`: conv 4x4/2 64, LeakyReLU; conv 4x4/2 128 [BN],
  LeakyReLU; fc 1024 [BN], LeakyReLU; fc out (1, or 2d for the VAE encoder);
  :class:`BEGANDiscriminator`: the auto-encoder of v1's BEGAN.
  v1's weight init (``ops.py``: weights N(0, 0.02), conv kernels truncated N(0, 0.02),
  biases 0) and batch norm (TF ``decay=0.999, epsilon=0.001``: torch momentum 0.001,
  eps 0.001; samples are drawn in eval mode, with the moving averages, as v1's
  ``fake_images = generator(z, is_training=False)``).

IMLE mapping T (GLANN Sec. 3.2, released code): Linear(e,128)-BN-ReLU-
Linear(128,128)-BN-ReLU-Linear(128,z).
"""

from __future__ import annotations

import torch
from torch import nn


def _check_size(size: int, factor: int):
    if size % factor:
        raise ValueError(f"image size {size} must be divisible by {factor}")


def unit_norm_detached(z: torch.Tensor) -> torch.Tensor:
    """z / ||z|| with the norm treated as a constant (GLANN's released generator input)."""
    return z / z.norm(dim=1, keepdim=True).detach().clamp_min(1e-12)


class InfoGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, size: int, channels: int, batchnorm: bool = True,
                 normalize_input: bool = False):
        super().__init__()
        _check_size(size, 4)
        self.latent_dim, self.size, self.channels = latent_dim, size, channels
        self.normalize_input = normalize_input  # GLO: G divides its input by its norm
        s4 = size // 4
        bn1 = nn.BatchNorm1d(128 * s4 * s4) if batchnorm else nn.Identity()
        bn2 = nn.BatchNorm2d(64) if batchnorm else nn.Identity()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, 128 * s4 * s4), bn1, nn.LeakyReLU(0.2),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), bn2, nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z):
        if self.normalize_input:
            z = unit_norm_detached(z)
        h = self.fc(z).view(z.shape[0], 128, self.size // 4, self.size // 4)
        return self.deconv(h)


# TF's batch_norm(decay=0.999, epsilon=0.001): running = decay*running + (1-decay)*batch
V1_BN = {"momentum": 0.001, "eps": 0.001}


def v1_init(module: nn.Module) -> nn.Module:
    """compare_gan v1's initialisers (ops.py): linear N(0, 0.02), conv2d truncated N(0, 0.02)
    (cut at two standard deviations, as TF's truncated_normal_initializer), deconv2d
    N(0, 0.02), every bias 0; BN scale 1, offset 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.04, 0.04)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, noise: torch.Tensor, chunk: int = 4096) -> None:
    """Set every BN layer's running statistics to their population values over ``noise``
    (sampling-time inputs), fed ``chunk`` at a time in train mode: PyTorch's cumulative
    average of the batch statistics, not an EMA. Leaves ``net`` in eval mode.

    Used where training leaves BN's averages describing something other than what the
    network sees at sampling: IMLE's matched (not random) regression batches, and the
    compare_gan v1 generators' decay-0.999 averages after a short budget (glann.methods.sampling).
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    net.train()
    for i in range(0, noise.shape[0], chunk):
        net(noise[i: i + chunk])
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    net.eval()


def _bn1d(n):
    return nn.BatchNorm1d(n, **V1_BN)


def _bn2d(n):
    return nn.BatchNorm2d(n, **V1_BN)


class V1Generator(nn.Module):
    """compare_gan v1's generator (abstract_gan.generator; VAE.decoder with ``relu``)."""

    def __init__(self, latent_dim: int, size: int, channels: int, activation: str = "lrelu"):
        super().__init__()
        _check_size(size, 4)
        self.latent_dim, self.size, self.channels = latent_dim, size, channels
        self.activation = activation
        act = {"lrelu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}[activation]
        s4 = size // 4
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 1024), _bn1d(1024), act(),
            nn.Linear(1024, 128 * s4 * s4), _bn1d(128 * s4 * s4), act(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), _bn2d(64), act(),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
        )
        v1_init(self)

    def forward(self, z):
        h = self.fc(z).view(z.shape[0], 128, self.size // 4, self.size // 4)
        return self.deconv(h)


class DCGANGenerator(nn.Module):
    """The deeper variant for 64x64 images: fc -> 4x4x512, four deconv 4x4/2."""

    def __init__(self, latent_dim: int, size: int, channels: int, batchnorm: bool = True,
                 normalize_input: bool = False):
        super().__init__()
        _check_size(size, 16)
        self.latent_dim, self.size, self.channels = latent_dim, size, channels
        self.normalize_input = normalize_input
        s = size // 16
        self.s = s
        bn = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.fc = nn.Linear(latent_dim, 512 * s * s)
        self.net = nn.Sequential(
            bn(512), nn.ReLU(),
            nn.ConvTranspose2d(512, 256, 4, 2, 1), bn(256), nn.ReLU(),
            nn.ConvTranspose2d(256, 128, 4, 2, 1), bn(128), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), bn(64), nn.ReLU(),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z):
        if self.normalize_input:
            z = unit_norm_detached(z)
        return self.net(self.fc(z).view(z.shape[0], 512, self.s, self.s))


def make_generator(latent_dim: int, image_shape, arch: str = "auto", batchnorm="auto",
                   normalize_input: bool = False) -> nn.Module:
    """Generator for images of shape (H, W, C); ``auto`` picks DCGAN for 64x64."""
    size, _, channels = image_shape
    if batchnorm == "auto":
        batchnorm = channels == 1  # BN on for MNIST/Fashion, off for CIFAR-10 (GLANN recipe)
    if arch == "auto":
        arch = "dcgan" if size >= 64 else "infogan"
    cls = {"infogan": InfoGANGenerator, "dcgan": DCGANGenerator}[arch]
    return cls(latent_dim, size, channels, bool(batchnorm), normalize_input)


def build_generator(final: dict) -> nn.Module:
    """The generator a baseline's final checkpoint (or snapshot) was trained with."""
    if final.get("generator_arch") == "compare_gan_v1":
        return V1Generator(final["noise_dim"], final["image_shape"][0], final["image_shape"][2],
                           final["generator_activation"])
    cfg = final["config"]
    return make_generator(final["noise_dim"], final["image_shape"], cfg["generator"]["arch"],
                          cfg["generator"]["batchnorm"])


class Discriminator(nn.Module):
    """compare_gan v1's InfoGAN-style discriminator; ``out_dim`` > 1 makes it the VAE encoder."""

    def __init__(self, image_shape, batchnorm: bool = True, out_dim: int = 1):
        super().__init__()
        size, _, channels = image_shape
        _check_size(size, 4)
        s4 = size // 4
        bn2 = _bn2d(128) if batchnorm else nn.Identity()
        bn1 = _bn1d(1024) if batchnorm else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), bn2, nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(128 * s4 * s4, 1024), bn1, nn.LeakyReLU(0.2),
            nn.Linear(1024, out_dim),
        )
        v1_init(self)

    def forward(self, x):
        return self.net(x)


class BEGANDiscriminator(nn.Module):
    """compare_gan v1's BEGAN discriminator, an auto-encoder (BEGAN.py): conv 4x4/2 64,
    LeakyReLU; conv 4x4/2 128 (no activation); fc 64 [BN], LeakyReLU (the code); fc
    128*(s/4)^2 [BN], LeakyReLU; deconv 4x4/2 64 [BN], LeakyReLU; deconv 4x4/2 C, sigmoid.
    ``forward`` returns the reconstruction."""

    def __init__(self, image_shape, batchnorm: bool = False, code_dim: int = 64):
        super().__init__()
        size, _, channels = image_shape
        _check_size(size, 4)
        self.size, s4 = size, size // 4
        norm1 = (lambda n: _bn1d(n)) if batchnorm else (lambda n: nn.Identity())
        self.encode = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.Flatten(),
            nn.Linear(128 * s4 * s4, code_dim), norm1(code_dim), nn.LeakyReLU(0.2),
            nn.Linear(code_dim, 128 * s4 * s4), norm1(128 * s4 * s4), nn.LeakyReLU(0.2),
        )
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), _bn2d(64) if batchnorm else nn.Identity(), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
        )
        v1_init(self)

    def forward(self, x):
        h = self.encode(x).view(x.shape[0], 128, self.size // 4, self.size // 4)
        return self.decode(h)


class IMLEMapping(nn.Module):
    """T: noise e -> latent z (GLANN, Sec. 3.2)."""

    def __init__(self, noise_dim: int = 32, latent_dim: int = 64, hidden: int = 128):
        super().__init__()
        self.noise_dim, self.latent_dim = noise_dim, latent_dim
        self.net = nn.Sequential(
            nn.Linear(noise_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, latent_dim),
        )

    def forward(self, e):
        return self.net(e)


def to_float_images(batch_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (the generators' sigmoid range)."""
    return batch_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8_images(batch_float_nchw: torch.Tensor) -> torch.Tensor:
    return batch_float_nchw.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
