"""lap1 against a hand-built pyramid, the VGG code path, and exact nearest neighbours."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glann.errors import WeightsError
from glann.methods.losses import VGGLoss, find_vgg16_weights, lap1_loss, laplacian_pyramid, make_loss
from glann.methods.nn_search import faiss_nearest_neighbors, nearest_neighbors


def _hand_bilinear(low, h, w):
    """Bilinear resize with half-pixel centres (align_corners=False), written out with numpy."""
    def weights(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, n_in - 1)
            m[i, i0] += 1 - (src - i0)
            m[i, i1] += src - i0
        return m
    return weights(low.shape[0], h) @ low @ weights(low.shape[1], w).T


def _hand_pyramid(x, levels):
    """Burt-Adelson pyramid written out with numpy loops (independent of losses.py and of torch):
    5x5 binomial blur with reflect padding, 2x2 mean (odd sizes drop their last row/column),
    bilinear back up; no band is cut from an image under 4 pixels."""
    k1 = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    k = np.outer(k1, k1)
    out, cur = [], x.astype(np.float64)
    for _ in range(levels):
        h, w = cur.shape
        if min(h, w) < 4:
            break
        padded = np.pad(cur, 2, mode="reflect")
        blur = np.zeros_like(cur)
        for i in range(h):
            for j in range(w):
                blur[i, j] = (padded[i:i + 5, j:j + 5] * k).sum()
        low = blur[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        out.append(cur - _hand_bilinear(low, h, w))
        cur = low
    out.append(cur)
    return out


@pytest.mark.parametrize("size,levels,shapes", [
    (28, 3, [28, 14, 7, 3]),    # odd 7 -> 3: a non-integer upsampling factor
    (16, 5, [16, 8, 4, 2]),     # stops at the first level under 4 pixels (4 still gets a band)
    (12, 5, [12, 6, 3]),        # 3 gets none
])
def test_laplacian_pyramid_matches_numpy_per_channel(size, levels, shapes):
    rng = np.random.default_rng(size)
    x = rng.random((2, 3, size, size))
    got = laplacian_pyramid(torch.tensor(x), levels)
    assert [g.shape[-1] for g in got] == shapes
    for b in range(2):
        for c in range(3):
            for mine, ref in zip(got, _hand_pyramid(x[b, c], levels), strict=True):
                np.testing.assert_allclose(mine[b, c].numpy(), ref, atol=1e-12)


def test_lap1_matches_hand_computed_pyramid():
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    pa, pb = _hand_pyramid(a, 2), _hand_pyramid(b, 2)
    expected = sum(2.0 ** (-2 * j) * np.abs(x - y).sum() for j, (x, y) in enumerate(zip(pa, pb))) / 256
    ta, tb = torch.tensor(a)[None, None], torch.tensor(b)[None, None]
    got = lap1_loss(ta, tb, levels=2, weighting="sum").item()
    assert got == pytest.approx(expected, rel=1e-10)
    for mine, ref in zip(laplacian_pyramid(ta, 2), pa):
        np.testing.assert_allclose(mine[0, 0].numpy(), ref, atol=1e-12)
    # a pyramid is invertible: zero loss only for identical images
    assert lap1_loss(ta, ta, levels=2).item() == 0


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised torchvision VGG16 saved to a temp file (code paths only)."""
    from weights import save_random_vgg16

    return save_random_vgg16(tmp_path_factory.mktemp("vgg") / "vgg16-random.pth")


@pytest.fixture(scope="module")
def vgg_features():
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"])  # torchvision's VGG16 features, without the classifier


def _torchvision_vgg(path):
    import torchvision

    vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(torch.load(path, weights_only=True))
    return vgg


def _reference_vgg_distance(vgg, levels: int, a, b):
    """GLANN's released loss recomputed independently: glo.py's input handling, then
    vgg_metric._VGGDistance's loop over torchvision's vgg16().features, in-place ReLUs and all."""
    def prep(t):
        if t.shape[1] == 1:
            t = t.expand(t.shape[0], 3, *t.shape[2:])
        if t.shape[-1] == 28:
            t = F.pad(t, (2, 2, 2, 2))
        return 2 * t - 1

    def taps(z):
        ids = [2, 7, 12, 21, 30][:levels]
        out = []
        for i in range(ids[-1] + 1):
            z = vgg.features[i](z)
            if i in ids:
                out.append(z)
        return out

    i1, i2 = prep(a), prep(b)
    f1, f2 = taps(i1), taps(i2)
    n = i1.shape[0]
    loss = (i1 - i2).abs().view(n, -1).mean(1)
    for j in range(levels):
        loss = loss + (f1[j] - f2[j]).abs().view(n, -1).mean(1)
    return loss.mean()


