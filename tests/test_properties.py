"""Properties a reviewer expects of the trainers and the sampler, each against an
independent reference: the learning rate of every parameter group epoch by epoch, the
mode a trained network samples in, and the noise of a sampling call's batches.
"""

import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.methods import gans
from glann.pipeline.config import fill_defaults, load_schema
from glann.methods.glo import train_glo
from glann.methods.models import V1Generator, recalibrate_batchnorm
from glann.methods.sampling import BN_BATCHES, BN_BATCH_SIZE, Sampler

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")


def test_glo_learning_rates_follow_the_schedule_in_every_group(digits_small_dir, tmp_path, monkeypatch):
    """GLANN's released glo.py: lr * 0.5^(epoch // decay_epochs) (0-based epochs) for G and the
    codes, read from the optimisers' own param groups while each epoch's steps run."""
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append((id(self), tuple(g["lr"] for g in self.param_groups)))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    cfg = {**CFG["glo"], "loss": "lap1", "epochs": 5, "lr_halve_every": 2, "batch_size": 128}
    res = train_glo(digits_small_dir, cfg, TrainContext(tmp_path / "glo.pt", 0, CPU))
    # the logged rates (CSV, MLflow) are the ones each epoch ran at
    assert [(r["lr_generator"], r["lr_codes"]) for r in res["history"]] == [
        (cfg["lr_generator"] * 0.5 ** (e // 2), cfg["lr_codes"] * 0.5 ** (e // 2)) for e in range(5)]
    per_epoch = -(-320 // 128) * 2  # batches per epoch, two optimisers each
    assert len(seen) == 5 * per_epoch
    opts = sorted({o for o, _ in seen})
    assert len(opts) == 2
    for e in range(5):
        want = {cfg["lr_generator"] * 0.5 ** (e // 2), cfg["lr_codes"] * 0.5 ** (e // 2)}
        got = {lr for _, lrs in seen[e * per_epoch:(e + 1) * per_epoch] for lr in lrs}
        assert got == want, (e, got, want)


@pytest.fixture(scope="module")
def trained_nsgan(digits_small_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("nsgan") / "model.pt"
    gans.train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 2}, TrainContext(out, 0, CPU))
    return out


def test_a_trained_generator_samples_in_eval_mode(trained_nsgan):
    """v1 samples ``generator(z, is_training=False)``: batch norm with its moving averages, so
    an image does not depend on the other noise vectors in its batch."""
    for bn_stats in ("recalibrated", "running"):  # running: no re-estimation that ends in eval()
        s = Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_stats=bn_stats)
        assert not s.G.training
        z = s.noise(8, torch.Generator().manual_seed(0))
        alone = s.decode(z[:1])
        together = s.decode(z)[:1]
        torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)
    # the running statistics are the trained ones, not a fresh BN's
    bn = next(m for m in s.G.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert not torch.all(bn.running_mean == 0)


def _bn_buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def test_bn_stats_running_keeps_v1s_moving_averages_and_recalibrated_replaces_them(trained_nsgan):
    """sample.bn_stats: ``running`` samples with the checkpoint's moving averages untouched;
    ``recalibrated`` (the default) replaces every one of them, and does so identically each
    time (its own seeded noise), without touching the sampling noise stream."""
    ckpt = torch.load(trained_nsgan, weights_only=False)["generator"]
    # stored in float16 (glann.methods.training.for_storage), loaded into float32 buffers exactly
    saved = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.items() if "running" in k}
    running = Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_stats="running")
    for k, v in _bn_buffers(running.G).items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    recal = Sampler("nsgan", {"model": trained_nsgan}, CPU)
    again = Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_stats="recalibrated")
    for k, v in _bn_buffers(recal.G).items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            assert not torch.allclose(v, saved[k]), k
        torch.testing.assert_close(v, _bn_buffers(again.G)[k], rtol=0, atol=0)
    assert (recal.generate(10, seed=1) == again.generate(10, seed=1)).all()
    assert not recal.G.training
    with pytest.raises(ValueError, match="bn_stats"):
        Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_stats="ema")


