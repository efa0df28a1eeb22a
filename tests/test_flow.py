"""The flow-matching method (glann.methods.flow; docs/methods.md, "flow"): its path and target
velocity on known pairs, the loss the trainer back-propagates against an independent computation,
the ODE solvers against closed forms, the network's shapes and pieces, sampling determinism, its
sampling cost as the sampler reports it, and a short run on a 2-D mixture whose samples must land
on the mixture's modes. In process, on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from glann.methods import flow
from glann.methods.flow import (FlowGenerator, ResBlock, VelocityUNet, flow_matching_loss, integrate, network_evals,
                                straight_path, time_embedding, train_flow)
from glann.methods.training import TrainContext
from glann.pipeline.config import fill_defaults, load_schema

from conftest import REPO

CFG = fill_defaults({"datasets": ["digits"], "methods": ["flow"], "seeds": [0]},
                    load_schema(REPO / "workflow/schemas/config.schema.yaml"))["flow"]
CPU = torch.device("cpu")


def test_schema_defaults_are_the_documented_ones():
    assert CFG == {"epochs": 50, "batch_size": 128, "lr": 0.0002, "betas": [0.9, 0.999], "width": 32,
                   "sigma_min": 0.0, "solver": "euler", "steps": 20}


@pytest.mark.parametrize("sigma_min", [0.0, 1e-4, 0.3])
def test_straight_path_and_target_velocity_on_a_known_pair(sigma_min):
    """x_t = (1 - (1 - s) t) x0 + t x1 and u = x1 - (1 - s) x0 (Lipman et al. eqs. 22-23), per
    sample's own t, written out element by element."""
    x0 = torch.tensor([[[[1.0, -2.0]]], [[[0.5, 0.0]]], [[[3.0, 1.0]]]])  # (3, 1, 1, 2)
    x1 = torch.tensor([[[[0.0, 4.0]]], [[[-1.0, 2.0]]], [[[1.0, 1.0]]]])
    t = torch.tensor([0.25, 0.5, 1.0])
    x_t, u = straight_path(x0, x1, t, sigma_min)
    assert x_t.shape == x0.shape and u.shape == x0.shape
    for i in range(3):
        for j in range(2):
            a, b, s = float(x0[i, 0, 0, j]), float(x1[i, 0, 0, j]), float(t[i])
            assert float(x_t[i, 0, 0, j]) == pytest.approx((1 - (1 - sigma_min) * s) * a + s * b, abs=1e-6)
            assert float(u[i, 0, 0, j]) == pytest.approx(b - (1 - sigma_min) * a, abs=1e-6)
    # the path's ends: noise at t = 0, data (up to sigma_min's noise) at t = 1
    ends, _ = straight_path(x0, x1, torch.tensor([0.0, 0.0, 0.0]))
    assert torch.equal(ends, x0)
    ends, _ = straight_path(x0, x1, torch.tensor([1.0, 1.0, 1.0]), sigma_min)
    assert torch.allclose(ends, x1 + sigma_min * x0, atol=1e-6)


def test_rectified_flow_is_the_default_path():
    """Without sigma_min the path is Liu et al.'s: (1 - t) x0 + t x1, target x1 - x0."""
    g = torch.Generator().manual_seed(0)
    x0, x1, t = torch.randn(4, 2, 4, 4, generator=g), torch.randn(4, 2, 4, 4, generator=g), torch.rand(4, generator=g)
    x_t, u = straight_path(x0, x1, t)
    tt = t[:, None, None, None]
    assert torch.allclose(x_t, (1 - tt) * x0 + tt * x1) and torch.allclose(u, x1 - x0)
    field = lambda x, s: 0.5 * x + s[:, None, None, None]  # noqa: E731
    assert flow_matching_loss(field, x1, x0, t).item() == pytest.approx(
        flow_matching_loss(field, x1, x0, t, sigma_min=0.0).item())


