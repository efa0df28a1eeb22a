"""GLO: Generative Latent Optimization (Bojanowski et al. 2018), GLANN's first stage.

Learns a generator G and one latent code z_i per training image by minimising
sum_i loss(G(z_i), x_i) over both (GLANN Sec. 3.1, Eq. 1). As in GLANN's released
code: codes start as N(0, init_std^2) (0.01) and are projected onto the unit
sphere after every epoch; G divides its input by its norm, detached, so the
gradient reaching a code is G's input gradient scaled by 1/||z||. Adam(0.5, 0.999),
lr 0.01 for codes and 0.001 for G, both halved every ``lr_halve_every`` epochs.
The reconstruction loss is computed in fp32 outside autocast (the Laplacian
pyramid's sums lose digits in bf16).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from glann.methods.losses import make_loss
from glann.methods.models import make_generator, to_float_images, to_uint8_images
from glann.runtime import autocast
from glann.methods.training import Loop, Slot, descend, epoch_batches, fit, load_train_images, seeded, TrainContext

log = logging.getLogger(__name__)


def project_to_sphere(codes: torch.Tensor) -> torch.Tensor:
    return F.normalize(codes, dim=1)


def train_glo(data_dir, cfg: dict, ctx: TrainContext) -> dict:
    images = load_train_images(data_dir, ctx.device)
    n, h, w, c = images.shape
    gen = seeded(ctx.seed)
    G = make_generator(cfg["latent_dim"], (h, w, c), cfg["generator"]["arch"],
                       cfg["generator"]["batchnorm"], normalize_input=True).to(ctx.device)
    codes = torch.nn.Parameter((torch.randn(n, cfg["latent_dim"], generator=gen) * cfg["init_std"]).to(ctx.device))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr_generator"], betas=tuple(cfg["betas"]))
    opt_z = torch.optim.Adam([codes], lr=cfg["lr_codes"], betas=tuple(cfg["betas"]))
    loss_fn = make_loss(cfg["loss"], h, cfg["vgg_weights"], cfg["lap_levels"],
                        cfg["lap_weighting"])
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(ctx.device)

    def step(epoch: int, poison: bool) -> dict:
        decay = 0.5 ** ((epoch - 1) // cfg["lr_halve_every"])
        for opt, lr in ((opt_g, cfg["lr_generator"]), (opt_z, cfg["lr_codes"])):
            for g in opt.param_groups:
                g["lr"] = lr * decay
        G.train()
        total = 0.0
        for idx in epoch_batches(n, cfg["batch_size"], gen, ctx.device):
            with autocast(ctx.device, ctx.amp):
                rec = G(codes[idx])
            loss = loss_fn(rec.float(), to_float_images(images[idx]))
            total += descend(loss, poison, opt_g, opt_z) * len(idx)
        with torch.no_grad():  # GLO's constraint ||z|| = 1, enforced once per epoch (released code)
            codes.data = project_to_sphere(codes.data)
        return {"loss": total / n, "images": n, "lr_generator": opt_g.param_groups[0]["lr"],
                "lr_codes": opt_z.param_groups[0]["lr"]}

    def final() -> dict:
        return {"generator": G.state_dict(), "codes": codes.detach().cpu(), "image_shape": [h, w, c],
                "latent_dim": cfg["latent_dim"]}

    return fit(Loop("train_glo", "glo", cfg, {"generator": G, "codes": Slot(codes), "opt_g": opt_g, "opt_z": opt_z},
                    gen, step, final, hint="Lower glo.lr_generator / glo.lr_codes, or check the data."), ctx)


def load_glo_generator(glo: dict, device) -> torch.nn.Module:
    cfg = glo["config"]
    G = make_generator(glo["latent_dim"], glo["image_shape"], cfg["generator"]["arch"],
                       cfg["generator"]["batchnorm"], normalize_input=True)
    G.load_state_dict(glo["generator"])
    return G.to(device).eval()


@torch.no_grad()
def reconstructions(glo: dict, data_dir, device, n: int = 32) -> torch.Tensor:
    """uint8 NHWC: training image i followed by G(z_i), for the first ``n`` images."""
    images = load_train_images(data_dir, device)[:n]
    G = load_glo_generator(glo, device)
    rec = to_uint8_images(G(glo["codes"][:n].to(device)))
    return torch.stack([images, rec], 1).reshape(-1, *images.shape[1:])
