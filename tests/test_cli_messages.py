"""The command line's own messages: an unknown option names itself and the command's --help
(suggesting an option only when one is spelt nearly the same), counts agree with their nouns,
and a study store given where a checkpoint is expected is called what it is."""

from __future__ import annotations

import pytest

from beyondbp.cli import main


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("args, suggestion", [
    (["train", "--bogus", "1"], None),              # click listed "(Possible options: --out)"
    (["train", "--epoch", "1"], "--epochs"),        # click listed --epochs and --epsilon
    (["train", "--n_train", "256"], "--n-train"),
    (["train", "--output", "x"], "--out"),
    (["compare", "--rule", "fa"], "--rules"),
    (["study", "run", "spec.toml", "--workerz", "2"], "--workers"),
    (["study", "--bogus"], None),
    (["analyze", "spec.toml", "--bogus"], None),
    (["rules", "-z"], None),
])
def test_an_unknown_option_is_one_sentence_naming_it_and_the_help(capsys, args, suggestion):
    code, out, err = cli(capsys, *args)
    bad = next(a for a in args if a.startswith("-"))
    command = "beyondbp " + " ".join(a for a in args[: args.index(bad)] if not a.endswith(".toml"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {command} has no option {bad}")
    assert f"see '{command} --help'" in err
    assert "Possible options" not in err
    if suggestion is None:
        assert "did you mean" not in err
    else:
        assert f"(did you mean {suggestion}?)" in err


# -- counts agree with their nouns ----------------------------------------------------------------
ONE_RUN = """[study]
name = "one"

[base]
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 600}
model_options = {widths = [16]}
batch_size = 32
steps = 10

[axes]
seed = SEEDS

[execution]
keep_models = true
"""


def test_a_study_of_one_run_is_counted_in_the_singular(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(ONE_RUN.replace("SEEDS", "[0]"))
    code, out, err = cli(capsys, "study", "run", spec)
    assert code == 0 and "ran 1 of 1 run (" in out, err  # was "1 runs"
    code, out, err = cli(capsys, "study", "report", spec, "--out", tmp_path / "report")
    assert code == 0, err
    assert "1 run record;" in (tmp_path / "report" / "report.md").read_text()  # was "1 run records"
    # the spec grown to two runs: one of them has no saved model
    spec.write_text(ONE_RUN.replace("SEEDS", "[0, 1]"))
    code, _, err = cli(capsys, "analyze", spec, "--out", tmp_path / "a")
    assert code == 2 and "1 of the 2 runs of study 'one' has no saved model" in err and "finish it with" in err
    # back to one run, its model gone
    spec.write_text(ONE_RUN.replace("SEEDS", "[0]"))
    for model in (tmp_path / "s.models").glob("*.pt"):
        model.unlink()
    code, _, err = cli(capsys, "analyze", spec, "--out", tmp_path / "a")
    assert code == 2 and "study 'one' has 1 finished run but no saved model" in err  # was "1 finished runs"
    assert not (tmp_path / "a").exists()


def test_compare_of_one_epoch_says_epoch(tmp_path, capsys):
    out = tmp_path / "c"
    code, stdout, err = cli(capsys, "compare", "--rules", "backprop", "--model", "mlp", "--model-opt", "widths=[8]",
                            "--data", "mnist1d", "--data-opt", "num_samples=600", "--epochs", "1", "--out", out)
    assert code == 0, err
    title = (out / "table.md").read_text().splitlines()[0]
    assert ", 1 epoch, " in title and "epochs" not in title  # was "1 epochs"


def test_adapt_over_one_corruption_says_corruption(tmp_path, capsys):
    import torch

    from beyondbp import adapt

    path = tmp_path / "source.pt"
    torch.manual_seed(0)
    adapt.save_source(path, adapt.BNCNN((2, 2, 2)))
    code, out, err = cli(capsys, "adapt", "run", "--checkpoint", path, "--methods", "source", "--corruptions", "contrast",
                         "--severity", "1", "--n-test", "40", "--out", tmp_path / "a", "--quiet")
    assert code == 0, err
    out = " ".join(out.split())  # the table's title may wrap
    assert "mean top-1 error over 1 corruption" in out and "1 corruptions" not in out


def test_evolution_of_one_generation_says_generation(tmp_path, capsys, monkeypatch):
    from beyondbp.reporting import evolution

    titles = []

    def plot(arms, path, title, task):
        titles.append(title)
        path.write_bytes(b"png")

    monkeypatch.setattr(evolution, "plot_success", plot)
    code, _, err = cli(capsys, "evolve", "--population", "2", "--generations", "1", "--trials", "40", "--scored", "5",
                       "--test-every", "1", "--test-lifetimes", "1", "--quiet", "--out", tmp_path / "evo")
    assert code == 0, err
    assert len(titles) == 1 and ", 1 generation, " in titles[0]  # was "1 generations"


def test_representations_of_one_rule_and_one_seed_are_counted_in_the_singular():
    from beyondbp.reporting.similarity import _markdown

    networks = [{"rule": "backprop", "seed": 0, "id": "a"}, {"rule": "backprop", "seed": 0, "id": "b"}]
    text = _markdown({}, {"networks": networks, "layers": ["h1"]}, ["cka"], {}, "t")
    assert "2 networks (1 rule: backprop; 1 seed), 1 layer" in text  # was "1 rules", "1 seeds"


def test_a_language_model_run_of_one_step_says_step():
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from beyondbp.cli.progress import _Bars

    stream = io.StringIO()
    bars = _Bars(Console(file=stream, width=200))
    result = SimpleNamespace(rule="dfa", tokens=256, steps=1, final={"val_loss": 4.0}, total_time=0.5, status="ok")
    bars("end", {"result": result})
    assert "after 256 tokens (1 step) in" in stream.getvalue()  # was "(1 steps)"


# -- a file of another kind where a checkpoint is expected ------------------------------------------
def _store(path):
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (id TEXT)")
    return path


@pytest.mark.parametrize("make, kind", [
    (_store, "an SQLite database (a study's run store?)"),  # was "it holds objects other than tensors"
    (lambda p: p.write_text('{"rule": "fa"}') and p, "a text file"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256))) and p, "a PNG image"),
    (lambda p: p.write_bytes(b"") or p, "an empty file"),
])
@pytest.mark.parametrize("command", [
    ["train", "--rule", "backprop", "--model", "mlp", "--data", "digits", "--steps", "2", "--init-from"],
    ["sample", "--prompt", "a", "--checkpoint"],
    ["adapt", "run", "--methods", "source", "--corruptions", "contrast", "--n-test", "40", "--out", "OUT", "--checkpoint"],
])
def test_a_file_that_is_no_checkpoint_is_called_what_it_is(tmp_path, capsys, make, kind, command):
    path = make(tmp_path / "given.db")
    before = path.read_bytes()
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, out, err = cli(capsys, *args, path)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"is not a checkpoint but {kind}; give the checkpoint file that a --checkpoint option wrote" in err
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


def test_a_study_store_given_as_the_state_file_is_not_called_damaged(tmp_path, capsys):
    path = _store(tmp_path / "store.db")
    before = path.read_bytes()
    code, out, err = cli(capsys, "train", "--rule", "backprop", "--model", "mlp", "--data", "digits", "--steps", "2",
                         "--state", path, "--checkpoint-every", "1")
    assert code == 2 and err.count("\n") == 1
    assert "is not a run state but an SQLite database" in err and "delete it" not in err  # was "damaged ...; delete it"
    assert path.read_bytes() == before
