"""Faithful to GLANN's released code, compare_gan and pytorch-fid (docs/methods.md, Faithfulness)."""

import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import REPO
from glann.methods.training import TrainContext
from glann.atomic import torch_save
from glann.methods import gans, imle
from glann.pipeline.config import config_errors, fill_defaults, load_schema
from glann.evaluation.metrics import frechet_distance
from glann.methods.losses import lap1_loss
from glann.methods.models import make_generator, unit_norm_detached
from glann.methods.vae import train_vae

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")

# Ops CUDA autocast refuses outright ("unsafe to autocast"): torch/csrc/autograd autocast_mode's
# banned list. Anything else in our losses runs, in fp32 by the losses' own autocast(enabled=False).
CUDA_AUTOCAST_REFUSES = {torch.nn.functional.binary_cross_entropy, torch._C._nn.binary_cross_entropy,
                         torch.nn.BCELoss.forward}


class RefuseLikeCudaAutocast(TorchFunctionMode):
    """Raises where CUDA autocast would: a refused op called while autocast is on."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in CUDA_AUTOCAST_REFUSES and (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            raise RuntimeError(f"{func.__name__} is unsafe to autocast")
        return func(*args, **(kwargs or {}))


def test_refusal_emulation_catches_bce_under_autocast():
    x = torch.rand(4)
    with RefuseLikeCudaAutocast(), torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            torch.nn.functional.binary_cross_entropy(x, x)


@pytest.mark.parametrize("method", ["vae", "nsgan", "wgan_gp", "glo", "imle_pixel"])
def test_training_under_bf16_autocast_uses_no_refused_op(method, digits_batch_dir, tmp_path):
    """Every trainer under (CPU) bf16 autocast, with CUDA's refusals emulated: finite losses.
    On one batch of images (the first step takes a D and a G step in every GAN): bf16 on a CPU
    without bf16 units is many times slower than fp32."""
    from glann.methods.glo import train_glo

    data, ctx = digits_batch_dir, TrainContext(tmp_path / "m.pt", 0, CPU, amp="bf16")
    with RefuseLikeCudaAutocast():
        if method == "vae":
            res = train_vae(data, {**CFG["vae"], "epochs": 1}, ctx)
        elif method == "glo":
            res = train_glo(data, {**CFG["glo"], "loss": "lap1", "epochs": 1}, ctx)
        elif method == "imle_pixel":
            res = imle.train_imle_pixel(data, {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 2}, ctx)
        else:
            res = gans.train_gan(method, data, {**CFG[method], "epochs": 1}, ctx)
    row = res["history"][-1]
    assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float) and k != "nn_distance")
    assert not res.get("diverged")


@pytest.mark.parametrize("kind", ["nsgan", "wgan_gp"])
def test_gan_discriminator_sees_real_and_fake_separately_and_g_reuses_z(kind, digits_small_dir, tmp_path, monkeypatch):
    """v1 calls D on the real and the fake batch separately (``d_joint_batch: true`` is the
    later single call); G's step uses the D step's z, except WGAN-GP, which resamples
    (v1 resample_before_generator); z ~ U(-1, 1)."""
    sizes = {True: [], False: []}
    zs = []
    base_d, base_g = gans.Discriminator, gans.V1Generator

    class SpyG(base_g):
        def forward(self, z):
            zs.append(z.clone())
            return super().forward(z)

    monkeypatch.setattr(gans, "V1Generator", SpyG)
    for joint in (True, False):
        class SpyD(base_d):
            def forward(self, x, _joint=joint):
                sizes[_joint].append(len(x))
                return super().forward(x)

        monkeypatch.setattr(gans, "Discriminator", SpyD)
        zs.clear()
        cfg = {**CFG[kind], "epochs": 1, "d_joint_batch": joint}
        gans.train_gan(kind, digits_small_dir, cfg, TrainContext(tmp_path / f"m{joint}.pt", 0, CPU))
    b = CFG[kind]["batch_size"]
    # (WGAN-GP's penalty adds calls of one batch on the interpolates)
    assert set(sizes[True]) == ({2 * b} if kind == "nsgan" else {2 * b, b})
    assert set(sizes[False]) == {b}
    assert CFG[kind]["d_joint_batch"] is False
    # G calls: D step 0, G step 0, D step 1, G step 1, D step 2, ... (n = 1); first two pairs
    assert zs[0].min() >= -1 and zs[0].max() <= 1 and zs[0].min() < -0.9 and zs[0].max() > 0.9
    assert torch.equal(zs[0], zs[1]) == (kind != "wgan_gp")


def test_imle_uses_the_released_adam_betas(tmp_path, monkeypatch):
    seen = []

    class SpyAdam(torch.optim.Adam):
        def __init__(self, params, **kw):
            seen.append(kw.get("betas"))
            super().__init__(params, **kw)

    torch_save(tmp_path / "glo.pt", {"codes": torch.nn.functional.normalize(torch.randn(300, 16), dim=1)})
    monkeypatch.setattr(imle.torch.optim, "Adam", SpyAdam)
    imle.train_imle(tmp_path / "glo.pt", {**CFG["imle"], "epochs": 1}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    assert CFG["imle"]["betas"] == [0.5, 0.999] and seen == [(0.5, 0.999)]


def test_pixel_imle_bn_statistics_are_those_of_sampling_noise(digits_dir, tmp_path, monkeypatch):
    """Matching, regression and sampling share one set of BN statistics: those of N(0, I) noise."""
    modes = []
    orig_search = imle.search

    def spy_search(real, samples, backend):
        modes.append("match")
        return orig_search(real, samples, backend)

    monkeypatch.setattr(imle, "search", spy_search)
    cfg = {**CFG["imle_pixel"], "epochs": 2, "samples_factor": 2, "staleness": 1}
    out = imle.train_imle_pixel(digits_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    G = make_generator(cfg["noise_dim"], (16, 16, 1), "auto", "auto")
    G.load_state_dict(out["generator"])
    saved = [m.running_mean.clone() for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    # the statistics of fresh sampling noise, measured independently
    imle.recalibrate_batchnorm(G, torch.randn(8192, cfg["noise_dim"], generator=torch.Generator().manual_seed(9)))
    fresh = [m.running_mean for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert saved and all(torch.allclose(a, b, atol=0.05 * b.abs().max().item() + 1e-3) for a, b in zip(saved, fresh))
    assert modes == ["match", "match"]


def test_pixel_imle_regresses_the_sample_it_matched(digits_small_dir, tmp_path, monkeypatch):
    """``recalibrated``: G regresses with the statistics it matched with (eval mode); ``batch``
    (the default, measured better): train mode."""
    training_flags = []
    orig = imle.make_generator

    def spy_generator(*a, **k):
        G = orig(*a, **k)
        G.register_forward_pre_hook(lambda mod, inp: training_flags.append((len(inp[0]), mod.training)))
        return G

    monkeypatch.setattr(imle, "make_generator", spy_generator)
    imle.train_imle_pixel(digits_small_dir, {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 2,
                                                          "bn_statistics": "recalibrated"}, TrainContext(tmp_path / "a.pt", 0, CPU))
    assert CFG["imle_pixel"]["bn_statistics"] == "batch"
    regress = [t for n, t in training_flags if n == 128]  # regression batches (matching uses chunks)
    assert len(regress) == 320 // 128 and not any(regress)
    training_flags.clear()
    imle.train_imle_pixel(digits_small_dir, {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 2,
                                                          "bn_statistics": "batch"}, TrainContext(tmp_path / "b.pt", 0, CPU))
    regress = [t for n, t in training_flags if n == 128]
    assert len(regress) == 320 // 128 and all(regress)


def test_glo_codes_start_small_and_g_divides_by_a_detached_norm(digits_dir, tmp_path):
    from glann.methods.glo import train_glo

    z = torch.randn(3, 8, requires_grad=True)
    w = torch.randn(3, 8)
    (unit_norm_detached(z) * w).sum().backward()
    torch.testing.assert_close(z.grad, w / z.detach().norm(dim=1, keepdim=True))  # no radial projection
    runs = [train_glo(digits_dir, {**CFG["glo"], "loss": "lap1", "epochs": 1, "init_std": s}, TrainContext(tmp_path / f"g{s}.pt", 0, CPU)) for s in (0.01, 1.0)]
    assert not torch.equal(runs[0]["codes"], runs[1]["codes"]), "init_std must matter (codes not projected at init)"
    for r in runs:
        torch.testing.assert_close(r["codes"].norm(dim=1), torch.ones(len(r["codes"])))


def test_lap1_weightings():
    """sum: 2^(-2j) on summed levels (a global offset costs ~16^-J); mean: every level's mean L1."""
    from glann.methods.losses import laplacian_pyramid

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    y = x + 0.1
    sum_cost, mean_cost = lap1_loss(x, y, 2, "sum").item(), lap1_loss(x, y, 2, "mean").item()
    # only the residual (j = 2) sees it: weight 2^-4, 1/16 of level 0's pixels
    assert sum_cost == pytest.approx(0.1 * 16.0 ** -2, rel=1e-4)
    assert mean_cost == pytest.approx(0.1, rel=1e-4)
    a, b = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    expected = sum((p - q).abs().mean() for p, q in zip(laplacian_pyramid(a, 2), laplacian_pyramid(b, 2)))
    assert lap1_loss(a, b, 2, "mean").item() == pytest.approx(expected.item(), rel=1e-6)
    assert CFG["glo"]["lap_weighting"] == "mean"  # measured better (docs/methods.md, Faithfulness)
    with pytest.raises(ValueError, match="lap_weighting"):
        lap1_loss(a, b, 2, "median")


