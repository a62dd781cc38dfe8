"""Fixed evaluation tasks never repeat (issue 19 item 1): a CI counts each task once, and says how many."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import cmlgraph
from cmlgraph.domains.distinct import draw_distinct
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.graphs import from_arrays, load_graph
from cmlgraph.graphs.episodes import EpisodeSampler, episode_key
from cmlgraph.graphs.types import NodeEpisode
from cmlgraph.train.stats import mean_ci95


def _small_test_graph(test_nodes: int = 3):
    """Four train, two val classes of 30 nodes; two test classes of exactly ``test_nodes`` labelled nodes."""
    rng = np.random.default_rng(0)
    counts = [30] * 6 + [test_nodes] * 2
    labels = [i for i, c in enumerate(counts) for _ in range(c)]
    n = len(labels)
    x = rng.normal(size=(len(counts), 8))[labels] * 2 + rng.normal(size=(n, 8))
    ei = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    return from_arrays(ei, x, labels, name="small-test", split={"train": [0, 1, 2, 3], "val": [4, 5],
                                                                 "test": [6, 7]})


def test_episode_key_ignores_class_and_node_order() -> None:
    a = NodeEpisode(torch.tensor([1, 2, 5, 6]), torch.tensor([0, 0, 1, 1]), torch.tensor([3, 7]),
                    torch.tensor([0, 1]), torch.tensor([10, 20]))
    swapped = NodeEpisode(torch.tensor([6, 5, 2, 1]), torch.tensor([0, 0, 1, 1]), torch.tensor([7, 3]),
                          torch.tensor([0, 1]), torch.tensor([20, 10]))
    other = NodeEpisode(torch.tensor([1, 3, 5, 6]), torch.tensor([0, 0, 1, 1]), torch.tensor([2, 7]),
                        torch.tensor([0, 1]), torch.tensor([10, 20]))
    assert episode_key(a) == episode_key(swapped) != episode_key(other)


@pytest.mark.parametrize("sizes,ways,shots,queries", [([3, 3], 2, 1, 2), ([4, 3, 3], 2, 1, 2), ([3, 3, 4], 3, 2, 1)])
def test_num_distinct_is_exact(sizes, ways, shots, queries) -> None:
    y = torch.tensor([c for c, k in enumerate(sizes) for _ in range(k)])
    sampler = EpisodeSampler(y, list(range(len(sizes))), ways, shots, queries, torch.Generator().manual_seed(0))
    expect = sum(math.prod(math.comb(sizes[c], shots) * math.comb(sizes[c] - shots, queries) for c in subset)
                 for subset in itertools.combinations(range(len(sizes)), ways))
    assert expect <= 200  # small enough to find every one by drawing
    assert sampler.num_distinct() == expect
    seen = {episode_key(sampler.sample()) for _ in range(20 * expect + 500)}
    assert len(seen) == expect  # drawing long enough finds exactly that many


def test_draw_distinct_keeps_draws_without_repeats_and_drops_repeats() -> None:
    g = load_graph("synthetic", num_nodes=300, num_classes=12)
    d = GraphDomain(g, 2, 2, 3)
    seeded = torch.Generator().manual_seed(10_007 + 2)
    before = d.sample("test", 40, seeded)  # what fixed() returned before issue 19: unchanged when nothing repeats
    assert [episode_key(e) for e in d.fixed("test", 40, 0)] == [episode_key(e) for e in before]
    small = GraphDomain(_small_test_graph(), 2, 1, 2)
    assert small.distinct_tasks("test") == 9  # 3 supports per class, 3 x 3, any class order
    tasks = small.fixed("test", 500, 0)
    assert len(tasks) == 9 and len({episode_key(e) for e in tasks}) == 9
    assert len(small.fixed("val", 20, 0)) == 20  # 30-node classes: plenty of distinct tasks
    # unknown count: stops once draws bring nothing new
    pool = [NodeEpisode(torch.tensor([i]), torch.tensor([0]), torch.tensor([i + 100]), torch.tensor([0]),
                        torch.tensor([0])) for i in range(5)]
    gen = torch.Generator().manual_seed(0)
    out = draw_distinct(lambda k: [pool[int(i)] for i in torch.randint(5, (k,), generator=gen)], 50)
    assert len(out) == 5


def test_a_run_uses_each_test_task_once_and_says_so(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"only 9 distinct test tasks at these ways/shots/queries \(60 asked"):
        run_dir, summary = cmlgraph.fit(_small_test_graph(), ways=2, shots=1, queries=2, steps=2, val_every=1,
                                        val_tasks=4, test_tasks=60, hidden=8, runs_dir=str(tmp_path))
    assert summary["num_tasks"] == summary["distinct_test_tasks"] == 9 and summary["test_tasks_asked"] == 60
    assert any("only 9 distinct test tasks" in w for w in summary["warnings"])
    assert not any("only 9 test tasks (fewer than" in w for w in summary["warnings"])  # one warning, not two
    scores = torch.load(run_dir / "scores.pt", weights_only=True)["scores"].tolist()
    assert len(scores) == 9 and summary["ci95"] == pytest.approx(mean_ci95(scores)[1])
