#!/usr/bin/env bash
# Issue 18's GPU evidence in one run (meant to take about 8 minutes on one GPU; the steps' timeouts bound it at
# about 33): the bench's k-hop ratios (--quick) and G-Meta ratios (--domains gmeta) on CUDA, a default graph run's
# wall time on the GPU (CUDA graphs auto and off) vs the CPU, the GPU's peak memory, CUDA graphs (captured = eager
# tests; sinusoid FOMAML, k-hop GCN FOMAML and G-Meta + CML wall time with --cuda-graphs on vs off), and one Table 3 setting's 10 runs (G-Meta +- CML, 5 seeds,
# CiteSeer 2-way 5-shot) trained with --parallel-runs 5. The G-Meta and Table 3 steps need CMLGRAPH_DATA.
# With TABLE3=1 it then trains the whole local Table 3 (80 runs) with --parallel-runs 10 (at most 15 minutes more).
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default: a fresh temporary folder). Exits 0 with a message without a GPU.
set -euo pipefail
if ! command -v python > /dev/null; then
    echo "gpu_check: no python on PATH; activate the project's environment first (README: pip install -e .)" >&2
    exit 2
fi
if ! python -c "import torch" 2> /dev/null; then
    echo "gpu_check: $(command -v python) cannot import torch; activate the project's environment first" \
        "(README: pip install -e .)" >&2
    exit 2
fi
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check on this machine."
    exit 0
fi
out=${1:-$(mktemp -d)}
mkdir -p "$out"
python -c "import torch; print('gpu_check: torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"

bench_ratios() {  # $1: the bench's JSON; prints its k-hop and G-Meta ratios and every case's time
    python - "$1" <<'PY' || echo "gpu_check: no bench results in $1"
import json, sys
doc = json.load(open(sys.argv[1]))
for name, r in doc["ratios"].items():
    if "khop" in name or "gmeta" in name:
        print(f"{name:55s} {r}")
for c in doc["cases"]:
    print(f"{c['name']:45s} ms/iter={c.get('ms_per_iter')} skipped={c['skipped']} error={c.get('error')}")
PY
}
echo "== bench --device cuda --quick (k-hop ratios on the 10k-node graph; spawned case processes) =="
timeout 240 python -m cmlgraph bench --device cuda --quick --budget 5 --json "$out/bench_cuda.json" || \
    echo "gpu_check: bench exited with status $?"
bench_ratios "$out/bench_cuda.json"
# --quick has no G-Meta case (it builds Amazon-Computer's balls), so the G-Meta ratio is its own bench run.
if [ -d "${CMLGRAPH_DATA:-/nonexistent}/amazon_computers" ]; then
    echo "== bench --device cuda --domains gmeta (G-Meta ratios on Amazon-Computer; target batched/per-node >= 10) =="
    timeout 300 python -m cmlgraph bench --device cuda --domains gmeta --budget 5 --json "$out/bench_gmeta.json" || \
        echo "gpu_check: G-Meta bench exited with status $?"
    bench_ratios "$out/bench_gmeta.json"
else
    echo "gpu_check: G-Meta bench skipped: Amazon-Computer is not under CMLGRAPH_DATA (${CMLGRAPH_DATA:-unset})"
fi

# cuda (CUDA graphs auto: the second-order step captured), cuda with --cuda-graphs off (eager), cpu
for run in "cuda auto" "cuda off" "cpu auto"; do
    set -- $run
    echo "== default graph run, 200 steps, --device $1 --cuda-graphs $2 =="
    start=$(date +%s.%N)
    timeout 120 python -m cmlgraph train --steps 200 --device "$1" --cuda-graphs "$2" --runs-dir "$out/runs" \
        --name "default-$1-$2" --overwrite > "$out/default-$1-$2.log" 2>&1 || \
        echo "gpu_check: train on $1 ($2) exited with status $?"
    grep -h "CUDA graphs off\|runs as a CUDA graph\|test accuracy" "$out/default-$1-$2.log" || true
    echo "gpu_check: default run on $1 (cuda graphs $2) took $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
done

echo "== peak GPU memory of a 200-step default run in this process =="
timeout 120 python - "$out" <<'PY' || echo "gpu_check: peak-memory probe failed"
import subprocess, sys, torch
subprocess.run([sys.executable, "-c", (
    "import torch, sys; from typer.testing import CliRunner; from cmlgraph.cli import app; "
    "r = CliRunner().invoke(app, ['train', '--steps', '200', '--device', 'cuda', '--runs-dir', sys.argv[1] + '/runs', "
    "'--name', 'peak', '--quiet', '--overwrite']); "
    "print('gpu_check: exit', r.exit_code, 'peak GPU memory', round(torch.cuda.max_memory_allocated() / 2**20, 1), 'MiB')"),
    sys.argv[1]], check=False)
