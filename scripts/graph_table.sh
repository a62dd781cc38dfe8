#!/usr/bin/env bash
# The README's MAML vs CML graph table: 3 seeds per dataset; both arms of a seed share the test episodes.
# Usage: scripts/graph_table.sh OUT_DIR DATASET...   (DATASET as in `cmlgraph datasets list`)
set -euo pipefail
out=$1; shift
for graph in "$@"; do
  ways=5; extra=()
  case "$graph" in cora|citeseer) ways=2 ;; amazon-clothing) extra=(--allow-partial) ;; esac
  for seed in 0 1 2; do
    for cml in --no-cml --cml; do
      name="${graph}-${cml#--}-s${seed}"
      [ -f "$out/$name/summary.json" ] && continue
      cmlgraph train --config configs/graph-table.yaml --graph "$graph" --ways "$ways" "${extra[@]}" "$cml" \
        --seed "$seed" --runs-dir "$out" --name "$name" --overwrite --quiet
    done
  done
done
