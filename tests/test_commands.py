"""Command-line overrides and every command the documentation shows.

Snakemake hands ``--config`` values nested in lists or mappings to the workflow
as strings (``seeds=[0,1]`` -> ``['0', '1']``); the config check types them by
the schema. Every ``snakemake`` command in README.md, docs/, config/ comments and
the Snakefile's header runs here as a dry-run, so the documentation cannot
drift from the code; ``dvc`` / ``mlflow`` / ``glann`` commands run with
``--help``. Commands that need a GPU, SLURM or weights are checked up to that
point (a random-weight Inception file stands in for pytorch-fid's, so the
paper presets' ``fid.require_inception`` check passes; nothing is computed
with it).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, copy_workflow, snakemake
from glann.pipeline.config import config_errors, coerce, load_schema

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
BASE = {"datasets": ["mnist5k"], "methods": ["glann"], "seeds": [0]}
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- typing of string overrides
@pytest.mark.parametrize("patch,expect", [
    ({"seeds": ["0", "1", "2"]}, {"seeds": [0, 1, 2]}),
    ({"glo": {"epochs": "3"}}, {"glo": {"epochs": 3}}),
    ({"glo": {"lr_codes": "1e-4"}}, {"glo": {"lr_codes": 1e-4}}),
    ({"glo": {"lr_codes": "0.5"}}, {"glo": {"lr_codes": 0.5}}),
    ({"nsgan": {"betas": ["0.5", "0.9"]}}, {"nsgan": {"betas": [0.5, 0.9]}}),
    ({"runtime": {"deterministic": "true"}}, {"runtime": {"deterministic": True}}),
    ({"glo": {"generator": {"batchnorm": "false"}}}, {"glo": {"generator": {"batchnorm": False}}}),
    ({"glo": {"generator": {"batchnorm": "auto"}}}, {"glo": {"generator": {"batchnorm": "auto"}}}),
    ({"runtime": {"amp": "off"}}, {"runtime": {"amp": "off"}}),  # a string enum value stays a string
    ({"data": {"mnist": {"root": "/data", "size": "28"}}}, {"data": {"mnist": {"root": "/data", "size": 28}}}),
    ({"data": {"mnist": {"root": "123"}}}, {"data": {"mnist": {"root": "123"}}}),  # a real string key
    ({"fault_injection": {"nsgan": "2"}}, {"fault_injection": {"nsgan": 2}}),
])
def test_string_overrides_are_typed_by_the_schema(patch, expect):
    typed = coerce({**BASE, **patch}, SCHEMA)
    for key, value in expect.items():
        assert typed[key] == value and _same_types(typed[key], value), (typed[key], value)
    assert config_errors(typed, SCHEMA) == []


def _same_types(a, b):
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in b)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


@pytest.mark.parametrize("patch,expect", [
    ({"glo": {"epochs": "ten"}}, "config error at glo.epochs: 'ten' has the wrong type; expected integer"),
    ({"glo": {"epochs": "2.5"}}, "config error at glo.epochs: '2.5' has the wrong type; expected integer"),
    ({"seeds": ["0", "x"]}, "config error at seeds[1]: 'x' has the wrong type; expected integer"),
    ({"glo": {"epochs": "0"}}, "config error at glo.epochs: 0 is out of range"),
    ({"runtime": {"deterministic": "maybe"}}, "config error at runtime.deterministic: 'maybe' has the wrong type"),
])
def test_untypable_overrides_keep_the_one_line_error(patch, expect):
    msgs = config_errors(coerce({**BASE, **patch}, SCHEMA), SCHEMA)
    assert len(msgs) == 1 and expect in msgs[0], msgs


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def _jobs(out: str) -> dict:
    """The dry-run's job-count table: {rule: count}."""
    table = out.split("Job stats:", 1)[1] if "Job stats:" in out else out
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_issue_commands_dry_run_the_intended_jobs(wf):
    proc = snakemake(wf, "-n", "--cores", "1", "--config", "seeds=[0,1,2]", "device=cuda")
    jobs = _jobs(proc.stdout)
    assert jobs["train_glo"] == 3 and jobs["evaluate"] == 36, jobs  # 3 seeds x 12 methods
    proc = snakemake(wf, "-n", "--cores", "1", "--config", "glo={epochs: 3}")
    assert "train_glo" in _jobs(proc.stdout)


@pytest.mark.pipeline
def test_config_override_reaches_the_job(tmp_path):
    w = copy_workflow(tmp_path / "wf")
    target = "results/digits/glann/seed0/glo.pt"
    snakemake(w, target, "--cores", "2", "--configfile", "config/quick.yaml", "--config", "glo={epochs: 3}")
    glo = torch.load(w / target, weights_only=False)
    assert glo["epochs"] == 3 and [r["epoch"] for r in glo["history"]] == [1, 2, 3]


