"""The recurrent models (``wrnn``, ``irnn``, ``lstm``; ``beyondbp.models.rnn``): shapes, the wave
RNN's shift initialisation, freezing, matched parameter counts, learning the adding task, and
which rules attach through time."""

from __future__ import annotations

import pytest
import torch

from beyondbp import data, models, rules
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.models.rnn import hidden_for_params, parameter_count


@pytest.mark.parametrize("name", ["wrnn", "irnn", "lstm"])
def test_shapes_last_and_all_and_counted_parameters(name):
    small = {"wrnn": {"channels": 2, "ring": 5}, "irnn": {"hidden": 7}, "lstm": {"hidden": 7}}[name]
    x = torch.rand(3, 6, 4)
    last = models.build(name, (6, 4), 5, **small)
    assert last(x).shape == (3, 5)
    every = models.build(name, (6, 4), 5, outputs="all", **small)
    assert every(x).shape == (3, 6, 5)
    assert models.build(name, (6,), 2, **small)(torch.rand(3, 6)).shape == (3, 2)  # (T,): one channel
    assert models.build(name, (1, 6, 4), 2, **small)(torch.rand(3, 1, 6, 4)).shape == (3, 2)  # an image, row by row
    kw = {"hidden": 7} if name != "wrnn" else small
    assert sum(p.numel() for p in last.parameters()) == parameter_count(name, (6, 4), 5, **kw)


def test_shift_init_makes_a_travelling_wave_exactly():
    torch.manual_seed(0)
    model = models.build("wrnn", (12, 1), 1, channels=3, ring=8)
    kernel = model.recurrent.weight.detach()
    assert torch.equal(kernel[:, :, 2], torch.eye(3)) and not kernel[:, :, :2].any()
    torch.nn.init.zeros_(model.recurrent.bias)
    # solo_init: the input enters neuron 0 of every ring with weight 1, nothing else
    w = model.encoder.weight.detach().view(3, 8, 1)
    assert torch.equal(w[:, 0], torch.ones(3, 1)) and not w[:, 1:].any() and not model.encoder.bias.any()
    # any pattern moves one neuron per step round every ring (towards lower indices), unchanged
    h = torch.zeros(1, 3, 8)
    bump = torch.rand(1, 3, 8)
    states = []
    with torch.no_grad():
        for t in range(10):
            h = model.act(model.recurrent(h if t else bump))
            states.append(h)
    for t, s in enumerate(states):
        assert torch.equal(s, torch.roll(bump, -(t + 1), dims=-1))
    # through the model: the last 8 inputs are laid out around each ring, newest at neuron 0
    x = torch.rand(2, 8, 1)  # T = ring: nothing wraps round yet
    with torch.no_grad():
        u = model.encoder(x).view(2, 8, 3, 8)
        h = torch.zeros(2, 3, 8)
        for t in range(8):
            h = torch.relu(model.recurrent(h) + u[:, t])
    expected = torch.stack([x[:, 7 - (8 - i) % 8, 0] for i in range(8)], dim=-1)  # neuron -k holds x_{T-1-k}
    assert torch.equal(h, expected.unsqueeze(1).expand(2, 3, 8))


def test_identity_and_random_inits_and_irnn_identity():
    ident = models.build("wrnn", (4, 1), 1, channels=2, ring=4, init="identity")
    assert torch.equal(ident.recurrent.weight.detach()[:, :, 1], torch.eye(2))
    irnn = models.build("irnn", (4, 1), 1, hidden=6)
    assert torch.equal(irnn.recurrent.weight.detach(), torch.eye(6)) and not irnn.recurrent.bias.any()
    assert float(irnn.encoder.weight.detach().std()) < 0.01


