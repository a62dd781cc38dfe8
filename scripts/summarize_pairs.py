"""Print a markdown MAML-vs-CML table from run folders named ``<prefix>-no-cml-s<seed>`` / ``<prefix>-cml-s<seed>``.

Usage: python scripts/summarize_pairs.py RUNS_DIR
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from cmlgraph.compare import build_cell
from cmlgraph.train.stats import mean_ci95


def main(runs_dir: str) -> None:
    root = Path(runs_dir)
    groups: dict[str, dict[int, dict[str, Path]]] = defaultdict(lambda: defaultdict(dict))
    for summary in sorted(root.glob("*/summary.json")):
        m = re.fullmatch(r"(.+?)-(no-cml|cml)-s(\d+)", summary.parent.name)
        if m:
            groups[m.group(1)][int(m.group(3))][m.group(2)] = summary.parent
    print("| setting | without CML (MAML) | with CML | CML − MAML (paired per task) | CML† (co-learner) | seeds |")
    print("|---|---|---|---|---|---|")
    for prefix, seeds in groups.items():
        pairs = [(arms["no-cml"], arms["cml"]) for _, arms in sorted(seeds.items()) if len(arms) == 2]
        if not pairs:
            continue
        cell = build_cell(prefix, "maml", pairs)
        dagger = [json.loads((c / "summary.json").read_text()).get("cml_dagger_mean") for _, c in pairs]
        s0 = json.loads((pairs[0][1] / "summary.json").read_text())
        acc = cell.metric == "accuracy"

        def fmt(m: float, c: float, sign: bool = False, acc: bool = acc) -> str:
            text = f"{100 * m:.2f} ± {100 * c:.2f}" if acc else f"{m:.3f} ± {c:.3f}"
            return ("+" if sign and m >= 0 else "") + text

        shape = f"{s0['ways']}-way {s0['shots']}-shot" if s0.get("ways") else f"K = {s0['shots']}"
        partial = " (partial)" if s0.get("partial") else ""
        d = fmt(*mean_ci95([x for x in dagger if x is not None])) if all(x is not None for x in dagger) else "–"
        print(f"| {s0['dataset']}{partial}, {shape} | {fmt(*cell.base)} | {fmt(*cell.cml)} | "
              f"{fmt(*cell.diff, sign=True)} | {d} | {cell.seeds} |")


if __name__ == "__main__":
    main(sys.argv[1])
