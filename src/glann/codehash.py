"""Code versions for Snakemake's cache: a hash of exactly the source a step runs.

A step is ``glann <step>``; it runs ``cli.py``'s ``cmd_<step>``. Its code is
cli.py itself, the package modules ``cmd_<step>`` and cli.py's top level import,
and, transitively, every package module those import (anywhere in the file:
function-level imports count). Extra entry modules (a method's trainer, which
``train-baseline`` imports through the registry) join the closure. Editing any
file in it changes the hash, and so reruns the step; editing a module outside it
reruns nothing. No hand-kept lists.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "glann"


def _imported(tree: ast.AST, nodes=None) -> set[str]:
    """Package modules imported by ``nodes`` (default: every node of ``tree``)."""
    out = set()
    for node in nodes if nodes is not None else ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                out.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                if len(parts) > 1:
                    out.add(parts[1])
                else:
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    out.add(parts[1])
    return out


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@lru_cache(maxsize=None)
def _file_imports(path: Path) -> frozenset[str]:
    """Package modules imported anywhere in ``path`` (walked once per process: every rule asks)."""
    return frozenset(_imported(_parse(path)))


def closure(src: Path, roots: set[str]) -> list[Path]:
    """The package files ``roots`` import, transitively (with ``__init__``)."""
    pkg = Path(src) / PACKAGE
    seen, todo = set(), set(roots) | {"__init__"}
    while todo:
        name = todo.pop()
        if name in seen or not (pkg / f"{name}.py").is_file():
            continue
        seen.add(name)
        todo |= _file_imports(pkg / f"{name}.py") - seen
    return sorted(pkg / f"{n}.py" for n in seen)


def step_files(src, step: str, extra_modules=()) -> list[Path]:
    """cli.py, plus the closure of what ``cmd_<step>`` and cli.py's top level import."""
    src = Path(src)
    cli = src / PACKAGE / "cli.py"
    tree = _parse(cli)
    func = f"cmd_{step.replace('-', '_')}"
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
    if not body:
        raise ValueError(f"cli.py has no {func}: unknown step {step!r}")
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    roots = _imported(tree, list(ast.walk(body[0])) + top)
    roots |= {m.split(".")[-1] for m in extra_modules}
    return sorted({cli, *closure(src, roots)})


def code_hash(src, step: str, extra_modules=()) -> str:
    h = hashlib.sha256()
    for path in step_files(src, step, extra_modules):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