def test_freeze_options_leave_only_the_readout_trainable():
    model = models.build("wrnn", (10, 2), 1, channels=2, ring=5, freeze_recurrence=True, freeze_encoder=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["readout.weight", "readout.bias"]
    x, y = data.load("adding", T=10, n_train=16, n_test=1).x_train, torch.rand(16)
    loss = rules.default_loss(model(x), y)
    loss.backward()
    assert model.recurrent.weight.grad is None and model.encoder.weight.grad is None
    assert model.readout.weight.grad is not None
    only_rec = models.build("wrnn", (10, 2), 1, channels=2, ring=5, freeze_recurrence=True)
    assert not only_rec.recurrent.weight.requires_grad and only_rec.encoder.weight.requires_grad


@pytest.mark.parametrize("name", ["wrnn", "irnn"])
@pytest.mark.parametrize("rule", ["backprop", "fa", "kp", "pfa", "dfa"])
def test_a_frozen_reservoir_trains_its_readout_alone_under_every_rule(name, rule):
    """Nothing of a frozen layer moves, the rule's own learned feedback (KP's B, PFA's R) included:
    before, KP and PFA trained the feedback of the frozen encoder and recurrence."""
    size = {"wrnn": {"channels": 2, "ring": 5}, "irnn": {"hidden": 6}}[name]
    torch.manual_seed(0)
    model = models.build(name, (8, 2), 3, freeze_recurrence=True, freeze_encoder=True, **size)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["readout.weight", "readout.bias"]
    learner = rules.get(rule, seed=0).attach(model) if rule != "backprop" else rules.get(rule).attach(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all(n.startswith("readout.") for n in trainable)
    # weight decay on every parameter handed over: a frozen one must still not move
    opt = torch.optim.SGD(list(learner.optimizer_parameters()), lr=0.5, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 8, 2, generator=g), torch.randint(0, 3, (16,), generator=g))
    for _ in range(3):
        learner.step(batch, opt)
    moved = sorted(n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n]))
    assert moved == trainable and {"readout.bias", "readout.weight"} <= set(moved)


def test_irnn_freezes_recurrence_and_encoder_separately():
    only_rec = models.build("irnn", (10, 2), 1, hidden=4, freeze_recurrence=True)
    assert [n for n, p in only_rec.named_parameters() if not p.requires_grad] == ["recurrent.weight", "recurrent.bias"]
    only_enc = models.build("irnn", (10, 2), 1, hidden=4, freeze_encoder=True)
    assert [n for n, p in only_enc.named_parameters() if not p.requires_grad] == ["encoder.weight", "encoder.bias"]
    with pytest.raises(ConfigError):
        models.build("irnn", (10, 2), 1, hidden=4, freeze_encoder="yes please")


def test_matched_parameter_counts():
    target = parameter_count("wrnn", (200, 2), 1, channels=27, ring=100)
    assert target == 13015
    for name in ("irnn", "lstm"):
        hidden = hidden_for_params(name, (200, 2), 1, target)
        gaps = [abs(parameter_count(name, (200, 2), 1, hidden=h) - target) for h in (hidden - 1, hidden, hidden + 1)]
        assert gaps[1] == min(gaps) and gaps[1] / target < 0.03
        model = models.build(name, (200, 2), 1, params=target)
        assert model.hidden == hidden and abs(sum(p.numel() for p in model.parameters()) - target) == gaps[1]


def test_bad_options_are_one_sentence():
    with pytest.raises(ConfigError, match="model 'wrnn' option ring must be an integer >= 3"):
        models.build("wrnn", (10, 2), 1, ring=2)
    with pytest.raises(ConfigError, match="model 'irnn' has no option channels"):
        models.build("irnn", (10, 2), 1, channels=3)
    with pytest.raises(ConfigError, match="option outputs must be one of 'last', 'all'"):
        models.build("lstm", (10, 2), 1, outputs="every")


def _train_adding(rule: str, T: int, steps: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    ds = data.load("adding", T=T, n_train=2048, n_test=512, seed=seed)
    model = models.build("wrnn", ds.input_shape, 1, channels=4, ring=T)
    learner = rules.get(rule).attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, ds.num_train, (64,), generator=gen)
        learner.step((ds.x_train[idx], ds.y_train[idx]), opt)
    with torch.no_grad():
        return float(learner.loss_fn(learner.predict(ds.x_test), ds.y_test))


