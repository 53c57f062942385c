# Set-up is part of every target: the virtual environment is made on first use and refreshed
# whenever pyproject.toml changes, so `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUTPUT ?= outputs/demo
# Optional dependencies installed with the package (CI adds milvus: the Milvus backend's tests).
EXTRAS ?= dev
comma := ,
# One stamp per set of extras, so that asking for more extras installs them.
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test fuzz lint docs experiments clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build on disk; anything else would pull a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unifashion demo --output $(OUTPUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# schemathesis --checks all against the live service (a bounded run: FUZZ_EXAMPLES per operation).
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/serving/test_schema_fuzz.py

# Retrieval over 3 seeds with the Table-5 ablations (hours on a CPU; each step resumes).
experiments: $(STAMP)
	experiments/retrieval_seeds_ablations.sh

# ruff, then the import-linter contracts of pyproject.toml: the layers point one way, no package has
# an import cycle between its modules.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

# The documentation site: the tables rendered from the result files must be current (a stale table
# or a number without a source fails), then mkdocs builds site/ with warnings as errors.
docs: $(VENV)/.installed-docs-extra
	$(BIN)/unifashion docs render --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

$(VENV)/.installed-docs-extra: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),docs]"
	@touch $@

clean-venv:
	rm -rf $(VENV)
