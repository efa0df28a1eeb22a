"""IMLE: Implicit Maximum Likelihood Estimation (Li & Malik 2018).

GLANN's second stage (Sec. 3.2): a mapping T from noise e ~ N(0, I) to GLO's
latent space. Each epoch draws ``samples_factor * N`` noise vectors, maps them
with T, finds for every GLO code z_i its exact nearest mapped sample T(e_j(i)),
and regresses T(e_j(i)) onto z_i with MSE for the epoch (Adam betas (0.5, 0.999), lr 1e-3, weight
decay 1e-5, batch 128, 50 epochs: the released recipe).

``train_imle_pixel`` is the same algorithm in pixel space, the baseline IMLE of
Li & Malik: the generator G itself maps e (dim 64) to images; for every training
image the nearest of ``samples_factor`` samples per image is found in pixels,
and the matches are refreshed every ``staleness`` epochs. G's batch-norm
statistics are re-estimated on fresh N(0, I) noise before every matching and
before saving, so the sample matched to an image is the one sampling produces
for that noise. Regression (``bn_statistics: batch``, the default) runs in train
mode on the batch statistics of the matched noise; ``recalibrated`` regresses
with the re-estimated statistics too (exactly the matched sample), which
measured far worse on mnist5k (docs/methods.md, Faithfulness).
"""

from __future__ import annotations

import logging

import torch

from glann.atomic import load_torch
from glann.methods.models import IMLEMapping, make_generator, recalibrate_batchnorm, to_float_images
from glann.methods.nn_search import search
from glann.runtime import autocast, to_device
from glann.methods.training import Loop, Slot, descend, epoch_batches, fit, load_train_images, seeded, TrainContext

log = logging.getLogger(__name__)


@torch.no_grad()
def map_in_chunks(fn, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([fn(x[i: i + chunk]) for i in range(0, x.shape[0], chunk)])


def train_imle(glo_path, cfg: dict, ctx: TrainContext) -> dict:
    glo = load_torch(glo_path)
    codes = glo["codes"].to(ctx.device)
    n, latent_dim = codes.shape
    gen = seeded(ctx.seed + 1)
    T = IMLEMapping(cfg["noise_dim"], latent_dim, cfg["hidden"]).to(ctx.device)
    opt = torch.optim.Adam(T.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                           weight_decay=cfg["weight_decay"])
    m = int(round(cfg["samples_factor"] * n))

    def step(epoch: int, poison: bool) -> dict:
        noise = to_device(torch.randn(m, cfg["noise_dim"], generator=gen), ctx.device)
        # Match with the mapping as it samples: BN statistics re-estimated on random noise.
        recalibrate_batchnorm(T, noise)
        idx, dist = search(codes, map_in_chunks(T, noise), cfg["nn_backend"])
        matched_noise = noise[idx]
        T.train()
        total, count = 0.0, 0
        for b in epoch_batches(n, cfg["batch_size"], gen, ctx.device, drop_last=True):
            loss = (T(matched_noise[b]) - codes[b]).pow(2).sum(1).mean()
            total += descend(loss, poison, opt) * len(b)
            count += len(b)
        return {"loss": total / max(count, 1), "images": count, "nn_distance": dist.sqrt().mean().item(),
                "lr": opt.param_groups[0]["lr"]}

    def final() -> dict:
        recalibrate_batchnorm(T, to_device(torch.randn(m, cfg["noise_dim"], generator=gen), ctx.device))
        return {"mapping": T.state_dict(), "noise_dim": cfg["noise_dim"], "latent_dim": latent_dim}

    return fit(Loop("train_imle", "imle", cfg, {"mapping": T, "opt": opt}, gen, step, final,
                    hint="Lower imle.lr, or check the GLO codes."), ctx)


@torch.no_grad()
def mean_nn_distance(T, codes, noise_dim: int, factor: float, seed: int, backend="torch") -> float:
    """Mean distance from each code to its nearest mapped sample (IMLE's objective, Eq. 3)."""
    gen = torch.Generator().manual_seed(seed)
    noise = to_device(torch.randn(int(factor * len(codes)), noise_dim, generator=gen), codes.device)
    T.eval()  # sampling-time behaviour
    _, d = search(codes, map_in_chunks(T, noise), backend)
    return d.sqrt().mean().item()


def train_imle_pixel(data_dir, cfg: dict, ctx: TrainContext) -> dict:
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    flat_real = to_float_images(images).reshape(n, -1)
    gen = seeded(ctx.seed)
    G = make_generator(cfg["noise_dim"], (h, w, c), cfg["generator"]["arch"],
                       cfg["generator"]["batchnorm"]).to(ctx.device)
    opt = torch.optim.Adam(G.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    m = int(round(cfg["samples_factor"] * n))
    bn_mode = cfg["bn_statistics"]
    matched = Slot(None, ctx.device)

    def step(epoch: int, poison: bool) -> dict:
        nn_dist = float("nan")
        if matched.value is None or (epoch - 1) % cfg["staleness"] == 0:
            noise = to_device(torch.randn(m, cfg["noise_dim"], generator=gen), ctx.device)
            recalibrate_batchnorm(G, noise[: min(m, 8192)])  # leaves G in eval mode
            with autocast(ctx.device, ctx.amp):
                samples = map_in_chunks(lambda e: G(e).float().reshape(len(e), -1), noise, 2048)
            idx, dist = search(flat_real, samples, cfg["nn_backend"])
            matched.value = noise[idx]
            nn_dist = dist.sqrt().mean().item()
            del samples
        G.train(bn_mode == "batch")
        total, count = 0.0, 0
        for b in epoch_batches(n, cfg["batch_size"], gen, ctx.device, drop_last=True):
            with autocast(ctx.device, ctx.amp):
                out = G(matched.value[b]).float()
            loss = (out - to_float_images(images[b])).pow(2).flatten(1).sum(1).mean()
            total += descend(loss, poison, opt) * len(b)
            count += len(b)
        return {"loss": total / max(count, 1), "images": count, "nn_distance": nn_dist}

    def final() -> dict:
        recalibrate_batchnorm(G, to_device(torch.randn(min(m, 8192), cfg["noise_dim"], generator=gen), ctx.device))
        return {"generator": G.state_dict(), "noise_dim": cfg["noise_dim"], "image_shape": [h, w, c]}

    return fit(Loop("train_imle_pixel", "imle_pixel", cfg, {"generator": G, "opt": opt, "matched": matched},
                    gen, step, final, hint="Lower imle_pixel.lr."), ctx)
