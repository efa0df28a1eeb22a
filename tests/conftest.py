import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLANN_TRACKING", "0")  # unit tests do not write to mlflow.db


@pytest.fixture(scope="session")
def mnist5k_dir(tmp_path_factory):
    from glann.datasets import prepare

    d = tmp_path_factory.mktemp("mnist5k")
    prepare("mnist5k", {}, d)
    return d


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    from glann.datasets import prepare

    d = tmp_path_factory.mktemp("digits")
    prepare("digits", {"size": 16}, d)
    return d


def copy_workflow(dest: Path) -> Path:
    """A fresh copy of the workflow (Snakefile, rules, config, src) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "src", "dvc.yaml", "pyproject.toml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(cwd, *args, env=None, check=True, timeout=900):
    exe = Path(sys.executable).with_name("snakemake")
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