def test_frechet_distance_guards():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(mu, s, mu, np.eye(4))
    # a product with negative eigenvalues has a genuinely complex square root: refused
    bad = np.diag([1.0, 1.0, -4.0])
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(mu, s, mu, bad)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-9)


def test_frechet_regularises_a_failed_square_root_as_pytorch_fid_does(monkeypatch):
    """When sqrtm of the product fails (non-finite), both retry with eps on the diagonals."""
    import pytorch_fid.fid_score as pf
    from scipy import linalg

    import glann.evaluation.metrics as gm

    real_sqrtm, calls = linalg.sqrtm, []

    def failing_once(m, *args, **kwargs):
        calls.append(m)
        if len(calls) % 2 == 1:  # the first call of each distance fails
            return (np.full(m.shape, np.nan), 0.0) if kwargs.get("disp") is False else np.full(m.shape, np.nan)
        return real_sqrtm(m, *args, **kwargs)

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 6)), rng.normal(0.5, 2.0, size=(25, 6))
    (m1, s1), (m2, s2) = (a.mean(0), np.cov(a, rowvar=False)), (b.mean(0), np.cov(b, rowvar=False))
    monkeypatch.setattr(gm.linalg, "sqrtm", failing_once)
    monkeypatch.setattr(pf.linalg, "sqrtm", failing_once)
    ours = gm.frechet_distance(m1, s1, m2, s2, eps=1e-3)
    assert len(calls) == 2
    offset = np.eye(6) * 1e-3
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset), rtol=1e-12)
    ref = pf.calculate_frechet_distance(m1, s1, m2, s2, eps=1e-3)
    assert len(calls) == 4 and ours == pytest.approx(ref, rel=1e-10)
    gm.frechet_distance(m1, s1, m2, s2)  # pytorch-fid's default eps
    offset = np.eye(6) * 1e-6
    np.testing.assert_allclose(calls[5], (s1 + offset) @ (s2 + offset), rtol=1e-12)


