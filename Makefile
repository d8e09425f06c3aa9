# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing: torch's CPU build first (a bare `torch` would pull CUDA).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB := demo-store
# pytest-xdist processes; each test module runs whole in one of them (its fixtures built once).
# Two fit CI's 2 cores and 24 GiB: the suite is half model arithmetic, half process start-ups
TEST_WORKERS ?= 2

.PHONY: demo test lint completions docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DB)
	$(BIN)/arrowsmith chunk samples/ --strategy sentences --max-tokens 64 \
	  | $(BIN)/arrowsmith embed --late --db $(DEMO_DB)
	$(BIN)/arrowsmith index --db $(DEMO_DB)
	$(BIN)/arrowsmith query --db $(DEMO_DB) --k 3 --format table "why is the sky blue"

test: $(STAMP)
	$(BIN)/ruff check cli commands plugins tests benchmarks
	$(BIN)/vulture  # dead code: paths and known false positives in pyproject.toml [tool.vulture]
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check cli commands plugins tests benchmarks
	$(BIN)/vulture  # dead code: paths and known false positives in pyproject.toml [tool.vulture]

completions: $(STAMP)
	$(BIN)/arrowsmith completions --write completions/

# everything generated from the app: the command reference and the completion scripts
# (tests/test_docs.py and tests/test_cli.py fail when either is stale)
docs: completions
	$(BIN)/python -m arrowsmith.cli.reference docs/cli.md

clean:
	rm -rf $(VENV) $(DEMO_DB) build *.egg-info