def test_wrnn_learns_the_adding_task_with_bptt():
    # chance (predicting the mean) is ~0.167; "solved" is <= 0.05
    assert _train_adding("backprop", T=10, steps=300) < 0.05


FEEDBACK = ["fa", "usf", "frsf", "brsf", "kp", "pfa", "dfa"]


def _tiny_adding(name: str, *, T: int, n_train: int, wrnn: dict, irnn: dict):
    """A tiny ``name`` (wrnn or irnn, built with the given sizes, seed 0) and the adding task of
    ``T`` steps with ``n_train`` training samples: (model, data set)."""
    torch.manual_seed(0)
    model = models.build(name, (T, 2), 1, **(wrnn if name == "wrnn" else irnn))
    return model, data.load("adding", T=T, n_train=n_train, n_test=1)


@pytest.mark.parametrize("rule", FEEDBACK)
@pytest.mark.parametrize("name", ["wrnn", "irnn"])
def test_feedback_rules_attach_through_time_and_differ_from_bptt(rule, name):
    model, ds = _tiny_adding(name, T=8, n_train=32, wrnn={"channels": 3, "ring": 6}, irnn={"hidden": 12})
    batch = (ds.x_train, ds.y_train)
    learner = rules.get(rule).attach(model)
    assert "recurrent" in learner.trained_layers()
    estimate, exact = learner.estimate(batch), learner.backprop_gradients(batch)
    w = "recurrent.weight"
    assert torch.isfinite(estimate[w]).all() and estimate[w].abs().sum() > 0
    assert not torch.allclose(estimate[w], exact[w])
    # the readout's own gradient is exact under the feedback-path rules (only errors *sent back* change)
    if rule != "dfa":
        assert torch.allclose(estimate["readout.weight"], exact["readout.weight"], atol=1e-6)
    out = learner.predict(ds.x_train)
    learner.detach()
    assert torch.equal(out, model.eval()(ds.x_train))


@pytest.mark.parametrize("rule", ["drtp", "elm-online", "ottt", "ff", "il", "softhebb", "stdp", "nalsm"])
@pytest.mark.parametrize("name", ["wrnn", "irnn"])
def test_rules_that_cannot_train_a_recurrent_model_refuse_in_one_short_sentence_at_attach(rule, name):
    # softhebb used to attach and refuse only at the first forward pass (after loading the data),
    # listing every one of the T·2 layer calls it saw (6 kB at T = 200) at first; now every rule
    # refuses at attach, before any step
    model, ds = _tiny_adding(name, T=60, n_train=8, wrnn={"channels": 2, "ring": 4}, irnn={"hidden": 4})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((UnsupportedModuleError, ConfigError)) as info:
        rules.get(rule).attach(model)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    if rule == "softhebb":
        assert "runs layer 'recurrent' once per time step" in message and "e.g. mlp" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model._forward_pre_hooks  # nothing left attached
    assert rules.get("backprop").attach(model) is not None  # the model is free for another rule


