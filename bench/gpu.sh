#!/usr/bin/env bash
# Every GPU figure in one device call (budget: under 10 minutes on one H200; not yet run on a GPU, see RESULTS.md):
#   bash bench/gpu.sh 2>&1 | tee bench-gpu.log
# 1. NB201 EPS round times per engine (path, graph) and precision (fp32, bf16), the op counts per step and member;
# 2. the paper-protocol NB201 search (params.yaml, nb201 section, 80,000 iterations) with the fastest exact (fp32)
#    engine, then select: the chosen cell, its NAS-Bench-201 CIFAR-10 test accuracy and rank.
# Every command has its own time limit and log under $LOGS; a failed benchmark is reported and skipped, a failed
# search stops the script. The search checkpoints every 20 rounds: a second call (SKIP_BENCH=1 to go straight there)
# resumes it instead of starting over. The older figures (DARTS, data parallel) run only with ALL=1.
# Needs: the venv (make setup) and EPS_DATA_DIR pointing at CIFAR-10 and the NB201 split + ground_truth.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPS=${EPS:-$(dirname "$PY")/eps}
LOGS=${LOGS:-bench-gpu-logs}
OUT=${OUT:-runs-gpu}
SEARCH_LIMIT=${SEARCH_LIMIT:-420}   # seconds for warm-up + search + select (the rest of the 10 minutes)
export EPS_PROGRESS=0 PYTHONUNBUFFERED=1
mkdir -p "$LOGS"
start=$SECONDS
echo "# $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__)"

# bench LIMIT NAME ARGS...: one bench.round run; prints its JSON line, or why there is none (the script goes on)
bench() {
  local limit=$1 name=$2; shift 2
  if timeout -k 10 "$limit" $PY -m bench.round --space nb201 --device cuda "$@" > "$LOGS/$name.log" 2>&1; then
    echo "$name $(tail -1 "$LOGS/$name.log")"
  else
    echo "$name FAILED (exit $?, limit ${limit}s); last lines of $LOGS/$name.log:"; tail -5 "$LOGS/$name.log" | sed 's/^/    /'
  fi
}

if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
  echo "## NB201 EPS round (50 steps at 128 + 64 fitness members at 250), seconds per round; the graph engine's first"
  echo "## (untimed) round includes compiling and CUDA-graph capture"
  bench 100 path-fp32  --engine path  --rounds 2
  bench 150 graph-fp32 --engine graph --rounds 3 --count-ops
  bench 90  path-bf16  --engine path  --rounds 2 --amp
  bench 150 graph-bf16 --engine graph --rounds 3 --amp
fi

# The fastest exact engine: fp32 round times of the two engines (graph when its benchmark did not finish is not
# assumed; path is the fallback, it needs no compilation).
engine=$($PY - "$LOGS" <<'EOF'
import json, sys, pathlib
best = {}
for name in ("path", "graph"):
    log = pathlib.Path(sys.argv[1]) / f"{name}-fp32.log"
    try:
        best[name] = json.loads(log.read_text().strip().splitlines()[-1])["seconds_per_round"]
    except (OSError, ValueError, KeyError, IndexError):
        pass
print(min(best, key=best.get) if best else "graph")
EOF
)
echo "## Paper-protocol NB201 search with engine=$engine ($(( SECONDS - start )) s used so far)"
$PY - "$OUT/params.yaml" "$engine" <<'EOF'
import sys, pathlib, yaml
params = yaml.safe_load(pathlib.Path("params.yaml").read_text())
params["spaces"], params["device"] = ["nb201"], "cuda"
params["nb201"]["supernet"]["engine"] = sys.argv[2]
out = pathlib.Path(sys.argv[1]); out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(yaml.safe_dump(params, sort_keys=False))
EOF
left=$(( 570 - (SECONDS - start) ))
limit=$(( left < SEARCH_LIMIT ? left : SEARCH_LIMIT ))
if (( limit < 60 )); then echo "no time left for the search ($limit s)"; exit 1; fi
t0=$SECONDS
set +e
timeout -k 15 "$limit" bash -c "
    set -euo pipefail
    '$EPS' stage warmup --space nb201 --params '$OUT/params.yaml' --out '$OUT'
    '$EPS' stage search --space nb201 --params '$OUT/params.yaml' --out '$OUT'
    '$EPS' stage select --space nb201 --params '$OUT/params.yaml' --out '$OUT'" > "$LOGS/search.log" 2>&1
rc=$?
set -e
if (( rc != 0 )); then
  echo "search FAILED or not finished in ${limit}s (exit $rc); it resumes from its checkpoint when rerun:"
  echo "  SKIP_BENCH=1 bash bench/gpu.sh"
  tail -5 "$LOGS/search.log" | sed 's/^/    /'
  $PY - "$OUT" <<'EOF' || true
import json, sys, pathlib
for h in sorted(pathlib.Path(sys.argv[1]).rglob("history.jsonl")):
    lines = h.read_text().splitlines()
    if lines:
        print(f"  progress: {h}: {len(lines)} rounds, last iteration {json.loads(lines[-1])['iteration']}")
EOF
  exit 1
fi
echo "search + select: $(( SECONDS - t0 )) s"
$PY - "$OUT" <<'EOF'
import json, sys, pathlib
sel = json.loads((pathlib.Path(sys.argv[1]) / "nb201" / "select" / "selection.json").read_text())
picked = sel[sel["rule"]]
gt = picked.get("ground_truth") or {}
print(f"chosen ({sel['rule']}): {picked['arch']}  params {picked['params']}  latest loss {picked['loss']:.4f}")
print(f"NAS-Bench-201 CIFAR-10: " + (", ".join(f"{k} {v}" for k, v in gt.items()) if gt else "no ground truth found"))
EOF
echo "# total $(( SECONDS - start )) s"

if [[ "${ALL:-0}" == 1 ]]; then
  set +e
  echo "## DARTS CNN retrain throughput (C=36, 20 cells, batch 96)"
  timeout 150 $PY -m bench.retrain --space darts-cnn --device cuda --steps 30
  echo "## DARTS CNN EPS round (bf16)"
  timeout 120 $PY -m bench.round --space darts-cnn --device cuda --rounds 1 --amp | tail -1
  echo "## DARTS RNN: EPS round (partial: 10 steps + 8 fitness members, projected) and retrain tokens/s"
  timeout 90 $PY -m bench.round --space darts-rnn --device cuda --rounds 1 --steps 10 --members 8 | tail -1
  timeout 60 $PY -m bench.retrain --space darts-rnn --device cuda --steps 20
  echo "## Data-parallel search: rounds/s with 1 and 2 processes (one GPU: gloo, a correctness and overhead check)"
  timeout 240 $PY -m bench.scaling --space nb201 --device cuda --procs 1,2 --threads 4 --rounds 3 | tail -3
fi
