"""The loss each trainer back-propagates, captured where it reaches the optimiser step, against an
independent computation of its documented equation (docs/methods.md) from the networks' raw
outputs in that same step: reductions (mean over the batch, sums over pixels) and per-term
weights included. One batch of 64 digits: D step 0, then G step 0 (every kind steps G at t = 0)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from glann.methods import gans, training, vae
from glann.methods.training import TrainContext
from glann.pipeline.config import fill_defaults, load_schema

from conftest import REPO

CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]},
                    load_schema(REPO / "workflow/schemas/config.schema.yaml"))
CPU = torch.device("cpu")


def _spy_training(monkeypatch, module, classes):
    """Record every forward of ``classes`` (in ``module``): (net, input, output), and every loss
    handed to ``descend`` with the forward count at that moment and a copy of the nets then."""
    calls, losses = [], []
    for name in classes:
        base = getattr(module, name)

        class Spy(base):
            def forward(self, x, *a, **k):
                out = super().forward(x, *a, **k)
                calls.append((self, x, out))
                return out

        Spy.__name__ = base.__name__
        monkeypatch.setattr(module, name, Spy)
    real_descend = module.descend

    def spy_descend(loss, poison, *opts):
        nets = {id(c[0]): copy.deepcopy(c[0]) for c in calls}
        losses.append((loss.detach().clone(), len(calls), nets))
        return real_descend(loss, poison, *opts)

    monkeypatch.setattr(module, "descend", spy_descend)
    return calls, losses


def _penalty(net, points, through_sigmoid=False):
    """E[(sqrt(1e-4 + ||grad_x f(x)||²) - 1)²] over the batch, f = D or sigmoid(D)."""
    x = points.detach().clone().requires_grad_(True)
    out = net(x).float()
    out = torch.sigmoid(out) if through_sigmoid else out
    (g,) = torch.autograd.grad(out.sum(), x)
    norms = torch.sqrt(1e-4 + (g ** 2).reshape(len(x), -1).sum(1))
    return ((norms - 1) ** 2).mean()


D_EQUATIONS = {  # l_x, l_G: D's raw outputs on the real and the fake batch
    "mmgan": lambda lx, lg: F.softplus(-lx).mean() + F.softplus(lg).mean(),
    "nsgan": lambda lx, lg: F.softplus(-lx).mean() + F.softplus(lg).mean(),
    "dragan": lambda lx, lg: F.softplus(-lx).mean() + F.softplus(lg).mean(),
    "lsgan": lambda lx, lg: 0.5 * (torch.sigmoid(lx) - 1).pow(2).mean() + 0.5 * torch.sigmoid(lg).pow(2).mean(),
    "wgan": lambda lx, lg: lg.mean() - lx.mean(),
    "wgan_gp": lambda lx, lg: lg.mean() - lx.mean(),
}
G_EQUATIONS = {
    "mmgan": lambda lg: -F.softplus(lg).mean(),          # log(1 - s(l)) = -softplus(l)
    "nsgan": lambda lg: F.softplus(-lg).mean(),          # -log s(l)
    "dragan": lambda lg: F.softplus(-lg).mean(),
    "lsgan": lambda lg: 0.5 * (torch.sigmoid(lg) - 1).pow(2).mean(),
    "wgan": lambda lg: -lg.mean(),
    "wgan_gp": lambda lg: -lg.mean(),
}


@pytest.mark.parametrize("kind", ["mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan"])
def test_each_gan_optimises_its_equation(kind, digits_batch_dir, tmp_path, monkeypatch):
    calls, losses = _spy_training(monkeypatch, gans, ["Discriminator"])
    lam = 3.0
    cfg = {**CFG[kind], "epochs": 1, **({"gp_lambda": lam} if kind in ("wgan_gp", "dragan") else {})}
    gans.train_gan(kind, digits_batch_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    (loss_d, n_d, nets_d), (loss_g, n_g, _) = losses[:2]
    real_call, fake_call = calls[0], calls[1]
    assert len(real_call[1]) == len(fake_call[1]) == 64
    want_d = D_EQUATIONS[kind](real_call[2].float(), fake_call[2].float())
    if kind in ("wgan_gp", "dragan"):  # the penalty's call is D's third, on the interpolates
        critic = nets_d[id(calls[2][0])]
        want_d = want_d + lam * _penalty(critic, calls[2][1], through_sigmoid=kind == "dragan")
        assert n_d == 3
    else:
        assert n_d == 2
    torch.testing.assert_close(loss_d, want_d.detach(), rtol=1e-5, atol=1e-6)
    g_call = calls[n_d]  # the G step's D call on G(z)
    assert n_g == n_d + 1 and len(g_call[1]) == 64
    torch.testing.assert_close(loss_g, G_EQUATIONS[kind](g_call[2].float()).detach(), rtol=1e-5, atol=1e-6)


def test_began_optimises_its_equation(digits_batch_dir, tmp_path, monkeypatch):
    """L_D = e(x) - k_t e(G(z)) with k_0 = 0, L_G = e(G(z)); e(v) = mean |AE(v) - v| over all pixels."""
    calls, losses = _spy_training(monkeypatch, gans, ["BEGANDiscriminator"])
    gans.train_gan("began", digits_batch_dir, {**CFG["began"], "epochs": 1}, TrainContext(tmp_path / "m.pt", 0, CPU))
    (loss_d, n_d, _), (loss_g, n_g, _) = losses[:2]
    e = [(out.float() - x.float()).abs().mean() for _, x, out in calls]
    assert n_d == 2 and n_g == 3
    torch.testing.assert_close(loss_d, (e[0] - 0.0 * e[1]).detach())
    torch.testing.assert_close(loss_g, e[2].detach())


def test_began_k_moves_by_lambda_k_times_the_balance(digits_small_dir, tmp_path, monkeypatch):
    """k_{t+1} = k_t + lambda_k (gamma e(x) - e(G(z))), unclipped (v1), from the updated nets."""
    calls, losses = _spy_training(monkeypatch, gans, ["BEGANDiscriminator"])
    cfg = {**CFG["began"], "epochs": 1, "lambda_k": 0.5, "gamma": 0.3}
    res = gans.train_gan("began", digits_small_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    # after step 0: D step (2 calls), G step (1 call), then the k update's two calls on the same batch
    e_r = (calls[3][2].float() - calls[3][1].float()).abs().mean()
    e_f = (calls[4][2].float() - calls[4][1].float()).abs().mean()
    k1 = 0.5 * (0.3 * e_r - e_f)
    # the D loss of step 1 carries k_1: L_D = e(x) - k_1 e(G(z))
    e1_r = (calls[5][2].float() - calls[5][1].float()).abs().mean()
    e1_f = (calls[6][2].float() - calls[6][1].float()).abs().mean()
    d_step1 = [l for l, n, _ in losses if n == 7][0]
    torch.testing.assert_close(d_step1, (e1_r - k1 * e1_f).detach(), rtol=1e-5, atol=1e-6)
    assert res["history"][0]["k"] != 0


def test_vae_optimises_the_negative_elbo_per_image(digits_batch_dir, tmp_path, monkeypatch):
    """-ELBO = sum over pixels of the Bernoulli NLL of clip(decoder(z), 1e-8, 1 - 1e-8) (divided by the
    channels) + 1/2 sum(mu² + sigma² - log(1e-8 + sigma²) - 1), averaged over the batch;
    sigma = 1e-6 + softplus(.), z = mu + sigma eps."""
    calls, losses = _spy_training(monkeypatch, vae, ["Discriminator", "V1Generator"])
    vae.train_vae(digits_batch_dir, {**CFG["vae"], "epochs": 1}, TrainContext(tmp_path / "m.pt", 0, CPU))
    loss = losses[0][0]
    (_, x, enc_out), (_, z, dec_out) = calls[0], calls[1]
    d = CFG["vae"]["latent_dim"]
    mu, sigma = enc_out[:, :d].float(), 1e-6 + F.softplus(enc_out[:, d:].float())
    p = dec_out.float().clamp(1e-8, 1 - 1e-8)
    target = x.float()
    nll = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).reshape(len(x), -1).sum(1) / x.shape[1]
    kl = 0.5 * (mu ** 2 + sigma ** 2 - torch.log(1e-8 + sigma ** 2) - 1).sum(1)
    torch.testing.assert_close(loss, (nll + kl).mean().detach(), rtol=1e-5, atol=1e-4)
    eps = (z - mu) / sigma  # the reparameterisation: z - mu is sigma times a draw of N(0, 1)
    from scipy import stats

    assert stats.kstest(eps.detach().flatten().double().numpy(), "norm").pvalue > 1e-3


# ------------------------------------------------------------------ the draws each trainer makes itself
def test_gan_noise_and_penalty_draws_have_the_reference_distributions(digits_batch_dir, tmp_path, monkeypatch):
    """z ~ U(-1, 1)^64 (v1 z_generator); WGAN-GP's alpha ~ U(0, 1) per image; DRAGAN's alpha ~ U(0, 1)
    per image and its perturbation u ~ U[0, 1) per pixel (v1 get_perturbed_batch)."""
    from scipy import stats

    seen = {"z": [], "alpha_gp": [], "alpha_dr": [], "u": []}
    real_noise, real_gp, real_dp, real_pert = (gans.uniform_noise, gans.gradient_penalty, gans.dragan_penalty,
                                               gans.dragan_perturbed)
    monkeypatch.setattr(gans, "uniform_noise", lambda n, d, g: seen["z"].append(real_noise(n, d, g)) or seen["z"][-1])
    monkeypatch.setattr(gans, "gradient_penalty",
                        lambda c, r, f, a: seen["alpha_gp"].append(a) or real_gp(c, r, f, a))
    monkeypatch.setattr(gans, "dragan_penalty",
                        lambda c, r, p, a: seen["alpha_dr"].append(a) or real_dp(c, r, p, a))
    monkeypatch.setattr(gans, "dragan_perturbed", lambda r, u: seen["u"].append(u) or real_pert(r, u))
    for kind in ("wgan_gp", "dragan"):
        gans.train_gan(kind, digits_batch_dir, {**CFG[kind], "epochs": 1}, TrainContext(tmp_path / f"{kind}.pt", 0, CPU))
    z = torch.cat(seen["z"])
    assert z.shape[1] == 64 and z.min() >= -1 and z.max() <= 1
    assert stats.kstest(z.flatten().numpy(), "uniform", args=(-1, 2)).pvalue > 1e-3
    for key in ("alpha_gp", "alpha_dr"):
        a = seen[key][0]
        assert a.shape == (64, 1, 1, 1) and a.min() >= 0 and a.max() <= 1
        assert stats.kstest(a.flatten().numpy(), "uniform").pvalue > 1e-3
    u = seen["u"][0]
    assert u.shape == (64, 1, 16, 16) or u.shape[0] == 64 and u.shape[2:] == u.shape[2:]
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    # the perturbation: x + 0.5 std(x) u, std over the whole batch
    x = torch.rand(8, 1, 4, 4)
    torch.testing.assert_close(gans.dragan_perturbed(x, torch.ones_like(x)), x + 0.5 * x.std())


@pytest.mark.parametrize("kind, dist", [("uniform", ("uniform", (-1, 2))), ("normal", ("norm", ()))])
def test_each_samplers_noise_has_its_references_distribution(kind, dist):
    """Sampling noise: z ~ U(-1, 1)^d for a checkpoint that says uniform (v1's GANs), N(0, I) for
    every other generator (the VAE's prior, pixel IMLE, flow, GLANN's e); drawn from the call's
    generator."""
    from scipy import stats

    from glann.methods.sampling import Sampler

    s = Sampler.__new__(Sampler)
    s.kind, s.uniform, s.noise_dim = "generator", kind == "uniform", 64
    z = s.noise(500, torch.Generator().manual_seed(0))
    assert z.shape == (500, 64)
    assert torch.equal(z, s.noise(500, torch.Generator().manual_seed(0)))
    assert stats.kstest(z.flatten().double().numpy(), dist[0], args=dist[1]).pvalue > 1e-3
    if kind == "uniform":
        assert z.min() >= -1 and z.max() <= 1


# ------------------------------------------------------------------ the search spaces' corners
@pytest.mark.parametrize("clip", [1e-3, 1.0])
def test_wgan_clips_every_critic_weight_at_both_ends_of_its_range(clip, digits_batch_dir, tmp_path, monkeypatch):
    calls, losses = _spy_training(monkeypatch, gans, ["Discriminator"])
    gans.train_gan("wgan", digits_batch_dir, {**CFG["wgan"], "epochs": 1, "clip": clip},
                   TrainContext(tmp_path / "m.pt", 0, CPU))
    critic = calls[0][0]
    assert all(p.abs().max() <= clip + 1e-12 for p in critic.parameters())
    if clip == 1e-3:  # binds: weights sit at the bound
        assert any((p.abs() == clip).any() for p in critic.parameters())


def test_began_k_is_not_clipped_at_the_corner_where_it_goes_negative(digits_small_dir, tmp_path):
    """gamma 0 (the wide range's lower end) and lambda_k 1e-2 (its upper end): gamma e(x) - e(G(z)) < 0,
    so k_t goes negative; v1 does not clip it to [0, 1] (the BEGAN paper does)."""
    cfg = {**CFG["began"], "epochs": 1, "gamma": 0.0, "lambda_k": 1e-2}
    res = gans.train_gan("began", digits_small_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    assert res["history"][0]["k"] < 0


@pytest.mark.parametrize("kind,extreme", [("nsgan", {"lr": 1e-2, "betas": [0.9999, 0.999]}),  # beta1 < 1: U[0, 1) never draws 1
                                          ("lsgan", {"lr": 1e-5, "betas": [0.0, 0.999], "critic_steps": 5}),
                                          ("dragan", {"gp_lambda": 100.0, "d_batchnorm": False}),
                                          ("wgan_gp", {"gp_lambda": 0.1, "critic_steps": 5})])
def test_wide_range_corners_train_a_step_without_error(kind, extreme, digits_batch_dir, tmp_path):
    """The wide range's extremes (lr 1e-5 and 1e-2, beta1 0 and 1, the penalty's 0.1 and 100, 5 D
    steps) run: finite first-step losses, or a run marked diverged (never an exception)."""
    res = gans.train_gan(kind, digits_batch_dir, {**CFG[kind], "epochs": 1, **extreme},
                         TrainContext(tmp_path / "m.pt", 0, CPU))
    row = res["history"][0] if res["history"] else None
    assert res["diverged"] or (row and all(v == v for v in (row["d_loss"], row["g_loss"])))


@pytest.mark.parametrize("extreme", [{"lr": 10 ** -4.5, "width": 16, "steps": 10},
                                     {"lr": 1e-3, "width": 64, "steps": 50}])
def test_flow_space_corners_train_and_sample(extreme, digits_batch_dir, tmp_path):
    """flow's search space at both ends (glann.methods.search_space: lr 10^-4.5 and 10^-3, width 16
    and 64, 10 and 50 ODE steps): an epoch with a finite loss, and samples in range from the
    solver with that many steps."""
    from glann.methods.flow import train_flow
    from glann.methods.sampling import Sampler

    res = train_flow(digits_batch_dir, {**CFG["flow"], "epochs": 1, **extreme}, TrainContext(tmp_path / "m.pt", 0, CPU))
    assert res["history"][0]["loss"] == res["history"][0]["loss"] and res["network_evals"] == extreme["steps"]
    x = Sampler("flow", {"model": tmp_path / "m.pt"}, CPU).generate(4, seed=0)
    assert x.shape == (4, 16, 16, 1) and x.dtype.name == "uint8"


@pytest.mark.parametrize("extreme", ["low", "high"])
def test_vae_glann_and_pixel_imle_space_corners_train_a_step(extreme, digits_batch_dir, tmp_path):
    """The other search spaces at both ends (glann.methods.search_space): the VAE's lr 1e-5 and 1e-2
    with beta1 0 and just under 1 and the encoder's BN off and on; GLANN's GLO learning rates
    10^-4.5 / 10^-3.5 and 10^-1.5 / 10^-0.5 with IMLE's lr 10^-4.5 and 10^-1.5 and samples factor
    1 and 10; pixel IMLE's lr 10^-4.5 and 10^-1.5 with samples factor 2 and 20. Each trains an
    epoch to finite losses (none of the references clips or guards anything there)."""
    from glann.methods import glo, imle
    from glann.methods.vae import train_vae

    low = extreme == "low"
    v = train_vae(digits_batch_dir, {**CFG["vae"], "epochs": 1, "lr": 1e-5 if low else 1e-2,
                                     "betas": [0.0 if low else 0.9999, 0.999], "encoder_batchnorm": not low},
                  TrainContext(tmp_path / "v.pt", 0, CPU))
    g = glo.train_glo(digits_batch_dir, {**CFG["glo"], "epochs": 1, "loss": "l1",
                                         "lr_generator": 10 ** (-4.5 if low else -1.5),
                                         "lr_codes": 10 ** (-3.5 if low else -0.5)}, TrainContext(tmp_path / "g.pt", 0, CPU))
    i = imle.train_imle(tmp_path / "g.pt", {**CFG["imle"], "epochs": 1, "lr": 10 ** (-4.5 if low else -1.5),
                                            "samples_factor": 1.0 if low else 10.0}, TrainContext(tmp_path / "i.pt", 0, CPU))
    p = imle.train_imle_pixel(digits_batch_dir, {**CFG["imle_pixel"], "epochs": 1, "lr": 10 ** (-4.5 if low else -1.5),
                                                 "samples_factor": 2.0 if low else 20.0},
                              TrainContext(tmp_path / "p.pt", 0, CPU))
    rows = [v["history"][0]["elbo"], g["history"][0]["loss"], i["history"][0]["loss"], p["history"][0]["loss"]]
    assert all(r == r and abs(r) < float("inf") for r in rows), rows
    assert i["history"][0]["images"] == 64 and p["history"][0]["images"] == 64


def test_glo_draws_its_codes_from_n0_init_std(digits_small_dir, tmp_path, monkeypatch):
    """GLO's codes start as N(0, init_std²) (the released code: 0.01), drawn from the job's own
    generator, before any projection: the first Parameter the trainer builds."""
    from scipy import stats

    from glann.methods import glo

    seen, real = [], torch.nn.Parameter
    monkeypatch.setattr(glo.torch.nn, "Parameter", lambda data, *a, **k: seen.append(data.clone()) or real(data, *a, **k))
    glo.train_glo(digits_small_dir, {**CFG["glo"], "epochs": 1, "loss": "l1", "init_std": 0.01},
                  TrainContext(tmp_path / "g.pt", 0, CPU))
    codes = seen[0]
    assert codes.shape == (320, CFG["glo"]["latent_dim"])
    assert stats.kstest((codes / 0.01).flatten().double().numpy(), "norm").pvalue > 1e-3
    assert torch.equal(codes, torch.randn(codes.shape, generator=torch.Generator().manual_seed(0)) * 0.01)


# ------------------------------------------------------------------ GLANN's two stages and pixel IMLE
def _record_forward(net, log):
    """Record (training?, input, output) of every call of ``net``."""
    base = net.forward

    def forward(x, *a, **k):
        out = base(x, *a, **k)
        log.append((net.training, x.detach().clone(), out.detach().clone()))
        return out

    net.forward = forward
    return net


def _spy_batches_and_losses(monkeypatch, module):
    batches, losses = [], []
    real_batches, real_descend = module.epoch_batches, module.descend
    monkeypatch.setattr(module, "epoch_batches", lambda *a, **k: _extend(batches, real_batches(*a, **k)))
    monkeypatch.setattr(module, "descend", lambda loss, p, *o: losses.append(loss.detach().clone()) or
                        real_descend(loss, p, *o))
    return batches, losses


def _extend(store, batches):
    store.extend(batches)
    return batches


@pytest.mark.parametrize("loss", ["lap1", "l1", "l2"])
def test_glo_optimises_its_reconstruction_loss(loss, digits_batch_dir, tmp_path, monkeypatch):
    """GLO: loss(G(z_i), x_i) over the batch: l1/l2 = mean over pixels and images; lap1 (mean
    weighting, the default) = sum over pyramid levels of each level's mean |difference|."""
    from glann.methods import glo
    from glann.methods.losses import laplacian_pyramid
    from glann.methods.models import to_float_images

    calls = []
    real_make = glo.make_generator
    monkeypatch.setattr(glo, "make_generator", lambda *a, **k: _record_forward(real_make(*a, **k), calls))
    batches, losses = _spy_batches_and_losses(monkeypatch, glo)
    glo.train_glo(digits_batch_dir, {**CFG["glo"], "epochs": 1, "loss": loss, "batch_size": 32},
                  TrainContext(tmp_path / "glo.pt", 0, CPU))
    images = training.load_train_images(digits_batch_dir, CPU)
    _, _, rec = [c for c in calls if c[0] and len(c[1]) == 32][0]
    x = to_float_images(images[batches[0]])
    if loss == "l1":
        want = (rec - x).abs().mean()
    elif loss == "l2":
        want = ((rec - x) ** 2).mean()
    else:
        want = sum((a - b).abs().mean() for a, b in zip(laplacian_pyramid(rec, _levels(rec)),
                                                        laplacian_pyramid(x, _levels(rec))))
    torch.testing.assert_close(losses[0], want, rtol=1e-5, atol=1e-7)


