"""Numerical faults: a NaN/inf loss or gradient stops the run naming the step and the last good checkpoint, or with
``train.nan_policy: skip`` skips the meta-batch and counts it in ``summary.json``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import metrics, tiny_settings

from cmlgraph.algorithms.base import MetaStep
from cmlgraph.cli import main
from cmlgraph.config import Config, apply_overrides
from cmlgraph.errors import NumericalError
from cmlgraph.train.io import load_torch
from cmlgraph.train.trainer import Trainer, resume


def _trainer(tmp_path, bad_steps, what="grad", algo="maml", **train):
    """A tiny run of ``algo`` whose meta-gradient (or loss) is NaN at the given 1-based steps."""
    cfg = apply_overrides(Config(), {**tiny_settings(**train), "algo": {"algo": algo}}, "test")
    cfg.run.runs_dir, cfg.run.name = str(tmp_path / "runs"), "nan"
    trainer = Trainer(cfg, progress=False)
    algo = trainer.exp.algo
    real = algo.meta_gradients

    def poisoned(model, params, episodes, loss_fn, step, **kw):
        ms = real(model, params, episodes, loss_fn, step, **kw)
        if step + 1 in bad_steps:
            if what == "grad":
                name = next(iter(ms.grads))
                ms.grads[name] = ms.grads[name] * float("inf")  # inf·0 = NaN, inf elsewhere
            else:
                ms = MetaStep(grads=ms.grads, loss=type(ms.loss)(meta=ms.loss.meta * float("nan"), co=ms.loss.co,
                                                                  total=ms.loss.total * float("nan")))
        return ms

    algo.meta_gradients = poisoned
    return trainer


def test_nan_gradient_stops_naming_step_and_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, {5})
    with pytest.raises(NumericalError, match=r"gradient at step 5 of 8.*last good checkpoint: .*checkpoint\.pt "
                                             r"\(step 4\).*--nan-policy skip"):
        trainer.run()
    run = tmp_path / "runs" / "nan"
    assert load_torch(run / "checkpoint.pt")["step"] == 4 and not (run / "summary.json").exists()
    assert [r["step"] for r in metrics(run)] == [2, 4]


def test_nan_loss_before_any_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, {2}, what="loss")
    with pytest.raises(NumericalError, match=r"loss at step 2 of 8.*no checkpoint was written yet"):
        trainer.run()


def test_skip_policy_skips_and_counts(tmp_path):
    trainer = _trainer(tmp_path, {3, 6}, nan_policy="skip", log_every=1)
    before = {}

    real_step = trainer._train_step

    def spy():
        if trainer.step + 1 in (3, 6):
            before[trainer.step + 1] = {k: v.clone() for k, v in trainer.exp.model.state_dict().items()}
        rec = real_step()
        if trainer.step + 1 in before:
            after = trainer.exp.model.state_dict()
            assert all(torch.equal(before[trainer.step + 1][k], after[k]) for k in after), "a skipped step updated"
        return rec

    trainer._train_step = spy
    summary = trainer.run()
    assert summary["skipped_meta_batches"] == 2
    # said, not only counted: 2 of 8 is a share that calls the training unstable
    assert [w for w in summary["warnings"] if "2 of 8 meta-batches were skipped" in w and "unstable" in w]
    run = tmp_path / "runs" / "nan"
    assert json.loads((run / "summary.json").read_text())["skipped_meta_batches"] == 2
    recs = metrics(run)
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert [r["step"] for r in recs if r.get("skipped")] == [3, 6]
    assert {r.get("nonfinite") for r in recs if r.get("skipped")} == {"gradient"}  # its loss was finite
    assert all(line.count("NaN") == 0 for line in (run / "metrics.jsonl").read_text().splitlines())
    assert set(before) == {3, 6}


def test_skip_count_survives_resume(tmp_path):
    trainer = _trainer(tmp_path, {2}, nan_policy="skip")
    trainer.run()
    run = tmp_path / "runs" / "nan"
    assert load_torch(run / "checkpoint.pt")["skipped"] == 1
    (run / "summary.json").unlink()  # as if killed before the summary: resume only finishes
    _, summary = resume(run, progress=False)
    assert summary["skipped_meta_batches"] == 1


def test_cli_huge_inner_lr_prints_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "sinusoid", "--inner-lr", "1e30", "--steps", "3", "--meta-batch", "2",
              "--test-tasks", "2", "--runs-dir", str(tmp_path / "runs"), "--name", "x", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.match(r"error: non-finite \(NaN/inf\) \w+ at step 1 of 3", err), err


def _host_decided_skip(trainer: Trainer) -> None:
    """The skip as it was decided on the host before issue 18's last read-back went: the flag read now, the optimizer
    step left out (its schedule still advanced) where it is False."""

    def apply_if_finite(ms, finite, record):
        if bool(finite):
            return trainer._apply(ms, record)
        trainer.exp.optimizer.zero_grad(set_to_none=True)
        if trainer.exp.scheduler is not None:
            trainer.exp.scheduler.step()
        return record

    trainer._apply_if_finite = apply_if_finite


def _device_and_host_runs(tmp_path, make) -> tuple[Trainer, dict, Trainer, dict]:
    """Two runs made by ``make(folder)``, trained: one skipping on the device (the code), one deciding on the host
    (:func:`_host_decided_skip`); each trainer with its summary."""
    runs = []
    for how in ("device", "host"):
        trainer = make(tmp_path / how)
        if how == "host":
            _host_decided_skip(trainer)
        runs += [trainer, trainer.run()]
    return tuple(runs)


@pytest.mark.parametrize("algo", ["maml", "maml++"])  # MAML++: a schedule and per-step inner learning rates
def test_skipping_on_the_device_equals_deciding_on_the_host(tmp_path, algo):
    # steps 1 (Adam's state is created by the skipped step itself) and 4, 5 (two in a row, one flushed at 4)
    dev, s_dev, host, s_host = _device_and_host_runs(
        tmp_path, lambda folder: _trainer(folder, {1, 4, 5}, algo=algo, nan_policy="skip"))
    assert s_dev["skipped_meta_batches"] == s_host["skipped_meta_batches"] == 3
    for k, v in host.exp.model.state_dict().items():
        assert torch.equal(dev.exp.model.state_dict()[k], v), k
    a, b = dev.exp.optimizer.state_dict(), host.exp.optimizer.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for i, state in b["state"].items():
        for k, v in state.items():
            assert torch.equal(a["state"][i][k], v), (i, k)
    assert metrics(dev.run_dir) == metrics(host.run_dir)
    assert [r["step"] for r in metrics(dev.run_dir) if r.get("skipped")] == [4]  # logged lines: 2, 4, 6, 8


def _poison_records(trainer: Trainer, bad_steps: set[int]) -> None:
    """Non-finite meta-gradients at the given 1-based steps, put in after the step is computed: also where the step
    replays a CUDA graph (a graph captured through a poisoned ``meta_gradients`` would replay its poison at every
    step)."""
    real = trainer._step_record

    def poisoned(ms):
        if trainer.step + 1 in bad_steps:
            name = next(iter(ms.grads))
            ms = MetaStep(grads={**ms.grads, name: ms.grads[name] * float("inf")}, loss=ms.loss)
        return real(ms)

    trainer._step_record = poisoned


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_skipping_on_cuda_reads_nothing_back_and_equals_the_host_decision_on_cuda(tmp_path):
    from cmlgraph.train.sync_counter import SyncCounter

    def make(folder):
        trainer = _trainer(folder, set(), nan_policy="skip", device="cuda")  # cuda_graphs auto: captured
        _poison_records(trainer, {1, 4, 5})
        return trainer

    dev, s_dev, host, s_host = _device_and_host_runs(tmp_path, make)
    assert s_dev["skipped_meta_batches"] == s_host["skipped_meta_batches"] == 3
    for k, v in host.exp.model.state_dict().items():
        # capturable Adam (the device run) rounds its bias correction in float32 on the GPU, plain Adam on the host
        torch.testing.assert_close(dev.exp.model.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)
    steps = [s["step"] for s in dev.exp.optimizer.state.values()]
    assert steps and all(s.device.type == "cuda" for s in steps)  # capturable Adam: its step count on the GPU
    assert [float(s) for s in steps] == [5.0] * len(steps)  # 8 steps, 3 skipped
    # a further step, counted: nothing read back (the flush at the next log line reads it; on the CPU Adam's own
    # host reads of its step counts would be counted here, 8 of them)
    dev._pending = []
    with SyncCounter() as counter:
        dev._train_step()
    assert counter.total == 0, counter.counts


def test_a_loaded_optimizer_keeps_the_capturable_setting_it_was_built_with():
    # load_state_dict takes the checkpoint's groups' settings: a checkpoint written before nan_policy skip made Adam
    # capturable on CUDA would turn it back (its step counts CPU tensors: a host copy per parameter every step)
    from cmlgraph.train.trainer import _keep_capturable

    w = torch.nn.Parameter(torch.randn(3))
    plain = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    plain.step()
    built = torch.optim.Adam([w], lr=0.1, capturable=True)
    built.load_state_dict(plain.state_dict())
    assert built.param_groups[0]["capturable"] is False  # torch's own behaviour, which the helper undoes
    _keep_capturable(built, [True])
    assert built.param_groups[0]["capturable"] is True
    step = built.state[w]["step"]
    assert step.device == w.device and step.dtype == torch.float32 and float(step) == 1.0
    _keep_capturable(built, [False])  # and back: a plain optimizer's step count on the host
    assert built.param_groups[0]["capturable"] is False and built.state[w]["step"].device.type == "cpu"


def test_a_few_skipped_meta_batches_are_said_without_alarm():
    from cmlgraph.train.guards import check_test_result

    assert check_test_result({"num_tasks": 5}, 0, 100) == []
    (one,) = check_test_result({"num_tasks": 5}, 1, 100)
    assert one.startswith("1 of 100 meta-batches were skipped") and "unstable" not in one
    (many,) = check_test_result({"num_tasks": 5}, 40, 100)
    assert "60 steps only" in many and "--meta-lr" in many
    assert check_test_result({"num_tasks": 0}, 40, 100) == []  # (the early check before testing: said once, after)
