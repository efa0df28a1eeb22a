"""What every trainer keeps to its contract, beyond its objective (tests/test_science.py).

Found by mutation testing the trainers (tests/mutation/trainers.py): the metadata of each
final checkpoint (its kind, the metrics it logs), the divergence message that names the
task and the key to lower, the VAE's reparameterisation noise drawn from the trainer's own
generator, and the 64x64 DCGAN generator's architecture, which only the CelebA preset uses.
"""

import pytest
import torch
from torch import nn

from glann.methods.training import TrainContext
from glann.atomic import torch_save
from glann.pipeline.config import fill_defaults, load_schema
from glann.errors import DivergedError
from conftest import REPO

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")


def _codes(tmp_path):
    torch_save(tmp_path / "g.pt", {"codes": nn.functional.normalize(torch.randn(200, 8), dim=1)})
    return tmp_path / "g.pt"


def _train(name, digits_dir, tmp_path, **kw):
    from glann.methods import gans, imle
    from glann.evaluation.evaluator import train_evaluator
    from glann.methods.glo import train_glo
    from glann.methods.vae import train_vae

    out = tmp_path / f"{name}.pt"
    one = {"epochs": 1}
    run = {"glo": lambda: train_glo(digits_dir, {**CFG["glo"], "loss": "l1", **one}, TrainContext(out, 3, CPU, **kw)),
           "imle": lambda: imle.train_imle(_codes(tmp_path), {**CFG["imle"], **one}, TrainContext(out, 3, CPU, **kw)),
           "imle_pixel": lambda: imle.train_imle_pixel(digits_dir, {**CFG["imle_pixel"], **one,
                                                                         "samples_factor": 1}, TrainContext(out, 3, CPU, **kw)),
           "lsgan": lambda: gans.train_gan("lsgan", digits_dir, {**CFG["lsgan"], **one}, TrainContext(out, 3, CPU, **kw)),
           "vae": lambda: train_vae(digits_dir, {**CFG["vae"], **one}, TrainContext(out, 3, CPU, **kw)),
           "evaluator": lambda: train_evaluator(digits_dir, {**CFG["evaluator"], **one}, TrainContext(out, 3, CPU, **kw))}
    return run[name](), out


# the metric each trainer logs per epoch besides seconds and images
LOGGED = {"glo": {"loss"}, "imle": {"loss"}, "imle_pixel": {"loss", "nn_distance"},
          "lsgan": {"d_loss", "g_loss"}, "vae": {"elbo"}, "evaluator": {"loss"}}


@pytest.mark.parametrize("name", ["glo", "imle", "imle_pixel", "lsgan", "vae"])
def test_final_checkpoint_names_its_kind_and_logs_its_metrics(name, digits_dir, tmp_path):
    _, out = _train(name, digits_dir, tmp_path)
    blob = torch.load(out, weights_only=False)
    assert blob["kind"] == name and blob["seed"] == 3 and blob["device"] == "cpu"
    row = blob["history"][0]
    assert LOGGED[name] | {"epoch", "seconds", "images"} <= row.keys(), row


def test_glo_gauss_checkpoint_has_every_method_key(tmp_path):
    from glann.methods.gaussian import fit_gaussian

    codes = nn.functional.normalize(torch.randn(300, 8, dtype=torch.float64), dim=1)
    torch_save(tmp_path / "glo.pt", {"codes": codes.float()})
    fit_gaussian(tmp_path / "glo.pt", tmp_path / "gauss.pt", seed=4)
    blob = torch.load(tmp_path / "gauss.pt", weights_only=False)
    assert blob["kind"] == "glo_gauss" and blob["seed"] == 4 and blob["epochs"] == 0
    assert blob["diverged"] is False and blob["diverged_epoch"] is None and blob["history"] == []
    torch.testing.assert_close(blob["mean"], codes.float().double().mean(0))
    torch.testing.assert_close(blob["cov"], torch.cov(codes.float().double().T))


