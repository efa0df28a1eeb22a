"""The science, checked against independent computations or properties only a correct
implementation has: objectives against hand-computed values, training that really
uses what the config asks, IMLE's mode coverage, exact rollback and resume for
every trainer, metrics on features whose true values are known, the summary's
arithmetic. Each test names the bug class it guards in its docstring.
"""

import math

import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext, for_storage
from glann.atomic import torch_save
from glann.methods import gans
from glann.pipeline.config import fill_defaults, load_schema
from glann.evaluation.evaluator import train_evaluator
from glann.methods.glo import project_to_sphere, train_glo
from glann.methods.imle import map_in_chunks, train_imle, train_imle_pixel
from glann.methods.models import IMLEMapping
from glann.methods.training import EpochLog
from glann.methods.vae import elbo_terms, neg_log_likelihood, train_vae

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")
R_LOGITS = torch.tensor([2.0, -1.0, 0.3])
F_LOGITS = torch.tensor([0.5, -3.0, 1.2])


def _sp(x):  # softplus by hand: log(1 + e^x)
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------- GAN objectives
def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_gan_objectives_match_hand_computed_values():
    """Every v1 objective on known raw D outputs, computed by hand (compare_gan v1's
    GAN.py, LSGAN.py, WGAN.py, WGAN_GP.py, DRAGAN.py)."""
    r, f = R_LOGITS.tolist(), F_LOGITS.tolist()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    bce_d = mean([_sp(-x) for x in r]) + mean([_sp(x) for x in f])  # -log s(r) - log(1 - s(f))
    for kind in ("mmgan", "nsgan", "dragan"):
        assert gans.d_loss(kind, R_LOGITS, F_LOGITS).item() == pytest.approx(bce_d, rel=1e-6)
    # NS-GAN / DRAGAN: G minimises -log s(f); MM-GAN: log(1 - s(f)) = -softplus(f)
    for kind in ("nsgan", "dragan"):
        assert gans.g_loss(kind, F_LOGITS).item() == pytest.approx(mean([_sp(-x) for x in f]), rel=1e-6)
    assert gans.g_loss("mmgan", F_LOGITS).item() == pytest.approx(
        mean([math.log(1 - _sig(x)) for x in f]), rel=1e-6)
    # LSGAN on D's sigmoid output (v1 LSGAN.py squares D_real = sigmoid(logits) - 1)
    assert gans.d_loss("lsgan", R_LOGITS, F_LOGITS).item() == pytest.approx(
        0.5 * mean([(_sig(x) - 1) ** 2 for x in r]) + 0.5 * mean([_sig(x) ** 2 for x in f]), rel=1e-6)
    assert gans.g_loss("lsgan", F_LOGITS).item() == pytest.approx(
        0.5 * mean([(_sig(x) - 1) ** 2 for x in f]), rel=1e-6)
    # WGAN and WGAN-GP: critic minimises E[D(fake)] - E[D(real)]; G minimises -E[D(fake)].
    for kind in ("wgan", "wgan_gp"):
        assert gans.d_loss(kind, R_LOGITS, F_LOGITS).item() == pytest.approx(mean(f) - mean(r), rel=1e-6)
        assert gans.g_loss(kind, F_LOGITS).item() == pytest.approx(-mean(f), rel=1e-6)
    with pytest.raises(ValueError):
        gans.d_loss("began", R_LOGITS, F_LOGITS)


def test_began_losses_and_k_update_match_hand_computed_values():
    """BEGAN (Berthelot et al. Eq. 4, v1 BEGAN.py): L_D = e_r - k e_f, L_G = e_f,
    M = e_r + |gamma e_r - e_f|, k moves by lambda_k (gamma e_r - e_f); e = mean |AE(x) - x|."""
    x = torch.tensor([[[[0.2, 0.8], [0.5, 0.1]]]])
    ae = lambda v: torch.full_like(v, 0.5)  # noqa: E731
    e = gans.reconstruction_error(ae, x).item()
    assert e == pytest.approx((0.3 + 0.3 + 0.0 + 0.4) / 4)
    t = gans.began_losses(torch.tensor(0.2), torch.tensor(0.3), k=0.4, gamma=0.75)
    assert t["d"].item() == pytest.approx(0.2 - 0.4 * 0.3)
    assert t["g"].item() == pytest.approx(0.3)
    assert t["balance"].item() == pytest.approx(0.75 * 0.2 - 0.3)
    assert t["M"].item() == pytest.approx(0.2 + abs(0.75 * 0.2 - 0.3))


