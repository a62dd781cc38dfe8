#!/usr/bin/env bash
# Runs scripts/gpu_check.sh on a GPU machine with PyTorch and PyG but no internet and no install of this project,
# from a bundle made by scripts/gpu_bundle.sh: installs the bundle's wheels into a temporary folder, runs the package
# from this checkout (PYTHONPATH), reads the bundle's datasets (CMLGRAPH_DATA), and leaves in OUT_DIR four files:
# gpu_check.log (everything the check printed), its two bench JSONs, and logs.tar.gz (each step's own log, at most its
# last 256 KiB, and each run's summary.json; a lent device returns at most 8 files); the steps' run folders stay in a
# temporary folder whose path the log names.
# GPU_CHECK_PARTS, GPU_CHECK_BUDGET and TABLE3 pass through.
# Usage: scripts/gpu_check_offline.sh BUNDLE [OUT_DIR]   (default OUT_DIR: a fresh temporary folder)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ ! -d "$1/datasets" ]; then
    echo "gpu_check_offline: give the folder scripts/gpu_bundle.sh made (it holds datasets/ and wheels/)," \
        "got '${1:-}'" >&2
    exit 2
fi
bundle=$(cd "$1" && pwd)
out=${2:-$(mktemp -d)}
if ! mkdir -p "$out" 2> /dev/null || [ ! -w "$out" ]; then  # before anything runs: the log must have a place
    echo "gpu_check_offline: cannot write to OUT_DIR '$out'; give a writable folder" >&2
    exit 2
fi
py=$(command -v python3 || command -v python || true)
if [ -z "$py" ]; then
    echo "gpu_check_offline: no python3 or python on PATH" >&2
    exit 2
fi
site=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")
work=""
# the installed wheels always go; the steps' own files stay only where the check left some
trap 'rm -rf "$site"; [ -n "$work" ] && rmdir "$work" 2> /dev/null' EXIT
shopt -s nullglob
wheels=("$bundle"/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/lib" "${wheels[@]}" || {
        echo "gpu_check_offline: installing the bundle's wheels failed" >&2
        exit 2
    }
fi
mkdir -p "$site/bin"
# gpu_check.sh calls `python`; some CUDA images have only python3 (a wrapper, not a link: a link to a virtual
# environment's python outside its folder starts the base interpreter)
printf '#!/bin/sh\nexec "%s" "$@"\n' "$py" > "$site/bin/python"
chmod +x "$site/bin/python"
export PATH="$site/bin:$PATH"
export PYTHONPATH="$root:$site/lib${PYTHONPATH:+:$PYTHONPATH}"
export CMLGRAPH_DATA="$bundle/datasets"
export PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
echo "gpu_check_offline: python $py, data $CMLGRAPH_DATA, step files in $work"
bash "$root/scripts/gpu_check.sh" "$work" 2>&1 | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
for f in "$work"/bench_cuda.json "$work"/bench_gmeta.json; do
    [ -f "$f" ] && cp "$f" "$out/"
done
# every step's own log (tests, train, reproduce, CUDA graphs on/off: where a fallback or a failure says why), each cut
# to its last 256 KiB, and every run's summary.json (its training wall time), in ONE archive: the machine and its
# temporary folder are gone after the run, and a lent device returns at most 8 files from OUT_DIR (so: gpu_check.log,
# the two bench JSONs, logs.tar.gz)
logs=("$work"/*.log)
pack="$site/pack"
mkdir -p "$pack/logs" "$pack/runs"
for f in "${logs[@]}"; do
    tail -c 262144 "$f" > "$pack/logs/$(basename "$f")"
done
while IFS= read -r f; do  # runs/NAME/summary.json and table3-*/NAME/summary.json
    rel=${f#"$work"/}
    mkdir -p "$pack/runs/$(dirname "$rel")"
    cp "$f" "$pack/runs/$rel"
done < <(find "$work" -name summary.json 2> /dev/null)
tar -czf "$out/logs.tar.gz" -C "$pack" logs runs
exit "$status"
