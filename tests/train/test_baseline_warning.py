"""baseline_warning: a run below the training-free baseline's validation accuracy is named, with both numbers."""

from cmlgraph.train.guards import baseline_warning


def test_below_baseline_warns_with_both_numbers():
    msg = baseline_warning(0.61, 0.7345)
    assert msg is not None and "0.6100" in msg and "0.7345" in msg and "sgc-proto" in msg


def test_at_or_above_baseline_or_unknown_is_silent():
    assert baseline_warning(0.75, 0.75) is None
    assert baseline_warning(0.80, 0.75) is None
    assert baseline_warning(0.10, None) is None


def test_the_recommended_command_names_the_baselines_features_where_the_plain_one_would_pick_others():
    """A GCN run on Cora trains on standard features (its baseline check too): `--algo sgc-proto` alone would run
    on row features and not reproduce the quoted number (fresh-user trial, session 26)."""
    from cmlgraph.api import make_config
    from cmlgraph.train.trainer import _baseline_features, prepare

    msg = baseline_warning(0.809, 0.9125, features="standard")
    assert "`--algo sgc-proto --features standard`" in msg
    assert "`--algo sgc-proto`" in baseline_warning(0.809, 0.9125)
    gcn = prepare(make_config(task="graph", graph="cora", gnn="gcn"))
    assert _baseline_features(gcn, {"settings": {"k": 4, "features": "standard"}}) == "standard"
    sgc = prepare(make_config(task="graph", graph="cora"))
    assert _baseline_features(sgc, {"settings": {"k": 2, "features": "row"}}) is None  # the plain command's own
    user = prepare(make_config(task="graph", graph="synthetic"))
    assert _baseline_features(user, {"settings": {"k": 2, "features": "raw"}}) is None
