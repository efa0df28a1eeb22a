"""Configuration checks: one clear message per mistake, before any job starts.

``check`` validates a config dict against workflow/schemas/config.schema.yaml
(JSON schema) and returns messages that name the key path and the allowed
values; ``fill_defaults`` fills the schema's defaults (the paper's values) into
missing keys, creating missing sections.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

# Dataset kinds prepare_data knows (glann.datasets implements each). Here, not there, so that
# checking a config (the Snakefile does it at every start, no-op included) does not import numpy.
REGISTRY = ("mnist5k", "digits", "mnist", "fashion", "cifar10", "celeba64", "folder")


def load_schema(path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~6x faster on the schema
    return yaml.load(Path(path).read_text(), Loader=loader)


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


def check(config: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    msgs = [_message(e, schema) for e in errors]
    if not msgs:
        data = config.get("data", {}) or {}
        known = sorted(set(REGISTRY) - {"folder"})
        for i, name in enumerate(config["datasets"]):
            kind = (data.get(name) or {}).get("type", name)
            if kind not in REGISTRY or kind == "folder" and not (data.get(name) or {}).get("path"):
                if kind == "folder":
                    msgs.append(f"config error at data.{name}.path: a folder dataset needs a path")
                else:
                    msgs.append(
                        f"config error at datasets[{i}]: unknown dataset {name!r}; allowed values: "
                        f"{', '.join(known)}, or a name defined under data with type: folder")
    return msgs


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
