"""An evaluation chunk's scores computed on the device and read back once (issue 18: no host read per task)."""

from __future__ import annotations

import math

import pytest
import torch

from cmlgraph.train.evaluate import Tally
from cmlgraph.train.guards import score_predictions
from cmlgraph.train.sync_counter import SyncCounter


def _chunk(tasks: int = 40, q: int = 6, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(tasks, q, classes, generator=g)
    out[3, 1] = float("nan")  # a NaN row: never correct, a non-finite (or abstained) task
    out[7] = float("inf")
    co = torch.randn(tasks, q, classes, generator=g)
    co[5] = torch.tensor([5.0, 0.0, 0.0])  # a collapsed co-learner on one task: one class for every query
    y = torch.randint(classes, (tasks, q), generator=g)
    return out, co, y


@pytest.mark.parametrize("abstains", [False, True])
def test_a_chunk_scored_at_once_equals_task_by_task(abstains):
    out, co, y = _chunk()
    one, many, pairs = Tally("accuracy", abstains), Tally("accuracy", abstains), Tally("accuracy", abstains)
    for i in range(len(out)):
        one.add(out[i], co[i], y[i])
    many.add_tasks(out, co, y)
    pairs.add_pairs([(out[i], co[i], y[i]) for i in range(len(out))])
    assert one.result() == many.result() == pairs.result()
    res = many.result()
    assert res["scores"][3] == score_predictions("accuracy", out[3], y[3])[0] and res["scores"][7] == 0.0
    assert res["dagger_one_class_tasks"] >= 1
    if abstains:
        assert (res["abstained_tasks"], res["abstained_queries"]) == (2, 1 + 6)
    else:
        assert res["nonfinite_tasks"] == 2


def test_regression_chunks_score_mse_and_inf_for_non_finite_tasks():
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(10, 5, 1, generator=g), torch.randn(10, 5, 1, generator=g)
    out[2, 0, 0] = float("nan")
    one, many = Tally("mse", False), Tally("mse", False)
    for i in range(10):
        one.add(out[i], None, y[i])
    many.add_tasks(out, None, y)
    assert repr(one.result()) == repr(many.result())  # (repr: the mean and its CI are inf and NaN here)
    assert math.isinf(many.scores[2]) and many.nonfinite == 1
    assert many.scores[0] == pytest.approx(float(torch.nn.functional.mse_loss(out[0], y[0])))


def test_a_chunk_has_no_host_read_per_task():
    """On CUDA each ``float()``/``bool()`` of a score is a sync: a 500-task chunk with a co-learner read back up to
    five values a task. Now the chunk's values are read in one ``tolist`` (one transfer); no scalar read is left."""
    out, co, y = _chunk(tasks=50)
    tally = Tally("accuracy", False)
    with SyncCounter() as counter:
        tally.add_pairs([(out[i], co[i], y[i]) for i in range(len(out))])
    assert counter.counts == {}, counter.counts
    with SyncCounter() as counter:  # what one task at a time costs, for contrast
        Tally("accuracy", False).add(out[0], co[0], y[0])
    assert counter.counts == {}  # add() is a chunk of one: one read-back, not one per value