def test_cli_refuses_softhebb_on_a_recurrent_model_in_one_sentence_writing_nothing(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code = _cli(["train", "--rule", "softhebb", "--model", "irnn", "--data", "adding", "--data-opt", "T=6",
                 "--data-opt", "n_train=16", "--data-opt", "n_test=4", "--model-opt", "hidden=4", "--steps", "1",
                 "--out", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "softhebb cannot train the IRNN" in err and "once per time step" in err
    assert not out_dir.exists()


@pytest.mark.parametrize("rule", ["fa", "kp", "dfa", "ff", "il", "drtp"])
def test_lstm_gates_are_refused_in_one_sentence(rule):
    model = models.build("lstm", (8, 2), 1, hidden=4)
    with pytest.raises(UnsupportedModuleError) as info:
        rules.get(rule).attach(model)
    assert "lstm" in str(info.value).lower() and "\n" not in str(info.value)


def test_lstm_and_rnns_train_with_bptt():
    ds = data.load("adding", T=6, n_train=16, n_test=1)
    for name in ("lstm", "irnn", "wrnn"):
        model = models.build(name, (6, 2), 1)
        learner = rules.get("backprop").attach(model)
        grads = learner.estimate((ds.x_train, ds.y_train))
        assert all(torch.isfinite(g).all() for g in grads.values()) and grads


def _cli(argv):
    from beyondbp.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_cli_trains_wrnn_on_adding_and_refuses_per_step_targets_without_outputs_all(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "run"
    code = _cli(["train", "--model", "wrnn", "--data", "adding", "--data-opt", "T=8", "--data-opt", "n_train=64",
                 "--data-opt", "n_test=16", "--model-opt", "channels=2", "--model-opt", "ring=8", "--steps", "3",
                 "--batch-size", "16", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "wrnn" in out and (out_dir / "results.json").exists()
    code = _cli(["train", "--model", "irnn", "--data", "copy", "--data-opt", "T=6", "--data-opt", "mem_len=2",
                 "--data-opt", "n_train=16", "--data-opt", "n_test=4", "--model-opt", "hidden=4", "--steps", "1",
                 "--out", str(tmp_path / "bad")])
    out, err = capsys.readouterr()
    assert code == 2 and "outputs='all'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    code = _cli(["train", "--model", "irnn", "--data", "copy", "--data-opt", "T=6", "--data-opt", "mem_len=2",
                 "--data-opt", "n_train=16", "--data-opt", "n_test=4", "--model-opt", "hidden=4",
                 "--model-opt", "outputs=all", "--steps", "2"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("rule", ["frsf", "brsf"])
def test_sign_concordant_feedback_is_zero_where_the_weight_is_zero(rule):
    # sign(0) = 0: before, copysign gave zero weights a positive sign, so the wave RNN's mostly-zero
    # shift kernel got a dense positive feedback and the error overflowed back through time
    torch.manual_seed(0)
    model = models.build("wrnn", (50, 2), 1, channels=6, ring=20)
    learner = rules.get(rule).attach(model)
    feedback = learner.feedback_matrix("recurrent")
    weight = model.recurrent.weight.detach()
    assert torch.equal(feedback == 0, weight == 0) and torch.equal(torch.sign(feedback), torch.sign(weight))
    batch = data.load("adding", T=50, n_train=16, n_test=1)
    estimate = learner.estimate((batch.x_train, batch.y_train))
    assert all(torch.isfinite(g).all() for g in estimate.values())


def test_flops_of_torchs_fused_lstm_are_counted():
    # nn.LSTM on the CPU runs as one fused mkldnn_rnn_layer kernel that torch's FlopCounterMode
    # counted as 0: `beyondbp train --model lstm` reported only the readout's FLOPs
    from beyondbp.compute import count_flops

    torch.manual_seed(0)
    n, t, d, h = 3, 7, 5, 6
    lstm = torch.nn.LSTM(d, h, batch_first=True)
    x = torch.randn(n, t, d)
    forward = 2 * n * t * 4 * h * (d + h)  # W_ih x and W_hh h at every step and sample
    assert count_flops(lambda: lstm(x)) == forward
    assert count_flops(lambda: lstm(x)[0].sum().backward()) == 3 * forward  # + grads of input, h, W_ih, W_hh
    model = models.build("lstm", (t, d), 4, hidden=h)
    readout = 2 * n * h * 4
    assert count_flops(lambda: model(x)) == forward + readout


def test_set_sparsity_counts_the_fused_lstm_too():
    # SET measures a step with its own per-layer FLOP counter, which missed nn.LSTM's fused
    # kernel: a sparse LSTM run reported only its readout's FLOPs
    from beyondbp.training import run

    base = dict(model="lstm", data="adding", data_options={"T": 20, "n_train": 256, "n_test": 64}, steps=2,
                batch_size=32, model_options={"hidden": 8})
    dense, sparse = run(dict(base)), run(dict(base, sparsity="set"))
    assert sparse.flops_per_step == dense.flops_per_step > 2 * 32 * 20 * 4 * 8 * (1 + 8)
