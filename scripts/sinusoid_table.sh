#!/usr/bin/env bash
# The README's MAML vs CML sinusoid table: K = 5 and 10, 3 seeds each, same test tasks per seed.
set -euo pipefail
out=${1:-runs/sinusoid-table}
for k in 5 10; do
  for seed in 0 1 2; do
    for cml in --no-cml --cml; do
      name="k${k}-${cml#--}-s${seed}"
      [ -f "$out/$name/summary.json" ] && continue
      cmlgraph train --config configs/sinusoid.yaml --shots "$k" "$cml" --seed "$seed" \
        --runs-dir "$out" --name "$name" --overwrite --quiet
    done
  done
done
