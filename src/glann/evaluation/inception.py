"""pytorch-fid's InceptionV3 (pool3, 2048-d), loaded offline from its weights file.

The network and its FID weights are pytorch-fid's (Heusel et al. 2017's TF
Inception ported by mseitzer); the file is looked up where pytorch-fid keeps it
(``$TORCH_HOME/hub/checkpoints``, glann.hub) or at ``fid.inception_weights``. Never downloaded
here: a missing file makes ``inception_fid`` ``null`` with the reason.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glann.errors import WeightsError
from glann.hub import INCEPTION_FILE
from glann.methods.models import to_float_images


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
                   "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_")


@contextmanager
def _without_random_init():
    """Layers built inside skip torch's default random init (``torch.nn.init``).

    For a network whose every tensor the next step overwrites: pytorch-fid loads its FID
    weights with a strict ``load_state_dict``, so a tensor the file lacked would fail there,
    not stay uninitialised. Drawing the 24M random numbers first was 0.3-0.45 s of every
    evaluate job on a 2-core CPU.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def load_inception(path: Path, device) -> nn.Module:
    """pytorch-fid's InceptionV3 (pool3, 2048-d) with its FID weights read from ``path``."""
    import pytorch_fid.inception as pfi

    def from_file(*args, **kwargs):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"cannot read Inception weights {path} ({type(exc).__name__}): the file is truncated "
                f"or not a torch checkpoint. Replace it with pytorch-fid's {INCEPTION_FILE}."
            ) from exc

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = from_file
    try:
        with _without_random_init():
            model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"{path} is not pytorch-fid's FID InceptionV3 state dict ({str(exc).splitlines()[0]}). "
            f"Replace it with {INCEPTION_FILE}."
        ) from exc
    finally:
        pfi.load_state_dict_from_url = original
    return model.to(device).eval()


@torch.no_grad()
def inception_features(model, images_uint8: np.ndarray, device, batch: int = 200) -> np.ndarray:
    """pool3 features of uint8 NHWC images fed as tensors in [0, 1] (no PNG round trip)."""
    out = []
    for i in range(0, len(images_uint8), batch):
        x = to_float_images(torch.from_numpy(images_uint8[i: i + batch]).to(device))
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out.append(model(x)[0].squeeze(-1).squeeze(-1).cpu())
    return torch.cat(out).numpy().astype(np.float64)
