"""baseline_warning: a run below the training-free baseline's validation accuracy is named, with both numbers."""

from cmlgraph.train.guards import baseline_warning


def test_below_baseline_warns_with_both_numbers():
    msg = baseline_warning(0.61, 0.7345)
    assert msg is not None and "0.6100" in msg and "0.7345" in msg and "sgc-proto" in msg


def test_at_or_above_baseline_or_unknown_is_silent():
    assert baseline_warning(0.75, 0.75) is None
    assert baseline_warning(0.80, 0.75) is None
    assert baseline_warning(0.10, None) is None
