"""IMLE: Implicit Maximum Likelihood Estimation (Li & Malik 2018).

GLANN's second stage (Sec. 3.2): a mapping T from noise e ~ N(0, I) to GLO's
latent space. Each epoch draws ``samples_factor * N`` noise vectors, maps them
with T, finds for every GLO code z_i its exact nearest mapped sample T(e_j(i)),
and regresses T(e_j(i)) onto z_i with MSE for the epoch (Adam betas (0.5, 0.999), lr 1e-3, weight
decay 1e-5, batch 128, 50 epochs: the released recipe).

``train_imle_pixel`` is the same algorithm in pixel space, the baseline IMLE of
Li & Malik: the generator G itself maps e (dim 64) to images; for every training
image the nearest of ``samples_factor`` samples per image is found in pixels,
and the matches are refreshed every ``staleness`` epochs. G's batch norm uses
one set of statistics for matching, regression and sampling: they are
re-estimated on fresh N(0, I) noise before every matching and before saving,
and (``bn_statistics: recalibrated``, the default) regression runs with them
too, so the sample matched to an image is exactly the one regressed onto it and
the one sampling produces. ``bn_statistics: batch`` regresses in train mode
(statistics of each batch of matched noise) instead.
"""

from __future__ import annotations

import logging

import torch
from tqdm import tqdm

from .models import IMLEMapping, make_generator, to_float_images
from .nn_search import search
from .runtime import Checkpointer, autocast, check_finite, rng_state, set_rng_state
from .training import EpochLog, epoch_batches, load_train_images

log = logging.getLogger(__name__)


@torch.no_grad()
def map_in_chunks(fn, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([fn(x[i: i + chunk]) for i in range(0, x.shape[0], chunk)])


def train_imle(glo_path, out_path, cfg: dict, seed: int, device: torch.device, tracker=None,
               csv_path=None, fault: dict | None = None) -> dict:
    glo = torch.load(glo_path, map_location="cpu", weights_only=False)
    codes = glo["codes"].to(device)
    n, latent_dim = codes.shape
    gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)
    T = IMLEMapping(cfg["noise_dim"], latent_dim, cfg["hidden"]).to(device)
    opt = torch.optim.Adam(T.parameters(), lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.5, 0.999))),
                           weight_decay=cfg["weight_decay"])
    m = int(round(cfg["samples_factor"] * n))

    ckpt = Checkpointer(out_path)
    state = ckpt.load()
    start, history = 0, []
    if state is not None:
        T.load_state_dict(state["mapping"])
        opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"], gen)
        start, history = state["epoch"], state["history"]
    elog = EpochLog(csv_path, tracker, history)

    for epoch in tqdm(range(start + 1, cfg["epochs"] + 1), desc="train_imle", initial=start,
                      total=cfg["epochs"], disable=None):
        elog.start_epoch()
        noise = torch.randn(m, cfg["noise_dim"], generator=gen).to(device)
        # Match with the mapping as it samples: BN statistics re-estimated on random noise.
        recalibrate_batchnorm(T, noise)
        mapped = map_in_chunks(T, noise)
        idx, dist = search(codes, mapped, cfg["nn_backend"])
        matched_noise = noise[idx]
        nn_dist = dist.sqrt().mean().item()
        T.train()
        total, count = 0.0, 0
        for b in epoch_batches(n, cfg["batch_size"], gen, device, drop_last=True):
            loss = (T(matched_noise[b]) - codes[b]).pow(2).sum(1).mean()
            if fault and fault.get("nan_at_epoch") == epoch:
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            count += len(b)
        mean_loss = total / max(count, 1)
        check_finite(mean_loss, epoch, "train_imle", "Lower imle.lr, or check the GLO codes.")
        elog.log(epoch, loss=mean_loss, nn_distance=nn_dist, lr=opt.param_groups[0]["lr"])
        ckpt.save({"epoch": epoch, "mapping": T.state_dict(), "opt": opt.state_dict(),
                   "rng": rng_state(gen), "history": elog.rows, "config": cfg})

    recalibrate_batchnorm(T, torch.randn(m, cfg["noise_dim"], generator=gen).to(device))
    final = {"mapping": T.state_dict(), "config": cfg, "noise_dim": cfg["noise_dim"],
             "latent_dim": latent_dim, "history": elog.rows, "seed": seed}
    elog.write()  # also when no epoch finished (diverged in the first)
    ckpt.finish(final)
    return final


