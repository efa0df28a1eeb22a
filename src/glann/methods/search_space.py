"""Hyper-parameter sweeps: each method's search space, and its K settings drawn once.

A setting is a dict ``{"section.key": value}`` over the config sections a method's jobs
read (a GAN's own section; GLANN's ``glo`` and ``imle``). ``beta1`` / ``beta2`` stand for
the two entries of a section's ``betas``. Setting ``k`` of a method is drawn from its own
random stream, seeded by (sweep seed, method, k): the first 8 of 16 settings are the 8 of a
sweep with K = 8, so raising K trains only the new ones.

Default spaces. The GANs and the VAE: Lucic et al. 2018's "wide" ranges, as compare_gan v1
draws them (src/params.py, ``GetDefaultWideRange`` and the per-model ranges): learning rate
log-uniform in [1e-5, 1e-2], beta1 uniform in [0, 1], D steps per G step in {1, 5}, BN in D
on or off; WGAN's clipping log-uniform in [1e-3, 1]; WGAN-GP's and DRAGAN's penalty weight
log-uniform in [0.1, 100]; BEGAN's lambda_k log-uniform in [1e-4, 1e-2] and gamma uniform in
[0, 1]. beta2 stays TF's 0.999 (v1 never tuned it). GLANN and pixel IMLE get ranges as wide
(three decades of each learning rate, centred on the paper's values): GLO's generator
learning rate in [10^-4.5, 10^-1.5], its codes' in [10^-3.5, 10^-0.5], IMLE's in
[10^-4.5, 10^-1.5], and IMLE's samples factor uniform in [1, 10] (pixel IMLE: [2, 20]).
GLO+Gaussian is GLANN's GLO with a Gaussian fit: it shares GLANN's settings. Flow matching: its
learning rate log-uniform in [10^-4.5, 10^-3], the U-Net's width in {16, 32, 64} and its ODE
steps in {10, 20, 50}.

``sweep.range: narrow`` takes, for the GANs and the VAE, Lucic et al.'s pruned ranges instead
(v1 ``GetDefaultNarrowRange`` and the per-model narrow branches): learning rate log-uniform in
[1e-4, 1e-3], beta1 0.5, one D step per G step; BN in D on or off, except WGAN-GP and DRAGAN
(off); WGAN's clipping log-uniform in [1e-2, 1]; WGAN-GP's and DRAGAN's penalty weight in
[0.1, 10]; BEGAN's lambda_k 1e-3 and gamma uniform in [0.6, 0.9]. GLANN and pixel IMLE keep
their one space. ``sweep.first: configured`` makes setting 0 the method's configured values
(as v1's sample 0 is its default); settings 1.. are drawn as before.
"""

from __future__ import annotations

import math
import zlib

# A parameter's distribution: {"log10": [lo, hi]} (10^U(lo, hi)), {"uniform": [lo, hi]},
# {"choice": [values...]}; or, not drawn, {"grid": [values...]}: setting k takes value k (modulo
# their number), so a sweep of K = len(values) settings visits each once.
_LR = {"log10": [-5.0, -2.0]}
_BETA1 = {"uniform": [0.0, 1.0]}
_STEPS = {"choice": [1, 5]}
_BN = {"choice": [True, False]}


def _gan(name: str, bn: bool = True, **extra) -> dict:
    space = {f"{name}.lr": _LR, f"{name}.beta1": _BETA1, f"{name}.critic_steps": _STEPS}
    if bn:
        space[f"{name}.d_batchnorm"] = _BN
    return {**space, **{f"{name}.{k}": v for k, v in extra.items()}}


