"""``beyondbp analyze`` and what it needs: studies that keep their models, networks rebuilt from
them, hidden-layer responses, the whole analysis end to end, and bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp.cli import main
from beyondbp.errors import ConfigError
from beyondbp.run.tasks import evaluate
from beyondbp.study.representations import find_networks, layer_responses, load_network
from beyondbp.study.runner import model_dir, run_study, study_records
from beyondbp.study.spec import load_spec
from beyondbp.run.loop import load_dataset

BASE = """
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 600}
model_options = {widths = [16, 12]}
batch_size = 32
steps = 40
"""


def write_spec(path: Path, axes: str, execution: str = "keep_models = true", name: str = "tiny") -> Path:
    path.write_text(f'[study]\nname = "{name}"\n\n[base]\n{BASE}\n[axes]\n{axes}\n\n[execution]\n{execution}\n')
    return path


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 3-rule x 2-seed study that kept its models."""
    folder = tmp_path_factory.mktemp("study")
    spec = write_spec(folder / "s.toml", 'rule = ["backprop", "dfa", "softhebb"]\nseed = [0, 1]')
    summary = run_study(load_spec(spec), workers=1)
    assert summary["counts"]["done"] == 6
    return spec


def test_keep_models_saves_every_runs_final_model(study):
    spec = load_spec(study)
    records = study_records(spec)
    models = model_dir(spec.path.with_suffix(".db"))
    assert sorted(p.stem for p in models.glob("*.pt")) == sorted(r["id"] for r in records)
    networks = find_networks([study])
    assert [n.label for n in networks] == ["backprop", "backprop", "dfa", "dfa", "softhebb", "softhebb"]
    assert sorted(n.seed for n in networks) == [0, 0, 0, 1, 1, 1]
    # the saved model is the final one: rebuilt, it scores exactly the run's test accuracy
    by_id = {r["id"]: r for r in records}
    for net in networks[:4]:
        dataset = load_dataset(net.config)
        learner = load_network(net, dataset)
        loader = [(dataset.x_test, dataset.y_test)]
        got = evaluate(learner, loader, torch.device("cpu"))
        assert got["test_accuracy"] == pytest.approx(by_id[net.id]["result"]["final"]["test_accuracy"], abs=1e-12)


def test_keep_models_must_be_a_boolean_and_checkpoint_points_to_it(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.toml", 'seed = [0, 1]', execution="keep_models = 1")
    code, _, err = cli(capsys, "study", "check", spec)
    assert code == 2 and "keep_models: must be true or false" in err and not (tmp_path / "s.db").exists()
    spec = write_spec(tmp_path / "s.toml", 'seed = [0, 1]', execution='checkpoint = "x.pt"')
    code, _, err = cli(capsys, "study", "check", spec)
    assert code == 2 and "keep_models = true" in err


def test_layer_responses_are_the_activations_and_leave_the_model_alone(study):
    net = find_networks([study])[0]
    learner = load_network(net, load_dataset(net.config))
    model = learner.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(7, 40)
    out = layer_responses(learner, x)
    assert [tuple(o.shape) for o in out] == [(7, 16), (7, 12)] and all(o.dtype == torch.float64 for o in out)
    with torch.no_grad():
        h1 = torch.relu(model.fc1(x))
        h2 = torch.relu(model.fc2(h1))
    assert torch.equal(out[0], h1.double()) and torch.equal(out[1], h2.double())
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
