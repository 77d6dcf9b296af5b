"""The multi-pathway critical period (Kleinman, Achille & Soatto, ICLR 2024, their ``multipath/``):
``deep-linear`` with ``pathways``, the ``hierarchy`` set, the run layer's learning gate and the
evaluation hook that reads the model."""

from __future__ import annotations

import math

import pytest
import torch

from beyondbp import data, models
from beyondbp.cli import main
from beyondbp.data.hierarchy import Hierarchy, HierarchyOptions, hierarchy_target
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, prepare, run
from beyondbp.training.tasks import make_task

TINY = dict(model="deep-linear", model_options=dict(depth=2, width=8, pathways=2), data="hierarchy",
            optimizer="sgd", lr=0.05, momentum=0.0, epochs=1)


def _tiny(**changes):
    config = {**TINY, "data_options": dict(train_steps=12, deficit_start=4, deficit_length=4, eval_every=1)}
    config.update(changes)
    return RunConfig(**config)


# -- the data set -------------------------------------------------------------------------------------
def test_hierarchy_target_is_the_tree_with_its_exact_singular_values():
    y = hierarchy_target()
    assert y.shape == (8, 15) and set(y.unique().tolist()) == {0.0, 1.0}
    assert y[:, 0].tolist() == [1.0] * 8 and y.sum(dim=0)[1:3].tolist() == [4.0, 4.0]
    assert y.sum(dim=0)[3:7].tolist() == [2.0] * 4 and torch.equal(y[:, 7:], torch.eye(8))
    expected = torch.tensor([15, 7, 3, 3, 1, 1, 1, 1], dtype=torch.float64).sqrt()
    assert torch.allclose(torch.linalg.svdvals(y.double()), expected, atol=1e-12)
    ds = data.load("hierarchy")
    assert isinstance(ds, Hierarchy) and ds.input_shape == (8,) and ds.num_classes == 15
    assert torch.allclose(ds.s.double() * 8, expected, atol=1e-5)
    x, target = ds.batch(0)
    assert torch.equal(x, torch.eye(8)) and torch.equal(target, y)
    assert [ds.frozen(k) for k in (0, 149, 150)] == [("paths.b",), ("paths.b",), ()]


def test_aligned_init_gives_each_pathway_the_same_small_task_aligned_map():
    model = models.build("deep-linear", (8,), 15, depth=4, width=100, pathways=2)
    ds = data.load("hierarchy", seed=3)
    ds.initialise(model)
    maps = model.pathway_maps()
    assert set(maps) == {"a", "b"} and torch.equal(maps["a"], maps["b"])
    k = ds.u.T @ maps["a"] @ ds.v  # diagonal in the task's modes, ≈ 0.01 each
    assert torch.allclose(k, torch.diag(torch.diagonal(k)), atol=1e-6)
    assert torch.all((torch.diagonal(k) > 0.006) & (torch.diagonal(k) < 0.014))
    assert torch.all(torch.diagonal(k)[:-1] >= torch.diagonal(k)[1:])  # sorted, as the authors' kDiagInit


# -- pathways = 1 is today's model ---------------------------------------------------------------------
def test_one_pathway_is_todays_model_same_id_and_same_run():
    base = dict(rule="backprop", model="deep-linear", data="matrix-completion", seed=0, steps=5,
                data_options=dict(size=12, rank=2, entries=100, deficit_entries=60, deficit_steps=2, eval_every=5))
    plain = RunConfig(**base, model_options={"depth": 2})
    one = RunConfig(**base, model_options={"depth": 2, "pathways": 1})
    assert one.run_id == plain.run_id
    assert RunConfig(rule="backprop", model="deep-linear", data="matrix-completion", model_options={"depth": 2},
                     seed=0).run_id == "f0e20daa2750d1c9"  # the id this config had before `pathways` existed
    a, b = run(plain), run(one)
    assert a.final["test_loss"] == b.final["test_loss"] and a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    torch.manual_seed(0)
    m1 = models.build("deep-linear", (6,), 4, depth=3)
    torch.manual_seed(0)
    m2 = models.build("deep-linear", (6,), 4, depth=3, pathways=1)
    assert list(m1.state_dict()) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(torch.equal(m1.state_dict()[k], m2.state_dict()[k]) for k in m1.state_dict())
    assert RunConfig(**base, model_options={"depth": 2, "pathways": 2}).run_id != plain.run_id


