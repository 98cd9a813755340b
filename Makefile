# Quickstart: `make demo` (set up, run the CPU demo, print the report) and `make test` (set up, run the tests).
# `make test-fast`: the unit tier only (in-process tests, no CLI subprocess or pipeline run), a quick check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export EPS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast constraints pipeline bench clean-demo docs docs-serve

$(BIN)/eps: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# pyproject.toml says which versions eps supports; constraints.txt pins the exact ones it is tested with (torch
	# 2.14.1, torchvision 0.29.1 ...). PyPI's Linux torch is the CUDA build whatever the pin (about 5 GB with its
	# nvidia-* and triton wheels), the CPU demo included.
	$(BIN)/pip install --quiet -c constraints.txt --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(BIN)/eps

setup: $(BIN)/eps

demo: setup
	$(BIN)/eps run --params profiles/demo.yaml --out runs-demo

# every tier, spread over the cores (pytest-xdist); tests that must not run side by side share an xdist_group
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

test-fast: setup
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m unit

# after changing a dependency: pin what the working venv holds (less eps itself) as the tested versions
constraints: setup
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -viE '^(eps|pip|setuptools|wheel)=='; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

pipeline: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

# the documentation site (docs/, mkdocs.yml) into site/; `make docs-serve` previews it at http://127.0.0.1:8000
docs: setup
	$(BIN)/mkdocs build --strict

docs-serve: setup
	$(BIN)/mkdocs serve

bench: setup
	$(BIN)/python -m bench.round --space nb201

clean-demo:
	rm -rf runs-demo
