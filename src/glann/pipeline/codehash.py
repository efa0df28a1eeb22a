"""Code versions for Snakemake's cache: a hash of exactly the source a step runs.

A step is ``glann <step>``; it runs ``pipeline/cli.py``'s ``cmd_<step>``. Its code is
cli.py itself, the package modules ``cmd_<step>`` and cli.py's top level import,
and, transitively, every package module those import (anywhere in the file:
function-level imports count), with the ``__init__.py`` of every package on the
way (Python runs them on import). Imports are resolved as Python resolves them:
``glann.a.b``, ``from glann.a import b`` (a module ``b`` or a name in ``a``),
and relative imports of any level. Extra entry modules (a method's trainer, which
``train-baseline`` imports through the registry) join the closure. Editing any
file in it changes the hash, and so reruns the step; editing a module outside it
reruns nothing. No hand-kept lists. One exception: the ``tracking`` package records
runs and never changes an output, so editing it reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "glann"
CLI = "pipeline.cli"  # the module of the steps' cmd_<step> functions
BOOKKEEPING = ("tracking",)  # sub-packages outside every code version (see above)


def _file(pkg: Path, module: str) -> Path | None:
    """The file of ``module`` (dotted, relative to the package; "" is the package itself)."""
    base = pkg.joinpath(*module.split(".")) if module else pkg
    for path in (base.with_suffix(".py") if module else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _imported(module: str, is_package: bool, nodes) -> set[str]:
    """Package modules (dotted, relative to the package) imported by ``nodes`` of ``module``."""
    out = set()
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]  # a module's relative imports start from its package
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = here[: len(here) - (node.level - 1)] if node.level - 1 <= len(here) else None
                if up is None:
                    continue
                target = ".".join([*up, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                target = node.module[len(PACKAGE) + 1:]
            else:
                continue
            # `from X import name`: X runs, and so does X.name where that is a module
            out.add(target)
            out.update(f"{target}.{a.name}" if target else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == PACKAGE:
                    out.add(".".join(parts[1:]))
    return out


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@lru_cache(maxsize=None)
def _file_imports(path: Path, module: str) -> frozenset[str]:
    """Package modules imported anywhere in ``path`` (walked once per process: every rule asks)."""
    return frozenset(_imported(module, path.name == "__init__.py", ast.walk(_parse(path))))


def _with_parents(module: str) -> set[str]:
    """``module`` and every package above it: importing a.b.c runs a/__init__ and a/b/__init__."""
    parts = module.split(".") if module else []
    return {".".join(parts[:i]) for i in range(len(parts) + 1)}


def closure(src: Path, roots: set[str]) -> list[Path]:
    """The package files ``roots`` (dotted module names) import, transitively, with every
    ``__init__.py`` on the way."""
    pkg = Path(src) / PACKAGE
    seen, files, todo = set(), set(), set().union(*(_with_parents(r) for r in roots)) | {""}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] in BOOKKEEPING:
            continue
        path = _file(pkg, name)
        if path is None:  # a name inside a module (`from glann.a import function`), not a module
            continue
        files.add(path)
        for imp in _file_imports(path, name):
            todo |= _with_parents(imp) - seen
    return sorted(files)


def step_files(src, step: str, extra_modules=()) -> list[Path]:
    """cli.py, plus the closure of what ``cmd_<step>`` and cli.py's top level import."""
    src = Path(src)
    cli = _file(src / PACKAGE, CLI)
    tree = _parse(cli)
    func = f"cmd_{step.replace('-', '_')}"
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
    if not body:
        raise ValueError(f"{CLI.replace('.', '/')}.py has no {func}: unknown step {step!r}")
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    # cli.py's own package and file, but not the imports of its other steps
    roots = _imported(CLI, False, list(ast.walk(body[0])) + top) | {CLI.rsplit(".", 1)[0]}
    roots |= {m[len(PACKAGE) + 1:] if m.startswith(PACKAGE + ".") else m for m in extra_modules}
    return sorted({cli, *closure(src, roots)})


def code_hash(src, step: str, extra_modules=()) -> str:
    h = hashlib.sha256()
    pkg = Path(src) / PACKAGE
    for path in step_files(src, step, extra_modules):
        h.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
