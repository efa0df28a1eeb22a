"""One training loop, one method registry, exact cache keys, a layered package."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.atomic import torch_save
from glann.methods import registry as methods
from glann.pipeline.codehash import step_files
from glann.pipeline.config import config_errors, fill_defaults, load_schema

SRC = REPO / "src"
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")


def _names(files):
    return {Path(f).name for f in files}


def test_code_hash_is_the_import_closure_of_the_step():
    sample = _names(step_files(SRC, "sample"))
    assert {"cli.py", "sampling.py", "glo.py", "models.py", "grids.py", "nn_search.py", "gaussian.py"} <= sample
    assert not {"gans.py", "vae.py", "scoring.py", "summary.py"} & sample
    glo = _names(step_files(SRC, "train-glo"))
    assert {"cli.py", "glo.py", "losses.py", "training.py", "datasets.py", "grids.py"} <= glo
    assert "sampling.py" not in glo
    assert "sampling.py" not in _names(step_files(SRC, "fit-gaussian"))
    gan = _names(step_files(SRC, "train-baseline", ["glann.methods.gans"]))
    assert {"gans.py", "registry.py", "training.py"} <= gan and "vae.py" not in gan
    ev = _names(step_files(SRC, "evaluate"))
    assert {"scoring.py", "metrics.py", "evaluator.py", "inception.py"} <= ev and "glo.py" not in ev
    # the __init__.py of every package on the way; the tracking package is bookkeeping (no output
    # depends on it), and a module the step does not import stays out
    files = {f.relative_to(SRC / "glann").as_posix() for f in step_files(SRC, "evaluate")}
    assert {"__init__.py", "pipeline/__init__.py", "evaluation/__init__.py", "methods/__init__.py"} <= files
    assert "data/grids.py" not in files and not any(f.startswith("tracking/") for f in files)
    with pytest.raises(ValueError, match="unknown step"):
        step_files(SRC, "no-such-step")


def test_code_hash_follows_every_kind_of_import_into_sub_packages(tmp_path):
    """Absolute, `from package import module`, and relative imports of level 1 to 3, each to a
    module in another sub-package; a module nobody imports stays out, and editing one changes the
    hash of exactly the steps that import it."""
    import glann.pipeline.codehash as ch

    pkg = tmp_path / "glann"
    files = {
        "__init__.py": "", "pipeline/__init__.py": "", "a/__init__.py": "", "a/b/__init__.py": "",
        "pipeline/cli.py": "import json\nfrom glann.a import absolute\n\ndef cmd_one(args):\n"
                           "    from ..a.b import deep\n\ndef cmd_two(args):\n    from .helper import f\n",
        "pipeline/helper.py": "import glann.a.b.other\n\ndef f():\n    pass\n",
        "a/absolute.py": "", "a/b/deep.py": "from . import sibling\n", "a/b/sibling.py": "",
        "a/b/other.py": "from ...a import absolute\n", "a/unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    rel = lambda step: {f.relative_to(pkg).as_posix() for f in step_files(tmp_path, step)}
    base = {"__init__.py", "pipeline/__init__.py", "pipeline/cli.py", "a/__init__.py", "a/absolute.py"}
    assert rel("one") == base | {"a/b/__init__.py", "a/b/deep.py", "a/b/sibling.py"}
    assert rel("two") == base | {"pipeline/helper.py", "a/b/__init__.py", "a/b/other.py"}
    before = {s: ch.code_hash(tmp_path, s) for s in ("one", "two")}
    (pkg / "a/b/sibling.py").write_text("x = 1\n")
    (pkg / "a/unused.py").write_text("x = 1\n")
    ch._parse.cache_clear(), ch._file_imports.cache_clear()
    after = {s: ch.code_hash(tmp_path, s) for s in ("one", "two")}
    assert after["one"] != before["one"] and after["two"] == before["two"]


def test_src_imports_no_snakemake_and_has_no_cycles():
    from glann.pipeline.codehash import _file_imports

    pkg = SRC / "glann"
    graph = {}
    for f in pkg.rglob("*.py"):
        parts = f.relative_to(pkg).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "snakemake" for a in node.names), f
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "snakemake", f
        # module-to-module edges (the packages' __init__ files import nothing)
        graph[name] = {m for m in _file_imports(f, name) if (pkg / (m.replace(".", "/") + ".py")).is_file()} - {name}

    def visit(n, stack):
        assert n not in stack, f"import cycle: {' -> '.join([*stack, n])}"
        for m in graph.get(n, ()):
            visit(m, [*stack, n])

    for n in graph:
        visit(n, [])


def test_sub_packages_hold_what_their_names_say():
    """The layers (docs/development.md): the top-level foundations import no sub-package; data
    imports no method; methods import no evaluation, tracking or pipeline module; evaluation
    imports no tracking or pipeline module; only the pipeline uses them all."""
    from glann.pipeline.codehash import _file_imports

    pkg = SRC / "glann"
    allowed = {"": set(), "data": {""}, "methods": {"", "data"}, "evaluation": {"", "data", "methods"},
               "tracking": {""}, "pipeline": {"", "data", "methods", "evaluation", "tracking"}}
    wrong = []
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg)
        layer = rel.parts[0] if len(rel.parts) > 1 else ""
        parts = rel.with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for m in _file_imports(f, name):
            target = m.split(".")[0] if (pkg / m.split(".")[0]).is_dir() else ""
            if target and target != layer and target not in allowed[layer]:
                wrong.append(f"{rel} imports glann.{m}: {layer or 'top level'} may not use {target}")
    assert not wrong, "\n".join(wrong)


def test_registry_is_the_one_list_of_methods():
    assert list(methods.METHODS) == ["glann", "glo_gauss", "imle_pixel", "mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan",
                                     "began", "vae", "flow"]
    assert methods.get("glann").checkpoint_paths("d", 3) == {"glo": "results/d/glann/seed3/glo.pt",
                                                             "imle": "results/d/glann/seed3/imle.pt"}
    assert methods.get("glo_gauss").loss_csv_paths("d", 0) == []
    assert methods.get("nsgan").loss_csv_paths("d", 0) == ["results/d/nsgan/seed0/losses.csv"]
    msgs = config_errors({"datasets": ["digits"], "methods": ["glann", "biggan"], "seeds": [0]}, SCHEMA)
    assert msgs == ["config error at methods[1]: 'biggan' is not allowed; allowed values: "
                    + ", ".join(methods.METHODS)]


def test_a_toy_method_added_through_the_registry_alone(digits_dir, tmp_path, monkeypatch, capsys):
    """One module (the trainer) and one register() call: config check, CLI training and sampling."""
    import json
    import sys
    import types

    from glann.pipeline import cli
    from glann.methods.models import make_generator
    from glann.methods.sampling import Sampler
    from glann.methods.training import Loop, fit, seeded

    def train_toy(data_dir, cfg, ctx):
        gen = seeded(ctx.seed)
        G = make_generator(8, (16, 16, 1), "auto", "auto")

        def step(epoch, poison):
            return {"loss": float(torch.rand(1, generator=gen))}

        return fit(Loop("train_toy", "toy", cfg, {"generator": G}, gen, step,
                        lambda: {"generator": G.state_dict(), "noise_dim": 8, "image_shape": [16, 16, 1]}), ctx)

    module = types.ModuleType("toy_method")
    module.train_toy = train_toy
    monkeypatch.setitem(sys.modules, "toy_method", module)
    monkeypatch.setitem(methods.METHODS, "toy", methods.Method(
        "toy", "train_baseline", {"model": "{method}/seed{seed}/model.pt"}, ("{method}/seed{seed}/losses.csv",),
        trainer="toy_method:train_toy"))
    assert config_errors({"datasets": ["digits"], "methods": ["toy"], "seeds": [0]}, SCHEMA) == []
    out = tmp_path / "results/digits/toy/seed0/model.pt"
    job = {"dataset": "digits", "method": "toy", "seed": 0, "device": "cpu", "tracking": {"enabled": False},
           "params": {"epochs": 2, "generator": {"arch": "auto", "batchnorm": "auto"}}}
    rc = cli.main(["train-baseline", "--job", json.dumps(job), "--data", str(digits_dir), "--out", str(out),
                   "--csv", str(out.with_name("losses.csv"))])
    assert rc == 0, capsys.readouterr().err
    blob = torch.load(out, weights_only=False)
    assert {"kind", "seed", "epochs", "diverged", "config", "history"} <= blob.keys()
    assert blob["kind"] == "toy" and blob["epochs"] == 2 and len(blob["history"]) == 2
    paths = methods.get("toy").checkpoint_paths("digits", 0)
    x = Sampler("toy", {"model": tmp_path / paths["model"]}, torch.device("cpu")).generate(10, seed=0)
    assert x.shape == (10, 16, 16, 1) and x.dtype == np.uint8


@pytest.mark.parametrize("name", ["glo", "imle", "imle_pixel", "nsgan", "vae", "evaluator"])
def test_every_final_checkpoint_carries_the_same_keys(name, digits_dir, tmp_path):
    from glann.methods import gans, imle
    from glann.evaluation.evaluator import train_evaluator
    from glann.methods.glo import train_glo
    from glann.methods.vae import train_vae

    cfg = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
    out = tmp_path / "m.pt"
    CPU = torch.device("cpu")
    if name == "imle":
        torch_save(tmp_path / "g.pt", {"codes": torch.nn.functional.normalize(torch.randn(200, 8), dim=1)})
        imle.train_imle(tmp_path / "g.pt", {**cfg["imle"], "epochs": 1}, TrainContext(out, 3, CPU))
    else:
        fn = {"glo": lambda: train_glo(digits_dir, {**cfg["glo"], "loss": "l1", "epochs": 1}, TrainContext(out, 3, CPU)),
              "imle_pixel": lambda: imle.train_imle_pixel(digits_dir, {**cfg["imle_pixel"], "epochs": 1,
                                                                          "samples_factor": 1}, TrainContext(out, 3, CPU)),
              "nsgan": lambda: gans.train_gan("nsgan", digits_dir, {**cfg["nsgan"], "epochs": 1}, TrainContext(out, 3, CPU)),
              "vae": lambda: train_vae(digits_dir, {**cfg["vae"], "epochs": 1}, TrainContext(out, 3, CPU)),
              "evaluator": lambda: train_evaluator(digits_dir, {**cfg["evaluator"], "epochs": 1}, TrainContext(out, 3, CPU))}
        fn[name]()
    blob = torch.load(out, weights_only=False)
    assert {"kind", "seed", "epochs", "diverged", "diverged_epoch", "config", "history"} <= blob.keys()
    assert blob["seed"] == 3 and blob["epochs"] == 1 and blob["diverged"] is False
    # compute is recorded: seconds and training examples per epoch, totals in the checkpoint
    assert blob["train_seconds"] > 0 and blob["device"] == "cpu"
    n = 200 if name == "imle" else 1437
    expected = {"glo": n, "evaluator": n, "imle": 200 - 200 % 128, "imle_pixel": n - n % 128,
                "nsgan": n - n % 64, "vae": n - n % 64}[name]
    assert blob["images_processed"] == expected == blob["history"][0]["images"]


def test_no_dead_code():
    """vulture over src, tests and benchmarks (names used only by the Snakefile: tests/vulture_whitelist.py)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vulture", "src/glann", "tests", "benchmarks",
                           "tests/vulture_whitelist.py", "--min-confidence", "60"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_start_and_cli_help_import_no_torch():
    """Every ``snakemake`` start (dry runs too) and every ``glann --help`` runs without importing
    torch (~2-3 s on a 2-core CPU): the glann modules the .smk files import, and the CLI's parser."""
    import re
    import subprocess
    import sys

    smk = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    modules = sorted(set(re.findall(r"^\s*from (glann(?:\.\w+)*) import", smk, re.M)))
    assert {"glann.pipeline.config", "glann.hub", "glann.methods.registry"} <= set(modules)
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "from glann.pipeline.cli import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'mlflow', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported at workflow start: {proc.stdout}"


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/xdg"}, {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/xdg"}])
def test_weights_are_looked_up_where_torch_hub_keeps_them(env, monkeypatch):
    from glann.hub import checkpoints_dir

    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert checkpoints_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_every_seeded_bug_still_applies_to_the_source():
    """tests/mutation/seeded_bugs.py patches the source by exact text: a refactor that moves the
    patched line must move the patch with it (a patch that no longer applies tests nothing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeded_bugs", REPO / "tests/mutation/seeded_bugs.py")
    bugs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bugs)
    stale = [name for name, rel, old, _, _ in bugs.BUGS if old not in (REPO / "src/glann" / rel).read_text()]
    assert not stale, f"seeded bugs whose patch no longer applies: {stale}"
    tests = {t.split("::")[0] for *_, named in bugs.BUGS for t in named}
    assert all((REPO / t).is_file() for t in tests), tests


def test_the_registry_names_every_gan_kind_the_trainer_has():
    """glann.methods.registry stays free of torch, so it lists the GANs itself: the list must be
    glann.methods.gans.KINDS, in its order (adding a GAN: one KINDS entry, its losses, its name here)."""
    from glann.methods import gans
    from glann.methods.registry import METHODS

    registered = [name for name, m in METHODS.items() if m.trainer == "glann.methods.gans:train_gan"]
    assert registered == list(gans.KINDS)


def test_no_public_function_takes_more_than_six_parameters():
    """A call that carries a crowd gets the objects it belongs to (glann.evaluation.context's
    Reference and Scoring, glann.methods.sampling.Draw, glann.methods.training.Loop, ...):
    no public function or constructor in src/glann takes more than six parameters (self aside)."""
    import ast

    crowded = []
    for path in sorted((REPO / "src/glann").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_") and node.name != "__init__":
                continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            n = len(names) - (1 if names[:1] in (["self"], ["cls"]) else 0)
            if n > 6:
                crowded.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n})")
    assert not crowded, crowded
