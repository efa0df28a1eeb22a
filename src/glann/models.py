"""Networks shared by every method, so that a table row compares objectives, not nets.

Generator (InfoGAN / compare_gan "infogan" architecture, Lucic et al. 2018, used
by GLANN's Table 1): fc 1024, LeakyReLU(0.2); fc 128*(s/4)^2 [BN], LeakyReLU;
deconv 4x4/2 -> 64 [BN], LeakyReLU; deconv 4x4/2 -> C, sigmoid. BN on for
MNIST/Fashion, off for CIFAR-10 (GLANN's released recipe). For 64x64 images a
deeper DCGAN-style generator (Radford et al. 2016) is used instead.

Discriminator (compare_gan): conv 4x4/2 64, LeakyReLU; conv 4x4/2 128 [BN],
LeakyReLU; fc 1024 [BN], LeakyReLU; fc 1. WGAN-GP's critic has no BN
(Gulrajani et al. 2017, Sec. 4).

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


class Discriminator(nn.Module):
    """compare_gan's InfoGAN discriminator; ``out_dim`` > 1 makes it a VAE encoder."""

    def __init__(self, image_shape, batchnorm: bool = True, out_dim: int = 1):
        super().__init__()
        size, _, channels = image_shape
        _check_size(size, 4)
        s4 = size // 4
        bn2 = nn.BatchNorm2d(128) if batchnorm else nn.Identity()
        bn1 = nn.BatchNorm1d(1024) if batchnorm else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), bn2, nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(128 * s4 * s4, 1024), bn1, nn.LeakyReLU(0.2),
            nn.Linear(1024, out_dim),
        )

    def forward(self, x):
        return self.net(x)


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