def test_penalties_are_evaluated_on_the_points_their_papers_define():
    """WGAN-GP: on x + alpha (G(z) - x), the critic's raw output; DRAGAN: on x + alpha
    (x_p - x), x_p = x + 0.5 std(x) u, D's sigmoid output. A critic f(v) = w . v has the
    gradient w everywhere, so the WGAN-GP penalty is (sqrt(1e-4 + |w|^2) - 1)^2 exactly;
    f(v) = sum(v^2) / 2 has the gradient v, so the slopes tell which points were used."""
    real = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]])
    fake = torch.tensor([[[[3.0, 0.0]]], [[[0.0, 0.0]]]])
    alpha = torch.tensor([0.25, 0.5]).view(2, 1, 1, 1)
    w = torch.tensor([0.6, 0.3])
    linear = lambda v: (v.flatten(1) * w).sum(1, keepdim=True)  # noqa: E731
    gp = gans.gradient_penalty(linear, real, fake, alpha).item()
    assert gp == pytest.approx((math.sqrt(1e-4 + 0.45) - 1) ** 2, rel=1e-5)
    quad = lambda v: 0.5 * v.flatten(1).pow(2).sum(1, keepdim=True)  # noqa: E731
    xhat = [[1.5, 0.0], [0.0, 1.0]]  # real + alpha (fake - real)
    want = sum((math.sqrt(1e-4 + sum(c * c for c in p)) - 1) ** 2 for p in xhat) / 2
    assert gans.gradient_penalty(quad, real, fake, alpha).item() == pytest.approx(want, rel=1e-5)
    # DRAGAN: the perturbation is 0.5 * batch std * u, u in [0, 1)
    u = torch.full_like(real, 0.5)
    pert = gans.dragan_perturbed(real, u)
    torch.testing.assert_close(pert, real + 0.25 * real.std())
    # on sigmoid(f): d/dv sigmoid(w . v) = s (1 - s) w at the interpolated point
    pen = gans.dragan_penalty(linear, real, pert, alpha).item()
    pts = real + alpha * (pert - real)
    want = 0.0
    for p in pts.flatten(1):
        sv = torch.sigmoid((p * w).sum()).item()
        want += (math.sqrt(1e-4 + (sv * (1 - sv)) ** 2 * 0.45) - 1) ** 2
    assert pen == pytest.approx(want / 2, rel=1e-5)


def test_nsgan_generator_gradient_does_not_saturate():
    """At a confident discriminator (D(G(z)) -> 0) the non-saturating loss still has a gradient."""
    f = torch.tensor([-10.0], requires_grad=True)
    gans.g_loss("nsgan", f).backward()
    assert f.grad.item() == pytest.approx(-1 / (1 + math.exp(-10)), rel=1e-4)  # d/df softplus(-f)


