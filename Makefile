# make test: create .venv when missing, install the package with its test extra, run pytest.
# make test-fast: same venv, the inner loop: the suite without the tests marked slow.
# make demo: same venv, run the end-to-end demo on the built-in dataset.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo bench install clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	$(BIN)/alexnet demo

bench: $(STAMP)
	$(BIN)/python benchmarks/data_loader.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/lrn.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