def test_frechet_drops_an_imaginary_part_only_below_pytorch_fids_tolerance(monkeypatch):
    """A square root whose diagonal has an imaginary part up to 1e-3 is taken as its real part;
    above, the distance is refused (pytorch-fid's rule)."""
    import glann.evaluation.metrics as gm

    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    expected = 1.0 + 5.0 + 10.0 - 2 * (3.0 + 2.0)
    for imag in (1e-5, 9e-4):
        monkeypatch.setattr(gm.linalg, "sqrtm", lambda m, imag=imag: np.diag([3.0, 2.0]) + 1j * imag * np.eye(2))
        assert gm.frechet_distance(np.ones(2), s1, np.zeros(2) + [1, 0], s2) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(gm.linalg, "sqrtm", lambda m: np.diag([3.0, 2.0]) + 1j * 2e-3 * np.eye(2))
    with pytest.raises(ValueError, match="imaginary component 0.002"):
        gm.frechet_distance(np.zeros(2), s1, np.zeros(2), s2)


@pytest.mark.parametrize("patch", [{"runtime": {"compile": True}}, {"runtime": {"gpu_mem_mb": 100}},
                                   {"runtime": {"amp": "fp16"}}])
def test_no_accepted_key_is_ignored(patch):
    """Options nothing reads are refused instead of silently accepted."""
    msgs = config_errors({"datasets": ["digits"], "methods": ["glann"], "seeds": [0], **patch}, SCHEMA)
    assert len(msgs) == 1, msgs