# -- the learning gate ----------------------------------------------------------------------------------
class _Recording(Hierarchy):
    """The hierarchy set that also keeps a copy of every parameter at each evaluation (with
    ``eval_every=1`` the k-th one follows k steps)."""

    def __init__(self, options: HierarchyOptions) -> None:
        super().__init__(options)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def measure(self, model) -> dict:
        self.snapshots[len(self.snapshots) + 1] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return super().measure(model)


@pytest.mark.parametrize("rule, optimizer, extra", [
    ("backprop", "sgd", {}), ("fa", "sgd", {}), ("dfa", "sgd", {}), ("kp", "sgd", {}),
    ("backprop", "sgd", {"momentum": 0.9, "weight_decay": 0.01}), ("backprop", "adam", {"lr": 0.01}),
])
def test_gate_freezes_pathway_b_in_the_window_and_only_there(rule, optimizer, extra):
    config = _tiny(rule=rule, optimizer=optimizer, seed=1, **extra)
    ds = _Recording(HierarchyOptions(**config.data_options, seed=1))
    result = run(config, dataset=ds)
    assert result.status == "ok"
    snap = ds.snapshots  # after k steps; steps 4..7 (0-based) are frozen: snapshots 4 → 8
    b_names = [n for n in snap[1] if n.startswith("paths.b.")]
    a_names = [n for n in snap[1] if n.startswith("paths.a.")]
    assert len(b_names) >= 2 and len(a_names) >= 2
    for k in range(4, 8):
        assert all(torch.equal(snap[k][n], snap[k + 1][n]) for n in b_names), (rule, k)
        assert any(not torch.equal(snap[k][n], snap[k + 1][n]) for n in a_names), (rule, k)
    for k in (1, 2, 3, 8, 9, 10):
        assert any(not torch.equal(snap[k][n], snap[k + 1][n]) for n in b_names), (rule, k)
    assert [e["deficit"] for e in result.history][:10] == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]


def test_gate_refuses_a_model_without_the_gated_parameters():
    with pytest.raises(ConfigError, match="paths.b"):
        run(_tiny(rule="backprop", model_options=dict(depth=2, width=8)))



def test_gate_names_the_pathways_the_model_has_when_a_missing_one_is_frozen():
    config = _tiny(rule="backprop", data_options=dict(train_steps=12, deficit_start=4, deficit_length=4, gated="paths.c"))
    with pytest.raises(ConfigError) as info:
        run(config)
    text = str(info.value)
    assert "'paths.a', 'paths.b'" in text and "pathways >= 3" in text and "pathways >= 2" not in text
    with pytest.raises(ConfigError) as info:  # a single stack: no pathways at all
        run(_tiny(rule="backprop", model_options=dict(depth=2, width=8)))
    assert "'fc1', 'fc2'" in str(info.value) and "pathways >= 2" in str(info.value)
    with pytest.raises(ConfigError) as info:  # a single stack asked for pathway c: three are needed, not two
        run(_tiny(rule="backprop", model_options=dict(depth=2, width=8),
                  data_options=dict(train_steps=12, deficit_start=4, deficit_length=4, gated="paths.c")))
    assert "'fc1', 'fc2'" in str(info.value) and "pathways >= 3" in str(info.value)
    assert "pathways >= 2" not in str(info.value)

# -- the evaluation hook ----------------------------------------------------------------------------------
def test_measuring_the_pathways_changes_neither_weights_nor_rng_nor_the_run():
    config = _tiny(rule="fa", seed=2)
    setup = prepare(config)
    task = make_task(config, setup.dataset, setup.device)
    task.learner = setup.learner
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    rng = torch.get_rng_state()
    head = task.evaluate(0, 0, math.nan)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, before[n]) for n, p in setup.model.named_parameters())
    assert {"K_a_0", "K_b_7", "mass_a", "norm_b"} <= set(head) and head["share_b"] == pytest.approx(0.5)
    setup.learner.detach()
    often = run(config)  # an evaluation after every step …
    rarely = run(config.replace(data_options={**config.data_options, "eval_every": 100}))  # … or at the switches
    assert often.final["share_b"] == rarely.final["share_b"] and often.final["train_loss"] == pytest.approx(
        often.history[-1]["train_loss"])
    assert often.history[-1]["K_b_0"] == rarely.history[-1]["K_b_0"]


