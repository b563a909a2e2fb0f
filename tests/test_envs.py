"""The conda environment and the pip requirements name the same packages and versions."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_pins(requirements):
    pins = {}
    for req in requirements:
        if "==" in req:
            name, version = req.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pip_pins(project["dependencies"])
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        assert _pip_pins(pip_section) == wanted, f"{env_file.name} differs from pyproject.toml"
        assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_rules_name_existing_envs():
    for rule_file in (ROOT / "rules").glob("*.smk"):
        for line in rule_file.read_text().splitlines():
            if line.strip().startswith('"../envs/'):
                assert (ROOT / "rules" / line.strip().strip('"')).resolve().exists(), (rule_file, line)