class _Spy:
    """Counts calls of a function (and keeps what the wrapped function returns)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.fn(*args, **kwargs)


def _batches(digits_dir, batch_size):
    from glann.data.datasets import load_prepared

    n = len(load_prepared(digits_dir, "train")[0])
    return n // batch_size


@pytest.mark.parametrize("kind", ["mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began"])
def test_gan_training_uses_the_configured_objective(kind, request, tmp_path, monkeypatch):
    """The loss of ``kind``; one D step per batch and G steps on v1's schedule (global steps
    0, 1, 1 + n, ...); the penalty of WGAN-GP / DRAGAN only; BN in D as v1's defaults, never
    in WGAN-GP's critic; WGAN's clipping; BEGAN's auto-encoder and k_t. The kinds with n = 5
    critic steps train on every digit (22 batches: G steps 0, 1, 6, 11, 16, 21), the others on
    320 (5 batches)."""
    digits_dir = request.getfixturevalue("digits_dir" if CFG[kind]["critic_steps"] > 1 else "digits_small_dir")
    objective = gans.KINDS[kind]  # the kind's own losses, spied where the trainer reads them
    d_spy, g_spy = _Spy(getattr(objective, "d_loss", None)), _Spy(getattr(objective, "g_loss", None))
    gp_spy, dr_spy, rec_spy = _Spy(gans.gradient_penalty), _Spy(gans.dragan_penalty), _Spy(gans.reconstruction_error)
    built = []

    def recording(cls):
        class Recording(cls):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                built.append(self)
        return Recording

    for name, spy in (("gradient_penalty", gp_spy), ("dragan_penalty", dr_spy), ("reconstruction_error", rec_spy)):
        monkeypatch.setattr(gans, name, spy)
    if kind != "began":
        monkeypatch.setattr(objective, "d_loss", d_spy)
        monkeypatch.setattr(objective, "g_loss", g_spy)
    monkeypatch.setattr(gans, "Discriminator", recording(gans.Discriminator))
    monkeypatch.setattr(gans, "BEGANDiscriminator", recording(gans.BEGANDiscriminator))
    began_terms = []  # (k, balance) of every BEGAN loss evaluation
    real_began = gans.began_losses
    monkeypatch.setattr(gans, "began_losses", lambda er, ef, k, gamma: began_terms.append(
        (float(k), real_began(er, ef, k, gamma)["balance"])) or real_began(er, ef, k, gamma))
    # d_batchnorm: true is asked for every kind but the default-false ones' check below:
    # WGAN-GP's per-sample penalty must still get a critic without BN, whatever the config says.
    cfg = {**CFG[kind], "epochs": 1, **({"d_batchnorm": True} if kind == "wgan_gp" else {})}
    out = gans.train_gan(kind, digits_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    steps = _batches(digits_dir, cfg["batch_size"])
    n = cfg["critic_steps"]
    g_steps = 1 + len(range(1, steps, n))
    assert n == {"wgan": 5, "wgan_gp": 5, "began": 5}.get(kind, 1)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in built[0].modules())
    assert has_bn == (kind in ("mmgan", "nsgan", "lsgan", "wgan", "dragan"))
    if kind == "began":
        assert isinstance(built[0], gans.BEGANDiscriminator) and not d_spy.calls and not g_spy.calls
        # 2 errors per D step, 1 per G step, 2 for k's update per step
        assert len(rec_spy.calls) == 4 * steps + g_steps
        ks = [r["k"] for r in out["history"]]
        assert ks[0] != 0.0
        # two evaluations a step, the D loss's and k's update (from the updated nets): k_t after
        # step s is k + lambda_k * balance of the update; the logged k is its mean over the epoch
        assert len(began_terms) == 2 * steps
        after = [k + cfg["lambda_k"] * float(balance) for k, balance in began_terms[1::2]]
        assert [k for k, _ in began_terms[2::2]] == pytest.approx(after[:-1], rel=1e-6, abs=1e-9)
        assert ks[0] == pytest.approx(sum(after) / steps, rel=1e-5, abs=1e-9)
        return
    assert len(d_spy.calls) == steps and len(g_spy.calls) == g_steps
    assert all(len(c) == 2 for c in d_spy.calls) and all(len(c) == 1 for c in g_spy.calls)  # D(real), D(fake); D(G(z))
    assert len(gp_spy.calls) == (steps if kind == "wgan_gp" else 0)
    assert len(dr_spy.calls) == (steps if kind == "dragan" else 0)
    if kind == "wgan":
        saved = torch.load(tmp_path / "m.pt", weights_only=False)
        d_params = [p for p in built[0].parameters()]
        assert max(p.abs().max().item() for p in d_params) <= cfg["clip"] + 1e-7
        assert saved["config"]["clip"] == 0.01


def test_wgan_gp_penalty_weight_changes_training(digits_small_dir, tmp_path):
    """gp_lambda reaches the critic's loss: lambda 0 and 10 train different generators."""
    outs = [gans.train_gan("wgan_gp", digits_small_dir, {**CFG["wgan_gp"], "epochs": 1, "gp_lambda": lam}, TrainContext(tmp_path / f"m{lam}.pt", 0, CPU))
            for lam in (0.0, 10.0)]
    g0, g10 = (o["generator"] for o in outs)
    assert any(not torch.equal(g0[k], g10[k]) for k in g0)


def test_gan_rollback_keeps_the_last_finished_epoch_bit_for_bit(digits_small_dir, tmp_path):
    """A GAN diverging in epoch 3 ends with exactly epoch 2's generator, not its initial one."""
    ref = gans.train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 2}, TrainContext(tmp_path / "ref.pt", 0, CPU))
    out = gans.train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 3}, TrainContext(tmp_path / "m.pt", 0, CPU, fault={"nan_at_epoch": 3}))
    assert out["diverged"] and out["diverged_epoch"] == 3 and len(out["history"]) == 2
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["generator"]
    stored = for_storage(ref)["generator"]  # the checkpoint keeps the generator in float16
    for k, v in stored.items():
        assert torch.equal(saved[k], v), k


