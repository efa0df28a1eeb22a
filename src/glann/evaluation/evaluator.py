"""The offline evaluator whose features ``fid_domain``, precision/recall and mode coverage use.

A LeNet-style classifier (images <= 28 px) or a small ResNet (32/64 px) trained on
the labelled train split; for an unlabelled folder the same net is trained to
predict image rotation (0/90/180/270 degrees, Gidaris et al. 2018). Its
penultimate features stand in for Inception's where the Inception weights cannot
be had (offline): other features, another scale, not comparable with Inception FID.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glann.atomic import load_torch
from glann.data.datasets import load_prepared, read_manifest
from glann.methods.models import to_float_images
from glann.runtime import to_device


class LeNetEvaluator(nn.Module):
    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNetEvaluator(nn.Module):
    """A small ResNet (3 stages of basic blocks) for 32x32 and 64x64 images."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            _Block(32, 32, 1), _Block(32, 64, 2), _Block(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def make_evaluator(image_shape, num_classes: int, arch: str = "auto") -> nn.Module:
    size, _, channels = image_shape
    if arch == "auto":
        arch = "lenet" if size <= 28 else "resnet"
    return {"lenet": LeNetEvaluator, "resnet": ResNetEvaluator}[arch](channels, num_classes)


def _rotate_batch(x: torch.Tensor, gen: torch.Generator):
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)  # read on the host: no GPU sync per image
    out = torch.stack([torch.rot90(im, r, dims=(1, 2)) for im, r in zip(x, k.tolist())])
    return out, to_device(k, x.device)


def train_evaluator(data_dir, cfg: dict, ctx) -> dict:
    """Train the offline evaluator (resumable, through the one training loop); returns
    {task, num_classes, test_accuracy, ...} and saves the net with it."""
    from glann.methods.training import Loop, descend, fit, seeded

    manifest = read_manifest(data_dir)
    xtr, ytr = load_prepared(data_dir, "train")
    xte, yte = load_prepared(data_dir, "test")
    labelled = manifest["num_classes"] > 1 and (ytr >= 0).all()
    task = "classes" if labelled else "rotation"
    k = manifest["num_classes"] if labelled else 4
    gen = seeded(ctx.seed)
    net = make_evaluator(manifest["image_shape"], k, cfg["arch"]).to(ctx.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    x = torch.from_numpy(xtr).to(ctx.device)
    y = torch.from_numpy(ytr).to(ctx.device)

    def step(epoch: int, poison: bool) -> dict:
        net.train()
        perm = to_device(torch.randperm(len(x), generator=gen), ctx.device)
        total = 0.0
        for i in range(0, len(x), cfg["batch_size"]):
            idx = perm[i: i + cfg["batch_size"]]
            xb, yb = to_float_images(x[idx]), y[idx]
            if task == "rotation":
                xb, yb = _rotate_batch(xb, gen)
            total += descend(F.cross_entropy(net(xb), yb), poison, opt) * len(idx)
        return {"loss": total / len(x), "images": len(x)}

    def final() -> dict:
        net.eval()
        with torch.no_grad():
            xt = to_float_images(torch.from_numpy(xte).to(ctx.device))
            if task == "rotation":
                xt, yt = _rotate_batch(xt, gen)
            else:
                yt = torch.from_numpy(yte).to(ctx.device)
            pred = torch.cat([net(xt[i: i + 1000]).argmax(1) for i in range(0, len(xt), 1000)])
        return {"state": net.state_dict(), "task": task, "num_classes": k,
                "test_accuracy": (pred == yt).float().mean().item(), "arch": cfg["arch"],
                "image_shape": manifest["image_shape"]}

    out = fit(Loop("train_evaluator", "evaluator", cfg, {"net": net, "opt": opt}, gen, step, final,
                   hint="Lower evaluator.lr."), ctx)
    return {key: out[key] for key in ("task", "num_classes", "test_accuracy", "arch", "image_shape", "epochs")}


def load_evaluator(path, device) -> tuple[nn.Module, dict]:
    blob = load_torch(path)
    net = make_evaluator(blob["image_shape"], blob["num_classes"], blob["arch"])
    net.load_state_dict(blob["state"])
    return net.to(device).eval(), blob


@torch.no_grad()
def evaluator_outputs(net, images_uint8: np.ndarray, device, batch: int = 1000):
    """(penultimate features, predicted class) for uint8 NHWC images."""
    feats, preds = [], []
    for i in range(0, len(images_uint8), batch):
        x = to_float_images(torch.from_numpy(images_uint8[i: i + batch]).to(device))
        f = net.features(x)
        feats.append(f.cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(preds).numpy()
