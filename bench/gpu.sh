#!/usr/bin/env bash
# Every GPU figure in one run (about 5-6 minutes on one H100), for a single `device` call:
#   bash bench/gpu.sh > bench-gpu.log
# Needs: the venv (make setup) and EPS_DATA_DIR pointing at CIFAR-10, the NB201 split and PTB.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
echo "# $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "## NB201 EPS round (50 steps at 128 + 64 fitness forwards at 250): fp32, bf16, plain"
timeout 120 $PY -m bench.round --space nb201 --device cuda --rounds 3 | tail -1
timeout 120 $PY -m bench.round --space nb201 --device cuda --rounds 3 --amp | tail -1
timeout 120 $PY -m bench.round --space nb201 --device cuda --rounds 2 --plain | tail -1
echo "## DARTS CNN retrain throughput (C=36, 20 cells, batch 96)"
timeout 150 $PY -m bench.retrain --space darts-cnn --device cuda --steps 30
echo "## DARTS CNN EPS round (bf16)"
timeout 120 $PY -m bench.round --space darts-cnn --device cuda --rounds 1 --amp | tail -1
echo "## DARTS RNN: EPS round (partial: 10 steps + 8 fitness members, projected) and retrain tokens/s"
timeout 90 $PY -m bench.round --space darts-rnn --device cuda --rounds 1 --steps 10 --members 8 | tail -1
timeout 60 $PY -m bench.retrain --space darts-rnn --device cuda --steps 20
echo "## Data-parallel search: rounds/s with 1 and 2 processes (2 processes share the one GPU over gloo when only one"
echo "## is present: a correctness and overhead check, not a speed-up; with 2+ GPUs, NCCL and one GPU per process)"
timeout 240 $PY -m bench.scaling --space nb201 --device cuda --procs 1,2 --threads 4 --rounds 3 | tail -3