def test_bn_batches_sets_how_many_noise_batches_re_estimate_the_statistics(trained_nsgan):
    """sample.bn_batches = 2: the statistics are those of exactly two batches of 64 draws of
    the method's own noise from the recalibration seed (re-computed here by hand)."""
    two = Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_batches=2)
    ref = Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_stats="running")
    gen = torch.Generator().manual_seed(int(torch.load(trained_nsgan, weights_only=False)["seed"]) + 4242)
    noise = torch.cat([torch.rand(BN_BATCH_SIZE, ref.noise_dim, generator=gen) * 2 - 1 for _ in range(2)])
    recalibrate_batchnorm(ref.G, noise, BN_BATCH_SIZE)
    for k, v in _bn_buffers(two.G).items():
        torch.testing.assert_close(v, _bn_buffers(ref.G)[k], rtol=0, atol=0)
    default = Sampler("nsgan", {"model": trained_nsgan}, CPU)
    assert not torch.equal(_bn_buffers(default.G)["fc.1.running_mean"], _bn_buffers(two.G)["fc.1.running_mean"])
    with pytest.raises(ValueError, match="bn_batches"):
        Sampler("nsgan", {"model": trained_nsgan}, CPU, bn_batches=0)


def test_recalibrated_statistics_are_the_population_statistics_of_the_final_weights():
    """Independent reference: every BN layer's input over the same noise batches, recorded by
    hooks in train mode; the recalibrated running mean is the mean of the batch means and the
    running variance the mean of the unbiased batch variances (PyTorch's cumulative average)."""
    torch.manual_seed(0)
    G = V1Generator(8, 16, 1)
    for m in G.modules():  # stale averages, as after a short v1 run
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(7.0)
    batches = [torch.rand(BN_BATCH_SIZE, 8, generator=torch.Generator().manual_seed(i)) * 2 - 1
               for i in range(BN_BATCHES)]
    seen = {}
    ref = V1Generator(8, 16, 1)
    ref.load_state_dict(G.state_dict())
    ref.train()
    layers = [m for m in ref.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: seen.setdefault(i, []).append(inp[0].detach()))
             for i, m in enumerate(layers)]
    with torch.no_grad():
        for b in batches:
            ref(b)
    for h in hooks:
        h.remove()
    assert len(layers) == 3
    recalibrate_batchnorm(G, torch.cat(batches), BN_BATCH_SIZE)
    assert not G.training
    got = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for i, m in enumerate(got):
        dims = [0] if seen[i][0].dim() == 2 else [0, 2, 3]
        mean = torch.stack([x.mean(dims) for x in seen[i]]).mean(0)
        var = torch.stack([x.var(dims, unbiased=True) for x in seen[i]]).mean(0)
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
        assert m.momentum == 0.001  # v1's decay is back for any later training