PY
echo "== CUDA graphs: captured vs eager meta-step (test), and sinusoid FOMAML 300 steps with --cuda-graphs on vs off =="
timeout 150 python -m pytest -q tests/train/test_cuda_graphs.py tests/train/test_cuda_graph_balls.py \
    tests/train/test_cuda_graph_plans.py tests/train/test_cuda_graph_matched.py 2>&1 | tail -3 || echo "gpu_check: cuda-graph test exited"
for mode in off on; do
    start=$(date +%s.%N)
    timeout 90 python -m cmlgraph train --task sinusoid --first-order --steps 300 --device cuda --cuda-graphs "$mode" \
        --runs-dir "$out/runs" --name "graphs-$mode" --quiet --overwrite > "$out/graphs-$mode.log" 2>&1 || \
        echo "gpu_check: --cuda-graphs $mode exited with status $?"
    grep -h "CUDA graphs off" "$out/graphs-$mode.log" || true
    echo "gpu_check: sinusoid FOMAML --cuda-graphs $mode took $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
done
echo "== CUDA graphs: first-order GCN on k-hop computation trees (padded), default graph, 200 steps, on vs off =="
for mode in off on; do
    start=$(date +%s.%N)
    timeout 90 python -m cmlgraph train --gnn gcn --subgraph khop --first-order --steps 200 --device cuda \
        --cuda-graphs "$mode" --runs-dir "$out/runs" --name "khop-graphs-$mode" --quiet --overwrite \
        > "$out/khop-graphs-$mode.log" 2>&1 || echo "gpu_check: k-hop --cuda-graphs $mode exited with status $?"
    grep -h "CUDA graphs off\|runs as a CUDA graph" "$out/khop-graphs-$mode.log" || true
    echo "gpu_check: k-hop GCN FOMAML --cuda-graphs $mode took $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
done
if [ -d "${CMLGRAPH_DATA:-/nonexistent}/amazon_computers" ]; then
    echo "== CUDA graphs: G-Meta + CML (Table 3 setting), Amazon-Computer 2-way 5-shot, 100 steps, on vs off =="
    for mode in off on; do
        start=$(date +%s.%N)
        timeout 150 python -m cmlgraph train --config configs/paper/table3-gmeta.yaml --graph amazon-computers \
            --ways 2 --shots 5 --cml --steps 100 --patience 1000 --test-tasks 50 --device cuda --cuda-graphs "$mode" \
            --runs-dir "$out/runs" --name "gmeta-graphs-$mode" --quiet --overwrite > "$out/gmeta-graphs-$mode.log" 2>&1 || \
            echo "gpu_check: G-Meta --cuda-graphs $mode exited with status $?"
        grep -h "CUDA graphs off\|runs as a CUDA graph" "$out/gmeta-graphs-$mode.log" || true
        echo "gpu_check: G-Meta --cuda-graphs $mode took $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
    done
fi

table3() {  # $1: selector, $2: runs per arm, $3: --parallel-runs, $4: time limit (s), $5: folder
    start=$(date +%s.%N)
    timeout "$4" python -m cmlgraph reproduce --only "$1" --runs "$2" --parallel-runs "$3" --device cuda \
        --runs-dir "$5" > "$5.log" 2>&1 || echo "gpu_check: reproduce exited with status $?"
    grep -h "meta-steps fused" "$5.log" | head -3 || true
    echo "gpu_check: $1, $2 runs per arm, --parallel-runs $3: $(find "$5" -name summary.json 2>/dev/null | wc -l) runs finished" \
        "in $(python -c "print(round($(date +%s.%N) - $start, 1))") s (limit $4 s)"
}
if python -m cmlgraph reproduce --only table3/citeseer/gmeta/2way-5shot --list 2>&1 | grep -q "data missing"; then
    echo "gpu_check: Table 3 skipped: CiteSeer is not under CMLGRAPH_DATA (${CMLGRAPH_DATA:-unset})"
else
    echo "== Table 3, CiteSeer 2-way 5-shot, G-Meta ± CML, 5 seeds, --parallel-runs 5, --device cuda =="
    table3 table3/citeseer/gmeta/2way-5shot 5 5 150 "$out/table3-citeseer"
    if [ "${TABLE3:-0}" = 1 ]; then
        echo "== the whole local Table 3 (80 runs), --parallel-runs 10 =="
        table3 table3 5 10 900 "$out/table3"
    fi
fi
echo "gpu_check: done; outputs in $out"
