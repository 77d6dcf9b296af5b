"""``beyondbp study report``: a study run through the CLI, then fitted and reported; bad
arguments give one line and exit status 2, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beyondbp.cli import main


def write_spec(path: Path, axes: str) -> Path:
    path.write_text(
        '[study]\nname = "cli-report"\n\n[base]\nmodel = "mlp"\ndata = "mnist1d"\n'
        'data_options = {num_samples = 400}\nbatch_size = 32\nlr = 3e-3\n\n'
        f"[axes]\n{axes}\n"
    )
    return path


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


AXES = 'rule = ["backprop", "dfa"]\nseed = [0, 1]\nsteps = [5, 10, 20]\nmodel_options = [{widths = [8]}, {widths = [24]}]'


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    spec = write_spec(folder / "s.toml", AXES)
    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(spec), "--quiet"])
    assert info.value.code == 0
    return spec


def test_report_writes_the_three_files_and_prints_the_verdict(study, capsys):
    out = study.parent / "rep"
    code, stdout, err = cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 20)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.md", "report.json", "frontier.png"}
    data = json.loads((out / "report.json").read_text())
    assert data["analysis"]["baseline"] == "backprop" and data["analysis"]["counts"]["done"] == 24
    verdict = data["analysis"]["verdicts"]["dfa"]
    assert verdict["class"] in {"A", "B", "C", "D", "undecided"}
    assert verdict["sentence"].split(" — ")[0] in stdout and "24 done runs of 24 reported" in stdout
    # a second report into the same folder replaces the previous report; the default folder is beside the spec
    assert cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 20)[0] == 0
    assert cli(capsys, "study", "report", study, "--bootstrap", 5)[0] == 0
    assert (study.parent / "s-report" / "report.html").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--bootstrap", "0"], "--bootstrap"),
        (["--extrapolate", "0.5"], "--extrapolate"),
        (["--baseline", "fa"], "baseline 'fa' is not a rule label"),
        (["--store", "nowhere.db"], "nowhere.db"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(study, capsys, args, words):
    out = study.parent / f"bad-{abs(hash(tuple(args)))}"
    code, _, err = cli(capsys, "study", "report", study, "--out", out, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_foreign_folder_is_not_overwritten(study, capsys):
    out = study.parent / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = cli(capsys, "study", "report", study, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_rerun_never_deletes_a_file_the_user_put_in_the_report_folder(study, capsys):
    """Issue 21 §0: `study report; printf x > spec-report/mine.png; study report` deleted mine.png.
    The folder's manifest lists what the report wrote; anything else makes the rerun refuse."""
    out = study.parent / "rerun"
    assert cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 5)[0] == 0
    before = sorted(p.name for p in out.iterdir())
    assert ".beyondbp-manifest.json" in before
    (out / "mine.png").write_bytes(b"x")
    code, _, err = cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 5)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mine.png" in err and "--overwrite" in err
    assert (out / "mine.png").read_bytes() == b"x"
    assert sorted(p.name for p in out.iterdir()) == sorted(before + ["mine.png"])
    (out / "mine.png").unlink()
    assert cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 5)[0] == 0  # its own output is replaced


def test_a_file_added_while_the_report_is_computed_survives(study, capsys, monkeypatch):
    """The folder is checked again when the finished report is moved into place."""
    from beyondbp.reporting import study as report_mod

    out = study.parent / "race"
    assert cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 5)[0] == 0
    render = report_mod.render

    def render_then_user_writes(*args, **kwargs):
        (out / "notes.md").write_text("mine")
        return render(*args, **kwargs)

    monkeypatch.setattr(report_mod, "render", render_then_user_writes)
    code, _, err = cli(capsys, "study", "report", study, "--out", out, "--bootstrap", 5)
    assert code == 2 and "notes.md" in err
    assert (out / "notes.md").read_text() == "mine"
    assert not [p for p in study.parent.iterdir() if p.name.startswith(".rerun") or p.name.startswith(".race")]
