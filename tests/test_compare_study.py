"""``compare`` is the one-axis study over rules: same planner, same run ids as a spec."""

from __future__ import annotations

import pytest

from beyondbp import compare
from beyondbp.errors import ConfigError
from beyondbp.study.spec import load_spec, plan_axis
from beyondbp.training import RunConfig

BASE = dict(model="mlp", model_options={"widths": [8]}, data="mnist1d",
            data_options={"num_samples": 200}, steps=3, batch_size=16, lr=3e-3, seed=2)


def test_compare_runs_the_one_axis_study_a_spec_describes(tmp_path):
    config = RunConfig(**BASE)
    results = compare(config, ["backprop", "fa"], {"fa": {"init": "xavier_normal"}})
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[study]\nname = "c"\n[base]\nmodel = "mlp"\nmodel_options = {widths = [8]}\ndata = "mnist1d"\n'
        'data_options = {num_samples = 200}\nsteps = 3\nbatch_size = 16\nlr = 3e-3\nseed = 2\n'
        '[axes]\nrule = ["backprop", {name = "fa", options = {init = "xavier_normal"}}]\n'
    )
    planned = load_spec(spec).runs()
    assert [r.run_id for r in results] == [p.id for p in planned]
    assert [r.rule for r in results] == ["backprop", "fa"] and results[1].rule_options["init"] == "xavier_normal"
    assert [p.id for p in plan_axis(config, "rule", ["backprop", {"name": "fa", "options": {"init": "xavier_normal"}}])] == [
        p.id for p in planned
    ]


def test_plan_axis_keeps_execution_settings_out_of_the_ids_and_names_bad_values():
    config = RunConfig(**BASE)
    fast = config.replace(threads=2, eval_batch_size=50)
    assert [p.id for p in plan_axis(config, "lr", [1e-3, 1e-2])] == [p.id for p in plan_axis(fast, "lr", [1e-3, 1e-2])]
    assert all(p.config.threads == 2 for p in plan_axis(fast, "lr", [1e-3, 1e-2]))
    with pytest.raises(ConfigError, match=r"lr\[1\]"):
        plan_axis(config, "lr", [1e-3, -1.0])
