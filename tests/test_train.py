"""The run loop, FLOP/time accounting and checkpoints — on real (tiny) training runs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint, compare, models, rules
from beyondbp.compute import StepTimer, count_flops, measure_steps
from beyondbp.errors import CheckpointError, ConfigError
from beyondbp.training import DIVERGENCE_FACTOR, RunConfig, RunResult, check, diverged, evaluate, run

WIDTHS = [32, 16]
DIMS = [64, *WIDTHS, 10]  # digits: 8×8 inputs, 10 classes


def tiny(rule: str = "backprop", **changes) -> RunConfig:
    values = dict(
        rule=rule, model="mlp", model_options={"widths": WIDTHS}, data="digits",
        epochs=3, batch_size=32, lr=3e-3,
    )
    values.update(changes)
    return RunConfig(**values)


def strip_times(history):
    return [{k: v for k, v in h.items() if k != "elapsed"} for h in history]


@pytest.fixture(scope="module")
def results(digits):
    return {r: run(tiny(r), dataset=digits) for r in ("backprop", "dfa")}


# -- learning and measurements ------------------------------------------------------------------
@pytest.mark.parametrize("rule, threshold", [("backprop", 0.75), ("dfa", 0.45)])
def test_rule_learns_above_chance(results, rule, threshold):
    res = results[rule]
    assert len(res.history) == 3
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    steps_per_epoch = math.ceil(1437 / 32)
    assert [h["step"] for h in res.history] == [steps_per_epoch * e for e in (1, 2, 3)]
    assert res.steps == 3 * steps_per_epoch and res.status == "ok"
    # chance is 10 %
    assert res.final["test_accuracy"] > threshold
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.n_params == sum(a * b + b for a, b in zip(DIMS, DIMS[1:]))


def test_flops_are_measured_exactly_and_dfa_skips_the_backward_matmuls(results):
    b = results["backprop"].flops_batch_size
    assert b == 32
    fwd = sum(2 * b * i * o for i, o in zip(DIMS, DIMS[1:]))
    # backprop: forward, weight gradients, input gradients of every layer but the first
    assert results["backprop"].flops_per_step == 3 * fwd - 2 * b * DIMS[0] * DIMS[1]
    # DFA: forward, weight gradients, and one projection B·e (10 → width) per hidden layer
    assert results["dfa"].flops_per_step == 2 * fwd + sum(2 * b * 10 * w for w in WIDTHS)
    assert 0 < results["dfa"].flops_per_step < results["backprop"].flops_per_step


def test_time_per_step_excludes_warmup_and_flop_step(results):
    for res in results.values():
        assert res.timed_steps == res.steps - 2
        assert res.time_per_step is not None and res.time_per_step > 0
        assert res.total_time >= res.train_time > 0


def test_same_seed_same_history_and_other_seed_differs(digits, results):
    again = run(tiny("dfa"), dataset=digits)
    assert strip_times(again.history) == strip_times(results["dfa"].history)
    other = run(tiny("dfa", seed=1, epochs=1), dataset=digits)
    assert other.history[0]["train_loss"] != results["dfa"].history[0]["train_loss"]
    assert other.rule_options["seed"] == 1  # the run seed also seeds the feedback matrices


def test_result_round_trips_through_a_dict(results):
    d = results["dfa"].to_dict()
    back = RunResult.from_dict(d)
    assert back.history == results["dfa"].history
    assert d["config"]["rule"] == "dfa" and d["data"]["n_train"] == 1437


def test_step_budget_and_progress_events(digits):
    events = []
    res = run(tiny(epochs=None, steps=10), progress=lambda e, info: events.append((e, info)), dataset=digits)
    assert res.steps == 10 and len(res.history) == 1 and res.history[0]["step"] == 10
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 10 and kinds.count("epoch") == 1
    assert events[0][1]["total_steps"] == 10


def test_threads_are_set_for_the_run_and_restored(digits):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = run(tiny(steps=3, epochs=None), dataset=digits)  # default: one thread
        assert res.environment["threads"] == 1 and res.config["threads"] == 1
        assert torch.get_num_threads() == 2
        res = run(tiny(steps=3, epochs=None, threads=None), dataset=digits)  # keep torch's setting
        assert res.environment["threads"] == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("schedule, factor", [("step", 0.1**2), ("cosine", 0.0), ("none", 1.0)])
def test_lr_schedules_end_where_they_should(digits, schedule, factor):
    res = run(tiny(epochs=1, lr_schedule=schedule), dataset=digits)
    assert res.history[-1]["lr"] == pytest.approx(3e-3 * factor, abs=1e-12)


def test_sgd_with_momentum_and_weight_decay_learns(digits):
    res = run(tiny(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, epochs=2), dataset=digits)
    assert res.final["test_accuracy"] > 0.6


def test_a_finite_blow_up_is_marked_diverged_and_stops_the_run(digits):
    # SGD at lr 30 blows the loss up to millions (finite) within the first epoch
    res = run(tiny(optimizer="sgd", lr=30.0, momentum=0.9, epochs=3), dataset=digits)
    loss = res.history[-1]["train_loss"]
    assert math.isfinite(loss) and loss > DIVERGENCE_FACTOR * math.log(10)
    assert res.status == "diverged"
    assert len(res.history) == 1 and res.steps == math.ceil(1437 / 32)
    # a large but learning learning rate is not flagged
    assert run(tiny(optimizer="sgd", lr=3.0, momentum=0.9, epochs=1), dataset=digits).status == "ok"


def test_divergence_criterion_is_relative_to_chance_and_first_loss():
    chance = math.log(10)
    assert diverged(float("nan"), 2.3, 10) and diverged(float("inf"), 2.3, 10)
    assert not diverged(DIVERGENCE_FACTOR * chance * 0.999, 0.5, 10)
    assert diverged(DIVERGENCE_FACTOR * chance * 1.001, 0.5, 10)
    # a model that starts far above chance is measured against its own first loss
    assert not diverged(DIVERGENCE_FACTOR * 40.0 * 0.999, 40.0, 10)
    assert diverged(DIVERGENCE_FACTOR * 40.0 * 1.001, 40.0, 10)
    # with no usable reference only non-finite losses count
    assert not diverged(1e30, float("nan"), None)


def test_diagnostics_are_recorded_and_do_not_change_training(digits):
    opts = {"widths": WIDTHS, "dropout": 0.2}  # dropout: diagnostics would consume RNG draws
    plain = run(tiny("fa", epochs=2, model_options=opts), dataset=digits)
    diag = run(tiny("fa", epochs=2, model_options=opts, diagnostics=True), dataset=digits)
    assert [h["train_loss"] for h in diag.history] == [h["train_loss"] for h in plain.history]
    d = diag.history[-1]["diagnostics"]
    assert {"cos/all", "cos/fc1", "cos/fc2", "cos/out", "angle/fc1", "norm_ratio/fc1"} <= set(d)
    assert -1.0 <= d["cos/all"] <= 1.0 and 0.0 <= d["angle/fc1"] <= 180.0
    # the output layer gets the true error under FA: its update is backprop's
    assert d["cos/out"] == pytest.approx(1.0, abs=1e-6)
    assert plain.history[-1]["diagnostics"] == {}


def test_compare_runs_every_rule_on_the_same_setup(digits):
    res = compare(tiny(epochs=1, n_train=300, n_test=100), ["backprop", "fa"])
    assert [r.rule for r in res] == ["backprop", "fa"]
    assert all(r.data["n_train"] == 300 and r.data["n_test"] == 100 for r in res)
    assert res[0].n_params == res[1].n_params and res[0].flops_per_step == res[1].flops_per_step
    with pytest.raises(ConfigError, match="more than once"):
        compare(tiny(), ["fa", "fa"])


# -- configuration errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, words",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"lr": "abc"}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "rmsprop"}, "'sgd', 'adam', 'adamw'"),
        ({"lr_schedule": "linear"}, "cosine"),
        ({"momentum": 1.0}, "momentum"),
        ({"milestones": [0.75, 0.5]}, "milestones"),
        ({"rule": "nope"}, "registered rules"),
        ({"model": "resnet"}, "mlp"),
        ({"data": "cifar"}, "mnist1d"),
        ({"colour": "red"}, "unknown run setting 'colour'"),
        ({"rule": "dfa", "rule_options": {"bogus": 1}}, "no option bogus"),
        ({"epochs": 2, "steps": 5}, "not both"),
        ({"seed": True}, "seed"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_settings_raise_one_sentence_config_errors(changes, words):
    with pytest.raises(ConfigError) as info:
        tiny(**changes)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_check_finds_model_option_errors_before_training(digits):
    with pytest.raises(ConfigError, match="widths"):
        check(tiny(model_options={"widths": "wide"}), digits)
    with pytest.raises(ConfigError, match="n_train"):
        check(tiny(n_train=10**6))


# -- compute helpers ----------------------------------------------------------------------------
def test_count_flops_of_a_matmul_is_2mnk():
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    assert count_flops(torch.mm, a, b) == 2 * 5 * 7 * 3


def test_count_flops_allows_autograd_grad_on_leaf_inputs():
    # the stock FlopCounterMode's module tracking breaks this (inference learning relaxes so)
    layer = torch.nn.Linear(4, 3)

    def relax():
        x = torch.randn(2, 4, requires_grad=True)
        return torch.autograd.grad(layer(x).pow(2).sum(), [x])[0]

    assert count_flops(relax) == 2 * (2 * 2 * 4 * 3)  # forward x·Wᵀ and backward grad·W


def test_measure_steps_interleaves_learners(digits):
    torch.manual_seed(0)
    batch = (digits.x_train[:32], digits.y_train[:32])
    learners = {
        r: rules.get(r).attach(models.build("mlp", digits.input_shape, 10, widths=WIDTHS)) for r in ("backprop", "dfa")
    }
    out = measure_steps(learners, batch, lambda p: torch.optim.SGD(p, lr=0.01), repeats=3, warmup=1)
    assert out["dfa"].flops < out["backprop"].flops
    assert all(len(m.times) == 3 and m.median_time > 0 for m in out.values())
    timer = StepTimer()
    with timer:
        pass
    assert len(timer) == 1 and timer.median(skip=1) is None


# -- checkpoints --------------------------------------------------------------------------------
def _fresh(rule: str, widths=WIDTHS, seed: int = 5):
    torch.manual_seed(123)
    model = models.build("mlp", (1, 8, 8), 10, widths=widths)
    opts = {"seed": seed} if "seed" in rules.rule_class(rule).option_names() else {}
    return model, rules.get(rule, **opts).attach(model)


@pytest.mark.parametrize("rule", ["fa", "dfa", "kp"])
def test_checkpoint_round_trip(tmp_path, digits, rule):
    path = tmp_path / "ckpt" / "model.pt"
    path.parent.mkdir()  # a folder of its own (a missing one is refused), to see no temporary file is left
    opts = {"weight_decay": 1e-3} if rule == "kp" else {}
    res = run(tiny(rule, epochs=1, checkpoint=str(path), **opts), dataset=digits)
    assert res.checkpoint == str(path) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left

    model, learner = _fresh(rule)
    optimizer = torch.optim.Adam(learner.optimizer_parameters())
    meta = checkpoint.load(path, model, learner, optimizer)
    assert meta["rule"] == rule and meta["model_options"] == {"widths": WIDTHS} and meta["num_classes"] == 10
    # the trained weights, not the fresh ones, are in the model: the run's test metrics come back
    again = evaluate(learner, digits.test_loader(1000), torch.device("cpu"))
    assert again["test_accuracy"] == res.final["test_accuracy"]
    assert again["test_loss"] == pytest.approx(res.final["test_loss"], rel=1e-6)
    x = digits.x_test[:64]
    # the feedback matrices come from the checkpoint, not from the fresh rule's own seed:
    # learners built with different rule seeds compute the same update after loading
    saved_model, saved_learner = _fresh(rule, seed=0)
    checkpoint.load(path, saved_model, saved_learner)
    batch = (x, digits.y_test[:64])
    g1, g2 = learner.estimate(batch), saved_learner.estimate(batch)
    assert g1.keys() == g2.keys() and all(torch.equal(g1[k], g2[k]) for k in g1)
    assert optimizer.state_dict()["state"]  # Adam moments restored


def test_checkpoint_shape_mismatch_names_key_and_shapes(tmp_path):
    model, learner = _fresh("fa")
    path = checkpoint.save(tmp_path / "a.pt", model, learner)
    other, other_learner = _fresh("fa", widths=[32, 8])
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path, other, other_learner)
    msg = str(info.value)
    assert "'fc2.weight'" in msg and "(16, 32)" in msg and "(8, 32)" in msg
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # untouched


def test_checkpoint_key_mismatch_and_missing_rule(tmp_path):
    model, learner = _fresh("fa")
    path = checkpoint.save(tmp_path / "a.pt", model, learner)
    torch.manual_seed(0)
    plain = models.build("mlp", (1, 8, 8), 10, widths=WIDTHS)  # no rule attached: no bbp_ keys
    with pytest.raises(CheckpointError, match=r"fc1\.bbp_feedback.*attach the same rule"):
        checkpoint.load(path, plain)


def test_checkpoint_optimizer_mismatch(tmp_path):
    model, learner = _fresh("backprop")
    opt = torch.optim.Adam(model.parameters())
    learner.step((torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])), opt)
    path = checkpoint.save(tmp_path / "a.pt", model, learner, opt)
    model2, learner2 = _fresh("backprop")
    only_some = torch.optim.Adam(list(model2.parameters())[:2])
    with pytest.raises(CheckpointError, match="parameters"):
        checkpoint.load(path, model2, learner2, only_some)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_or_missing_checkpoint(tmp_path, content):
    model, learner = _fresh("backprop")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(bad, model, learner)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        checkpoint.load(tmp_path / "missing.pt", model, learner)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a beyondbp checkpoint"):
        checkpoint.load(tmp_path / "foreign.pt", model, learner)


def test_a_folder_given_as_checkpoint_is_refused_as_a_folder(tmp_path, capsys):
    # it used to say "no checkpoint file at '.'", as if nothing were there
    model, learner = _fresh("backprop")
    with pytest.raises(CheckpointError, match="is a folder; give the checkpoint file"):
        checkpoint.load(tmp_path, model, learner)
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["sample", "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "is a folder" in err and err.count("\n") == 1, err


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model, learner = _fresh("backprop")
    target = tmp_path / "out.pt"
    checkpoint.save(target, model, learner, meta={"note": "first"})
    with pytest.raises(CheckpointError, match="meta"):
        checkpoint.save(target, model, learner, meta={"bad": object()})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        checkpoint.save(target, model, learner, meta={"note": "second"})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["out.pt"]
    assert checkpoint.read(target)["meta"]["note"] == "first"  # the old file is intact


def test_init_from_checkpoint_continues_training(tmp_path, digits):
    path = tmp_path / "m.pt"
    first = run(tiny("fa", epochs=2, checkpoint=str(path)), dataset=digits)
    resumed = run(tiny("fa", epochs=1, init_from=str(path)), dataset=digits)
    fresh = run(tiny("fa", epochs=1), dataset=digits)
    assert resumed.history[0]["train_loss"] < fresh.history[0]["train_loss"]
    assert resumed.history[0]["train_loss"] < first.history[0]["train_loss"]
    with pytest.raises(CheckpointError, match="shape"):
        check(tiny("fa", model_options={"widths": [8, 8]}, init_from=str(path)), digits)


# -- identity and run id ------------------------------------------------------------------------
def ident(**changes) -> RunConfig:
    values = dict(rule="dfa", model="mlp", model_options={"widths": [64, 32]}, data="mnist1d", epochs=3, lr=0.01, seed=7)
    values.update(changes)
    return RunConfig(**values)


def test_the_same_run_written_differently_has_the_same_id():
    base = ident()
    spelled_out = ident(
        rule_options={"seed": 7, "scale": 1.0, "init": "gaussian"},  # the rule seed equals the run seed
        model_options={"widths": (64, 32), "activation": "relu", "dropout": 0.0, "bias": True},
        data_options={"num_samples": 5000, "train_split": 0.8, "length": 40, "seed": 42},
        lr=1e-2, batch_size=64, optimizer="adam", weight_decay=0, lr_schedule="none", epochs=3.0,
    )
    executed_elsewhere = ident(
        threads=4, device="cuda:1", data_dir="/elsewhere", checkpoint="/out/model.pt", diagnostics=True,
        eval_batch_size=17, state="/tmp/run.state", checkpoint_every=5,
        data_options={"cache": False, "cache_dir": "/var/cache/x"},  # where a cache lives is not the data
        momentum=0.5,  # Adam does not read it
    )
    assert spelled_out.run_id == base.run_id == executed_elsewhere.run_id
    assert spelled_out.identity() == base.identity()
    assert {"threads", "device", "state", "checkpoint_every", "data_dir"}.isdisjoint(base.identity())
    assert "cache" not in base.identity()["data_options"]
    assert len(base.run_id) == 16 and int(base.run_id, 16) >= 0


@pytest.mark.parametrize(
    "changes",
    [
        {"lr": 0.02}, {"seed": 8}, {"model_options": {"widths": [64, 16]}}, {"rule_options": {"scale": 2.0}},
        {"rule_options": {"seed": 8}}, {"rule": "fa"}, {"epochs": 4}, {"epochs": None, "steps": 30},
        {"batch_size": 32}, {"n_train": 100}, {"sparsity": "set"}, {"optimizer": "sgd"}, {"optimizer": "adamw"},
        {"lr_schedule": "cosine"}, {"weight_decay": 1e-4}, {"data_options": {"num_samples": 4000}},
        {"model_options": {"widths": [64, 32], "dropout": 0.1}}, {"init_from": "/a/checkpoint.pt"},
    ],
)
def test_every_result_defining_change_changes_the_id(changes):
    assert ident(**changes).run_id != ident().run_id


def test_momentum_is_part_of_the_identity_when_sgd_reads_it():
    assert ident(optimizer="sgd", momentum=0.5).run_id != ident(optimizer="sgd", momentum=0.9).run_id


def test_the_run_id_is_the_same_in_another_process():
    # The id hashes the documented canonical form (beyondbp.training.config's docstring): changing
    # that form changes every id and breaks the link between existing run stores and their runs.
    # This hard-coded value is there to make such a change deliberate.
    expected = "221d6f6974c4b7a3"
    assert ident().run_id == expected
    code = (
        "from beyondbp.training import RunConfig; print(RunConfig(rule='dfa', model='mlp', model_options={'widths': [64, 32]},"
        " data='mnist1d', epochs=3, lr=0.01, seed=7).run_id)"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == expected


def test_results_carry_the_run_id(results):
    assert results["dfa"].run_id == tiny("dfa").run_id != results["backprop"].run_id


# -- evaluation FLOPs ---------------------------------------------------------------------------
def test_eval_flops_are_measured_and_scale_with_the_number_of_evaluations(digits):
    one = run(tiny(epochs=1), dataset=digits)
    three = run(tiny(epochs=3), dataset=digits)
    forward = sum(2 * 360 * i * o for i, o in zip(DIMS, DIMS[1:]))  # one pass over the 360 test samples
    assert one.eval_flops == forward and three.eval_flops == 3 * forward
    steps = run(tiny(epochs=None, steps=50), dataset=digits)  # an epoch (45 steps) and a partial one
    assert len(steps.history) == 2 and steps.eval_flops == 2 * forward


def test_language_model_eval_flops_add_up_per_evaluation(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    values = dict(rule="backprop", model="gpt", model_options=dict(n_layer=1, n_head=2, d_model=16),
                  data="shakespeare-char", data_dir=str(path), context=16, batch_size=8, eval_windows=4)
    three = run(RunConfig(**values, steps=3))
    six = run(RunConfig(**values, steps=6))
    assert len(three.history) == 3 and len(six.history) == 6
    assert three.eval_flops > 0 and six.eval_flops == 2 * three.eval_flops
    # the final evaluation uses every validation window (more than the 4 of the others)
    whole = run(RunConfig(**{**values, "eval_windows": None}, steps=3))
    assert whole.eval_flops > three.eval_flops


@pytest.mark.parametrize("n_train", [96, 100])  # batches that divide the samples exactly, and not
def test_the_run_sees_batches_in_the_order_of_the_shuffling_loader(digits, n_train):
    """Epoch after epoch, the task hands out exactly what ``for x, y in loader`` would: the
    loader's sampler draws once more as an epoch's iterator runs out, and the next epoch's
    order depends on that draw."""
    from beyondbp.training.tasks import ClassificationTask

    ds = digits.subset(n_train, 10)
    config = tiny(batch_size=16, epochs=3)
    task = ClassificationTask(config, ds, torch.device("cpu"))
    seen = []
    for step in range(1, task.total_steps + 1):
        seen.append(task.next_batch()[1])
        task.period_ends(step)
    loader = ds.train_loader(16, shuffle=True, seed=config.seed)
    expected = [y for _ in range(3) for _, y in loader]
    assert len(seen) == len(expected) == task.total_steps
    assert all(torch.equal(a, b) for a, b in zip(seen, expected))



@pytest.mark.parametrize("model, added", [("mlp", {"init": "he-normal"}), ("mlp", {"init": "he-normal", "bias_std": 1.0}),
                                          ("irnn", {"freeze_recurrence": True}), ("irnn", {"freeze_encoder": True})])
def test_options_added_later_keep_stored_run_ids_at_their_default(model, added):
    # mlp's init / bias_std and irnn's freeze_* came after runs were stored: at their defaults they
    # are left out of the identity, so runs stored before keep their ids (the ids of main before
    # they came); set, they change it
    stored = {"mlp": "3d6e7131c5f9ec5d", "irnn": "2ed598ae4478a5da"}[model]
    base = RunConfig(rule="backprop", model=model, data="digits", epochs=1)
    defaults = {"init": "default", "bias_std": 0.0, "freeze_recurrence": False, "freeze_encoder": False}
    explicit = base.replace(model_options={k: defaults[k] for k in added if k != "bias_std"})
    assert base.run_id == explicit.run_id == stored
    assert base.replace(model_options=added).run_id != stored