@pytest.mark.parametrize("name,hint", [
    ("glo", "Lower glo.lr_generator / glo.lr_codes"), ("imle", "Lower imle.lr"),
    ("imle_pixel", "Lower imle_pixel.lr"), ("vae", "Lower vae.lr"), ("evaluator", "Lower evaluator.lr"),
])
def test_a_diverging_trainer_names_its_task_and_the_key_to_lower(name, hint, digits_dir, tmp_path):
    """Fault injection makes epoch 1's loss NaN: the error names the task, the epoch and the fix."""
    with pytest.raises(DivergedError, match=rf"^train_{name}: .* in epoch 1\. {hint}") as err:
        _train(name, digits_dir, tmp_path, fault={"nan_at_epoch": 1})
    assert err.value.epoch == 1


def test_vae_noise_comes_from_the_trainers_generator():
    """The reparameterisation noise is drawn from ``gen`` (saved in checkpoints), not the global RNG."""
    from glann.methods.vae import elbo_terms

    torch.manual_seed(0)
    enc, dec = nn.Linear(6, 4), nn.Sequential(nn.Linear(2, 6), nn.Sigmoid())
    x = torch.rand(5, 6)

    def run(gen_seed, global_seed):
        torch.manual_seed(global_seed)
        return elbo_terms(enc, dec, x, "bernoulli", 0.1, gen=torch.Generator().manual_seed(gen_seed))

    a, b, c = run(1, 10), run(1, 20), run(2, 10)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], c[0])


def test_dcgan_generator_is_radfords_for_64x64():
    """fc -> 4x4x512, then four 4x4 stride-2 transposed convolutions 512-256-128-64-C, BN + ReLU
    between them (none with batchnorm off), a sigmoid at the end (Radford et al. 2016)."""
    from glann.methods.models import DCGANGenerator, make_generator

    G = make_generator(100, (64, 64, 3), "auto", batchnorm=True, normalize_input=True)
    assert isinstance(G, DCGANGenerator)
    assert (G.fc.in_features, G.fc.out_features) == (100, 512 * 4 * 4)
    deconvs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
               for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert deconvs == [(512, 256, (4, 4), (2, 2), (1, 1)), (256, 128, (4, 4), (2, 2), (1, 1)),
                       (128, 64, (4, 4), (2, 2), (1, 1)), (64, 3, (4, 4), (2, 2), (1, 1))]
    kinds = [type(m).__name__ for m in G.net]
    assert kinds == ["BatchNorm2d", "ReLU"] + ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 3 + [
        "ConvTranspose2d", "Sigmoid"]
    assert [m.num_features for m in G.net if isinstance(m, nn.BatchNorm2d)] == [512, 256, 128, 64]
    G.eval()
    z = torch.randn(2, 100)
    x = G(z)
    assert x.shape == (2, 3, 64, 64) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(G(3 * z), x)  # the input is normalised onto the sphere
    plain = make_generator(100, (64, 64, 3), "auto", batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert [type(m).__name__ for m in plain.net].count("Identity") == 4


@pytest.mark.parametrize("n,batch,drop_last,expected", [
    (10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, True, [4, 4]), (3, 4, True, [3]), (3, 4, False, [3]),
])
def test_epoch_batches_cover_the_data_once(n, batch, drop_last, expected):
    """Every example at most once per epoch; only ``drop_last`` drops the remainder (GLO keeps it:
    every code is optimised every epoch), and never all of a set smaller than one batch."""
    from glann.methods.training import epoch_batches

    batches = epoch_batches(n, batch, torch.Generator().manual_seed(0), CPU, drop_last=drop_last)
    assert [len(b) for b in batches] == expected
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == len(seen) and seen.max() < n


def test_gan_logs_the_mean_of_its_d_and_g_step_losses(digits_dir, tmp_path, monkeypatch):
    from glann.methods import gans

    values, d_first = {"d": [], "g": []}, []
    real_descend, real_disc = gans.descend, gans.Discriminator

    def disc(*a, **kw):  # remembers D's first parameter, to tell its optimiser apart
        D = real_disc(*a, **kw)
        d_first.append(next(D.parameters()))
        return D

    def spy(loss, poison, *opts):
        v = real_descend(loss, poison, *opts)
        params = {id(p) for o in opts for g in o.param_groups for p in g["params"]}
        values["d" if id(d_first[0]) in params else "g"].append(float(v))
        return v

    monkeypatch.setattr(gans, "descend", spy)
    monkeypatch.setattr(gans, "Discriminator", disc)
    result, _ = _train("lsgan", digits_dir, tmp_path)
    row = result["history"][0]
    assert len(values["d"]) == len(values["g"]) == 1437 // CFG["lsgan"]["batch_size"]
    assert row["d_loss"] == pytest.approx(sum(values["d"]) / len(values["d"]), rel=1e-12)
    assert row["g_loss"] == pytest.approx(sum(values["g"]) / len(values["g"]), rel=1e-12)


def test_glo_generator_divides_its_input_by_the_norm(digits_dir, tmp_path, monkeypatch):
    from glann.methods import glo

    made = []
    real = glo.make_generator

    def spy(*a, **kw):
        made.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(glo, "make_generator", spy)
    _train("glo", digits_dir, tmp_path)
    assert made and all(kw.get("normalize_input") is True for kw in made)


def test_imle_mapping_is_glanns_three_layer_mlp():
    """T: noise -> latent, Linear-BN-ReLU twice, then Linear (GLANN's released mapping)."""
    from glann.methods.models import IMLEMapping

    T = IMLEMapping(noise_dim=32, latent_dim=64, hidden=128)
    assert [type(m).__name__ for m in T.net] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d",
                                                   "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in T.net if isinstance(m, nn.Linear)] == [
        (32, 128), (128, 128), (128, 64)]