SPACES: dict[str, dict] = {
    "glann": {"glo.lr_generator": {"log10": [-4.5, -1.5]}, "glo.lr_codes": {"log10": [-3.5, -0.5]},
              "imle.lr": {"log10": [-4.5, -1.5]}, "imle.samples_factor": {"uniform": [1.0, 10.0]}},
    "imle_pixel": {"imle_pixel.lr": {"log10": [-4.5, -1.5]}, "imle_pixel.samples_factor": {"uniform": [2.0, 20.0]}},
    "mmgan": _gan("mmgan"),
    "nsgan": _gan("nsgan"),
    "lsgan": _gan("lsgan"),
    "wgan": _gan("wgan", clip={"log10": [-3.0, 0.0]}),
    "wgan_gp": _gan("wgan_gp", bn=False, gp_lambda={"log10": [-1.0, 2.0]}),  # no BN in its critic
    "dragan": _gan("dragan", gp_lambda={"log10": [-1.0, 2.0]}),
    "began": _gan("began", lambda_k={"log10": [-4.0, -2.0]}, gamma={"uniform": [0.0, 1.0]}),
    "vae": {"vae.lr": _LR, "vae.beta1": _BETA1, "vae.encoder_batchnorm": _BN},
    # flow matching: learning rate over 1.5 decades around Liu et al.'s 2e-4, the U-Net's width, the ODE steps
    "flow": {"flow.lr": {"log10": [-4.5, -3.0]}, "flow.width": {"choice": [16, 32, 64]},
             "flow.steps": {"choice": [10, 20, 50]}},
}
_NARROW_LR = {"log10": [-4.0, -3.0]}
_HALF = {"choice": [0.5]}
_ONE = {"choice": [1]}


def _narrow_gan(name: str, bn: dict = _BN, **extra) -> dict:
    space = {f"{name}.lr": _NARROW_LR, f"{name}.beta1": _HALF, f"{name}.critic_steps": _ONE,
             f"{name}.d_batchnorm": bn}
    return {**space, **{f"{name}.{k}": v for k, v in extra.items()}}


_OFF = {"choice": [False]}
NARROW: dict[str, dict] = {
    "mmgan": _narrow_gan("mmgan"),
    "nsgan": _narrow_gan("nsgan"),
    "lsgan": _narrow_gan("lsgan"),
    "wgan": _narrow_gan("wgan", clip={"log10": [-2.0, 0.0]}),
    "wgan_gp": {k: v for k, v in _narrow_gan("wgan_gp", gp_lambda={"log10": [-1.0, 1.0]}).items()
                if k != "wgan_gp.d_batchnorm"},  # its critic never has BN (v1: False)
    "dragan": _narrow_gan("dragan", bn=_OFF, gp_lambda={"log10": [-1.0, 1.0]}),
    "began": _narrow_gan("began", lambda_k={"choice": [1e-3]}, gamma={"uniform": [0.6, 0.9]}),
    "vae": {"vae.lr": _NARROW_LR, "vae.beta1": _HALF, "vae.encoder_batchnorm": _BN},
}
RANGES = ("wide", "narrow", "v1")

# ``sweep.range: v1``: the 100 wide-range settings per model that Lucic et al. trained, rebuilt
# from compare_gan v1's generate_tasks_lib.py: ``random.seed(123)`` once, then for each model in
# ALL_GANS order the default (params.py) as sample 0 and 99 draws of GetSample, which walks the
# model's parameters sorted by name: a discrete one ``random.choice(range)`` (Python 2's:
# ``seq[int(random() * len(seq))]``; v1 ran on Python 2), a continuous one
# ``random.uniform(lo, hi)``, then 10^v on a log scale. The stream runs on from one model to the
# next, so each model's 100 depend on the models before it; the same 100 for every dataset.
V1_ORDER = (("GAN", "nsgan"), ("GAN_MINMAX", "mmgan"), ("WGAN", "wgan"), ("WGAN_GP", "wgan_gp"),
            ("DRAGAN", "dragan"), ("VAE", "vae"), ("LSGAN", "lsgan"), ("BEGAN", "began"))
V1_SAMPLES = 100