def test_loss_is_the_mean_squared_velocity_error_over_batch_and_pixels():
    g = torch.Generator().manual_seed(1)
    x0, x1, t = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g), torch.rand(5, generator=g)
    field = lambda x, s: torch.tanh(x) * (1 + s[:, None, None, None])  # noqa: E731
    x_t = (1 - (1 - 1e-2) * t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
    want = ((field(x_t, t) - (x1 - (1 - 1e-2) * x0)) ** 2).sum() / x0.numel()
    assert flow_matching_loss(field, x1, x0, t, 1e-2).item() == pytest.approx(want.item(), rel=1e-6)


def test_the_trainer_backpropagates_the_flow_matching_loss_of_its_own_draws(digits_small_dir):
    """Epoch 1's logged loss is the batch-size-weighted mean of the losses of its batches,
    recomputed here from the same draws (the job's generator: permutation, then per batch the
    noise x0 and the times t) with the path written out, before each step's update."""
    cfg = {**CFG, "epochs": 1, "width": 8, "batch_size": 100}
    from glann.data.datasets import load_prepared

    images, _ = load_prepared(digits_small_dir, "train")
    n = len(images)
    torch.manual_seed(0)
    model = FlowGenerator(images.shape[1:], cfg["width"], cfg["steps"], cfg["solver"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=g)
    total = 0.0
    for i in range(0, n, cfg["batch_size"]):
        idx = perm[i: i + cfg["batch_size"]]
        x1 = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(len(idx), generator=g)
        tt = t[:, None, None, None]
        loss = ((model.velocity((1 - tt) * x0 + tt * x1, t) - (x1 - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    res = train_flow(digits_small_dir, cfg, TrainContext(digits_small_dir / "flow.pt", seed=0, device=CPU))
    row = res["history"][0]
    assert row["images"] == n
    assert row["loss"] == pytest.approx(total / n, rel=1e-5)
    # what the trainer keeps: the generator the sampler rebuilds, and its sampling cost
    assert res["kind"] == "flow" and res["generator_arch"] == "flow_unet" and res["noise"] == "normal"
    assert res["noise_dim"] == int(np.prod(images.shape[1:])) and res["image_shape"] == list(images.shape[1:])
    assert res["network_evals"] == cfg["steps"]
    for k, v in model.state_dict().items():
        assert torch.allclose(res["generator"][k], v, atol=1e-6), k


def test_a_bad_solver_stops_before_training(digits_small_dir, tmp_path):
    with pytest.raises(ValueError, match="flow.solver"):
        train_flow(digits_small_dir, {**CFG, "epochs": 1, "solver": "rk4"}, TrainContext(tmp_path / "f.pt"))
    assert not (tmp_path / "f.pt").exists()


def test_network_evaluations_per_sample():
    assert network_evals("euler", 7) == 7 and network_evals("heun", 7) == 14
    with pytest.raises(ValueError, match="euler, heun"):
        network_evals("rk45", 3)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_solvers_on_a_linear_field_match_their_closed_forms(steps):
    """dx/dt = a x: exact x(1) = x0 e^a; N Euler steps give x0 (1 + a/N)^N exactly, N Heun steps
    x0 (1 + a/N + a^2/(2 N^2))^N; both tend to e^a, Heun at second order."""
    a = -1.3
    x0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    field = lambda x, t: a * x  # noqa: E731
    euler = integrate(field, x0, steps, "euler")
    heun = integrate(field, x0, steps, "heun")
    assert torch.allclose(euler, x0 * (1 + a / steps) ** steps, rtol=1e-12)
    assert torch.allclose(heun, x0 * (1 + a / steps + a * a / (2 * steps * steps)) ** steps, rtol=1e-12)
    exact = x0 * math.exp(a)
    if steps == 25:
        assert (heun - exact).abs().max() < 1e-3 < (euler - exact).abs().max() < 2e-2


def test_solvers_evaluate_the_field_at_the_right_times():
    """dx/dt = t: x(1) = x0 + 1/2. Euler (left ends) gives x0 + (N - 1) / (2N); Heun (the
    trapezoid rule) is exact for a field linear in t; each evaluation sees its own time."""
    seen = []

    def field(x, t):
        seen.append(float(t[0]))
        return t[:, None].expand_as(x).to(x.dtype)

    x0 = torch.zeros(2, 3, dtype=torch.float64)
    assert torch.allclose(integrate(field, x0, 4, "euler"), x0 + 3 / 8)
    assert seen == [0.0, 0.25, 0.5, 0.75]
    seen.clear()
    assert torch.allclose(integrate(field, x0, 4, "heun"), x0 + 0.5)
    assert seen == pytest.approx([0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0])


def test_one_step_is_allowed_and_zero_refused():
    x0 = torch.ones(1, 2)
    assert torch.allclose(integrate(lambda x, t: torch.ones_like(x), x0, 1), x0 + 1)
    with pytest.raises(ValueError, match="flow.steps"):
        integrate(lambda x, t: x, x0, 0)


def test_time_embedding_is_sinusoidal_in_1000_t():
    t = torch.tensor([0.0, 0.3, 1.0])
    emb = time_embedding(t, 8)
    freqs = [10000 ** (-k / 4) for k in range(4)]
    want = [[math.sin(1000 * s * f) for f in freqs] + [math.cos(1000 * s * f) for f in freqs] for s in t.tolist()]
    assert torch.allclose(emb, torch.tensor(want), atol=1e-4)


def test_resblock_is_two_normed_convolutions_with_the_time_added_and_a_skip():
    torch.manual_seed(0)
    block = ResBlock(8, 16, 12)
    x, temb = torch.randn(2, 8, 6, 6), torch.randn(2, 12)
    h = block.conv1(nn.functional.silu(block.norm1(x))) + block.time(temb)[:, :, None, None]
    h = block.conv2(nn.functional.silu(block.norm2(h)))
    assert torch.allclose(block(x, temb), h + block.skip(x), atol=1e-6)
    assert block.conv1.kernel_size == (3, 3) and block.conv2.kernel_size == (3, 3)
    assert block.norm1.num_groups == 8 and block.norm2.num_groups == 8
    same = ResBlock(8, 8, 12)
    assert isinstance(same.skip, nn.Identity)


@pytest.mark.parametrize("shape", [(16, 16, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_the_velocity_field_keeps_the_image_shape_and_starts_at_zero(shape):
    h, w, c = shape
    net = VelocityUNet(c, h)  # the default width
    assert net.width == CFG["width"]
    x, t = torch.randn(3, c, h, w), torch.rand(3)
    v = net(x, t)
    assert v.shape == x.shape and torch.count_nonzero(v) == 0  # zero-initialised output
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_()
    v = net(x, t)
    assert v.shape == x.shape and v.abs().sum() > 0
    # the time reaches the output: the same images at another time give another field
    assert not torch.allclose(v, net(x, 1 - t))


def test_image_sizes_not_divisible_by_4_are_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        VelocityUNet(1, 18)


def _trained_checkpoint(path, shape=(16, 16, 1), steps=3, solver="heun"):
    from glann.atomic import torch_save

    torch.manual_seed(0)
    gen = FlowGenerator(shape, 8, steps, solver)
    with torch.no_grad():
        for p in gen.velocity.out.parameters():  # a field that is not 0
            p.normal_(0, 0.1)
    torch_save(path, {"generator": gen.state_dict(), "noise_dim": int(np.prod(shape)), "image_shape": list(shape),
                "generator_arch": "flow_unet", "noise": "normal", "network_evals": network_evals(solver, steps),
                "config": {**CFG, "width": 8, "steps": steps, "solver": solver}, "seed": 0})
    return gen


def test_sampling_is_deterministic_under_a_seed_and_reports_its_cost(tmp_path):
    from glann.methods.sampling import Sampler

    gen = _trained_checkpoint(tmp_path / "model.pt")
    s = Sampler("flow", {"model": tmp_path / "model.pt"}, CPU)
    assert s.noise_dim == 256 and s.network_evals == 6 and not s.uniform
    a, b, c = s.generate(10, seed=3), s.generate(10, seed=3), s.generate(10, seed=4)
    assert a.dtype == np.uint8 and a.shape == (10, 16, 16, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the sampler's images are the ODE's solution from its own noise, mapped from [-1, 1] to [0, 1]
    noise = s.noise(10, torch.Generator().manual_seed(3))
    x = integrate(gen.velocity.eval(), noise.view(10, 1, 16, 16), 3, "heun")
    want = ((x + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(a, want)


def test_sample_writes_the_sampling_cost_that_evaluate_reads(tmp_path, digits_small_dir):
    from glann.atomic import load_npz
    from glann.methods.sampling import Draw, sample

    _trained_checkpoint(tmp_path / "model.pt", steps=2, solver="euler")
    meta = sample("flow", {"model": tmp_path / "model.pt"}, digits_small_dir, tmp_path / "out", Draw(20, 0), CPU)
    assert meta["network_evals"] == 2 and meta["sample_seconds_per_1000"] > 0
    with load_npz(tmp_path / "out/samples.npz") as z:
        assert int(z["network_evals"]) == 2 and float(z["sample_seconds_per_1000"]) == meta["sample_seconds_per_1000"]


def test_flow_matching_learns_a_2d_mixture():
    """A small MLP field trained with the module's loss on four tight Gaussians at (+-1, +-1),
    sampled with the module's Euler solver: almost every sample lands near a mode, and every mode
    gets its share."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], 1))

    field = Field()
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(1500):
        x1 = modes[torch.randint(4, (256,), generator=g)] + 0.05 * torch.randn(256, 2, generator=g)
        loss = flow_matching_loss(field, x1, torch.randn(256, 2, generator=g), torch.rand(256, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = integrate(field, torch.randn(2000, 2, generator=g), 50, "euler")
    dist, which = torch.cdist(x, modes).min(1)
    assert (dist < 0.3).float().mean() > 0.9
    shares = torch.bincount(which[dist < 0.3], minlength=4).float() / 2000
    assert shares.min() > 0.15 and shares.max() < 0.35, shares


def test_flow_is_a_registered_method_with_a_search_space():
    from glann.methods import registry, search_space

    m = registry.get("flow")
    assert m.trainer == "glann.methods.flow:train_flow" and not m.v1_generator
    assert set(search_space.SPACES["flow"]) == {"flow.lr", "flow.width", "flow.steps"}
    assert flow.SOLVERS == ("euler", "heun")