def test_uint8_images_saturate_at_both_ends():
    from glann.methods.models import to_uint8_images

    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 5)
    assert to_uint8_images(x).flatten().tolist() == [0, 0, 128, 255, 255]


def test_vae_encoder_has_batchnorm_and_logs_the_epochs_mean_elbo(digits_dir, tmp_path, monkeypatch):
    """The encoder is the InfoGAN discriminator with BN; the logged nll, kl and elbo are means over
    every image of the epoch."""
    from glann.methods import vae

    terms = []
    real = vae.elbo_terms

    def spy(*a, **kw):
        nll, kl = real(*a, **kw)
        terms.append((nll.detach().sum().item(), kl.detach().sum().item(), len(nll), a[0]))
        return nll, kl

    monkeypatch.setattr(vae, "elbo_terms", spy)
    result, out = _train("vae", digits_dir, tmp_path)
    row = result["history"][0]
    seen = sum(t[2] for t in terms)
    assert len(terms) == 1437 // CFG["vae"]["batch_size"] and row["images"] == seen
    assert row["nll"] == pytest.approx(sum(t[0] for t in terms) / seen, rel=1e-9)
    assert row["kl"] == pytest.approx(sum(t[1] for t in terms) / seen, rel=1e-9)
    assert row["elbo"] == pytest.approx(-(row["nll"] + row["kl"]), rel=1e-9)
    encoder = terms[0][3].state_dict()  # elbo_terms(enc, dec, ...)
    assert sum(k.endswith("running_mean") for k in encoder) == 2  # BN after conv 2 and after the fc


@pytest.mark.parametrize("kind", ["nsgan", "wgan_gp"])
def test_gan_optimisers_use_the_configured_lr_and_betas(kind, digits_dir, tmp_path, monkeypatch):
    """Both G's and D's Adam get the method's lr and betas (v1: beta2 0.999 for every GAN)."""
    from glann.methods import gans

    seen = []

    class SpyAdam(torch.optim.Adam):
        def __init__(self, params, *a, **kw):
            super().__init__(params, *a, **kw)
            seen.append((self.defaults["lr"], self.defaults["betas"]))

    monkeypatch.setattr(gans.torch.optim, "Adam", SpyAdam)
    cfg = {**CFG[kind], "epochs": 1}
    gans.train_gan(kind, digits_dir, cfg, TrainContext(tmp_path / "g.pt", 0, CPU))
    assert seen == [(cfg["lr"], tuple(cfg["betas"]))] * 2
    if kind == "wgan_gp":
        assert cfg["lr"] == 1e-4 and cfg["betas"] == [0.5, 0.999]