def _v1_params(gan_type: str) -> dict:
    """v1 params.py's wide range of one model: {name: (default, range, log scale, discrete)}."""
    base = {"beta1": (0.5, [0.0, 1.0], False, False), "learning_rate": (0.0001, [-5.0, -2.0], True, False),
            "disc_iters": (1, [1, 5], False, True), "discriminator_batchnorm": (True, [True, False], False, True)}
    defaults = {"GAN": {"beta1": 0.0, "learning_rate": 0.00005, "disc_iters": 1, "discriminator_batchnorm": True},
                "GAN_MINMAX": {"beta1": 0.0, "learning_rate": 0.00005, "disc_iters": 1, "discriminator_batchnorm": True},
                "LSGAN": {"beta1": 0.5, "learning_rate": 0.0002, "disc_iters": 1, "discriminator_batchnorm": True},
                "WGAN": {"beta1": 0.5, "learning_rate": 0.00005, "disc_iters": 5, "discriminator_batchnorm": True},
                "WGAN_GP": {"beta1": 0.5, "learning_rate": 0.0001, "disc_iters": 5, "discriminator_batchnorm": False},
                "DRAGAN": {"beta1": 0.5, "learning_rate": 0.0001, "disc_iters": 1, "discriminator_batchnorm": True},
                "VAE": {"beta1": 0.5, "learning_rate": 0.00005},
                "BEGAN": {"beta1": 0.5, "learning_rate": 0.0001, "disc_iters": 5, "discriminator_batchnorm": False}}
    out = {k: (defaults[gan_type].get(k, d), r, log, disc) for k, (d, r, log, disc) in base.items()}
    extra = {"WGAN": {"weight_clipping": (0.01, [-3.0, 0.0], True, False)},
             "WGAN_GP": {"lambda": (10.0, [-1.0, 2.0], True, False)},
             "DRAGAN": {"lambda": (10.0, [-1.0, 2.0], True, False)},
             "BEGAN": {"lambda": (0.001, [-4.0, -2.0], True, False), "gamma": (0.75, [0.0, 1.0], False, False)}}
    return {**out, **extra.get(gan_type, {})}


def _v1_key(method: str, name: str) -> str:
    """Our config key of a v1 parameter of ``method``."""
    if name == "discriminator_batchnorm":
        return "vae.encoder_batchnorm" if method == "vae" else f"{method}.d_batchnorm"
    if name == "lambda":
        return "began.lambda_k" if method == "began" else f"{method}.gp_lambda"
    return f"{method}." + {"learning_rate": "lr", "disc_iters": "critic_steps", "weight_clipping": "clip"}.get(name, name)


def v1_table() -> dict:
    """{method: [100 settings]} as compare_gan v1 draws them (see V1_ORDER's comment)."""
    import random

    rng = random.Random(123)
    table = {}
    for gan_type, method in V1_ORDER:
        params = _v1_params(gan_type)
        samples = [{name: info[0] for name, info in params.items()}]
        for _ in range(V1_SAMPLES - 1):
            sample = {}
            for name, (default, rng_range, log, discrete) in sorted(params.items()):
                if discrete:
                    v = rng_range[int(rng.random() * len(rng_range))]
                else:
                    v = rng.uniform(rng_range[0], rng_range[1])
                    v = math.pow(10, v) if log else v
                sample[name] = v
            samples.append(sample)
        skip = ("disc_iters",) if method == "vae" else ()  # the VAE has no D steps (v1 draws, never reads it)
        table[method] = [{_v1_key(method, k): v for k, v in sorted(s.items()) if k not in skip} for s in samples]
    return table
SHARES = {"glo_gauss": "glann"}  # a method whose settings are another's
SECTIONS = {"glann": ("glo", "imle"), "glo_gauss": ("glo",)}  # default: the method's own section


def sections(method: str) -> tuple:
    return SECTIONS.get(method, (method,))


def sweepable(method: str) -> bool:
    return SHARES.get(method, method) in SPACES


