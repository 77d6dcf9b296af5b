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
from beyondbp.study.inspection import study_records
from beyondbp.study.runner import model_dir, run_study
from beyondbp.study.similarity import find_networks, layer_responses, load_network
from beyondbp.study.spec import load_spec
from beyondbp.training.loop import load_dataset
from beyondbp.training.tasks import evaluate

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


def _models(study: Path) -> list[Path]:
    return sorted(model_dir(study.with_suffix(".db")).glob("*.pt"))


FAST = ("--stimuli", "60", "--repeats", "3", "--bootstrap", "40", "--snr-batches", "2", "--quiet")


def test_analyze_a_study_end_to_end(study, tmp_path, capsys):
    from beyondbp.analysis.representations import MEASURES, linear_cka

    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "analyze", study, "--out", out, *FAST)
    assert code == 0, err
    assert "identification accuracy" in stdout and "representations.md" in stdout
    result = json.loads((out / "representations.json").read_text())
    assert [n["rule"] for n in result["networks"]] == ["backprop"] * 2 + ["dfa"] * 2 + ["softhebb"] * 2
    assert result["layers"] == ["layer1", "layer2"]
    assert set(result["distances"]) == set(MEASURES) == set(result["identification"])
    for per_layer in result["identification"].values():
        for r in per_layer.values():
            assert 0.0 <= r["nn"]["accuracy"] <= 1.0
            assert r["nn"]["chance"] == pytest.approx(1 / 5)  # one other network of the same rule among 5
    assert set(result["gradient_snr_networks"]) == {n["id"] for n in result["networks"]}
    assert set(result["gradient_snr"]) == {"backprop", "dfa", "softhebb"}
    assert (out / "representations.md").read_text().count("|") > 20
    assert any(p.suffix == ".png" for p in out.iterdir())
    # the pipeline's numbers are the measure's: CKA of the first two networks recomputed by hand
    nets = {n.id: n for n in find_networks([study])}
    ids = [n["id"] for n in result["networks"]]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    first = nets[ids[0]]
    dataset = load_dataset(first.config)
    x = dataset.x_test[torch.randperm(len(dataset.x_test), generator=g)[:60]].float()
    r0 = layer_responses(load_network(nets[ids[0]], dataset), x)[1].numpy()
    r1 = layer_responses(load_network(nets[ids[1]], dataset), x)[1].numpy()
    d = np.asarray(result["distances"]["cka"]["layer2"])
    assert d[0, 1] == pytest.approx(1 - linear_cka(r0, r1), abs=1e-9)