def _levels(x):
    from glann.methods.losses import default_levels

    return default_levels(x.shape[-1])


def test_glann_imle_regresses_each_code_on_its_nearest_mapped_noise(digits_batch_dir, tmp_path, monkeypatch):
    """IMLE (GLANN Eq. 3): loss = mean over the batch of ||T(e_i) - z_i||², e_i the noise whose
    mapping (BN statistics of the noise, eval mode) is nearest to code z_i."""
    from glann.methods import glo, imle

    glo.train_glo(digits_batch_dir, {**CFG["glo"], "epochs": 1, "loss": "l1"}, TrainContext(tmp_path / "glo.pt", 0, CPU))
    codes = torch.load(tmp_path / "glo.pt", weights_only=False)["codes"]
    calls = []
    base = imle.IMLEMapping
    monkeypatch.setattr(imle, "IMLEMapping", lambda *a, **k: _record_forward(base(*a, **k), calls))
    batches, losses = _spy_batches_and_losses(monkeypatch, imle)
    imle.train_imle(tmp_path / "glo.pt", {**CFG["imle"], "epochs": 1, "batch_size": 32, "samples_factor": 3},
                    TrainContext(tmp_path / "imle.pt", 0, CPU))
    t0 = next(i for i, c in enumerate(calls) if c[0] and len(c[1]) == 32)  # the first training forward
    mapped = [c for c in calls[:t0] if not c[0]]  # the matching pass before it (eval mode, in chunks)
    noise = torch.cat([c[1] for c in mapped])
    samples = torch.cat([c[2] for c in mapped])
    assert len(noise) == 3 * len(codes)
    _, e, out = calls[t0]
    b = batches[0]
    torch.testing.assert_close(losses[0], ((out - codes[b]) ** 2).sum(1).mean(), rtol=1e-5, atol=1e-7)
    nearest = torch.cdist(codes[b], samples).argmin(1)
    torch.testing.assert_close(e, noise[nearest])
    # the noise it matches from: e ~ N(0, I_32) (GLANN's released code: torch.randn), drawn afresh
    from scipy import stats

    assert noise.shape[1] == CFG["imle"]["noise_dim"] == 32
    assert stats.kstest(noise.flatten().double().numpy(), "norm").pvalue > 1e-3


