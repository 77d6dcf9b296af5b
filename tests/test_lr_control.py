"""The homeostatic learning-rate controller (and its random control) and the concept-shift data
(issue 26: "Need is All You Need", Man, Damasio, Neven)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp import rules
from beyondbp.cli import main
from beyondbp.data import Dataset
from beyondbp.data.shift import ConceptShift
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, run
from beyondbp.training.lr_control import LRController, homeostatic_move
from beyondbp.training.tasks import ClassificationTask


def _batch(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(len(labels), 4), torch.tensor(labels)


class _Scripted(LRController):
    """The controller with its guesses and scores given by hand (the decision rule alone)."""

    def __init__(self, guesses, scores, **kw):
        learner = rules.get("backprop").attach(nn.Linear(4, 10))
        super().__init__("homeostatic", learner, lr=1e-3, num_classes=10, interval=10, memory=20, **kw)
        self.guesses, self.scores, self.asked = list(guesses), list(scores), []

    def _guess(self, x):
        return self.guesses.pop(0)

    def _scores(self, optimizer, etas):
        self.asked.append(tuple(etas))
        return list(self.scores.pop(0))


def test_the_homeostatic_decision_on_a_hand_made_score_sequence():
    ctl = _Scripted(guesses=[7, 2, 9, 1, 3], scores=[(10, 12), (10, 10), (15, 11), (8, 9), (0, 1)])
    opt = torch.optim.SGD(ctl.learner.model.parameters(), lr=1e-3)
    # first samples of each batch (true labels): two warm-up batches, then five decisions
    firsts = [0, 0, 6, 8, 3, 2, 4]
    etas = []
    for first in firsts:
        batch = _batch([first] + [0] * 9)
        ctl.around(opt, batch).step()  # no gradients: the SGD step itself changes nothing
        ctl.after(batch)
        etas.append(ctl.eta)
    d = 1e-4
    # 1) guess 7 (upper) -> candidate η+δ scores 12 > 10 -> move by the TRUE label 6 (upper): +δ
    # 2) guess 2 (lower) -> candidate η-δ, 10 vs 10 (not better) -> stay
    # 3) guess 9 -> 11 < 15 -> stay; 4) guess 1 -> 9 > 8, true label 2 (lower) -> -δ
    # 5) guess 3 -> 1 > 0, true label 4 (lower) -> -δ
    expected = [1e-3, 1e-3, 1e-3 + d, 1e-3 + d, 1e-3 + d, 1e-3, 1e-3 - d]
    assert etas == pytest.approx(expected, abs=1e-15)
    asked = [eta for pair in ctl.asked for eta in pair]
    assert asked == pytest.approx([1e-3, 1e-3 + d, 1e-3 + d, 1e-3, 1e-3 + d, 1e-3 + 2 * d,
                                   1e-3 + d, 1e-3, 1e-3, 1e-3 - d], abs=1e-15)
    assert ctl.decisions == 5 and ctl.moves == 3
    # the pure rule, including the floor
    assert homeostatic_move(1e-4, 3, 4, False, 1e-4, 1e-8) == 1e-8
    assert homeostatic_move(1e-4, 4, 4, True, 1e-4, 1e-8) == 1e-4


def test_the_random_control_moves_by_the_true_label_half_on_a_coin_from_its_seed():
    learner = rules.get("backprop").attach(nn.Linear(4, 10))
    opt = torch.optim.SGD(learner.model.parameters(), lr=0.01)
    labels = [int(v) for v in torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(3))]
    trajectories = []
    for _ in range(2):
        ctl = LRController("random", learner, lr=0.01, num_classes=10, interval=10, seed=11)
        etas = []
        for first in labels:
            batch = _batch([first] + [0] * 9)
            ctl.around(opt, batch).step()
            ctl.after(batch)
            etas.append(ctl.eta)
        trajectories.append(etas)
    assert trajectories[0] == trajectories[1]  # deterministic
    coins = torch.Generator().manual_seed(11)
    eta, expected = 0.01, []
    for i, first in enumerate(labels):
        if i > 0 and float(torch.rand((), generator=coins)) > 0.5:  # no decision at sample 0
            eta = max(eta + (0.001 if first >= 5 else -0.001), 1e-8)
        expected.append(eta)
    assert trajectories[0] == pytest.approx(expected, abs=1e-15)
    assert len(set(expected)) > 3  # it did move, both ways


def test_a_decision_changes_nothing_but_the_rate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ELU(), nn.Dropout(0.2), nn.Linear(8, 10))
    learner = rules.get("backprop").attach(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctl = LRController("homeostatic", learner, lr=1e-2, num_classes=10, interval=5, memory=10)
    data = [(torch.randn(5, 6), torch.randint(0, 10, (5,))) for _ in range(8)]
    for batch in data[:3]:
        learner.step(batch, ctl.around(opt, batch))
        ctl.after(batch)
    batch = data[3]
    ctl.around(opt, batch)
    opt.zero_grad()
    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    rng, lrs, eta = torch.get_rng_state(), [g["lr"] for g in opt.param_groups], ctl.eta
    ctl.decide(opt)
    assert ctl.decisions == 2  # batch 3 (memory full) and this one
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert {id(p): set(s) for p, s in opt.state.items()} == {k: set(s) for k, s in state.items()}
    assert all(torch.equal(state[id(p)][k], v) for p, s in opt.state.items() for k, v in s.items())
    assert torch.equal(torch.get_rng_state(), rng) and [g["lr"] for g in opt.param_groups] == lrs
    assert model.training and ctl.eta in (eta, eta + 1e-3, eta - 1e-3)


def test_the_concept_shift_swaps_exactly_k_times_per_epoch_at_its_positions():
    n, k = 103, 4
    shift = ConceptShift(k, 5, 10)
    assert shift.boundaries(n).tolist() == [25, 51, 77, 103]
    y = torch.arange(n) % 10
    for epoch in range(3):
        swaps = shift.swaps_before(epoch, torch.arange(n), n)
        stream = shift.relabel(y, swaps)
        changes = (swaps[1:] != swaps[:-1]).nonzero().flatten() + 1
        assert changes.tolist() == [25, 51, 77] and int(swaps[0]) == epoch * k
        for s in range(n):  # only the two swapped classes change, and they trade places
            mapping = shift.label_map(int(swaps[s]))
            assert int(stream[s]) == int(mapping[y[s]])
        for t in range(epoch * k, epoch * k + k):
            moved = (shift.label_map(t + 1) != shift.label_map(t)).nonzero().flatten()
            assert len(moved) == 2 and torch.equal(shift.label_map(t + 1)[moved], shift.label_map(t)[moved.flip(0)])
    assert ConceptShift(k, 5, 10).label_map(9).tolist() == shift.label_map(9).tolist()  # seeded
    assert ConceptShift(k, 6, 10).label_map(9).tolist() != shift.label_map(9).tolist()
    assert torch.equal(ConceptShift(0, 5, 10).relabel(y, ConceptShift(0, 5, 10).swaps_before(2, torch.arange(n), n)), y)


def test_the_run_task_relabels_training_batches_and_test_labels_by_stream_position():
    n = 40
    shift = ConceptShift(2, 1, 10)
    ds = Dataset("toy", torch.randn(n, 3), torch.arange(n) % 10, torch.randn(10, 3), torch.arange(10), (3,), 10,
                 concept_shift=shift)
    config = RunConfig(model="mlp", data="digits", epochs=2, batch_size=8, seed=0)
    task = ClassificationTask(config, ds, torch.device("cpu"))
    task.learner = rules.get("backprop").attach(nn.Sequential(nn.Flatten(), nn.Linear(3, 10)))
    for epoch in range(2):
        for step in range(5):
            _, y = task.next_batch()
            idx = task._epoch[step]
            want = shift.relabel(ds.y_train[idx], shift.swaps_before(epoch, step * 8 + torch.arange(8), n))
            assert torch.equal(y, want)
        assert task.period_ends(5 * (epoch + 1))
    assert torch.equal(shift.relabel(ds.y_test, 4), shift.label_map(4)[ds.y_test])


@pytest.mark.parametrize("rule", ["backprop", "fa"])
def test_the_controller_composes_with_a_rule_and_is_deterministic(rule):
    config = RunConfig(rule=rule, model="mlp", model_options={"widths": [16], "activation": "elu"}, data="digits",
                       epochs=3, n_train=400, n_test=100, batch_size=10, optimizer="sgd", momentum=0.0, lr=0.1,
                       lr_control="homeostatic", seed=1)
    first, again = run(config), run(config)
    def untimed(result):
        return [{k: v for k, v in h.items() if k != "elapsed"} for h in result.history]

    assert first.status == "ok" and untimed(first) == untimed(again)
    assert first.final["test_accuracy"] > 0.6  # it learns (chance is 0.1; measured 0.84 backprop, 0.70 FA)
    controlled = first.history[-1]["metrics"]["lr_controlled"]
    assert controlled > 0 and controlled != pytest.approx(0.1, abs=1e-12)  # the rate moved
    plain = config.replace(lr_control="none")
    assert plain.run_id != config.run_id and "lr_control" not in plain.identity()


@pytest.mark.parametrize(("rule", "optimizer"), [("fa", "sgd"), ("dfa", "adam")])
def test_under_fa_and_dfa_a_controller_that_never_moves_trains_exactly_as_no_controller(rule, optimizer, monkeypatch):
    from beyondbp.training import lr_control

    calls = []

    def never_move(eta, *args, **kwargs):
        calls.append(eta)
        return eta

    monkeypatch.setattr(lr_control, "homeostatic_move", never_move)
    config = RunConfig(rule=rule, model="mlp", model_options={"widths": [32, 16], "activation": "elu"}, data="digits",
                       epochs=3, n_train=400, n_test=100, batch_size=10, optimizer=optimizer, momentum=0.9,
                       lr=0.05 if optimizer == "sgd" else 1e-2, seed=1)

    def untimed(result):
        return [{k: v for k, v in h.items() if k not in ("elapsed", "metrics")} for h in result.history]

    controlled, plain = run(config.replace(lr_control="homeostatic")), run(config)
    assert len(calls) > 100  # decisions were simulated (every 10 samples after the first 20)
    assert untimed(controlled) == untimed(plain)  # they left weights, momentum/moments and feedback untouched
    assert plain.final["test_accuracy"] > 0.5  # and it did learn (chance 0.1; measured 0.69 FA, 0.86 DFA)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--data", "fashion-mnist-shift", "--data-opt", "swaps_per_epoch=-1"], "swaps_per_epoch"),
        (["--lr-control", "homeostatic", "--lr-control-step", "0"], "lr_control_step"),
        (["--lr-control", "homeostatic", "--lr-control-memory", "0"], "lr_control_memory"),
        (["--lr-control", "sometimes"], "lr_control"),
        (["--lr-control-interval", "5"], "--lr-control"),
    ],
)
def test_bad_shift_rates_and_controller_options_are_one_sentence_and_exit_2(capsys, args, words):
    base = ["train", "--model", "mlp", "--epochs", "1"]
    if "--data" not in args:
        base += ["--data", "digits"]
    with pytest.raises(SystemExit) as info:
        main(base + args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and "Traceback" not in err
    assert len([line for line in err.strip().splitlines() if line.strip()]) <= 2


def test_a_text_data_set_refuses_the_controller():
    with pytest.raises(ConfigError, match="classification data"):
        RunConfig(model="gpt", data="shakespeare-char", steps=1, lr_control="random")