def space_of(method: str, overrides: dict | None = None, range_: str = "wide") -> dict:
    """The method's search space: ``sweep.space.<method>`` where the config gives one, else the
    default of ``range_`` (``narrow``: Lucic et al.'s pruned range, where the method has one; ``v1``:
    the wide range, from which v1's own 100 draws come)."""
    if range_ not in RANGES:
        raise ValueError(f"unknown sweep range {range_!r}; known: {', '.join(RANGES)}")
    owner = SHARES.get(method, method)
    default = NARROW.get(owner, SPACES[owner]) if range_ == "narrow" else SPACES[owner]
    return dict((overrides or {}).get(owner) or default)


def _draw_one(spec: dict, rng, k: int):
    (kind, args), = spec.items()
    if kind == "grid":  # draws nothing: the other keys' draws are those of a space without it
        return args[k % len(args)]
    if kind == "choice":
        value = args[int(rng.integers(len(args)))]
        return value.item() if hasattr(value, "item") else value
    lo, hi = float(args[0]), float(args[1])
    u = float(rng.uniform(lo, hi))
    if kind == "log10":
        return float(f"{10 ** u:.4g}")
    return max(lo, math.floor(u * 1e4) / 1e4)  # 4 decimals, never up to the open upper bound


def draw(method: str, k: int, seed: int, overrides: dict | None = None, range_: str = "wide") -> dict:
    """Setting ``k`` of ``method``'s sweep: independent of K and of every other setting."""
    import numpy as np

    owner = SHARES.get(method, method)
    rng = np.random.default_rng([int(seed), zlib.crc32(owner.encode()), int(k)])
    space = space_of(method, overrides, range_)
    return {key: _draw_one(space[key], rng, k) for key in sorted(space)}


def configured_values(method: str, space: dict, cfg: dict) -> dict:
    """The configured values of the space's keys (``beta1``/``beta2`` from ``betas``): v1's sample 0."""
    out = {}
    for key in sorted(space):
        sec, name = key.split(".", 1)
        section = cfg[sec]
        out[key] = section["betas"][0 if name == "beta1" else 1] if name in ("beta1", "beta2") else section[name]
    return out


def settings(method: str, count: int, seed: int, overrides: dict | None = None, range_: str = "wide",
             configured: dict | None = None) -> list[dict]:
    """K settings; given ``configured`` (the filled config: ``sweep.first: configured``), setting 0
    is its values and settings 1.. are the same draws as without it."""
    owner = SHARES.get(method, method)
    if range_ == "v1" and owner in dict((m, g) for g, m in V1_ORDER) and not (overrides or {}).get(owner):
        if count > V1_SAMPLES:
            raise ValueError(f"sweep.range v1 has {V1_SAMPLES} settings per model; sweep.settings is {count}")
        return v1_table()[owner][:count]  # v1's sample 0 is its default already
    drawn = [draw(method, k, seed, overrides, range_) for k in range(count)]
    if configured is not None and count:
        drawn[0] = configured_values(method, space_of(method, overrides, range_), configured)
    return drawn


def is_configured(method: str, values: dict, cfg: dict) -> bool:
    """Whether a setting leaves every section the method's jobs read as the config has it (v1's
    sample 0 is v1's default; ``sweep.first: configured``): its runs are then the method's
    configured runs, the same computation, and are not trained a second time."""
    return all(apply(cfg[sec], sec, values) == cfg[sec] for sec in sections(method))


