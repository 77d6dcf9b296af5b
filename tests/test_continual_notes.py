"""GPM on task 0, and the notes a continual run carries when its numbers say little.

A user saw ``gpm`` under ``fa`` on ``permuted-mnist1d`` with a 32-wide MLP stay near chance on
the first task. GPM stores nothing before task 0 ends, so task 0 must train exactly as without
it (tested bit for bit below); the cause was the recipe (63 SGD steps per task on MNIST-1D's
4,000 samples, where FA learns slowly), which every method shares. The run now says so in its
``notes``, and GPM says when its bases have filled a layer, which the same narrow network hits.
"""

from __future__ import annotations

import json

import pytest
import torch

from beyondbp import continual as C
from beyondbp.continual.metrics import LEARNT_LITTLE, first_task_note
from beyondbp.continual.projection import GradientProjector, projectable_layers
from beyondbp.models import build
from beyondbp.reporting.continual import grouped_notes, markdown_table

NARROW = {"widths": [32, 32], "bias": False}


@pytest.fixture(scope="module")
def mnist1d2():
    return C.build_sequence("permuted-mnist1d:2", train_size=1000, test_size=500, seed=0)


def test_gpm_projection_is_the_identity_before_any_basis_is_stored():
    net = build("mlp", (40,), 10, widths=(32, 32), bias=True)
    net(torch.randn(8, 40)).square().sum().backward()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    meth = C.make_method("gpm")
    meth.setup(net, None, None, 0)
    meth.before_step()  # task 0: no basis yet
    for n, p in net.named_parameters():
        assert torch.equal(p.grad, before[n]), n
    assert GradientProjector(projectable_layers(net)).bases == {}
    meth.close()


def test_gpm_trains_task_0_exactly_as_finetuning_under_fa(mnist1d2):
    """The user's setting (fa, 32-wide, one epoch): task 0's row is bit-identical, so a task 0
    near chance is the recipe's, not GPM's."""
    kw = dict(rule="fa", model_options=NARROW, seed=0)
    ft = C.run_method(mnist1d2, "finetune", **kw)
    gpm = C.run_method(mnist1d2, "gpm", **kw)
    assert gpm["matrix"][0] == ft["matrix"][0]
    assert gpm["subspace_sizes"]["fc1"] > 0  # a basis was stored after task 0


def test_a_barely_learnt_first_task_is_noted(mnist1d2):
    short = C.run_method(mnist1d2, "gpm", rule="fa", model_options=NARROW, seed=0)  # 16 steps per task
    assert short["steps_per_task"] == 16
    assert short["matrix"][0][0] < 10 + LEARNT_LITTLE * 90
    assert any(n.startswith("task 0 reached only") and "16 optimizer steps" in n for n in short["notes"])
    # the same network trained longer learns task 0 far above chance: no such note
    long = C.run_method(mnist1d2, "finetune", rule="fa", model_options={"widths": [32], "bias": True},
                        epochs_per_task=40, lr=0.3, seed=0)
    assert long["matrix"][0][0] > 10 + LEARNT_LITTLE * 90 + 6, long["matrix"][0][0]
    assert not any(n.startswith("task 0") for n in long["notes"])


def test_first_task_note_threshold_and_chance():
    assert first_task_note([[23.4, 0], [0, 0]], 10.0) is not None
    assert first_task_note([[23.6, 0], [0, 0]], 10.0) is None
    assert first_task_note([[float("nan"), 0], [0, 0]], 10.0) is None  # multitask: no row 0
    assert first_task_note([[56.0, 0], [0, 0]], 50.0) is not None  # a 2-way masked task: chance 50 %
    assert first_task_note([[80.0, 0], [0, 0]], 50.0) is None


def test_gpm_notes_a_layer_its_bases_fill(mnist1d2):
    narrow = C.run_method(mnist1d2, "gpm", rule="fa", model_options=NARROW, seed=0)
    fill = [n for n in narrow["notes"] if "GPM bases" in n]
    assert len(fill) == 1 and "after task 0" in fill[0] and "fc2's 32" in fill[0]
    wide = C.run_method(mnist1d2, "gpm", rule="fa", model_options={"widths": [256, 256], "bias": False}, seed=0)
    assert not any("GPM bases" in n for n in wide["notes"]), wide["subspace_sizes"]


def test_notes_are_grouped_in_table_md_and_printed(tmp_path, capsys):
    from beyondbp.cli import main

    out = tmp_path / "res"
    with pytest.raises(SystemExit) as exc:
        main(["continual", "--tasks", "permuted-mnist1d:2", "--methods", "finetune,gpm", "--rule", "fa",
              "--model-opt", "widths=[32,32]", "--train-size", "1000", "--test-size", "500", "--out", str(out),
              "--quiet"])
    assert exc.value.code == 0
    stdout = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "note (finetune/fa, gpm/fa): task 0 reached only" in stdout
    assert "note (gpm/fa): after task 0 the GPM bases span" in stdout
    data = json.loads((out / "results.json").read_text())
    assert all(r["notes"] for r in data)
    table = (out / "table.md").read_text()
    assert "## Notes" in table and "* finetune/fa, gpm/fa: task 0 reached only" in table
    results = [{"method": "a", "rule": "fa", "notes": ["x"]}, {"method": "b", "rule": "fa", "notes": ["x", "y"]}]
    assert grouped_notes(results) == [("x", ["a/fa", "b/fa"]), ("y", ["b/fa"])]
    plain = [{"method": "a", "rule": "fa", "acc": 1.0, "bwt": 0.0, "fwt": 0.0, "seconds": 0, "matrix": [[1.0]]}]
    assert "Notes" not in markdown_table(plain, "t")