# --------------------------------------------------------------------------- the documentation's commands
def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line shown in the docs and config comments."""
    sources = [REPO / "README.md", REPO / "Snakefile", *sorted((REPO / "docs").rglob("*.md")),
               *sorted((REPO / "config").rglob("*.md")), *sorted((REPO / "config").rglob("*.yaml")),
               *sorted((REPO / "benchmarks").glob("*.md"))]
    found = []
    for path in sources:
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            cands = re.findall(r"`((?:snakemake|dvc|mlflow|glann) [^`]+)`", line)
            bare = re.sub(r"^\s*(#\s*)?(\$\s*)?", "", line)
            if not cands and re.match(r"(snakemake|dvc|mlflow|glann) ", bare):
                cands = [bare]
            for c in cands:
                c = re.split(r"\s+#|\s{2,}", c.strip())[0]  # drop trailing comments / aligned notes
                for part in c.split("&&"):
                    part = part.strip()
                    if re.match(r"(snakemake|dvc|mlflow|glann) ", part) and "<" not in part:
                        found.append((f"{path.relative_to(REPO)}:{n}", part))
    return found


def test_documentation_shows_commands():
    cmds = [c for _, c in documented_commands()]
    assert any("seeds=[0,1,2]" in c for c in cmds)
    assert sum(c.startswith("snakemake") for c in cmds) >= 8


@pytest.fixture(scope="module")
def inception_home(tmp_path_factory):
    """TORCH_HOME with a random-weight Inception file where pytorch-fid's would be (checks only)."""
    from glann.hub import INCEPTION_FILE
    from weights import save_random_inception

    home = tmp_path_factory.mktemp("torch_home")
    save_random_inception(home / "hub" / "checkpoints" / INCEPTION_FILE)
    return home


def _dry(cmd: list[str]) -> list[str]:
    """The dry-run form of a documented snakemake command."""
    out, skip = [], False
    for i, a in enumerate(cmd):
        if skip:
            skip = False
            continue
        if a == "--report":  # a report of a run that has not happened: dry-run the workflow instead
            skip = True
            continue
        if a == "--workflow-profile":  # the SLURM profile needs the executor plugin: its settings are
            skip = True                # checked in test_profiles_parse; the workflow part is dry-run here
            continue
        if a == "--touch":
            continue
        out.append(a)
    if "--cores" not in out and "-c" not in out:
        out += ["--cores", "1"]
    return out if "-n" in out else out + ["-n"]


def distinct_commands() -> list[tuple[str, str]]:
    """Each distinct command once, with every place that shows it."""
    places: dict[str, list[str]] = {}
    for where, command in documented_commands():
        places.setdefault(command, []).append(where)
    return [(", ".join(wheres), command) for command, wheres in places.items()]


@pytest.fixture(scope="module")
def documented_runs(tmp_path_factory, inception_home):
    """Every distinct documented command, run once: snakemake ones as dry-runs, each in its own
    copy of the workflow, two at a time (each is one single-threaded process, mostly imports and
    parsing); dvc / mlflow / glann ones as ``<tool> <subcommand> --help``, once per subcommand.
    {command: CompletedProcess}."""
    from concurrent.futures import ThreadPoolExecutor

    jobs, key_of = {}, {}
    for _, command in distinct_commands():
        tool, *rest = shlex.split(command)
        if tool == "snakemake":  # commands with one dry-run form (`--touch`, `--report`) run it once
            key = key_of[command] = ("snakemake", *_dry(rest))
            if key not in jobs:
                wf = copy_workflow(tmp_path_factory.mktemp("dry"))
                jobs[key] = (snakemake, (wf, *key[1:]), {"env": {"TORCH_HOME": str(inception_home)},
                                                         "check": False})
        else:
            sub = [a for a in rest if not a.startswith("-")][:1]
            key = key_of[command] = (tool, *sub)
            cmd = [str(BIN / tool), *sub, "--help"]
            jobs[key] = (subprocess.run, (cmd,), {"capture_output": True, "text": True, "timeout": 300})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(fn, *a, **kw) for key, (fn, a, kw) in jobs.items()}
        return {command: futures[key].result() for command, key in key_of.items()}


@pytest.mark.parametrize("where,command", distinct_commands())
def test_documented_command_runs(where, command, documented_runs):
    tool, *rest = shlex.split(command)
    proc = documented_runs[command]
    if tool == "snakemake":
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{where}: `{command}` failed:\n{text[-3000:]}"
        assert ("Nothing to be done" in text or "Job stats" in text
                or ("--unlock" in rest and "Unlocked working directory" in text)), f"{where}: {text[-2000:]}"
        return
    # dvc / mlflow / glann: the subcommand exists and its options parse (they need a repo, a
    # server or trained models to do more; those paths are tested in test_dvc / test_tracking).
    sub = " ".join([a for a in rest if not a.startswith("-")][:1])
    assert proc.returncode == 0, f"{where}: `{tool} {sub} --help` failed: {proc.stderr[-2000:]}"
    for opt in [a.split("=")[0] for a in rest if a.startswith("--")]:
        assert opt in proc.stdout, f"{where}: `{command}` uses {opt}, which `{tool} {sub}` does not know"