def test_analyze_leaves_the_global_random_state_alone(study):
    import random

    from beyondbp.study.similarity import analyze_networks

    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    analyze_networks(find_networks([study]), stimuli=40, repeats=2, bootstrap=10, snr_batches=2, measures=["cka", "stochastic"])
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_forward_forward_networks_are_read_through_the_rule(tmp_path):
    spec = write_spec(tmp_path / "ff.toml", 'rule = ["ff"]\nseed = [0]', name="ff")
    run_study(load_spec(spec), workers=1)
    net = find_networks([spec])[0]
    learner = load_network(net, load_dataset(net.config))
    x = torch.randn(5, 40)
    out = layer_responses(learner, x)
    with torch.no_grad():
        expected = learner.layer_outputs(learner.embed(x, None))
    assert len(out) == 2 and all(torch.equal(a, b.double()) for a, b in zip(out, expected))
    with torch.no_grad():  # not the plain forward pass: FF's layers see normalised, label-embedded input
        plain = torch.relu(learner.model.fc1(x))
    assert not torch.allclose(out[0], plain.double())


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(study, tmp_path, capsys):
    models = _models(study)
    out = tmp_path / "o"

    def refused(*args: object, says: str) -> None:
        code, _, err = cli(capsys, "analyze", *FAST, "--out", out, *args)
        assert code == 2 and err.count("\n") == 1 and says in err, err
        assert not out.exists()

    refused(models[0], says="at least two networks")
    nets = find_networks([study])
    by_label = {}
    for n in nets:
        by_label.setdefault(n.label, []).append(n.checkpoint)
    refused(by_label["backprop"][0], by_label["dfa"][0], says="at least two seeds")
    refused(tmp_path / "missing.pt", says="does not exist")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", says="holds no checkpoint")
    refused(study, "--measures", "cka,nope", says="unknown measure 'nope'")
    refused(study, "--stimuli", "100000", says="test samples")
    refused(study, "--noise", "thermal", says="unknown noise")
    refused(study, "--noise", "dropout", says="needs models with dropout")
    no_models = write_spec(tmp_path / "plain.toml", 'seed = [0, 1]', execution="", name="plain")
    refused(no_models, says="no run store")
    run_study(load_spec(no_models), workers=1)
    refused(no_models, says="no saved model")
    # a diverged network: its NaN weights are refused when the checkpoint is read
    from beyondbp import checkpoint as ckpt

    payload = ckpt.read(by_label["dfa"][0])
    payload["model"] = {k: (v * float("nan") if k.endswith("fc1.weight") else v) for k, v in payload["model"].items()}
    bad = tmp_path / "nan"
    bad.mkdir()
    torch.save(payload, bad / "nan.pt")
    for p in by_label["backprop"] + by_label["dfa"][1:]:
        (bad / p.name).write_bytes(p.read_bytes())
    refused(bad, says="holds NaN or infinite values in model tensor 'fc1.weight'")
    # an existing folder is not overwritten unasked
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, err = cli(capsys, "analyze", study, "--out", out, *FAST)
    assert code == 2 and "--overwrite" in err and (out / "mine.txt").read_text() == "keep"


def test_the_study_report_includes_the_analysis_beside_the_spec(study, tmp_path, capsys):
    folder = study.with_name("s-representations")
    code, _, err = cli(capsys, "analyze", study, *FAST, "--measures", "cka,procrustes")
    assert code == 0, err
    assert (folder / "representations.json").is_file()
    code, _, err = cli(capsys, "analyze", study, *FAST, "--measures", "cka")  # its own previous output is replaced
    assert code == 0, err
    report = tmp_path / "report"
    code, _, err = cli(capsys, "study", "report", study, "--out", report, "--bootstrap", "5")
    assert code == 0, err
    md = (report / "report.md").read_text()
    assert "## Representations" in md and "| cka | layer1 |" in md and "representations_layer1.png" in md
    assert (report / "representations_layer2.png").is_file()
    assert "data:image/png;base64" in (report / "report.html").read_text()
    code, _, err = cli(capsys, "study", "report", study, "--out", tmp_path / "r2", "--representations", tmp_path)
    assert code == 2 and "holds no `beyondbp analyze` output" in err and not (tmp_path / "r2").exists()