def test_discriminator_is_compare_gans_infogan_d_with_one_logit():
    """conv 4x4/2 64 - lReLU - conv 4x4/2 128 - BN - lReLU - fc 1024 - BN - lReLU - fc 1 (one logit
    per image: BCE-with-logits against ones_like would silently accept two)."""
    from glann.methods.models import Discriminator

    D = Discriminator((28, 28, 1))
    assert [type(m).__name__ for m in D.net] == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU",
                                                   "Flatten", "Linear", "BatchNorm1d", "LeakyReLU", "Linear"]
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in D.net
             if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 64, (4, 4), (2, 2), (1, 1)), (64, 128, (4, 4), (2, 2), (1, 1))]
    assert [(m.in_features, m.out_features) for m in D.net if isinstance(m, nn.Linear)] == [
        (128 * 7 * 7, 1024), (1024, 1)]
    assert all(m.negative_slope == 0.2 for m in D.net if isinstance(m, nn.LeakyReLU))
    assert D(torch.rand(3, 1, 28, 28)).shape == (3, 1)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))
                   for m in Discriminator((28, 28, 1), batchnorm=False).modules())


def test_vae_networks_are_v1s(digits_dir, tmp_path, monkeypatch):
    """v1 VAE.py: the encoder is v1's D with BN and a 2d output; the decoder v1's generator
    with ReLU (not the GANs' LeakyReLU), BN after every hidden layer; sampled with N(0, I)."""
    from glann.methods import models, vae
    from glann.methods.models import build_generator

    built = []
    monkeypatch.setattr(vae, "Discriminator", lambda *a, **k: built.append(models.Discriminator(*a, **k)) or built[-1])
    out = vae.train_vae(digits_dir, {**CFG["vae"], "epochs": 1}, TrainContext(tmp_path / "v.pt", 0, CPU))
    assert out["generator_activation"] == "relu" and out["noise"] == "normal"
    G = build_generator(out)
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 3
    assert not any(isinstance(m, nn.LeakyReLU) for m in G.modules())
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in G.modules()) == 3
    (enc,) = built
    assert enc.net[9].weight.shape == (2 * CFG["vae"]["latent_dim"], 1024)
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules()) == 2



def test_pixel_imle_logs_the_epochs_mean_loss(digits_small_dir, tmp_path, monkeypatch):
    """The logged loss is the mean over the epoch's (equal) batches of the losses it descended."""
    from glann.methods import imle

    losses = []
    real = imle.descend
    monkeypatch.setattr(imle, "descend", lambda *a: losses.append(real(*a)) or losses[-1])
    cfg = {**CFG["imle_pixel"], "epochs": 1, "samples_factor": 1, "batch_size": 64}
    res = imle.train_imle_pixel(digits_small_dir, cfg, TrainContext(tmp_path / "m.pt", 0, CPU))
    assert len(losses) == 5 and res["history"][0]["images"] == 320
    assert res["history"][0]["loss"] == pytest.approx(float(sum(losses)) / 5, rel=1e-9)


def test_glo_builds_its_loss_from_every_configured_loss_option(digits_batch_dir, tmp_path, monkeypatch):
    from glann.methods import glo

    calls = []
    real = glo.make_loss
    monkeypatch.setattr(glo, "make_loss", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    cfg = {**CFG["glo"], "loss": "lap1", "lap_levels": 2, "lap_weighting": "sum", "epochs": 1}
    glo.train_glo(digits_batch_dir, cfg, TrainContext(tmp_path / "g.pt", 0, CPU))
    (args, kwargs), = calls
    named = dict(zip(("name", "image_size", "vgg_weights", "lap_levels", "lap_weighting"), args), **kwargs)
    assert named == {"name": "lap1", "image_size": 16, "vgg_weights": cfg["vgg_weights"], "lap_levels": 2,
                     "lap_weighting": "sum"}


class _Tracker:
    def __init__(self):
        self.calls = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))


def test_a_diverged_epoch_reaches_the_tracker_and_every_epoch_its_log_line(digits_small_dir, tmp_path, caplog):
    """A NaN in epoch 2: the tracker gets epoch 1's metrics, then diverged = 1 at step 2 with its
    epoch; the job's log has one line per finished epoch, numbered."""
    import logging

    from glann.methods import gans

    tracker = _Tracker()
    caplog.set_level(logging.INFO, logger="glann")
    res = gans.train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 3},
                         TrainContext(tmp_path / "m.pt", 0, CPU, tracker=tracker, fault={"nan_at_epoch": 2}))
    assert res["diverged"] and res["diverged_epoch"] == 2
    assert [s for s, _ in tracker.calls] == [1, 2]
    assert set(tracker.calls[0][1]) == {"d_loss", "g_loss", "images", "seconds"}  # the epoch is the step
    assert tracker.calls[1][1] == {"diverged": 1.0, "diverged_epoch": 2}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("epoch 1: d_loss=")


