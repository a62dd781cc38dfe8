"""baseline_warning: a run below the training-free baseline's validation accuracy is named, with both numbers."""

from cmlgraph.train.guards import baseline_warning


def test_below_baseline_warns_with_both_numbers():
    msg = baseline_warning(0.61, 0.7345)
    assert msg is not None and "0.6100" in msg and "0.7345" in msg and "sgc-proto" in msg


def test_at_or_above_baseline_or_unknown_is_silent():
    assert baseline_warning(0.75, 0.75) is None
    assert baseline_warning(0.80, 0.75) is None
    assert baseline_warning(0.10, None) is None


def test_the_recommended_commands_name_the_baselines_features():
    """A GCN run on Cora trains on standard features (its baseline check too): `--algo sgc-proto` alone ran on row
    features and did not reproduce the quoted number (fresh-user trial, session 26); since `sgc-proto` chooses its
    features (auto), a random-start run on row features met the opposite case (session 27). Both commands, train and
    predict, now always name the features."""
    from cmlgraph.train.trainer import _baseline_features

    msg = baseline_warning(0.809, 0.9125, features="standard")
    assert "`--algo sgc-proto --features standard`" in msg
    assert "method sgc-proto of the `cmlgraph predict` command, features standard" in msg
    assert "`--algo sgc-proto`" in baseline_warning(0.809, 0.9125)
    assert _baseline_features({"settings": {"k": 4, "features": "standard"}}) == "standard"
    assert _baseline_features({"settings": {"k": 2, "features": "row"}}) == "row"
    assert _baseline_features({"settings": {"k": 2}}) is None


def test_the_inner_step_size_is_named_only_for_a_run_with_an_inner_loop():
    assert "--inner-lr" in baseline_warning(0.5, 0.8)
    assert "--inner-lr" not in baseline_warning(0.5, 0.8, inner_loop=False)  # ProtoNet adapts nothing


def test_a_run_at_another_depth_than_the_baseline_names_layers():
    """``--layers 3`` below ``sgc-proto`` at K = 4: the warning names --layers and both depths (a trial's run was
    told only to check --features / --inner-lr); at the same depth it says nothing of it."""
    msg = baseline_warning(0.79, 0.8078, depth=(3, 4))
    assert msg.endswith("/ --layers (the run propagates K = 3, sgc-proto K = 4)")
    assert "--layers" not in baseline_warning(0.79, 0.8078, depth=(4, 4))