# -- learning: the critical period under backprop -------------------------------------------------------
def test_an_early_deficit_leaves_pathway_b_without_the_task_and_a_late_one_does_not():
    """The authors' setting (depth 4, width 100, aligned init 0.01, SGD lr 0.01, 1000 steps, a
    150-step deficit): pathway b ends with about half the task's modes without a deficit or with
    a late one, and almost none after an early one."""
    share = {}
    for start in (None, 0, 750):
        opts = {"deficit_length": 0} if start is None else {"deficit_start": start}
        result = run(dict(rule="backprop", model="deep-linear", model_options=dict(depth=4, width=100, pathways=2),
                          data="hierarchy", data_options={**opts, "eval_every": 500}, optimizer="sgd", lr=0.01,
                          momentum=0.0, epochs=1, seed=0))
        assert result.final["test_loss"] < 1e-3
        share[start] = result.final["share_b"]
    assert abs(share[None] - 0.5) < 0.02 and abs(share[750] - 0.5) < 0.05  # measured: 0.500, 0.500
    assert share[0] < 0.1 and share[None] - share[0] > 0.35  # measured: 0.025


# -- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--data-opt", "deficit_start=-1"], "deficit_start"),
    (["--data-opt", "deficit_start=900"], "train_steps"),
    (["--steps", "100"], "100 steps"),
    (["--model-opt", "pathways=0"], "pathways"),
    (["--model-opt", "pathways=1"], "paths.b"),
    (["--data-opt", "deficit_length=-3"], "deficit_length"),
])
def test_bad_input_is_one_sentence_and_exit_2(capsys, args, words):
    base = ["--model-opt", "depth=2", "--model-opt", "width=8"]
    if not any("pathways" in a for a in args):
        base += ["--model-opt", "pathways=2"]
    with pytest.raises(SystemExit) as info:
        main(["train", "--rule", "backprop", "--model", "deep-linear", "--data", "hierarchy", *base, *args])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    text = " ".join(err.split())
    assert words in text and "Traceback" not in err, err


def test_gate_stops_a_run_whose_rule_moves_a_frozen_parameter_outside_the_optimizer():
    from beyondbp.training.gate import LearningGate, matches

    assert matches("paths.b.fc1.weight", "paths.b") and not matches("paths.bb.fc1.weight", "paths.b")
    model = models.build("deep-linear", (8,), 15, depth=2, width=8, pathways=2)
    gate = LearningGate(model, ("paths.b",), "data set 'hierarchy'")
    stepper = gate.around(torch.optim.SGD(model.parameters(), lr=0.1), ("paths.b",))
    model(torch.eye(8)).sum().backward()
    stepper.step()
    stepper.check("backprop")  # the optimizer skipped pathway b: nothing to report
    with torch.no_grad():
        model.paths.b.fc1.weight.add_(1.0)  # as a Hebbian rule writing weights directly would
    with pytest.raises(ConfigError, match="outside the optimizer"):
        stepper.check("softhebb")


def test_set_rewiring_during_a_deficit_is_refused_up_front_naming_set_not_the_rule():
    """SET's prune-and-regrow would change the frozen pathway's weights outside the optimizer;
    the run (and ``check``) refuses it before training, naming SET and what to do, not the rule."""
    from beyondbp.training import check

    config = _tiny(rule="backprop", sparsity="set", epsilon=2, zeta=0.3)
    for attempt in (check, run):
        with pytest.raises(ConfigError, match="zeta") as info:
            attempt(config)
        assert "sparsity 'set'" in str(info.value) and "rule 'backprop'" not in str(info.value)
    static = run(config.replace(zeta=0.0))  # static sparse: no rewiring, the gate holds
    assert static.status == "ok"


def test_static_set_under_the_gate_hooks_the_optimizer_once_and_keeps_pathway_b_still():
    """The gate hands the rule a new wrapper at every frozen step; SET must hook the optimizer
    itself once (not once per wrapper: hooks piling up, each step re-masking once per step so far)."""
    from beyondbp.training.gate import make_gate
    from beyondbp.training.warmstart import start_optimizer

    config = _tiny(rule="backprop", sparsity="set", epsilon=2, zeta=0.0)
    setup = prepare(config)
    optimizer, _ = start_optimizer(config, setup.model, setup.learner)
    gate = make_gate(setup.dataset, setup.model, "data set 'hierarchy'", config)
    batch = setup.dataset.batch(0)
    b = setup.model.paths.b.fc1.weight
    for k in range(12):
        stepper = gate.around(optimizer, ("paths.b",)) if 4 <= k < 8 else optimizer
        before = b.detach().clone()
        setup.learner.step(batch, stepper)
        assert torch.equal(b, before) == (4 <= k < 8), k
    assert len(optimizer._optimizer_step_pre_hooks) == 1 and len(optimizer._optimizer_step_post_hooks) == 1