def test_two_batches_of_one_sampling_call_never_share_noise(trained_nsgan):
    """generate() draws each batch's noise from one generator in sequence: no batch repeats
    another's images, and the same seed gives the same images."""
    s = Sampler("nsgan", {"model": trained_nsgan}, CPU)
    imgs = s.generate(40, seed=3, batch_size=10)
    batches = [imgs[i:i + 10] for i in range(0, 40, 10)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not (batches[i] == batches[j]).all(), (i, j)
    assert (s.generate(40, seed=3, batch_size=10) == imgs).all()
    noise = []
    real = s.noise
    s.noise = lambda n, gen: noise.append(real(n, gen)) or noise[-1]
    s.generate(20, seed=3, batch_size=10)
    assert not torch.equal(noise[0], noise[1])
    assert noise[0].min() >= -1 and noise[0].max() <= 1  # the GANs' U(-1, 1)


def test_glanns_generator_and_mapping_sample_in_eval_mode(digits_small_dir, tmp_path):
    """GLANN's released code samples with ``netG.eval()`` and the mapping's ``eval()``: both
    networks' batch norms use their trained running statistics, so an image does not depend on
    the other noise vectors in its batch (checked on each network, then on the whole chain)."""
    from glann.methods.imle import train_imle

    glo_cfg = {**CFG["glo"], "loss": "l1", "epochs": 2, "generator": {**CFG["glo"]["generator"], "batchnorm": True}}
    train_glo(digits_small_dir, glo_cfg, TrainContext(tmp_path / "glo.pt", 0, CPU))
    train_imle(tmp_path / "glo.pt", {**CFG["imle"], "epochs": 2}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    s = Sampler("glann", {"glo": tmp_path / "glo.pt", "imle": tmp_path / "imle.pt"}, CPU)
    for net in (s.G, s.T):
        assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
        assert not any(m.training for m in net.modules())
    z = s.noise(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(s.T(z[:1]), s.T(z)[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(s.decode(z[:1]), s.decode(z)[:1], rtol=0, atol=1e-6)
    # the loaded generator divides its input by the norm, as it trained (T's outputs are not unit)
    with torch.no_grad():
        codes = s.T(z)
        torch.testing.assert_close(s.G(3 * codes), s.G(codes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["imle", "imle_pixel", "mmgan", "nsgan", "lsgan", "wgan", "wgan_rmsprop",
                                    "wgan_gp", "dragan", "began", "vae"])
def test_every_other_trainer_keeps_its_configured_lr_in_every_group_at_every_step(method, digits_batch_dir, tmp_path,
                                                                                   monkeypatch):
    """GLANN's IMLE, pixel IMLE (its released code), compare_gan v1's GANs and VAE have no
    schedule: every optimiser step of every epoch runs at the configured lr in every group (a
    schedule that changes a group, or a stray lr, fails here). Read from the optimisers' own
    param groups while the steps run."""
    from glann.methods.imle import train_imle
    from glann.methods.registry import METHODS as REGISTRY

    seen = []

    def spy(cls):
        real = cls.step
        monkeypatch.setattr(cls, "step", lambda self, *a, **k: seen.append(
            [g["lr"] for g in self.param_groups]) or real(self, *a, **k))

    from glann.methods.optim import TFRMSProp

    spy(torch.optim.Adam)
    spy(TFRMSProp)
    extra = {"imle_pixel": {"samples_factor": 1, "staleness": 1}, "wgan_rmsprop": {"optimizer": "rmsprop"}}.get(method, {})
    method = method.removesuffix("_rmsprop")  # v1 WGAN's optimiser option
    cfg = {**CFG[method], "epochs": 3, **extra}
    if method == "imle":
        glo = {**CFG["glo"], "loss": "l1", "epochs": 1}
        train_glo(digits_batch_dir, glo, TrainContext(tmp_path / "glo.pt", 0, CPU))
        seen.clear()
        train_imle(tmp_path / "glo.pt", {**cfg, "batch_size": 32}, TrainContext(tmp_path / "m.pt", 0, CPU))
    else:
        REGISTRY[method].train_function()(digits_batch_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    assert len(seen) >= 3, seen  # at least one step an epoch
    assert all(lrs and all(lr == cfg["lr"] for lr in lrs) for lrs in seen), (cfg["lr"], seen)


def test_glo_gaussian_draws_come_from_the_sampling_calls_generator():
    """GLO+Gaussian's noise is drawn from the generator its sampling call seeds: the same seed
    gives the same draws whatever the global RNG did in between, and the global RNG is left as
    it was (so a run's samples are fixed by sample.seed alone)."""
    from glann.methods.gaussian import gaussian_sampler

    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draw = gaussian_sampler(torch.arange(4.0), a.T @ a / 6 + torch.eye(4, dtype=torch.float64))
    torch.manual_seed(1)
    first = draw(50, torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    torch.rand(7)  # the global stream moves on
    again = draw(50, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert not torch.equal(first, draw(50, torch.Generator().manual_seed(4)))
    torch.set_rng_state(state)
    torch.rand(7)
    after = torch.get_rng_state()
    torch.set_rng_state(state)
    draw(50, torch.Generator().manual_seed(3))
    torch.rand(7)
    assert torch.equal(torch.get_rng_state(), after)  # the draw took nothing from the global stream