# --------------------------------------------------------------------------- resume == uninterrupted, every trainer
class _Killed(Exception):
    pass


def _planted_glo(path, n=600, dim=16, clusters=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = project_to_sphere(torch.randn(clusters, dim, generator=g))
    codes = project_to_sphere(centres.repeat(n // clusters, 1) + 0.05 * torch.randn(n, dim, generator=g))
    torch_save(path, {"codes": codes})
    return centres, codes


def _trainers(digits_dir, tmp_path):
    glo_path = tmp_path / "glo_in.pt"
    _planted_glo(glo_path)
    small = {"epochs": 2}
    return {
        "glo": lambda out: train_glo(digits_dir, {**CFG["glo"], "loss": "lap1", "lr_halve_every": 1, **small}, TrainContext(out, 0, CPU)),
        "imle": lambda out: train_imle(glo_path, {**CFG["imle"], **small}, TrainContext(out, 0, CPU)),
        "imle_pixel": lambda out: train_imle_pixel(digits_dir, {**CFG["imle_pixel"], "samples_factor": 2,
                                                                     "staleness": 2, **small}, TrainContext(out, 0, CPU)),
        **{k: (lambda out, k=k: gans.train_gan(k, digits_dir, {**CFG[k], **small}, TrainContext(out, 0, CPU)))
           for k in gans.GAN_KINDS},
        "vae": lambda out: train_vae(digits_dir, {**CFG["vae"], **small}, TrainContext(out, 0, CPU)),
        "evaluator": lambda out: (train_evaluator(digits_dir, {**CFG["evaluator"], **small}, TrainContext(out, 0, CPU)),
                                  torch.load(out, weights_only=False))[1],
    }


def _state_tensors(blob: dict) -> dict:
    out = {}
    for key in ("generator", "mapping", "encoder", "state"):
        if key in blob:
            out.update({f"{key}.{k}": v for k, v in blob[key].items()})
    if "codes" in blob:
        out["codes"] = blob["codes"]
    return out


@pytest.mark.parametrize("method", ["glo", "imle", "imle_pixel", "nsgan", "lsgan", "wgan_gp", "dragan", "began", "vae", "evaluator"])
def test_resume_equals_uninterrupted(method, digits_small_dir, tmp_path, monkeypatch):
    """Killed after epoch 1 (its checkpoint written), resumed: the same weights and history as
    a run that was never stopped: optimiser, RNG and matching state are all restored."""
    run = _trainers(digits_small_dir, tmp_path)[method]
    ref = run(tmp_path / "ref.pt")
    original = EpochLog.log

    def die_in_epoch_2(self, epoch, **metrics):
        if epoch == 2:
            raise _Killed
        return original(self, epoch, **metrics)

    monkeypatch.setattr(EpochLog, "log", die_in_epoch_2)
    with pytest.raises(_Killed):
        run(tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt.resume", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(EpochLog, "log", original)
    torch.manual_seed(12345)  # the resumed process starts from another global RNG state
    resumed = run(tmp_path / "m.pt")
    a, b = _state_tensors(ref), _state_tensors(resumed)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _comparable(ref["history"]) == _comparable(resumed["history"])


def _comparable(history):
    """History rows without wall-clock seconds, NaN (epochs without matching) as None."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items() if k != "seconds"}
            for r in history]


# --------------------------------------------------------------------------- IMLE covers every mode
def test_imle_covers_every_mode_of_a_planted_mixture(tmp_path):
    """IMLE's nearest-neighbour matching pulls a sample to every code: each of 10 planted clusters
    receives samples, and the samples spread like the codes (no collapse to the mean)."""
    g = torch.Generator().manual_seed(0)
    centres = project_to_sphere(torch.randn(10, 64, generator=g))
    codes = project_to_sphere(centres.repeat(200, 1) + 0.02 * torch.randn(2000, 64, generator=g))
    torch_save(tmp_path / "glo.pt", {"codes": codes})
    out = train_imle(tmp_path / "glo.pt", {**CFG["imle"], "epochs": 15}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    T = IMLEMapping(CFG["imle"]["noise_dim"], 64, CFG["imle"]["hidden"])
    T.load_state_dict(out["mapping"])
    T.eval()
    noise = torch.randn(5000, CFG["imle"]["noise_dim"], generator=torch.Generator().manual_seed(5))
    raw = map_in_chunks(T, noise)
    samples = project_to_sphere(raw)  # what G sees: it normalises its input
    share = torch.bincount(torch.cdist(samples, centres).argmin(1), minlength=10).float() / len(samples)
    # each cluster 0.1 ideally; regressing codes on unmatched noise gives 0.026-0.235 here
    assert share.min() > 0.05 and share.max() < 0.16, share
    spread = lambda x: (x - x.mean(0)).norm(dim=1).mean().item()  # noqa: E731
    ratio = spread(raw) / spread(codes)
    assert 0.8 < ratio < 2.0, ratio  # without matching, T collapses towards the mean code (0.39)


# --------------------------------------------------------------------------- VAE
def test_vae_kl_and_likelihoods_match_torch_distributions():
    """v1 VAE.py: sigma = 1e-6 + softplus(raw); KL(N(mu, sigma^2) || N(0, 1)) in closed form;
    the Bernoulli NLL is -log p summed over pixels and averaged over channels (v1 reduces
    over rows and columns, then averages over batch and channels)."""
    from torch.distributions import Bernoulli, Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    mu, raw = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    x = torch.rand(4, 1, 3, 3, generator=g)
    x_hat = torch.rand(4, 1, 3, 3, generator=g).clamp(0.05, 0.95)
    seen = []

    def decoder(z):
        seen.append(z)
        return x_hat

    nll, kl = elbo_terms(lambda _: torch.cat([mu, raw], 1), decoder, x, "bernoulli", 0.1,
                         torch.Generator().manual_seed(1))
    sigma = 1e-6 + torch.nn.functional.softplus(raw)
    ref_kl = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, ref_kl, rtol=1e-5, atol=1e-5)
    assert (kl >= 0).all()
    torch.testing.assert_close(nll, -Bernoulli(probs=x_hat, validate_args=False).log_prob(x).flatten(1).sum(1), rtol=1e-5, atol=1e-5)
    gauss = neg_log_likelihood(x_hat, x, "gaussian", 0.3)
    torch.testing.assert_close(gauss, -Normal(x_hat, 0.3).log_prob(x).flatten(1).sum(1), rtol=1e-5, atol=1e-5)
    # colour: the per-image sum divided by the 3 channels
    xc, xc_hat = torch.rand(2, 3, 2, 2, generator=g), torch.rand(2, 3, 2, 2, generator=g).clamp(0.05, 0.95)
    per_image = -Bernoulli(probs=xc_hat, validate_args=False).log_prob(xc).flatten(1).sum(1)
    torch.testing.assert_close(neg_log_likelihood(xc_hat, xc, "bernoulli"), per_image / 3, rtol=1e-5, atol=1e-5)
    # reparameterisation: z = mu + sigma * eps, sigma = softplus(raw) + 1e-6
    big = torch.randn(20000, 1, generator=g)
    zs = []
    raw_half = math.log(math.exp(0.5) - 1)  # softplus(raw_half) = 0.5
    elbo_terms(lambda _: torch.cat([torch.full((20000, 1), 1.5), torch.full((20000, 1), raw_half)], 1),
               lambda z: zs.append(z) or torch.full((20000, 1, 1, 1), 0.5), big.view(-1, 1, 1, 1).sigmoid(),
               "bernoulli", 0.1, torch.Generator().manual_seed(2))
    assert zs[0].mean().item() == pytest.approx(1.5, abs=0.02)
    assert zs[0].std().item() == pytest.approx(0.5, abs=0.02)


def test_vae_elbo_is_a_bound_below_zero(digits_dir, tmp_path):
    """For Bernoulli likelihood every term is a log-probability: the ELBO is negative and KL >= 0."""
    out = train_vae(digits_dir, {**CFG["vae"], "epochs": 1}, TrainContext(tmp_path / "vae.pt", 0, CPU))
    row = out["history"][-1]
    assert row["elbo"] < 0 and row["kl"] >= 0 and row["nll"] > 0
    assert row["elbo"] == pytest.approx(-(row["nll"] + row["kl"]), rel=1e-6)
