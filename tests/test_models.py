"""Every network against its reference's layer list, per dataset shape.

compare_gan v1 (google/compare_gan ``src/gans/abstract_gan.py``, ``VAE.py``, ``BEGAN.py``,
``ops.py``) for the GANs and the VAE; GLANN's released ``model.py`` for GLO's generator.
The expected lists are written out here from those files, not derived from the code.
"""

import pytest
import torch
from torch import nn

from glann.methods.models import BEGANDiscriminator, Discriminator, V1Generator, make_generator

SHAPES = [(28, 1), (32, 3), (64, 3)]  # MNIST/Fashion, CIFAR-10, CelebA-64


def _layers(module):
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            out.append(("fc", m.in_features, m.out_features))
        elif isinstance(m, nn.ConvTranspose2d):
            out.append(("deconv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.append(("bn", m.num_features, m.momentum, m.eps))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("lrelu", m.negative_slope))
        elif isinstance(m, nn.ReLU):
            out.append(("relu",))
        elif isinstance(m, nn.Sigmoid):
            out.append(("sigmoid",))
    return out


BN = (0.001, 0.001)  # TF batch_norm(decay=0.999, epsilon=0.001) in torch's terms
K = ((4, 4), (2, 2), (1, 1))


@pytest.mark.parametrize("size,c", SHAPES)
@pytest.mark.parametrize("act", ["lrelu", "relu"])
def test_v1_generator_is_compare_gans_on_every_dataset(size, c, act):
    """g_fc1 1024, g_bn1, act; g_fc2 128*(s/4)^2, g_bn2, act; g_dc3 -> 64, g_bn3, act;
    g_dc4 -> C, sigmoid: BN after every hidden layer, colour and 64x64 included."""
    s4 = size // 4
    a = ("lrelu", 0.2) if act == "lrelu" else ("relu",)
    G = V1Generator(64, size, c, act)
    assert _layers(G) == [
        ("fc", 64, 1024), ("bn", 1024, *BN), a,
        ("fc", 1024, 128 * s4 * s4), ("bn", 128 * s4 * s4, *BN), a,
        ("deconv", 128, 64, *K), ("bn", 64, *BN), a,
        ("deconv", 64, c, *K), ("sigmoid",),
    ]
    assert G(torch.rand(3, 64) * 2 - 1).shape == (3, c, size, size)


@pytest.mark.parametrize("size,c", SHAPES)
@pytest.mark.parametrize("bn", [True, False])
def test_v1_discriminator_per_dataset_and_bn_setting(size, c, bn):
    """d_conv1 64, lrelu; d_conv2 128, [d_bn2], lrelu; d_fc3 1024, [d_bn3], lrelu; d_fc4 out."""
    s4 = size // 4
    D = Discriminator((size, size, c), batchnorm=bn, out_dim=1)
    want = [("conv", c, 64, *K), ("lrelu", 0.2), ("conv", 64, 128, *K)]
    want += [("bn", 128, *BN)] if bn else []
    want += [("lrelu", 0.2), ("fc", 128 * s4 * s4, 1024)]
    want += [("bn", 1024, *BN)] if bn else []
    want += [("lrelu", 0.2), ("fc", 1024, 1)]
    assert _layers(D) == want
    assert D(torch.rand(3, c, size, size)).shape == (3, 1)


@pytest.mark.parametrize("size,c", SHAPES)
def test_began_discriminator_is_v1s_auto_encoder(size, c):
    """d_conv1 64, lrelu; d_conv2 128 (no activation); d_fc6 64, [bn], lrelu; d_fc1
    128*(s/4)^2, [bn], lrelu; d_deconv1 64, [bn], lrelu; d_deconv2 C, sigmoid."""
    s4 = size // 4
    for bn in (False, True):
        D = BEGANDiscriminator((size, size, c), batchnorm=bn)
        norm = lambda n: [("bn", n, *BN)] if bn else []  # noqa: E731
        assert _layers(D) == [
            ("conv", c, 64, *K), ("lrelu", 0.2), ("conv", 64, 128, *K),
            ("fc", 128 * s4 * s4, 64), *norm(64), ("lrelu", 0.2),
            ("fc", 64, 128 * s4 * s4), *norm(128 * s4 * s4), ("lrelu", 0.2),
            ("deconv", 128, 64, *K), *norm(64), ("lrelu", 0.2),
            ("deconv", 64, c, *K), ("sigmoid",),
        ]
        x = torch.rand(2, c, size, size)
        assert D(x).shape == x.shape


def test_v1_initialisers():
    """ops.py: linear and deconv weights N(0, 0.02), conv kernels truncated N(0, 0.02), biases 0."""
    torch.manual_seed(0)
    G, D = V1Generator(64, 28, 1), Discriminator((28, 28, 1))
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                assert torch.count_nonzero(m.bias) == 0
                if m.weight.numel() > 10_000:
                    assert m.weight.std().item() == pytest.approx(0.02 if not type(m) is nn.Conv2d else 0.0176,
                                                                  rel=0.05)
                if type(m) is nn.Conv2d:
                    assert m.weight.abs().max() <= 0.04 + 1e-7  # truncated at two standard deviations
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize("size,c,bn", [(28, 1, True), (32, 3, False)])
def test_glo_generator_is_glanns_released_netg(size, c, bn):
    """yedidh/glann model._netG: lin_in 1024 (its bn_in is commented out), LeakyReLU 0.2;
    lin_im 128*(s/4)^2, [bn_im], LeakyReLU; conv1 -> 64, [bn_conv], LeakyReLU; conv2 -> C,
    sigmoid. do_bn for MNIST/Fashion, not for CIFAR-10 (``batchnorm: auto``)."""
    s4 = size // 4
    G = make_generator(64, (size, size, c), "auto", "auto", normalize_input=True)
    norm = lambda n: [("bn", n, 0.1, 1e-5)] if bn else []  # noqa: E731 (torch's BN defaults, as the reference)
    assert _layers(G) == [
        ("fc", 64, 1024), ("lrelu", 0.2),
        ("fc", 1024, 128 * s4 * s4), *norm(128 * s4 * s4), ("lrelu", 0.2),
        ("deconv", 128, 64, *K), *norm(64), ("lrelu", 0.2),
        ("deconv", 64, c, *K), ("sigmoid",),
    ]
