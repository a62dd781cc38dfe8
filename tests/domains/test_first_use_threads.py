"""Per-graph caches built on first use give every thread the same object (session 38: a prefetch worker and the main
thread materializing their first episodes at once each built a whole graph, and episodes of the two copies did not
stack, so their tasks ran one by one, to other float rounding)."""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

import cmlgraph.domains.graph as graph_domain
from cmlgraph.backbones.gnn_ops import cached
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.graphs import make_synthetic
from cmlgraph.graphs.types import GraphInput


def _at_once(fn: Any, threads: int = 3) -> list[Any]:
    out: list[Any] = [None] * threads
    start = threading.Barrier(threads)

    def run(i: int) -> None:
        start.wait()
        out[i] = fn()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def test_the_whole_graph_is_built_once_when_threads_ask_for_it_at_once(monkeypatch) -> None:
    g = make_synthetic(num_nodes=120, num_classes=15, num_features=4, avg_degree=3.0, seed=0)
    dom = GraphDomain(g, 2, 1, 2, gnn="gcn", hidden=8, layers=2, subgraph="khop")
    builds = []
    real = graph_domain.compute_layout

    def slow(x):  # noqa: ANN001, ANN202
        builds.append(1)
        time.sleep(0.2)  # every thread is inside the check-and-build by now, unless a lock holds them back
        return real(x)

    monkeypatch.setattr(graph_domain, "compute_layout", slow)
    first, *others = _at_once(lambda: dom._full_graph("cpu"))
    assert len(builds) == 1 and all(o is first for o in others)


def test_a_cache_entry_built_by_two_threads_at_once_is_one_object_for_both() -> None:
    inputs = GraphInput(torch.zeros(4, 2), torch.zeros(2, 0, dtype=torch.long), torch.arange(2), {})

    def build() -> torch.Tensor:
        time.sleep(0.1)
        return torch.ones(3)

    values = _at_once(lambda: cached(inputs, "slow", build))
    assert all(v is values[0] for v in values)
    assert cached(inputs, "slow", build) is values[0]


def test_two_threads_sampling_one_split_each_draw_from_their_own_generator() -> None:
    """``GraphDomain.sample`` passes the caller's generator to the split's shared sampler (it used to set it on the
    sampler, so a prefetch worker and the main thread drawing at once drew from each other's streams)."""
    g = make_synthetic(num_nodes=300, num_classes=15, num_features=4, avg_degree=3.0, seed=0)
    dom = GraphDomain(g, 3, 2, 3, gnn="gcn", hidden=8, layers=2, subgraph="khop")

    def draws(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return [ep.support.tolist() + ep.query.tolist() for _ in range(150) for ep in dom.sample("train", 2, gen)]

    alone = [draws(seed) for seed in (1, 2, 3)]
    together = []
    for _ in range(3):
        got = _at_once(lambda seeds=iter((1, 2, 3)): draws(next(seeds)))
        together.append(sorted(got) == sorted(alone))
    assert all(together)


def test_two_threads_sampling_one_image_split_each_draw_from_their_own_generator() -> None:
    from cmlgraph.domains.images import ImageDomain
    from cmlgraph.images.digits import load_digits_images

    dom = ImageDomain(load_digits_images(image_size=8), 3, 1, 2)

    def draws(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return [ep.support.tolist() + ep.query.tolist() for _ in range(150) for ep in dom.sample("train", 2, gen)]

    alone = [draws(seed) for seed in (1, 2, 3)]
    for _ in range(3):
        assert sorted(_at_once(lambda seeds=iter((1, 2, 3)): draws(next(seeds)))) == sorted(alone)