def test_the_gaussians_checkpoint_records_its_glo(digits_batch_dir, tmp_path):
    """glo_gauss's checkpoint: the fields every final checkpoint has, and the GLO it was fitted to."""
    from glann.methods.gaussian import fit_gaussian
    from glann.methods.glo import train_glo

    train_glo(digits_batch_dir, {**CFG["glo"], "loss": "l1", "epochs": 1}, TrainContext(tmp_path / "glo.pt", 0, CPU))
    fit_gaussian(tmp_path / "glo.pt", tmp_path / "g.pt", seed=3)
    blob = torch.load(tmp_path / "g.pt", weights_only=False)
    assert {k: blob[k] for k in ("kind", "seed", "epochs", "diverged", "diverged_epoch", "config", "history",
                                 "glo_path")} == {
        "kind": "glo_gauss", "seed": 3, "epochs": 0, "diverged": False, "diverged_epoch": None, "config": {},
        "history": [], "glo_path": str(tmp_path / "glo.pt")}


def test_vae_checkpoints_keep_the_decoder_only(digits_batch_dir, tmp_path):
    """The final checkpoint and the quality-vs-compute snapshots hold what sampling reads: the
    VAE's decoder, not its encoder."""
    from glann.methods.vae import train_vae

    ctx = TrainContext(tmp_path / "v.pt", 0, CPU, snapshots=2, snapshot_path=tmp_path / "s.pt")
    final = train_vae(digits_batch_dir, {**CFG["vae"], "epochs": 2}, ctx)
    assert "encoder" not in final and "encoder" not in torch.load(tmp_path / "v.pt", weights_only=False)
    snaps = torch.load(tmp_path / "s.pt", weights_only=False)["snapshots"]
    assert [s["epoch"] for s in snaps] == [1, 2]
    assert all("generator" in s and "encoder" not in s for s in snaps)