def test_profiles_parse():
    import yaml

    for cfg in sorted((REPO / "profiles").glob("*/config.yaml")):
        data = yaml.safe_load(cfg.read_text())
        assert isinstance(data, dict) and data, cfg


@pytest.mark.parametrize("device,expect", [("cuda", 1), ("cpu", 0), ("auto", None)])
def test_gpu_resource_is_declared_only_where_jobs_use_one(wf, device, expect):
    """device: auto resolves once at parse time: no CUDA here, so no job asks for a GPU."""
    if expect is None:
        expect = 1 if Path("/proc/driver/nvidia/version").exists() else 0
    proc = snakemake(wf, "-n", "--cores", "1", "--config", f"device={device}")
    train = [b for b in proc.stdout.split("\n\n") if "rule train_glo:" in b]
    assert train and f"gpu={expect}" in train[0], train


# --------------------------------------------------------------------------- workflow conventions
def test_snakemake_lint_is_clean():
    """`snakemake --lint` flags nothing but the per-rule conda/container advice (config/README.md:
    the workflow runs in one environment, environment.yml or the README's .venv)."""
    proc = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep
                               + os.environ["PATH"]})
    text = proc.stdout + proc.stderr
    lints = [line.strip() for line in text.splitlines() if line.startswith("    * ")]
    assert lints, text  # the linter ran (it always gives the conda advice)
    others = [lint for lint in lints if not lint.startswith("* Specify a conda environment or container")]
    assert not others, others


def test_catalogue_conventions():
    import yaml

    meta = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert meta["usage"]["mandatory-flags"]["flags"] and meta["usage"]["report"] is True
    assert set(meta["usage"]["software-stack-deployment"]) == {"conda", "singularity", "singularity+conda"}
    assert (REPO / "profiles").is_dir() and not (REPO / "profiles").is_symlink()
    assert (REPO / "profiles/default/config.yaml").exists() and (REPO / "profiles/slurm/config.yaml").exists()
    assert (REPO / "config/README.md").exists()
    # every report() output has a caption file that exists; fid_domain's caveat stands beside its figures
    rules = REPO / "workflow/rules"
    for smk in rules.glob("*.smk"):
        text = smk.read_text()
        calls = re.findall(r"report\(\s*([^)]*?)\)", text, re.S)
        for call in calls:
            cap = re.search(r'caption="([^"]+)"', call)
            assert cap, f"{smk.name}: report() without a caption: {call[:80]}"
            assert (rules / cap.group(1)).resolve().exists(), cap.group(1)
    for name in ("fid.rst", "table.rst", "fid_vs_compute.rst"):
        text = " ".join((REPO / "workflow/report" / name).read_text().replace("**", "").split())
        assert "not comparable with Inception FID" in text or "not Inception FID" in text, name
    # input functions live in common.smk only: the other rule files hold rules
    for smk in rules.glob("*.smk"):
        if smk.name != "common.smk":
            assert not re.search(r"(?m)^def ", smk.read_text()), f"{smk.name} defines a function"


def test_device_cuda_without_cuda_stops_before_any_job(tmp_path):
    """device: cuda on a machine without CUDA: one line, no job, no folder, no MLflow run."""
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--cores", "1", "--configfile", "config/quick.yaml", "--config", "device=cuda",
                     check=False, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "config error" in ln]
    assert len(lines) == 1 and "device: cuda" in lines[0] and "device=cpu" in lines[0], proc.stderr[-2000:]
    assert not (wf / "results").exists() and not (wf / "data").exists() and not (wf / "mlflow.db").exists()
    # a dry run (and a cluster executor, which submits the jobs to GPU nodes) is not stopped
    assert snakemake(wf, "-n", "--cores", "1", "--config", "device=cuda",
                     env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}).returncode == 0


def test_readme_is_short_and_every_doc_link_resolves():
    """README stays a five-minute read; every relative link and image in the docs exists."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 180
    for banned in ("session", "lent", "this development environment"):
        assert banned not in readme.lower(), banned
    docs = [REPO / "README.md", REPO / "config/README.md", REPO / "benchmarks/README.md", REPO / "tests/README.md",
            *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken
    for moved in ("config/README.md", "benchmarks/README.md", "docs/tracking.md", "docs/dvc.md", "docs/cluster.md",
                  "docs/failures.md", "docs/results.md", "docs/methods.md", "docs/evaluation.md"):
        assert f"({moved})" in readme, f"README does not link {moved}"
