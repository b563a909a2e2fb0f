# Two commands for a newcomer:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo report test lint dag clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup  ## build the embedded demo cohort and run the whole workflow on it
	$(BIN)/snakemake --cores $(CORES)

REPORT ?= report.html
report: setup  ## build what is missing, then the self-contained Snakemake report, and print its size
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report $(REPORT) --cores 1
	$(BIN)/python -m hmf.report.size $(REPORT)

test: setup  ## run the test suite
	$(BIN)/pytest -q

lint: setup  ## Snakemake's linter, ruff (lint and format), snakefmt and the import layers; CI runs it
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules tests/slurm/workflow/Snakefile
	$(BIN)/lint-imports

dag: setup
	$(BIN)/snakemake -n

clean-demo:
	rm -rf results/demo_* resources/demo logs/demo_* benchmarks/demo_* .snakemake
