"""environment.yml and pyproject.toml list the same dependencies."""

import re
import tomllib

import yaml

from conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_name(r) for r in pip if not r.startswith("-e")}
    assert wanted <= have, wanted - have
