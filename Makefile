# Quickstart: `make demo` (set up, run the CPU demo, print the report) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export EPS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup demo test pipeline bench clean-demo

$(BIN)/eps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision are pinned exactly, to the versions eps is tested with. PyPI's Linux torch is the CUDA
	# build whatever the pin (about 5 GB with its nvidia-* and triton wheels), the CPU demo included.
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/eps

setup: $(BIN)/eps

demo: setup
	$(BIN)/eps run --params profiles/demo.yaml --out runs-demo

test: setup
	$(BIN)/python -m pytest -q

pipeline: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

bench: setup
	$(BIN)/python -m bench.round --space nb201

clean-demo:
	rm -rf runs-demo