def test_networks_trained_on_different_data_are_refused(study, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in _models(study)[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    for seed in (0, 1):
        code, _, err = cli(capsys, "train", "--model", "mlp", "--data", "digits", "--steps", "3", "--seed", seed,
                           "--out", tmp_path / f"t{seed}", "--checkpoint", folder / f"digits{seed}.pt")
        assert code == 0, err
    code, _, err = cli(capsys, "analyze", folder, "--out", tmp_path / "o", *FAST)
    assert code == 2 and "trained on different data" in err and not (tmp_path / "o").exists()


def test_list_measures_names_every_measure(capsys):
    from beyondbp.analysis.representations import MEASURES

    code, out, _ = cli(capsys, "analyze", "--list-measures")
    assert code == 0 and all(name in out for name in MEASURES)
    code, _, err = cli(capsys, "analyze")
    assert code == 2 and "name at least one source" in err


def _net(rule, lr, width, seed, label=None):
    from beyondbp.study.similarity import Network
    from beyondbp.training import RunConfig

    config = RunConfig(rule=rule, model="mlp", data="mnist1d", lr=lr, seed=seed, model_options={"widths": [width]})
    axes = {"rule": label or rule, "lr": lr, "model_options": {"widths": [width]}, "seed": seed}
    return Network(id=f"{label or rule}-{lr}-{width}-{seed}", label="?", seed=seed, config=config,
                   checkpoint=Path("x.pt"), axes=axes)


def test_networks_are_grouped_by_rule_label_unless_asked_otherwise():
    """Issue 21 §2: a study with widths and learning rates as axes was analysed as "16 rules"
    (every varying setting made a class). The class is the rule label; --group-by picks axes."""
    from beyondbp.study.similarity import check_groups, group_networks

    nets = [_net(r, lr, w, s, label) for r, label in (("backprop", None), ("fa", "fa-random"))
            for lr in (1e-3, 3e-3) for w in (8, 16) for s in (0, 1)]
    assert sorted({n.label for n in group_networks(nets)}) == ["backprop", "fa-random"]
    by_lr = group_networks(nets, ["rule", "lr"])
    assert sorted({n.label for n in by_lr}) == ["backprop, lr=0.001", "backprop, lr=0.003",
                                                "fa-random, lr=0.001", "fa-random, lr=0.003"]
    assert sorted({n.label for n in group_networks(nets, ["lr"])}) == ["lr=0.001", "lr=0.003"]
    assert [n.label for n in nets] == ["?"] * len(nets)  # the given networks are left alone
    # a grouping that leaves a group with one network, or a single group, is refused in one sentence
    check_groups(group_networks(nets, ["rule", "lr", "model_options"]), ["rule", "lr", "model_options"])
    one_seed = [n for n in nets if n.seed == 0]
    with pytest.raises(ConfigError, match=r"by rule, lr, model_options leaves \"backprop, lr=0.001, model_options=\{'widths': \[8\]\}\" "
                                          r"with 1 network\(s\) from 1 seed\(s\)"):
        check_groups(group_networks(one_seed, ["rule", "lr", "model_options"]), ["rule", "lr", "model_options"])
    with pytest.raises(ConfigError, match="at least two seeds in every group"):
        check_groups(group_networks(one_seed))  # 4 networks of fa-random, all seed 0
    with pytest.raises(ConfigError, match="puts them all in one group"):
        check_groups(group_networks([n for n in nets if n.axes["rule"] == "fa-random"]))
    with pytest.raises(ConfigError, match="cannot be grouped by seed"):
        group_networks(nets, ["rule", "seed"])
    with pytest.raises(ConfigError, match=r"unknown grouping axis 'width'; group by rule, a study axis \(lr, model_options\)"):
        group_networks(nets, ["width"])
    with pytest.raises(ConfigError, match="named twice"):
        group_networks(nets, ["lr", "lr"])

def test_analyze_groups_a_study_with_more_axes_by_rule(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.toml", 'rule = ["backprop", "dfa"]\nlr = [1e-3, 3e-3]\nseed = [0, 1]')
    assert run_study(load_spec(spec), workers=1)["counts"]["done"] == 8
    code, stdout, err = cli(capsys, "analyze", spec, "--out", tmp_path / "a", "--measures", "cka", *FAST)
    assert code == 0, err
    result = json.loads((tmp_path / "a" / "representations.json").read_text())
    assert sorted({n["rule"] for n in result["networks"]}) == ["backprop", "dfa"]
    assert result["identification"]["cka"]["layer1"]["nn"]["chance"] == pytest.approx(3 / 7)
    assert result["settings"]["group_by"] == ["rule"]
    code, stdout, err = cli(capsys, "analyze", spec, "--out", tmp_path / "b", "--measures", "cka",
                            "--group-by", "rule,lr", *FAST)
    assert code == 0, err
    result = json.loads((tmp_path / "b" / "representations.json").read_text())
    assert len({n["rule"] for n in result["networks"]}) == 4 and result["settings"]["group_by"] == ["rule", "lr"]
    for bad, says in (("rule,lr,seed", "cannot be grouped by seed"), ("rule,", "malformed --group-by"),
                      ("widths", "unknown grouping axis 'widths'")):
        code, _, err = cli(capsys, "analyze", spec, "--out", tmp_path / "c", "--group-by", bad, *FAST)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