def plan(cfg: dict) -> dict:
    """The sweep a filled config asks for, as the workflow runs it: ``swept`` (the methods swept),
    ``settings`` ({method: its K settings}, a method that shares another's settings with that
    one's too) and ``trials`` ([(method, k)] of the settings that train runs of their own; a setting
    :func:`is_configured` reads the configured runs instead)."""
    sweep = cfg["sweep"]
    k = sweep["settings"]
    swept = [m for m in cfg["methods"] if k and sweepable(m) and (m in sweep["methods"] if sweep["methods"] else True)]
    settings_of = {m: settings(m, k, sweep["seed"], sweep["space"], sweep["range"],
                               cfg if sweep["first"] == "configured" else None)
                   for m in {*swept, *(SHARES[m] for m in swept if m in SHARES)}}
    trials = [(m, i) for m in swept for i in range(k) if not is_configured(m, settings_of[m][i], cfg)]
    return {"swept": swept, "settings": settings_of, "trials": trials}


def apply(params: dict, section: str, setting: dict) -> dict:
    """``params`` (the config section ``section``) with the setting's values for that section."""
    out = dict(params)
    for key, value in setting.items():
        sec, name = key.split(".", 1)
        if sec != section:
            continue
        if name in ("beta1", "beta2"):
            betas = list(out["betas"])  # the schema gives every section with beta1/beta2 its betas
            betas[0 if name == "beta1" else 1] = value
            out["betas"] = betas
        else:
            out[name] = value
    return out


def space_errors(method: str, space: dict, section_schemas: dict) -> list[str]:
    """Mistakes in ``sweep.space.<method>``: keys outside the sections the method's jobs read,
    keys those sections do not have, and malformed distributions."""
    msgs = []
    where = f"config error at sweep.space.{method}"
    for key, spec in space.items():
        sec, _, name = key.partition(".")
        if sec not in sections(method):
            msgs.append(f"{where}.{key}: {method}'s jobs read only {', '.join(sections(method))}; "
                        f"name a key as <section>.<key>, e.g. {sections(method)[0]}.lr")
            continue
        props = section_schemas.get(sec, {}).get("properties", {})
        if name not in props and not (name in ("beta1", "beta2") and "betas" in props):
            msgs.append(f"{where}.{key}: {sec} has no key {name!r}; keys: {', '.join(sorted(props))}")
        ok = isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("log10", "uniform", "choice", "grid")
        args = next(iter(spec.values())) if ok else None
        if ok and next(iter(spec)) in ("choice", "grid"):
            ok = isinstance(args, list) and len(args) >= 1
        elif ok:
            ok = (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
                  and args[0] <= args[1])
        if not ok:
            msgs.append(f"{where}.{key}: give one distribution: {{log10: [lo, hi]}}, {{uniform: [lo, hi]}} "
                        f"(lo <= hi), {{choice: [v1, v2, ...]}} or {{grid: [v1, v2, ...]}}")
    return msgs


def write_record(path, dataset: str, method: str, sweep: dict, space: dict, settings_: list[dict]) -> None:
    """``results/{dataset}/sweep/{method}.json``: the sweep's seed, range and first setting (the
    config's ``sweep`` section), the space and each setting (``settings_``: ``{"values": ...,
    "configured": bool}``, :func:`is_configured`) with its run folder (rule write_sweep): a
    configured one names the configured runs' folder."""
    from glann.atomic import write_json

    write_json(path, {"dataset": dataset, "method": method, "sweep_seed": sweep["seed"],
                      "range": sweep.get("range", "wide"), "first": sweep.get("first", "drawn"),
                      "space": space,
                      "settings": [{"k": k, "values": s["values"], "configured": bool(s.get("configured")),
                                    "run": f"results/{dataset}/{method}" + ("" if s.get("configured") else f"/hp{k}")}
                                   for k, s in enumerate(settings_)]}, record=False)


def hp_suffix(k: int) -> str:
    """The ``{hp}`` wildcard of setting k: run folders are results/{dataset}/{method}{hp}/seed{S}/."""
    return f"/hp{int(k)}"


def hp_index(hp: str) -> int | None:
    """k of an ``{hp}`` wildcard value ("" for a method's configured setting: None)."""
    return int(hp.removeprefix(hp_suffix(0)[:-1])) if hp else None
