"""The method registry: one entry per method, read by everything that needs to know one.

The Snakemake rules' input functions and wildcard constraints, the config check,
``glann train-baseline``, the sampler and the summary's loss curves all read
:data:`METHODS`; adding a method is one module (its trainer) and one
:func:`register` call (docs/development.md). This module imports nothing
heavy: the Snakefile reads it at every start.

Paths are relative to ``results/{dataset}/`` and may use ``{method}``, ``{hp}`` (``/hp{k}`` for
setting k of a sweep, empty otherwise: glann.methods.search_space) and ``{seed}``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    rule: str                       # the Snakemake rule that produces its final checkpoint
    checkpoints: dict = field(default_factory=dict)  # sampler input role -> path
    loss_csvs: tuple = ()           # per-epoch loss CSVs its training writes
    sampler: str = "generator"      # how samples are drawn: glann | glo_gauss | generator
    trainer: str | None = None      # "module:function" for `glann train-baseline`
    trainer_args: tuple = ()        # leading positional arguments of the trainer (a GAN's kind)
    # Quality-vs-compute snapshots (glann.evaluation.snapshots): the file its training keeps them in, the
    # sampler role each snapshot stands in for, and the checkpoint roles that stay fixed.
    snapshots: str = "{method}{hp}/seed{seed}/snapshots.pt"
    snapshot_role: str = "model"
    snapshot_fixed: tuple = ()
    # Its generator is compare_gan v1's (glann.methods.models.V1Generator): ``sample.bn_stats`` applies.
    v1_generator: bool = False
    mem_mb: int = 8000              # the memory its training job asks a cluster for (resources: mem_mb)

    def checkpoint_paths(self, dataset: str, seed, hp: str = "") -> dict:
        return {role: f"results/{dataset}/" + p.format(method=self.name, seed=seed, hp=hp)
                for role, p in self.checkpoints.items()}

    def loss_csv_paths(self, dataset: str, seed, hp: str = "") -> list:
        return [f"results/{dataset}/" + p.format(method=self.name, seed=seed, hp=hp) for p in self.loss_csvs]

    def snapshot_path(self, dataset: str, seed, hp: str = "") -> str:
        return f"results/{dataset}/" + self.snapshots.format(method=self.name, seed=seed, hp=hp)

    def snapshot_fixed_paths(self, dataset: str, seed, hp: str = "") -> dict:
        paths = self.checkpoint_paths(dataset, seed, hp)
        return {role: paths[role] for role in self.snapshot_fixed}

    def train_function(self):
        module, func = self.trainer.split(":")
        fn = getattr(importlib.import_module(module), func)
        if self.trainer_args:
            return lambda *args, **kwargs: fn(*self.trainer_args, *args, **kwargs)
        return fn


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


_MODEL = {"model": "{method}{hp}/seed{seed}/model.pt"}
_LOSSES = ("{method}{hp}/seed{seed}/losses.csv",)

register(Method("glann", "train_imle",
                {"glo": "glann{hp}/seed{seed}/glo.pt", "imle": "glann{hp}/seed{seed}/imle.pt"},
                ("glann{hp}/seed{seed}/glo_losses.csv", "glann{hp}/seed{seed}/imle_losses.csv"), sampler="glann",
                snapshots="glann{hp}/seed{seed}/imle_snapshots.pt", snapshot_role="imle", snapshot_fixed=("glo",)))
# glo_gauss's snapshots are GLO's: each gets its own Gaussian fit when scored.
register(Method("glo_gauss", "fit_gaussian",
                {"glo": "glann{hp}/seed{seed}/glo.pt", **_MODEL}, (), sampler="glo_gauss",
                snapshots="glann{hp}/seed{seed}/glo_snapshots.pt", snapshot_role="glo"))
# pixel IMLE holds samples_factor x N generated images for its nearest-neighbour search
register(Method("imle_pixel", "train_baseline", _MODEL, _LOSSES,
                trainer="glann.methods.imle:train_imle_pixel", mem_mb=12000))
# The GANs of GLANN's Table 1 (Lucic et al. 2018), in its order: glann.methods.gans.KINDS (a test checks they agree).
for _gan in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began"):
    register(Method(_gan, "train_baseline", _MODEL, _LOSSES, trainer="glann.methods.gans:train_gan",
                    trainer_args=(_gan,), v1_generator=True))
register(Method("vae", "train_baseline", _MODEL, _LOSSES, trainer="glann.methods.vae:train_vae", v1_generator=True))
# Flow matching (Lipman et al. 2023; Liu et al. 2023): x = ODE solve of its velocity field from z ~ N(0, I_CHW).
register(Method("flow", "train_baseline", _MODEL, _LOSSES, trainer="glann.methods.flow:train_flow"))
