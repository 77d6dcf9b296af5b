"""Critical learning periods (issue 26): the ``deep-linear`` model, the ``matrix-completion`` data
set (its target, its observed-entry masks and their switch at a step), a run that trains on it
with its own loss, resuming across the switch, a study spec over deficit length × depth × seed,
and bad input refused in one sentence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint, data, models
from beyondbp.cli import main
from beyondbp.data.matrix import masked_half_mse
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, load_dataset, run

#: 20×20 rank-2 target, 100 then 200 observed entries, switch after 100 steps, 400 steps in all.
TINY = {"size": 20, "rank": 2, "entries": 200, "deficit_entries": 100, "deficit_steps": 100,
        "recovery_steps": 300, "eval_every": 100}


def tiny(depth: int, **changes) -> RunConfig:
    values = dict(rule="backprop", model="deep-linear", model_options={"depth": depth, "init_scale": 0.01},
                  data="matrix-completion", data_options=dict(TINY), optimizer="sgd", lr=1.0, momentum=0.0, seed=1)
    values.update(changes)
    return RunConfig(**values)


# -- the data set -----------------------------------------------------------------------------------
def test_matrix_completion_is_the_authors_target_and_masks():
    ds = data.load("matrix-completion", seed=3)
    assert ds.target.shape == (100, 100)
    sv = torch.linalg.svdvals(ds.target.double())
    assert float(sv[4]) > 1.0 and float(sv[5]) < 1e-4 * float(sv[0])  # rank 5 (up to float32 rounding)
    assert math.isclose(float(torch.linalg.matrix_norm(ds.target)), 100.0, rel_tol=1e-5)  # Frobenius norm = size
    assert int(ds.mask.sum()) == 1500 and int(ds.deficit_mask.sum()) == 1000
    assert not bool((ds.deficit_mask & ~ds.mask).any())  # nested: the deficit's entries are among the 1500
    apart = data.load("matrix-completion", seed=3, nested=False)
    assert int(apart.deficit_mask.sum()) == 1000 and bool((apart.deficit_mask & ~apart.mask).any())


def test_matrix_completion_is_deterministic_by_seed():
    a, b, c = (data.load("matrix-completion", size=30, entries=300, deficit_entries=100, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.target, b.target) and torch.equal(a.mask, b.mask) and torch.equal(a.deficit_mask, b.deficit_mask)
    assert not torch.equal(a.target, c.target) and not torch.equal(a.mask, c.mask)
    state = torch.random.get_rng_state()
    data.load("matrix-completion", seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is not touched


def test_observed_entries_switch_at_the_step():
    ds = data.load("matrix-completion", **TINY, seed=0)
    x, before = ds.batch(99)
    _, after = ds.batch(100)
    assert torch.equal(x, torch.eye(20))
    assert int((~before.isnan()).sum()) == 100 and int((~after.isnan()).sum()) == 200
    assert torch.equal(~before.isnan(), ds.deficit_mask) and torch.equal(~after.isnan(), ds.mask)
    assert torch.equal(after[ds.mask], ds.target[ds.mask])
    assert [ds.step_info(s)["observed"] for s in (100, 101)] == [100, 200]  # after 100 steps / after 101
    no_deficit = data.load("matrix-completion", **{**TINY, "deficit_steps": 0}, seed=0)
    assert int((~no_deficit.batch(0)[1].isnan()).sum()) == 200


def test_masked_loss_is_half_mse_over_observed_entries_only():
    target = torch.tensor([[1.0, float("nan")], [3.0, float("nan")]])
    output = torch.tensor([[2.0, 100.0], [1.0, -50.0]], requires_grad=True)
    loss = masked_half_mse(output, target)
    assert math.isclose(float(loss.detach()), 0.5 * (1.0 + 4.0) / 2)
    loss.backward()
    assert torch.equal(output.grad, torch.tensor([[0.5, 0.0], [-1.0, 0.0]]))


# -- the model --------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_deep_linear_is_bias_free_with_the_authors_init_scale(depth):
    torch.manual_seed(depth)
    net = models.build("deep-linear", (100,), 100, depth=depth)
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == depth and all(m.bias is None for m in layers)
    assert all(m.weight.shape == (100, 100) for m in layers)
    assert sum(p.numel() for p in net.parameters()) == depth * 100 * 100
    for m in layers:  # each entry N(0, init_scale^(2/depth) / n)
        assert math.isclose(float(m.weight.detach().std()), 0.001 ** (1 / depth) / 10, rel_tol=0.05)
    e2e = torch.linalg.matrix_norm(net.end_to_end())
    assert 0.8 <= float(e2e) / (0.001 * 10) <= 1.2  # end-to-end Frobenius norm ≈ 0.001·√n, as the authors assert
    x = torch.eye(100)
    assert torch.allclose(net(x), net.end_to_end().T)  # identity inputs read out the end-to-end map


# -- runs ---------------------------------------------------------------------------------------------
def test_a_run_switches_masks_at_the_step_and_learns_with_margin():
    shallow, deep = run(tiny(1)), run(tiny(2))
    for result in (shallow, deep):
        assert [h["step"] for h in result.history] == [100, 200, 300, 400]
        assert [h["observed"] for h in result.history] == [100, 200, 200, 200]
        assert result.steps == 400 and result.status == "ok"
    # depth 1 only fits the observed entries: its test loss stays near the unobserved fraction (0.5)
    assert shallow.final["test_loss"] > 0.35
    # depth 2 completes the low-rank matrix: from ≈ 1 down to well under a third of depth 1's loss
    assert deep.final["test_loss"] < 0.3 * shallow.final["test_loss"]
    assert deep.history[-1]["unobserved_loss"] < 0.3


def test_resume_across_the_switch_equals_the_uninterrupted_run(tmp_path: Path):
    class Killed(Exception):
        pass

    def kill_at(step):
        def progress(event, info):
            if event == "step" and info["step"] == step:
                raise Killed

        return progress

    whole = run(tiny(2, checkpoint=str(tmp_path / "whole.pt")))
    config = tiny(2, checkpoint=str(tmp_path / "resumed.pt"), state=str(tmp_path / "state.pt"), checkpoint_every=60)
    with pytest.raises(Killed):
        run(config, kill_at(150))  # states written at steps 60 and 120 (the switch is at 100)
    resumed = run(config)
    assert resumed.resumed_from_step == 120
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in whole.history]
    assert resumed.final["test_loss"] == whole.final["test_loss"]
    a, b = checkpoint.read(tmp_path / "whole.pt")["model"], checkpoint.read(tmp_path / "resumed.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and from a state before the switch, resumed across it
    config = tiny(2, checkpoint=str(tmp_path / "early.pt"), state=str(tmp_path / "state2.pt"), checkpoint_every=70)
    with pytest.raises(Killed):
        run(config, kill_at(90))
    early = run(config)
    assert early.resumed_from_step == 70
    assert [h["test_loss"] for h in early.history] == [h["test_loss"] for h in whole.history]
    c = checkpoint.read(tmp_path / "early.pt")["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_the_data_seed_follows_the_run_seed_unless_given():
    one, two = load_dataset(tiny(2, seed=1)), load_dataset(tiny(2, seed=2))
    assert not torch.equal(one.target, two.target)
    fixed = load_dataset(tiny(2, seed=2, data_options={**TINY, "seed": 1}))
    assert torch.equal(fixed.target, one.target)
    assert tiny(2).identity()["data_options"]["seed"] is None  # the run's seed is in the identity already


def test_budget_is_the_schedule_unless_steps_are_given():
    assert run(tiny(2, data_options={**TINY, "recovery_steps": 50})).steps == 150
    assert run(tiny(2, steps=30)).steps == 30
    with pytest.raises(ConfigError, match="epochs = 1"):
        tiny(2, epochs=3)


def test_a_spec_sweeps_deficit_length_depth_and_seed(tmp_path: Path):
    from beyondbp.study.spec import load_spec

    path = tmp_path / "cp.toml"
    path.write_text(
        '[study]\nname = "cp"\n[base]\nmodel = "deep-linear"\ndata = "matrix-completion"\noptimizer = "sgd"\n'
        'lr = 1.0\nmomentum = 0.0\ndata_options = {size = 20, rank = 2, entries = 200, deficit_entries = 100, '
        'recovery_steps = 300}\n[axes]\nrule = ["backprop", "fa"]\nmodel_options = [{depth = 1}, {depth = 3}]\n'
        'data_options = [{deficit_steps = 0}, {deficit_steps = 500}]\nseed = [1, 2, 3]\n'
    )
    runs = list(load_spec(path).runs())
    assert len(runs) == 2 * 2 * 2 * 3 and len({r.id for r in runs}) == len(runs)
    assert all(r.id == r.config.run_id for r in runs)
    steps = {r.config.data_options["deficit_steps"]: r.config.epochs for r in runs}
    assert steps == {0: 1, 500: 1}


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--steps", "2", "--model-opt", "depth=0"], "depth"),
    (["--steps", "2", "--data-opt", "deficit_steps=-5"], "deficit_steps"),
    (["--steps", "2", "--data-opt", "entries=20000"], "at most size²"),
    (["--steps", "2", "--data-opt", "size=20", "--data-opt", "entries=300", "--data-opt", "deficit_entries=400"],
     "deficit_entries"),
    (["--epochs", "4"], "epochs = 1"),
])
def test_bad_input_is_one_sentence_and_exit_2(capsys, args, words):
    with pytest.raises(SystemExit) as info:
        main(["train", "--rule", "backprop", "--model", "deep-linear", "--data", "matrix-completion", *args])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    text = " ".join(err.split())
    assert words in text and "Traceback" not in err, err


def test_compare_gives_each_seed_its_own_matrix():
    from beyondbp import compare

    results = compare(tiny(2, steps=5), ["backprop"], seeds=[1, 2])
    targets = [r.data["seed"] for r in results]
    assert targets == [1, 2]
    alone = run(tiny(2, steps=5, seed=2))
    assert results[1].final["test_loss"] == alone.final["test_loss"]