def test_pixel_imle_regresses_each_image_on_its_nearest_sample(digits_batch_dir, tmp_path, monkeypatch):
    """Pixel IMLE (Li & Malik): loss = mean over the batch of the squared L2 distance, summed over
    pixels, between G(e_i) and image x_i, e_i the noise whose sample is nearest to x_i."""
    from glann.methods import imle
    from glann.methods.models import to_float_images

    calls = []
    real_make = imle.make_generator
    monkeypatch.setattr(imle, "make_generator", lambda *a, **k: _record_forward(real_make(*a, **k), calls))
    batches, losses = _spy_batches_and_losses(monkeypatch, imle)
    imle.train_imle_pixel(digits_batch_dir, {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 2, "batch_size": 32},
                          TrainContext(tmp_path / "m.pt", 0, CPU))
    images = training.load_train_images(digits_batch_dir, CPU)
    x = to_float_images(images[batches[0]])
    t0 = next(i for i, c in enumerate(calls) if c[0] and len(c[1]) == 32)  # the first training forward
    match = [c for c in calls[:t0] if not c[0]]  # the matching pass before it (eval mode)
    noise = torch.cat([c[1] for c in match])
    samples = torch.cat([c[2].reshape(len(c[2]), -1) for c in match])
    assert len(noise) == 2 * len(images)
    _, e, out = calls[t0]
    torch.testing.assert_close(losses[0], ((out - x) ** 2).flatten(1).sum(1).mean(), rtol=1e-5, atol=1e-5)
    nearest = torch.cdist(x.reshape(len(x), -1), samples).argmin(1)
    torch.testing.assert_close(e, noise[nearest])
    # its noise: N(0, I_64) (Li & Malik's Gaussian input)
    from scipy import stats

    assert noise.shape[1] == CFG["imle_pixel"]["noise_dim"] == 64
    assert stats.kstest(noise.flatten().double().numpy(), "norm").pvalue > 1e-3
