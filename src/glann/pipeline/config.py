"""Configuration checks: one clear message per mistake, before any job starts.

``config_errors`` validates a config dict against workflow/schemas/config.schema.yaml
(JSON schema) and returns messages that name the key path and the allowed
values; ``fill_defaults`` fills the schema's defaults (the paper's values) into
missing keys, creating missing sections.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from glann.data.kinds import KINDS, carved_test_size, folder_readable, validation_error

def cuda_visible() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (every start pays for it)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def load_schema(path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's C loader: the schema is read at every Snakemake start
    return yaml.load(Path(path).read_text(), Loader=loader)


def yaml_error(path) -> str | None:
    """One line naming the file, line and column where a YAML config file stops being YAML, or a
    top level that is not a mapping; None when it reads (or is absent: Snakemake says so)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"config error: cannot read {path} ({exc}). Nothing was run."
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        return f"config error in {where}: not valid YAML ({what or exc}). Nothing was run."
    if data is not None and not isinstance(data, dict):
        return f"config error in {path}: the top level must be a mapping of keys (datasets:, methods:, ...). Nothing was run."
    return None


def _path(error) -> str:
    out = ""
    for p in error.absolute_path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"].lstrip("#/").split("/")
        node = root
        for part in ref:
            node = node[part]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**node, **extra}
    return schema


def _message(error, root) -> str:
    where = _path(error)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (f"config error at {where}: unknown key(s) {', '.join(repr(e) for e in extra)}; "
                f"allowed keys: {', '.join(allowed)}")
    if error.validator == "enum":
        return (f"config error at {where}: {error.instance!r} is not allowed; allowed values: "
                f"{', '.join(str(v) for v in schema['enum'])}")
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"config error at {where}: {error.instance!r} is out of range ({error.validator} {error.validator_value})"
    if error.validator == "type":
        return f"config error at {where}: {error.instance!r} has the wrong type; expected {error.validator_value}"
    if error.validator == "minItems":
        return f"config error at {where}: must list at least {error.validator_value} item(s)"
    if error.validator == "required":
        return f"config error at {where}: {error.message}"
    return f"config error at {where}: {error.message}"