@pytest.mark.parametrize("shape,levels", [((2, 1, 28, 28), 3), ((2, 3, 32, 32), 3), ((2, 1, 16, 16), 2)])
def test_vgg_loss_equals_the_released_glann_loss(vgg_file, shape, levels):
    """Against an independent re-computation of yedidh/glann's loss with the same (random)
    VGG16 weights: 2x - 1 scaling without ImageNet mean/std, pixel L1 on the padded [-1, 1]
    images, features read where torchvision's in-place ReLUs leave them."""
    loss = VGGLoss(find_vgg16_weights(str(vgg_file)), image_size=shape[-1])
    assert len(loss.layers) == levels
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=g, requires_grad=True)
    y = torch.rand(*shape, generator=g)
    val = loss(x, y)
    val.backward()
    assert x.grad.abs().sum() > 0
    vgg = _torchvision_vgg(vgg_file)
    assert all(getattr(vgg.features[i], "inplace", False) for i in (3, 8, 13))
    with torch.no_grad():
        expected = _reference_vgg_distance(vgg, levels, x.detach().clone(), y.clone())
    assert val.item() == pytest.approx(expected.item(), rel=1e-5)
    # not the conv outputs, not ImageNet-normalised inputs: both give another number
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        xr = (F.pad(x.expand(-1, 3, -1, -1), (2, 2, 2, 2)) if shape[1] == 1 and shape[-1] == 28
              else x.expand(-1, 3, -1, -1))
        yr = (F.pad(y.expand(-1, 3, -1, -1), (2, 2, 2, 2)) if shape[1] == 1 and shape[-1] == 28
              else y.expand(-1, 3, -1, -1))
        imagenet = (xr - yr).abs().mean() + sum(
            (vgg.features[: k + 1]((xr - mean) / std) - vgg.features[: k + 1]((yr - mean) / std)).abs().mean()
            for k in (2, 7, 12)[:levels])
    assert abs(imagenet.item() - val.item()) > 1e-3 * val.item()


def test_vgg_features_load_without_the_classifier(vgg_file, tmp_path):
    """Only ``features`` is built and loaded: bit for bit torchvision's; a file holding only
    the features, or in torch's legacy format, loads too; another network's features do not."""
    from torchvision.models.vgg import cfgs, make_layers

    from glann.methods.losses import load_vgg16_features

    full = _torchvision_vgg(vgg_file)
    got = load_vgg16_features(vgg_file)
    ref = full.features.state_dict()
    assert got.state_dict().keys() == ref.keys()
    assert all(torch.equal(got.state_dict()[k], ref[k]) for k in ref)
    only = {f"features.{k}": v for k, v in ref.items()}
    legacy = tmp_path / "legacy.pth"
    torch.save(only, legacy, _use_new_zipfile_serialization=False)
    loaded = load_vgg16_features(legacy).state_dict()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)
    vgg19 = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, vgg19)
    with pytest.raises(WeightsError, match="vgg19.pth is not a VGG16 state dict"):
        load_vgg16_features(vgg19)
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(WeightsError, match="not a VGG16 state dict .expected a state dict, found list"):
        load_vgg16_features(listed)


@pytest.mark.parametrize("size,layers,pad", [
    (16, (2, 7), 0), (20, (2, 7), 0), (28, (2, 7, 12), 2), (32, (2, 7, 12), 0),
    (64, (2, 7, 12, 21), 0), (65, (2, 7, 12, 21, 30), 0), (96, (2, 7, 12, 21, 30), 0)])
def test_vgg_layers_by_image_size(size, layers, pad, vgg_features, monkeypatch):
    """GLANN's feature levels: 2/3/4 for 16/32/64-pixel images (28 zero-padded to 32), all five
    above 64, two otherwise."""
    import glann.methods.losses as gl

    monkeypatch.setattr(gl, "load_vgg16_features", lambda path: vgg_features)
    loss = VGGLoss(Path("unused"), image_size=size)
    assert loss.layers == layers and loss.pad == pad
    assert len(loss.features) == layers[-1] + 1
    assert not any(p.requires_grad for p in loss.features.parameters())  # frozen: no gradient into VGG


