"""The README's "label a few nodes, predict the rest" example on a registered graph.

``support``: write ``labels.csv`` with K randomly chosen labelled nodes of each *test* class of the graph (classes
the run never saw in training). ``score``: the accuracy of ``cmlgraph predict``'s output on every other node of
those classes (the nodes of the other classes are predicted too, necessarily as one of the test classes, and are
left out of the score). Files go under ``runs/predict-demo/`` unless a path is given (``runs/`` is git-ignored, so
the demo never writes into the repository's tracked files; issue 19 item 9).

    python scripts/predict_demo.py support cora --shots 3
    cmlgraph predict RUN_DIR --support runs/predict-demo/labels.csv --out runs/predict-demo/predictions.csv
    python scripts/predict_demo.py score cora
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from cmlgraph.graphs import load_graph

#: Where the demo's files go by default (under the git-ignored ``runs/``).
DEMO_DIR = Path("runs") / "predict-demo"
DEFAULT_PATHS = {"support": DEMO_DIR / "labels.csv", "score": DEMO_DIR / "predictions.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["support", "score"])
    parser.add_argument("graph")
    parser.add_argument("path", nargs="?", default=None,
                        help="support: the labels file to write; score: the predictions file to read "
                             "(default runs/predict-demo/labels.csv, runs/predict-demo/predictions.csv)")
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the node draw (the class split: seed 0)")
    args = parser.parse_args()
    path = Path(args.path) if args.path else DEFAULT_PATHS[args.action]
    g = load_graph(args.graph)
    classes = g.splits["test"]
    if args.action == "support":
        gen = torch.Generator().manual_seed(args.seed)
        rows = []
        for c in classes:
            nodes = torch.nonzero(g.y == c).view(-1)
            rows += [(int(n), f"class-{c}") for n in nodes[torch.randperm(nodes.numel(), generator=gen)[:args.shots]]]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([("node", "label"), *rows])
        print(f"{path}: {len(rows)} labelled nodes of test classes {classes} "
              f"({', '.join(str(int((g.y == c).sum())) for c in classes)} nodes in all)")
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    truth = {int(r["node"]): int(g.y[int(r["node"])]) for r in rows}
    scored = [r for r in rows if truth[int(r["node"])] in classes]
    hits = sum(r["prediction"] == f"class-{truth[int(r['node'])]}" for r in scored)
    print(f"accuracy on the {len(scored)} other nodes of test classes {classes}: {hits / len(scored):.4f} "
          f"(chance {1 / len(classes):.2f}); {len(rows) - len(scored)} nodes of other classes not scored")


if __name__ == "__main__":
    main()
