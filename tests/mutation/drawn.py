"""A seeded random sample of one module's token mutants, drawn and committed *before* the tests
that are meant to kill them are written, and scored afterwards (tests/README.md, "A sample drawn
before the tests").

    python tests/mutation/drawn.py draw src/glann/methods/flow.py --n 20 --seed 0 \\
        --out tests/mutation/flow_sample.json
    python tests/mutation/drawn.py score tests/mutation/flow_sample.json tests/test_flow.py

``draw`` lists every single-token mutation of the module's code (not its strings, docstrings or
comments): an arithmetic operator swapped (+ -, * /, ** *), a comparison turned (< <=, > >=,
== !=), an integer constant plus one, a float constant doubled (0.0 made 1.0), True and False
swapped, and a unary minus dropped; it then draws ``--n`` of them uniformly with ``--seed`` and
writes each as the whole source line before and after, with the module's SHA-256 at the draw.
``score`` applies each alone to the checkout (restored after each, also on failure), runs the
named test files with ``-x`` and says KILLED or SURVIVED; a mutant whose line is no longer in the
module (the code changed since the draw) is GONE and counted apart.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tokenize
from pathlib import Path

SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "**": "*", "<": "<=", "<=": "<", ">": ">=", ">=": ">",
         "==": "!=", "!=": "==", "True": "False", "False": "True"}


def _mutated_number(text: str) -> str | None:
    try:
        value = int(text)
        return str(value + 1)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return "1.0" if value == 0 else repr(value * 2)


def candidates(source: str) -> list[dict]:
    """Every single-token mutant of ``source``: {line, col, before, after} (1-based line)."""
    lines = source.splitlines()
    out = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        new = None
        if tok.type == tokenize.OP and tok.string in SWAPS:
            if tok.string == "-" and i and tokens[i - 1].string in ("(", "[", ",", "=", "return", "*", "/"):
                new = ""  # a unary minus dropped
            else:
                new = SWAPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in ("True", "False"):
            new = SWAPS[tok.string]
        elif tok.type == tokenize.NUMBER:
            new = _mutated_number(tok.string)
        if new is None or tok.start[0] != tok.end[0]:
            continue
        row, col = tok.start
        line = lines[row - 1]
        after = line[:col] + new + line[tok.end[1]:]
        if after != line:
            out.append({"line": row, "col": col, "before": line, "after": after})
    return out


def draw(module: Path, n: int, seed: int) -> dict:
    source = module.read_text()
    pool = candidates(source)
    picked = sorted(random.Random(seed).sample(range(len(pool)), min(n, len(pool))))
    return {"module": module.as_posix(), "sha256": hashlib.sha256(source.encode()).hexdigest(), "seed": seed,
            "candidates": len(pool), "mutants": [pool[i] for i in picked]}


def score(sample: dict, tests: list[str]) -> dict:
    module = Path(sample["module"])
    original = module.read_text()
    counts = {"KILLED": 0, "SURVIVED": 0, "GONE": 0}
    for m in sample["mutants"]:
        lines = original.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == m["before"]]
        if not hits:
            verdict = "GONE"
        else:
            # the drawn line, or the same text nearest to where it was
            i = min(hits, key=lambda k: abs(k + 1 - m["line"]))
            lines[i] = m["after"] + "\n"
            module.write_text("".join(lines))
            try:
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                      capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            finally:
                module.write_text(original)
            verdict = "KILLED" if proc.returncode != 0 else "SURVIVED"
        counts[verdict] += 1
        print(f"{verdict:8s} line {m['line']}: {m['after'].strip()}", flush=True)
    scored = counts["KILLED"] + counts["SURVIVED"]
    print(f"{counts['KILLED']} of {scored} killed ({counts['GONE']} gone)")
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("draw")
    d.add_argument("module", type=Path)
    d.add_argument("--n", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score")
    s.add_argument("sample", type=Path)
    s.add_argument("tests", nargs="+")
    args = ap.parse_args()
    if args.cmd == "draw":
        sample = draw(args.module, args.n, args.seed)
        args.out.write_text(json.dumps(sample, indent=1) + "\n")
        print(f"{len(sample['mutants'])} of {sample['candidates']} mutants of {args.module} drawn to {args.out}")
        return 0
    counts = score(json.loads(args.sample.read_text()), args.tests)
    return 0 if counts["SURVIVED"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
