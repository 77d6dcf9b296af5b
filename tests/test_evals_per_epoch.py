"""Evaluations inside an epoch (``evals_per_epoch``, issue 26: the homeostatic paper's "mean
validation accuracy over training" is an average of evaluations made during training).

Measuring never changes what is measured: a run evaluated M times per epoch trains exactly as
one evaluated once (weights, optimizer state, the learning-rate controller, the global RNG and
the rule's generators), even when the evaluation itself is made to disturb them; the
evaluations fall where documented, read the labels in force there, and their FLOPs count."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint
from beyondbp.cli import main
from beyondbp.data import Dataset
from beyondbp.data.shift import ConceptShift
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, run, tasks

ROOT = Path(__file__).resolve().parents[1]

#: 96 samples in batches of 16: 6 steps per epoch.
CASES = {
    # dropout draws from the global RNG; momentum and the homeostatic controller carry state
    "backprop": dict(model_options={"widths": [16, 8], "dropout": 0.2}, optimizer="sgd", momentum=0.9, lr=0.05,
                     lr_control="homeostatic", lr_control_memory=8),
    "brsf": dict(optimizer="sgd", lr=0.05),  # redraws its feedback from its own generators every step
}


@pytest.fixture(scope="module")
def small_digits(digits):
    return digits.subset(96, 50)


def tiny(rule: str, tmp_path: Path, evals: int, **changes) -> RunConfig:
    values = dict(rule=rule, model="mlp", model_options={"widths": [16, 8]}, data="digits", n_train=96, n_test=50,
                  epochs=2, batch_size=16, lr=3e-3, evals_per_epoch=evals, checkpoint=str(tmp_path / f"m{evals}.pt"))
    values.update(changes)
    return RunConfig(**values)


def trained(config: RunConfig, digits) -> tuple:
    """The run, its end-of-epoch history without timings and within-epoch lists, its final
    model / rule state / optimizer state and the global RNG state after it."""
    result = run(config, dataset=digits)
    history = [{k: v for k, v in h.items() if k not in ("elapsed", "evals")} for h in result.history]
    payload = checkpoint.read(config.checkpoint)
    return result, history, {k: payload[k] for k in ("model", "rule_state", "optimizer")}, torch.get_rng_state()


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def disturbing(monkeypatch) -> None:
    """Make every classification evaluation disturb what it measures: draw from the global RNG
    and the rule's generators, leave the model in eval mode with garbage gradients and a
    scribbled buffer (the end-of-epoch evaluation does it in both runs alike; the ones inside an
    epoch must be contained)."""
    evaluate = tasks.ClassificationTask.evaluate

    def noisy(self, step, index, train_loss):
        out = evaluate(self, step, index, train_loss)
        torch.rand(7)
        for g in self.learner.generators():
            torch.rand(3, generator=g)
        for p in self.learner.model.parameters():
            p.grad = torch.full_like(p, 1e3)
        for b in self.learner.model.buffers():
            b.add_(1)
        self.learner.model.eval()
        return out

    monkeypatch.setattr(tasks.ClassificationTask, "evaluate", noisy)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("hostile", [False, True])
def test_evaluating_within_epochs_changes_nothing_that_is_measured(case, hostile, tmp_path, small_digits, monkeypatch):
    if hostile:
        disturbing(monkeypatch)
    once = trained(tiny(case, tmp_path, 1, **CASES[case]), small_digits)
    often = trained(tiny(case, tmp_path, 3, **CASES[case]), small_digits)
    (r1, h1, s1, rng1), (r3, h3, s3, rng3) = once, often
    assert h1 == h3  # the end-of-epoch evaluations, training losses, lr_control's rate (metrics)
    assert same(s1, s3)  # weights, rule state (feedback matrices), momentum buffers
    assert torch.equal(rng1, rng3)  # the global RNG where the run left it
    assert r1.final == r3.final
    assert [len(h["evals"]) for h in r3.history] == [3, 3] and "evals" not in r1.history[0]
    assert r3.history[0]["evals"][-1]["test_accuracy"] == r3.history[0]["test_accuracy"]
    if case == "backprop":  # the controller moved its rate, so its state mattered
        assert any(h["metrics"]["lr_controlled"] != 0.05 for h in r1.history)


def test_the_evaluations_fall_evenly_in_each_epoch_and_read_the_labels_in_force(tmp_path, monkeypatch):
    # 100 samples, batch 10: 10 steps per epoch; 4 evaluations per epoch after steps 2, 5, 7, 10
    n = 100
    shift = ConceptShift(5, 3, 10)  # a swap every 20 samples (2 steps)
    g = torch.Generator().manual_seed(0)
    ds = Dataset("toy", torch.randn(n, 6, generator=g), torch.arange(n) % 10, torch.randn(30, 6, generator=g),
                 torch.arange(30) % 10, (6,), 10, concept_shift=shift)
    seen: list[torch.Tensor] = []
    evaluate_tensors = tasks.evaluate_tensors

    def spy(predict, x, y, **kw):
        seen.append(y.clone())
        return evaluate_tensors(predict, x, y, **kw)

    monkeypatch.setattr(tasks, "evaluate_tensors", spy)
    config = RunConfig(rule="backprop", model="mlp", model_options={"widths": [8]}, data="digits", epochs=2,
                       batch_size=10, lr=0.01, evals_per_epoch=4)
    result = run(config, dataset=ds)
    steps = [[e["step"] for e in h["evals"]] for h in result.history]
    assert steps == [[2, 5, 7, 10], [12, 15, 17, 20]]
    # each evaluation reads the test labels as they are at its position in the label stream
    for (epoch, step), y in zip([(e, s) for e, row in enumerate(steps) for s in row], seen):
        position = (step - 10 * epoch) * 10  # samples of the epoch trained on; swaps at 20, 40, ..., 100
        swaps = 5 * epoch + position // 20
        assert torch.equal(y, shift.relabel(ds.y_test, swaps))
    assert len({tuple(y.tolist()) for y in seen}) >= 4  # the labels did move between evaluations
    for h in result.history:
        assert all(math.isfinite(e["test_loss"]) and math.isfinite(e["train_loss"]) for e in h["evals"])
    # as many evaluations as steps: one after every step; a step budget ending inside an epoch
    every = run(config.replace(evals_per_epoch=10, epochs=None, steps=14), dataset=ds)
    assert [[e["step"] for e in h["evals"]] for h in every.history] == [list(range(1, 11)), [11, 12, 13, 14]]


def test_within_epoch_evaluations_are_deterministic_and_counted(tmp_path, small_digits):
    config = tiny("dfa", tmp_path, 3)
    a, b = run(config, dataset=small_digits), run(config, dataset=small_digits)
    strip = [{k: v for k, v in h.items() if k != "elapsed"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "elapsed"} for h in b.history]
    once = run(config.replace(evals_per_epoch=1), dataset=small_digits)
    assert once.eval_flops > 0 and a.eval_flops == 3 * once.eval_flops
    accs = [e["test_accuracy"] for h in a.history for e in h["evals"]]
    assert len(accs) == 6 and len(set(accs)) > 1  # the model moved between evaluations


def test_the_bench_averages_every_evaluation_made_during_training():
    spec = importlib.util.spec_from_file_location("homeostatic_shift_bench", ROOT / "bench" / "homeostatic_shift.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    history = [{"test_accuracy": 0.5, "evals": [{"test_accuracy": 0.1}, {"test_accuracy": 0.5}]},
               {"test_accuracy": 0.9, "evals": [{"test_accuracy": 0.3}, {"test_accuracy": 0.9}]}]
    assert bench.val_accuracies(history) == [0.1, 0.5, 0.3, 0.9]
    assert bench.val_accuracies([{"test_accuracy": 0.4}, {"test_accuracy": 0.6}]) == [0.4, 0.6]


def test_the_run_id_is_unchanged_at_the_default_and_changes_with_the_setting():
    values = dict(rule="dfa", model="mlp", model_options={"widths": [64, 32]}, data="mnist1d", epochs=3, lr=0.01, seed=7)
    stored = "221d6f6974c4b7a3"  # tests/test_train.py::test_the_run_id_is_the_same_in_another_process
    assert RunConfig(**values).run_id == RunConfig(**values, evals_per_epoch=1).run_id == stored
    assert RunConfig(**values, evals_per_epoch=2).run_id != stored


def test_bad_evaluation_counts_are_refused_in_one_sentence(capsys, small_digits):
    with pytest.raises(ConfigError, match="evals_per_epoch"):
        RunConfig(rule="backprop", model="mlp", data="digits", evals_per_epoch=0)
    with pytest.raises(ConfigError, match="classification data"):
        RunConfig(model="gpt", data="shakespeare-char", steps=1, evals_per_epoch=2)
    with pytest.raises(ConfigError, match="exceeds the 6 steps of an epoch"):
        run(RunConfig(rule="backprop", model="mlp", model_options={"widths": [8]}, data="digits", epochs=1,
                      batch_size=16, evals_per_epoch=7), dataset=small_digits)
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--evals-per-epoch", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "evals_per_epoch" in err and "Traceback" not in err
    assert len([line for line in err.strip().splitlines() if line.strip()]) <= 2


def test_a_killed_run_evaluating_within_epochs_resumes_bit_identically(tmp_path, small_digits):
    class Killed(Exception):
        pass

    def killer(event, info):
        if event == "step" and info["step"] == 9:  # mid-epoch, after the evaluation at step 8
            raise Killed

    config = tiny("backprop", tmp_path, 3, **CASES["backprop"])
    plain = run(config, dataset=small_digits)
    config = config.replace(state=str(tmp_path / "run.state"), checkpoint_every=4)
    with pytest.raises(Killed):
        run(config, killer, dataset=small_digits)
    resumed = run(config, dataset=small_digits)
    assert resumed.resumed_from_step == 8
    strip = [{k: v for k, v in h.items() if k != "elapsed"} for h in plain.history]
    assert strip == [{k: v for k, v in h.items() if k != "elapsed"} for h in resumed.history]
    assert [e["step"] for e in resumed.history[1]["evals"]] == [8, 10, 12]
