# Two commands for a newcomer:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test lint dag clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup  ## build the embedded demo cohort and run the whole workflow on it
	$(BIN)/snakemake --cores $(CORES)

test: setup  ## run the test suite
	$(BIN)/pytest -q

lint: setup
	$(BIN)/snakemake --lint

dag: setup
	$(BIN)/snakemake -n

clean-demo:
	rm -rf results/demo_* resources/demo logs/demo_* benchmarks/demo_* .snakemake