def test_make_loss_builds_each_configured_loss(vgg_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))  # no weights in the hub cache
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    assert make_loss("l1", 16)(x, y).item() == pytest.approx((x - y).abs().mean().item(), rel=1e-12)
    assert make_loss("l2", 16)(x, y).item() == pytest.approx((x - y).pow(2).mean().item(), rel=1e-12)
    assert make_loss("lap1", 16)(x, y).item() == lap1_loss(x, y, None, "mean").item()  # paper default
    assert make_loss("lap1", 16, lap_levels=1, lap_weighting="sum")(x, y).item() == \
        lap1_loss(x, y, 1, "sum").item()
    assert lap1_loss(x, y, 1, "sum").item() != lap1_loss(x, y, None, "sum").item()
    vgg = make_loss("vgg", 16, vgg_weights=str(vgg_file))
    assert isinstance(vgg, VGGLoss) and vgg.layers == (2, 7)
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        make_loss("l3", 16)
    with pytest.raises(ValueError, match="unknown lap_weighting 'median'; allowed: sum, mean"):
        lap1_loss(x, y, weighting="median")


def test_lap1_default_levels_follow_the_image_width():
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert lap1_loss(x, y).item() == lap1_loss(x, y, levels=3).item()
    assert lap1_loss(x, y).item() != lap1_loss(x, y, levels=1).item()


def test_vgg_weights_missing_truncated_or_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    cached = tmp_path / "torchhome" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(WeightsError) as err:
        find_vgg16_weights(None)
    assert str(err.value) == (
        f"glo.loss: vgg needs ImageNet VGG16 weights: {cached} is missing. On a machine with network run "
        "`python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` (it saves the "
        "file there), or set glo.vgg_weights to a copy of it, or use glo.loss: lap1.")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find_vgg16_weights(None) == cached  # torchvision's download lands there
    with pytest.raises(WeightsError, match="does not exist"):
        find_vgg16_weights(str(tmp_path / "nope.pth"))
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(b"PK\x03\x04garbage")
    try:
        torch.load(bad, weights_only=True)
    except Exception as exc:  # what torch says, first line
        said = f"({type(exc).__name__}: {str(exc).splitlines()[0][:157]}"
    with pytest.raises(WeightsError, match="cannot read VGG16 weights .*trunc.pth .*truncated") as err:
        VGGLoss(bad, 32)
    assert said in str(err.value)
    pickled = tmp_path / "pickled.pth"  # arbitrary objects are never unpickled (weights_only)
    torch.save({"features.0.weight": Path("x")}, pickled)
    with pytest.raises(WeightsError, match="cannot read VGG16 weights .*not a torch checkpoint") as err:
        VGGLoss(pickled, 32)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)  # one plain line
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"not a VGG16 state dict \(Error\(s\) in loading state_dict for VGG16Features:\)"):
        VGGLoss(wrong, 32)


@pytest.mark.parametrize("dim", [3, 64, 784])
def test_nearest_neighbors_is_exact(dim):
    g = torch.Generator().manual_seed(dim)
    q, p = torch.randn(300, dim, generator=g), torch.randn(1000, dim, generator=g)
    idx, d = nearest_neighbors(q, p, query_chunk=64, point_chunk=128)
    ref = torch.cdist(q.double(), p.double()).argmin(1)
    assert torch.equal(idx, ref)
    np.testing.assert_allclose(d.numpy(), ((q - p[idx]) ** 2).sum(1).numpy(), rtol=1e-4, atol=1e-3)


def test_faiss_backend_gives_the_same_indices():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(500, 64, generator=g), torch.randn(2000, 64, generator=g)
    idx, _ = nearest_neighbors(q, p)
    fidx, _ = faiss_nearest_neighbors(q, p)
    assert np.array_equal(idx.numpy(), fidx)


def test_weight_errors_quote_the_first_line_of_the_cause_plainly():
    from glann.methods.losses import _first_line

    assert _first_line(ValueError("\x1b[1mbold\x1b[0m reason\nmore")) == "bold reason"
    assert _first_line(ValueError("")) == ""
    assert _first_line(ValueError("a" * 160)) == "a" * 160
    assert _first_line(ValueError("a" * 161)) == "a" * 157 + "..."


def test_search_dispatches_on_the_backend_and_returns_torch_indices(monkeypatch):
    """``imle.nn_backend``: "faiss" searches with faiss and "torch" never does; both return an
    int64 index tensor (it indexes the noise) and float distances, on the queries' device."""
    pytest.importorskip("faiss")
    from glann.methods import nn_search

    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(50, 8, generator=g), torch.randn(300, 8, generator=g)
    calls = []
    real = nn_search.faiss_nearest_neighbors
    monkeypatch.setattr(nn_search, "faiss_nearest_neighbors", lambda *a: calls.append(1) or real(*a))
    ti, td = nn_search.search(q, p, "torch")
    assert calls == []
    fi, fd = nn_search.search(q, p, "faiss")
    assert calls == [1]
    assert fi.dtype == ti.dtype == torch.int64 and fd.dtype == torch.float32
    assert torch.equal(fi, ti) and torch.allclose(fd, td, rtol=1e-4, atol=1e-4)
    assert torch.equal(p[fi], p[ti])