def test_final_generators_are_stored_in_float16_and_sample_as_before(digits_dir, tmp_path):
    """The final checkpoint keeps the generator's weights in float16 (half the bytes: results/
    fits its size targets, docs/development.md), and a generator loaded from it draws the same
    images as the trained one to well under a grey level (1/255)."""
    from glann.methods.models import build_generator

    result, out = _train("lsgan", digits_dir, tmp_path)
    stored = torch.load(out, weights_only=False)["generator"]
    floats = [k for k, v in result["generator"].items() if v.dtype == torch.float32]
    assert floats and all(stored[k].dtype == torch.float16 for k in floats)
    assert all(stored[k].dtype == v.dtype for k, v in result["generator"].items() if k not in floats)
    half_bytes = sum(v.numel() * v.element_size() for v in stored.values())
    full_bytes = sum(v.numel() * v.element_size() for v in result["generator"].values())
    assert half_bytes < 0.51 * full_bytes and out.stat().st_size < 0.55 * full_bytes
    trained, loaded = build_generator(result), build_generator(result)
    trained.load_state_dict(result["generator"])
    loaded.load_state_dict(stored)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    z = torch.rand(500, result["noise_dim"], generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        diff = (trained.eval()(z) - loaded.eval()(z)).abs()
    assert 0 < diff.max() < 1e-3


# ------------------------------------------------------------------ no host synchronisation per step
def _count_reads(monkeypatch):
    """Count every read of a tensor's value into Python (item, float, int, bool, tolist) that the
    pipeline's own code makes (torch's internals read CPU-side counters, such as Adam's step)."""
    import sys

    reads = [0]
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            if "/glann/" in sys._getframe(1).f_code.co_filename:
                reads[0] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def _count_moves(monkeypatch):
    """Count the pipeline's own ``Tensor.to(device)`` calls made anywhere but ``glann.runtime.to_device``:
    on CUDA such a copy of a CPU-drawn tensor waits for the stream to drain. A step loop moves its
    draws through ``to_device`` (pinned, non-blocking), so these do not grow with its steps."""
    import sys

    moves = [0]
    real = torch.Tensor.to

    def counted(self, *a, **k):
        caller = sys._getframe(1).f_code
        to_a_device = "device" in k or any(isinstance(x, (torch.device, str)) for x in a)  # not a dtype cast
        if to_a_device and "/glann/" in caller.co_filename and caller.co_name != "to_device":
            moves[0] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", counted)
    return moves


@pytest.mark.parametrize("name, cfg_of", [
    ("glo", lambda b: {**CFG["glo"], "loss": "l1", "batch_size": b}),
    ("imle", lambda b: {**CFG["imle"], "batch_size": b}),
    ("imle_pixel", lambda b: {**CFG["imle_pixel"], "samples_factor": 1, "batch_size": b}),
    ("nsgan", lambda b: {**CFG["nsgan"], "batch_size": b}),
    ("began", lambda b: {**CFG["began"], "batch_size": b}),
    ("wgan_gp", lambda b: {**CFG["wgan_gp"], "batch_size": b}),
    ("dragan", lambda b: {**CFG["dragan"], "batch_size": b}),
    ("vae", lambda b: {**CFG["vae"], "batch_size": b}),
    ("flow", lambda b: {**CFG["flow"], "width": 8, "batch_size": b}),
])
def test_a_training_epoch_reads_its_losses_once_whatever_its_step_count(name, cfg_of, digits_small_dir, tmp_path,
                                                                       monkeypatch):
    """The step loop keeps its sums on the device (glann.methods.training.descend) and moves its
    CPU-drawn noise through glann.runtime.to_device: the number of tensor-to-Python reads and of
    blocking copies in an epoch does not grow with its number of steps (each stalls a GPU's
    queue), and the logged loss is the same number as before, bit for bit."""
    from glann.methods import flow, gans, imle
    from glann.methods.glo import train_glo
    from glann.methods.vae import train_vae

    def run(batch, out):
        cfg = {**cfg_of(batch), "epochs": 1}
        ctx = TrainContext(out, 0, CPU)
        if name == "glo":
            return train_glo(digits_small_dir, cfg, ctx)
        if name == "imle":
            return imle.train_imle(_codes(tmp_path), cfg, ctx)
        if name == "imle_pixel":
            return imle.train_imle_pixel(digits_small_dir, cfg, ctx)
        if name in ("nsgan", "began", "wgan_gp", "dragan"):
            return gans.train_gan(name, digits_small_dir, cfg, ctx)
        if name == "vae":
            return train_vae(digits_small_dir, cfg, ctx)
        return flow.train_flow(digits_small_dir, cfg, ctx)

    counts = []
    for batch in (64, 16):  # 5 and 20 steps over 320 images (imle: 3 and 12 over its 200 codes)
        with monkeypatch.context() as m:
            reads, moves = _count_reads(m), _count_moves(m)
            run(batch, tmp_path / f"{name}{batch}.pt")
            counts.append((reads[0], moves[0]))
    assert counts[0] == counts[1], f"(reads, blocking copies) per epoch at 5 and 20 steps: {counts}"


def test_to_device_queues_a_pinned_copy_on_cuda_and_keeps_the_values():
    """On CUDA a CPU-drawn tensor is pinned and copied with non_blocking (no wait for the stream);
    on the CPU it comes back with the same values (the trainers' numbers do not change)."""
    from unittest import mock

    from glann.runtime import to_device

    t = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_device(t, torch.device("cpu")), t)
    fake = mock.MagicMock()
    cuda = torch.device("cuda")
    to_device(fake, cuda)
    fake.pin_memory.assert_called_once_with()
    fake.pin_memory.return_value.to.assert_called_once_with(cuda, non_blocking=True)
    fake.to.assert_not_called()


def test_the_logged_loss_is_the_python_float_sum_it_replaces(digits_small_dir, tmp_path, monkeypatch):
    """sum(loss.item() * batch) / n in Python floats, exactly (==): the device sum in float64 of
    the same products is the same number."""
    from glann.methods import glo

    items, real = [], glo.descend
    monkeypatch.setattr(glo, "descend", lambda loss, *a: items.append(loss.item()) or real(loss, *a))
    res = glo.train_glo(digits_small_dir, {**CFG["glo"], "loss": "l1", "epochs": 1, "batch_size": 48},
                        TrainContext(tmp_path / "g.pt", 0, CPU))
    sizes = [48] * 6 + [320 - 6 * 48]
    total = 0.0
    for v, b in zip(items, sizes):
        total += v * b
    assert len(items) == 7 and res["history"][0]["loss"] == total / 320
