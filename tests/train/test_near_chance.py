"""Near-chance results (issue 17 item 4): above chance but with a chance-corrected accuracy κ below 0.2 warn, and
every chance warning names the training-free baselines to compare with instead of "train longer"."""

from __future__ import annotations

import pytest

from cmlgraph.train.guards import (
    NEAR_CHANCE_KAPPA,
    DivergenceGuard,
    chance_corrected,
    chance_warning,
    near_chance_warning,
)


def _res(mean: float, ci: float = 0.01) -> dict:
    return {"mean": mean, "ci95": ci, "num_tasks": 500}


@pytest.mark.parametrize(("mean", "ways"), [(0.54, 2), (0.59, 2), (0.28, 5), (0.45, 3)])
def test_near_chance_warns(mean: float, ways: int) -> None:
    msg = near_chance_warning(_res(mean), "accuracy", ways)
    assert msg is not None and f"{mean:.4f}" in msg and f"1/{ways}" in msg and "--algo sgc-proto" in msg
    assert f"{chance_corrected(mean, ways):.0%}" in msg


@pytest.mark.parametrize(("mean", "ways"), [(0.80, 2), (0.60, 2), (0.36, 5), (0.62, 2), (0.5, 2), (0.45, 2)])
def test_clear_results_and_results_at_or_below_chance_are_not_near_chance(mean: float, ways: int) -> None:
    assert near_chance_warning(_res(mean), "accuracy", ways) is None


def test_the_rule_is_the_chance_corrected_accuracy() -> None:
    assert chance_corrected(0.5, 2) == 0.0 and chance_corrected(1.0, 5) == 1.0
    assert chance_corrected(0.54, 2) == pytest.approx(0.08) and chance_corrected(0.28, 5) == pytest.approx(0.1)
    edge = 0.5 + NEAR_CHANCE_KAPPA * 0.5  # exactly κ = 0.2 on 2 ways: not near chance
    assert near_chance_warning(_res(edge), "accuracy", 2) is None
    assert near_chance_warning(_res(edge - 1e-6), "accuracy", 2) is not None


def test_regression_and_empty_results_are_not_judged() -> None:
    assert near_chance_warning(_res(0.54), "mse", 1) is None
    assert near_chance_warning({"mean": 0.54, "ci95": 0.0, "num_tasks": 0}, "accuracy", 2) is None


def test_chance_warnings_point_to_the_baselines_not_to_longer_training() -> None:
    msg = chance_warning(_res(0.5003, 0.0022), "accuracy", 2)
    assert msg is not None and "--algo sgc-proto" in msg and "train longer" not in msg
    said: list[str] = []
    guard = DivergenceGuard("accuracy", 2, "inner lr 0.5", said.append)
    for step in (1, 2, 3):
        guard.validation(step, 0.5)
    assert len(said) == 1 and "--algo sgc-proto" in said[0] and "train longer" not in said[0]
