#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a GPU machine that has PyTorch and PyG but no internet and no install of
# this project: the datasets its G-Meta and Table 3 steps read (CiteSeer, Amazon-Computer) and wheels of the pure
# Python packages a bare CUDA image tends to lack (ogb and its two small dependencies). Copy the repository and the
# bundle there, then run scripts/gpu_check_offline.sh BUNDLE [OUT_DIR].
# Usage: CMLGRAPH_DATA=/path/to/datasets scripts/gpu_bundle.sh [BUNDLE_DIR]   (default: .gpu-bundle, git-ignored)
# The bundle is a copy for that machine only: never commit it (the repository holds no fetched data).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle=${1:-$root/.gpu-bundle}
data=${CMLGRAPH_DATA:-}
datasets="planetoid amazon_computers"
wheels="ogb==1.3.6 outdated==0.2.2 littleutils==0.2.4"
if [ -z "$data" ] || [ ! -d "$data" ]; then
    echo "gpu_bundle: CMLGRAPH_DATA='${data}' is not a folder; point it at the data root" \
        "(e.g. CMLGRAPH_DATA=../shared/datasets)" >&2
    exit 2
fi
for d in $datasets; do
    if [ ! -d "$data/$d" ]; then
        echo "gpu_bundle: $data has no $d/ (the G-Meta and Table 3 steps read it);" \
            "\`cmlgraph datasets download\` fetches it on a machine with internet" >&2
        exit 2
    fi
done
marker=".cmlgraph-gpu-bundle"  # what makes a folder this script's bundle (and so safe to replace)
if [ -e "$bundle" ] && { [ ! -d "$bundle" ] || { [ -n "$(ls -A "$bundle")" ] && [ ! -f "$bundle/$marker" ]; }; }; then
    echo "gpu_bundle: '$bundle' exists and is not a bundle this script made; give a new or empty folder" \
        "(it replaces only its own bundles)" >&2
    exit 2
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/datasets" "$tmp/wheels"
for d in $datasets; do
    cp -R "$data/$d" "$tmp/datasets/$d"
done
chmod -R u+w "$tmp"
# pure Python wheels for the GPU machine's Python 3.12 (pip matches the tag py3-none-any whatever the platform)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$tmp/wheels" $wheels || {
    echo "gpu_bundle: pip could not download $wheels (needs a package index)" >&2
    exit 1
}
echo "made by scripts/gpu_bundle.sh for scripts/gpu_check_offline.sh; never commit it" > "$tmp/$marker"
rm -rf "$bundle"  # empty, or a bundle of this script's (checked above)
mkdir -p "$(dirname "$bundle")"
mv "$tmp" "$bundle"
trap - EXIT
echo "gpu_bundle: $(du -sh "$bundle" | cut -f1) in $bundle ($(ls "$bundle/wheels" | wc -l) wheels; datasets: $datasets)"
echo "gpu_bundle: on the GPU machine, from the repository root: scripts/gpu_check_offline.sh $bundle [OUT_DIR]"
