"""MAML++ evaluated with more inner steps than it learned rates for says so (issue 19 item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cmlgraph
from cmlgraph.algorithms import MAMLPlusPlus, get_algorithm
from cmlgraph.config import AlgoConfig


def test_mamlpp_warns_when_evaluation_outruns_its_learned_rates() -> None:
    over = MAMLPlusPlus(AlgoConfig(algo="maml++", inner_steps=2, eval_inner_steps=5)).run_warnings()
    assert len(over) == 1
    assert "learned its per-step inner rates for 2 inner step(s)" in over[0] and "evaluates with 5" in over[0]
    assert "steps 3-5 reuse step 2's learned rate" in over[0]
    assert MAMLPlusPlus(AlgoConfig(algo="maml++", inner_steps=2, eval_inner_steps=2)).run_warnings() == []
    assert MAMLPlusPlus(AlgoConfig(algo="maml++", inner_steps=3, eval_inner_steps=1)).run_warnings() == []
    assert MAMLPlusPlus(AlgoConfig(algo="maml++", inner_steps=2)).run_warnings() == []
    # plain MAML has one fixed rate: more evaluation steps reuse nothing learned
    assert get_algorithm(AlgoConfig(algo="maml", inner_steps=1, eval_inner_steps=5)).run_warnings() == []


def test_fit_reports_it_in_warnings_and_the_summary(tmp_path: Path) -> None:
    settings = dict(synthetic_nodes=200, synthetic_classes=15, ways=3, shots=2, queries=3, gnn="gcn", hidden=8,
                    steps=1, val_every=1, val_tasks=2, test_tasks=2, algo="maml++", inner_steps=1,
                    runs_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match=r"evaluates with 3 \(eval_inner_steps\): steps 2-3 reuse") as caught:
        _, summary = cmlgraph.fit("synthetic", eval_inner_steps=3, **settings)
    assert not any("algo." in str(w.message) for w in caught if "MAML++" in str(w.message))  # fit's words
    assert any("MAML++ learned its per-step inner rates for 1" in w for w in summary["warnings"])
    _, same = cmlgraph.fit("synthetic", **settings)
    assert not any("MAML++" in w for w in same["warnings"])