def config_errors(config: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    msgs = [_message(e, schema) for e in errors]
    if not msgs:
        from glann.methods.registry import METHODS

        for i, name in enumerate(config["methods"]):
            if name not in METHODS:
                msgs.append(f"config error at methods[{i}]: {name!r} is not allowed; allowed values: "
                            f"{', '.join(METHODS)}")
        data = config.get("data", {}) or {}
        known = sorted(set(KINDS) - {"folder"})
        for i, name in enumerate(config["datasets"]):
            kind = (data.get(name) or {}).get("type", name)
            if kind not in KINDS or kind == "folder" and not (data.get(name) or {}).get("path"):
                if kind == "folder":
                    msgs.append(f"config error at data.{name}.path: a folder dataset needs a path")
                else:
                    msgs.append(
                        f"config error at datasets[{i}]: unknown dataset {name!r}; allowed values: "
                        f"{', '.join(known)}, or a name defined under data with type: folder")
    if not msgs:
        filled = fill_defaults(config, schema)
        msgs = cross_key_errors(filled) + sweep_errors(filled, schema)
    return msgs


def sweep_errors(cfg: dict, schema: dict) -> list[str]:
    """Mistakes in the ``sweep`` section (``cfg`` has its defaults filled in)."""
    from glann.methods.search_space import space_errors, sweepable

    sw, msgs = cfg["sweep"], []
    from glann.methods.registry import METHODS

    for i, name in enumerate(sw["methods"]):  # those outside `methods` are not run (--config methods=[...])
        if name not in METHODS:
            msgs.append(f"config error at sweep.methods[{i}]: {name!r} is not a method; allowed values: "
                        f"{', '.join(METHODS)}")
        elif not sweepable(name):
            msgs.append(f"config error at sweep.methods[{i}]: {name!r} has no search space")
    for name, space in sw["space"].items():
        if not sweepable(name):
            msgs.append(f"config error at sweep.space.{name}: {name!r} is not a method with a search space")
            continue
        msgs += space_errors(name, space, schema["properties"])
    if sw["settings"]:
        for name in cfg["datasets"]:
            if not ((cfg.get("data") or {}).get(name) or {}).get("val_size"):
                msgs.append(f"config error at data.{name}.val_size: sweep.settings = {sw['settings']} picks each "
                            f"method's best setting on a validation split, and {name} has none; set "
                            f"data.{name}.val_size (a share such as 0.1, or an image count), or sweep.settings: 0")
    return msgs


def start_warnings(cfg: dict) -> list[str]:
    """What the start check tells without refusing: each folder dataset's unreadable files, named
    (the first ten and a count), which prepare_data will skip."""
    out = []
    for name in cfg["datasets"]:
        opts = (cfg.get("data") or {}).get(name) or {}
        if opts.get("type") == "folder" and (readable := folder_readable(opts)) and readable[1] and readable[0]:
            from glann.data.images import name_files

            out.append(f"warning: data.{name}: {len(readable[1])} file(s) under {opts['path']} cannot be decoded "
                       f"and will be skipped ({readable[0]} images used): {name_files(readable[1])}")
    return out


def cross_key_errors(cfg: dict) -> list[str]:
    """Mistakes no single key shows: values that only fail together, found before any job
    (``cfg`` has its defaults filled in)."""
    msgs = []
    n_sample, n_fid = cfg["sample"]["num_samples"], cfg["fid"]["num_samples"]
    if n_fid > n_sample:
        msgs.append(f"config error at fid.num_samples: {n_fid} is more than sample.num_samples ({n_sample}), "
                    f"so Inception FID could use only {n_sample} samples; set fid.num_samples to at most "
                    f"{n_sample} or raise sample.num_samples")
    k = cfg["eval"]["prdc_k"]
    need = k + 2  # prdc: the (k+1)-th smallest distance of each point, itself included, among n > k+1
    pool = min(n_sample, cfg["eval"]["prdc_max_samples"])
    if pool < need:
        msgs.append(f"config error at eval.prdc_k: k = {k} needs at least {need} samples per side, and "
                    f"min(sample.num_samples, eval.prdc_max_samples) is {pool}; lower eval.prdc_k or raise both")
    data = cfg.get("data") or {}
    for name in cfg["datasets"]:
        opts = data.get(name) or {}
        if opts.get("type") == "folder" and (readable := folder_readable(opts)) is not None and readable[0] == 0:
            from glann.data.images import name_files

            msgs.append(f"config error at data.{name}.path: no readable image in {opts['path']} "
                        f"({len(readable[1])} file(s) that cannot be decoded: {name_files(readable[1])}); "
                        "point it at a folder of PNG/JPEG images")
            continue
        split = carved_test_size(opts, opts.get("type", name))
        val_size = opts.get("val_size", 0)
        if split is not None and val_size and (err := validation_error(name, val_size, split[2] - split[0])):
            msgs.append(err)
        if split is not None and split[0] < need:
            msgs.append(f"config error at data.{name}.test_size: the test split would hold {split[0]} images "
                        f"({split[1]}); the evaluation's precision/recall with eval.prdc_k = {k} needs at least "
                        f"{need}. Raise data.{name}.test_size, add images, or lower eval.prdc_k")
    return msgs


def _fits(sch: dict, value) -> bool:
    """Whether ``value`` fits the schema node's enum or declared type (bool is not a number)."""
    if "enum" in sch:
        return any(value == v and type(value) is type(v) for v in sch["enum"])
    types = sch.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    is_bool = isinstance(value, bool)
    return any(
        (t == "string" and isinstance(value, str))
        or (t == "integer" and isinstance(value, int) and not is_bool)
        or (t == "number" and isinstance(value, (int, float)) and not is_bool)
        or (t == "boolean" and is_bool)
        or (t == "null" and value is None)
        for t in types)


def coerce(config, schema: dict):
    """``config`` with strings typed where the schema expects a number, boolean or null.

    Snakemake hands ``--config`` values nested in lists and mappings
    (``seeds=[0,1]``, ``'glo={epochs: 3}'``) to the workflow as strings. Where
    the string does not fit the schema as it is but YAML reads it as a number,
    boolean or null that does (``'3'``, ``'1e-4'``, ``'true'``, ``'null'``), the
    typed value is taken, at any depth and inside lists. A string the schema
    accepts as a string stays one; anything else is left for :func:`config_errors` to
    refuse with its one-line message.
    """
    def walk(node, sch):
        sch = _resolve(sch, schema)
        if isinstance(node, dict):
            props, extra = sch.get("properties", {}), sch.get("additionalProperties")
            return {k: walk(v, props[k]) if k in props else walk(v, extra) if isinstance(extra, dict) else v
                    for k, v in node.items()}
        if isinstance(node, list):
            items = sch.get("items")
            return [walk(v, items) for v in node] if isinstance(items, dict) else node
        if isinstance(node, str) and not _fits(sch, node):
            try:
                typed = yaml.safe_load(node)
            except yaml.YAMLError:
                return node
            if isinstance(typed, str):  # PyYAML (YAML 1.1) reads '1e-4' as a string
                try:
                    typed = float(node)
                except ValueError:
                    return node
            if _fits(sch, typed):
                return typed
        return node

    return walk(config, schema)


def fill_defaults(config: dict, schema: dict) -> dict:
    """A copy of ``config`` with the schema's defaults filled in, recursively."""
    config = copy.deepcopy(config)

    def fill(node: dict, sch: dict):
        sch = _resolve(sch, schema)
        for key, sub in sch.get("properties", {}).items():
            sub = _resolve(sub, schema)
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if isinstance(node.get(key), dict) and sub.get("type") == "object" or "properties" in sub:
                if isinstance(node.get(key), dict):
                    fill(node[key], sub)

    fill(config, schema)
    return config
