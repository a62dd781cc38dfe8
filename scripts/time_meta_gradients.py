"""Time one algorithm's meta-gradient in-process: ms per call over a fixed meta-batch (no optimizer, no I/O).

A finer probe than ``cmlgraph bench --quick`` (3 iterations per case) for before/after comparisons of the objective's
own code: run it with two code trees alternately, e.g. ``PYTHONPATH=/tmp/before python scripts/time_meta_gradients.py``
then ``python scripts/time_meta_gradients.py`` (run it from outside the repository for the first, so that
``PYTHONPATH`` wins over the working tree). Used for docs/gpu.md's session-26 bench paragraph.

Usage: python scripts/time_meta_gradients.py [--task sinusoid] [--algo maml] [--meta-batch 25] [--calls 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import cmlgraph
from cmlgraph.config import Config, apply_overrides
from cmlgraph.core.model import parameters_of
from cmlgraph.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sinusoid")
    ap.add_argument("--algo", default="maml")
    ap.add_argument("--meta-batch", type=int, default=25)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = Config()
    apply_overrides(cfg, {"data": {"task": args.task}, "algo": {"algo": args.algo},
                          "train": {"meta_batch": args.meta_batch},
                          "run": {"runs_dir": tempfile.mkdtemp(prefix="cmlgraph-time-"), "name": "probe"}}, "probe")
    trainer = Trainer(cfg, progress=False)
    e = trainer.exp
    episodes = trainer._next_batch()[1]
    params = parameters_of(e.model)

    def call() -> None:
        e.algo.meta_gradients(e.model, params, episodes, e.domain.loss_fn, 0, batched=True)

    for _ in range(args.warmup):
        call()
    t0 = time.perf_counter()
    for _ in range(args.calls):
        call()
    ms = (time.perf_counter() - t0) / args.calls * 1e3
    print(f"{cmlgraph.__file__}: {args.task} {args.algo} meta-batch {args.meta_batch}: {ms:.3f} ms per meta-gradient")


if __name__ == "__main__":
    main()