@torch.no_grad()
def recalibrate_batchnorm(T: torch.nn.Module, noise: torch.Tensor, chunk: int = 4096) -> None:
    """Set BN running statistics to their average over ``noise`` (sampling-time inputs).

    The regression batches are matched, not random, noise; left alone, BN's running
    statistics would describe them instead of the N(0, I) inputs used at sampling.
    """
    bns = [m for m in T.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    T.train()
    for i in range(0, noise.shape[0], chunk):
        T(noise[i: i + chunk])
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    T.eval()


@torch.no_grad()
def mean_nn_distance(T, codes, noise_dim: int, factor: float, seed: int, backend="torch") -> float:
    """Mean distance from each code to its nearest mapped sample (IMLE's objective, Eq. 3)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(int(factor * len(codes)), noise_dim, generator=gen).to(codes.device)
    T.eval()  # sampling-time behaviour
    _, d = search(codes, map_in_chunks(T, noise), backend)
    return d.sqrt().mean().item()


def train_imle_pixel(data_dir, out_path, cfg: dict, seed: int, device: torch.device, tracker=None,
                     csv_path=None, amp: str = "auto", fault: dict | None = None) -> dict:
    images = load_train_images(data_dir, device)
    n, h, w, c = images.shape
    flat_real = to_float_images(images).reshape(n, -1)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    G = make_generator(cfg["noise_dim"], (h, w, c), cfg["generator"]["arch"],
                       cfg["generator"]["batchnorm"]).to(device)
    opt = torch.optim.Adam(G.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    m = int(round(cfg["samples_factor"] * n))
    bn_mode = cfg.get("bn_statistics", "recalibrated")

    ckpt = Checkpointer(out_path)
    state = ckpt.load()
    start, history, matched = 0, [], None
    if state is not None:
        G.load_state_dict(state["generator"])
        opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"], gen)
        start, history, matched = state["epoch"], state["history"], state["matched"]
        matched = matched.to(device) if matched is not None else None
    elog = EpochLog(csv_path, tracker, history)

    for epoch in tqdm(range(start + 1, cfg["epochs"] + 1), desc="train_imle_pixel", initial=start,
                      total=cfg["epochs"], disable=None):
        elog.start_epoch()
        nn_dist = float("nan")
        if matched is None or (epoch - 1) % cfg["staleness"] == 0:
            noise = torch.randn(m, cfg["noise_dim"], generator=gen).to(device)
            recalibrate_batchnorm(G, noise[: min(m, 8192)])  # leaves G in eval mode
            with autocast(device, amp):
                samples = map_in_chunks(lambda e: G(e).float().reshape(len(e), -1), noise, 2048)
            idx, dist = search(flat_real, samples, cfg["nn_backend"])
            matched = noise[idx]
            nn_dist = dist.sqrt().mean().item()
            del samples
        G.train(bn_mode == "batch")
        total, count = 0.0, 0
        for b in epoch_batches(n, cfg["batch_size"], gen, device, drop_last=True):
            with autocast(device, amp):
                out = G(matched[b]).float()
            loss = (out - to_float_images(images[b])).pow(2).flatten(1).sum(1).mean()
            if fault and fault.get("nan_at_epoch") == epoch:
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            count += len(b)
        mean_loss = total / max(count, 1)
        check_finite(mean_loss, epoch, "train_imle_pixel", "Lower imle_pixel.lr.")
        elog.log(epoch, loss=mean_loss, nn_distance=nn_dist)
        ckpt.save({"epoch": epoch, "generator": G.state_dict(), "opt": opt.state_dict(),
                   "rng": rng_state(gen), "history": elog.rows, "matched": matched.cpu(), "config": cfg})

    recalibrate_batchnorm(G, torch.randn(min(m, 8192), cfg["noise_dim"], generator=gen).to(device))
    final = {"kind": "imle_pixel", "generator": G.state_dict(), "config": cfg,
             "noise_dim": cfg["noise_dim"], "image_shape": [h, w, c], "history": elog.rows,
             "diverged": False, "seed": seed}
    elog.write()  # also when no epoch finished (diverged in the first)
    ckpt.finish(final)
    return final
