# The README's two commands: `make run` (a small default experiment) and `make test`.
# Both create the virtualenv .venv on first use: `make run` installs what running and reports
# need (the package with matplotlib), `make test` adds the test, Ray and MuJoCo extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: run test docs lint bench clean

$(RUN_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of PyTorch, pinned so CI never pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[plots]'
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[plots,test,ray]'
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/firepbt run mnist1d --method fire

test: $(TEST_STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not serial"
	$(PY) -m pytest -q -m serial
	PYTHON=$(PY) bash tests/packaging/wheel_alone.sh

# the docs need Sphinx and MyST only: the API reference imports the integrations and trackers,
# which import their libraries when used, not when documented
$(DOCS_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[plots,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W -b html docs/site docs/_build/html
	@echo "docs: docs/_build/html/index.html"

bench: $(TEST_STAMP)
	$(PY) benchmarks/engine_overhead.py
	$(PY) benchmarks/controller_cost.py
	$(PY) benchmarks/threads.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
