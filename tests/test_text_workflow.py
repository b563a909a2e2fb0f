"""rules/text.smk under real Snakemake: prompts and embeddings, hand edits, params-triggered reruns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

SNAKEFILE = f"""
from snakemake.exceptions import WorkflowError
from hmf.tasks import get_task

configfile: "config.yaml"

R = "results/t"
LOGS = "logs/t"
TASK = get_task(config["task"])

include: "{ROOT}/rules/text.smk"
"""

TARGET = "results/t/text/tcga_brca/minilm.pt"
PROMPTS = "results/t/prompts/tcga_brca.json"


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "1",
            "--snakefile",
            str(workdir / "Snakefile"),
            "--directory",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def write_config(workdir: Path, text: dict) -> None:
    (workdir / "config.yaml").write_text(json.dumps({"task": "tcga_brca", "text": text}))


def test_prompts_and_embeddings_rules(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu"})

    snakemake(tmp_path, TARGET)
    bank = torch.load(tmp_path / TARGET, weights_only=True)
    assert bank["embeddings"].shape == (len(bank["prompts"]), 384) and bank["class_names"] == ["IDC", "ILC"]
    assert (tmp_path / "logs/t/prompts/tcga_brca.log").stat().st_size > 0
    assert "Nothing to be done" in snakemake(tmp_path, "-n", TARGET)

    # the jobs get the settings that change their outputs as params: a setting neither reads, or a
    # run-time one (batch size), changes nothing; a result setting of the encoder reruns encode_text only
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu", "llm": {"temperature": 0.1}})
    assert "Nothing to be done" in snakemake(tmp_path, "-n", TARGET)
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu", "batch_size": 8})
    assert "Nothing to be done" in snakemake(tmp_path, "-n", TARGET)
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu", "max_length": 64})
    dry = snakemake(tmp_path, "-n", TARGET)
    assert "rule encode_text" in dry and "Params have changed" in dry and "rule prompts" not in dry
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu"})

    # a hand edit re-embeds the prompts but does not rerun the prompts rule
    prompts = json.loads((tmp_path / PROMPTS).read_text())
    prompts["descriptions"]["ILC"][0] = "Hand edit: single-file discohesive cells without E-cadherin."
    (tmp_path / PROMPTS).write_text(json.dumps(prompts))
    dry = snakemake(tmp_path, "-n", TARGET)
    assert "rule encode_text" in dry and "rule prompts" not in dry
    # even a forced rerun of the prompts rule keeps the edit (update() output, matching provenance)
    snakemake(tmp_path, "--forcerun", "prompts", PROMPTS)
    assert json.loads((tmp_path / PROMPTS).read_text())["descriptions"]["ILC"][0].startswith("Hand edit")

    # another bank (another template hash) is a params change, visible in a dry run
    banks = tmp_path / "banks"
    banks.mkdir()
    shipped = json.loads((ROOT / "src/hmf/text/bank/tcga_brca.json").read_text())
    shipped["descriptions"]["IDC"].append("Cohesive nests of ductal carcinoma cells in desmoplastic stroma, extra.")
    (banks / "tcga_brca.json").write_text(json.dumps(shipped))
    write_config(tmp_path, {"source": "bank", "encoder": "minilm", "device": "cpu", "bank_dir": str(banks)})
    dry = snakemake(tmp_path, "-n", "--rerun-triggers=params", TARGET)
    assert "rule prompts" in dry and "Params have changed" in dry and "rule encode_text" in dry
    snakemake(tmp_path, PROMPTS)
    prompts = json.loads((tmp_path / PROMPTS).read_text())
    assert prompts["descriptions"]["IDC"][-1].endswith("extra.")
    assert not prompts["descriptions"]["ILC"][0].startswith("Hand edit")


def dry_run_failure(workdir: Path, target: str) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--snakefile",
            str(workdir / "Snakefile"),
            "--directory",
            str(workdir),
            target,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_labelset_wildcard_is_constrained_to_the_task(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    write_config(tmp_path, {"encoder": "minilm"})
    assert "MissingRuleException" in dry_run_failure(tmp_path, "results/t/prompts/camelyon17_slide.json")


def test_unknown_encoder_fails_at_parse_time(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    write_config(tmp_path, {"encoder": "clip"})
    assert "config text: unknown text encoder 'clip'" in dry_run_failure(tmp_path, TARGET)


def test_scripts_read_params_not_the_config():
    scripts = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    assert scripts and [p.name for p in scripts if "snakemake.config" in p.read_text(encoding="utf-8")] == []