@pytest.mark.parametrize("method", ["glo", "imle_pixel"])
def test_the_generators_training_forward_runs_under_the_configured_autocast(method, digits_batch_dir, tmp_path,
                                                                            monkeypatch):
    """``runtime.amp: bf16``: every forward of the generator that a gradient step goes through
    (grad enabled) runs under bf16 autocast; with ``off``, none does."""
    from glann.methods import glo as glo_mod

    module = glo_mod if method == "glo" else imle
    seen = []
    real = module.make_generator

    def spied(*a, **k):
        G = real(*a, **k)
        G.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu"))
                                if torch.is_grad_enabled() else None)
        return G

    monkeypatch.setattr(module, "make_generator", spied)
    for amp in ("bf16", "off"):
        seen.clear()
        ctx = TrainContext(tmp_path / f"{amp}.pt", 0, CPU, amp=amp)
        if method == "glo":
            glo_mod.train_glo(digits_batch_dir, {**CFG["glo"], "loss": "lap1", "epochs": 1}, ctx)
        else:
            imle.train_imle_pixel(digits_batch_dir, {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 1}, ctx)
        assert seen and all(s == (amp == "bf16") for s in seen), (amp, seen)


def test_pixel_imle_re_estimates_bn_on_its_samples_up_to_8192_noise_vectors(digits_batch_dir, tmp_path, monkeypatch):
    """BN statistics (before each matching and for the final model) come from the epoch's sample
    noise, at most its first 8,192 vectors: m = samples_factor x n of them when fewer."""
    counts = []
    real = imle.recalibrate_batchnorm
    monkeypatch.setattr(imle, "recalibrate_batchnorm", lambda G, noise, *a: counts.append(len(noise)) or real(G, noise, *a))
    for factor, expect in ((2, 128), (130, 8192)):  # 64 images: m = 128, m = 8,320
        counts.clear()
        cfg = {**CFG["imle_pixel"], "epochs": 1, "samples_factor": factor, "staleness": 1, "batch_size": 64}
        imle.train_imle_pixel(digits_batch_dir, cfg, TrainContext(tmp_path / f"m{factor}.pt", 0, CPU))
        assert counts == [expect] * 2, (factor, counts)  # the matching, the final model
