"""Malformed specs through the command line: every kind gives one line naming its place and exit
status 2 from `study run` (and `study check`), and no store is created; a store of another study
is refused the same way and left as it was."""

from __future__ import annotations

import pytest

from beyondbp.cli import main

GOOD_BASE = 'model = "mlp"\ndata = "mnist1d"\ndata_options = {num_samples = 200}\nsteps = 2\n'


def spec_text(base: str = GOOD_BASE, axes: str = 'seed = [0, 1]', study: str = 'name = "s"', extra: str = "") -> str:
    return f"[study]\n{study}\n\n[base]\n{base}\n[axes]\n{axes}\n{extra}"


CASES = {
    "not TOML": ("[study\nname = 's'", "line 1"),
    "unknown table": (spec_text(extra="[extras]\nx = 1\n"), "[extras]"),
    "missing name": (spec_text(study='description = "x"'), "[study] name"),
    "unfit name": (spec_text(study='name = "a/b"'), "[study] name"),
    "unknown key in study": (spec_text(study='name = "s"\nowner = "me"'), "[study] owner"),
    "unknown base setting": (spec_text(base=GOOD_BASE + "stepz = 3\n"), "[base] stepz"),
    "execution setting in base": (spec_text(base=GOOD_BASE + "threads = 2\n"), "[base] threads"),
    "wrong type in base": (spec_text(base=GOOD_BASE + 'seed = "a"\n', axes='lr = [1e-3]'), "[base] seed"),
    "wrong type in an axis": (spec_text(axes='lr = [0.1, "x"]'), "[axes] lr[1]"),
    "negative lr": (spec_text(axes='lr = [0.1, 0.01, -0.1]'), "[axes] lr[2]"),
    "axis not a list": (spec_text(axes='seed = 3'), "[axes] seed"),
    "empty axis": (spec_text(axes='seed = []'), "[axes] seed"),
    "duplicate axis values": (spec_text(axes='lr = [1e-3, 0.001]'), "[axes] lr"),
    "unknown rule": (spec_text(axes='rule = ["backprop", "dfx"]'), "[axes] rule[1]"),
    "bad rule option": (spec_text(axes='rule = [{name = "fa", options = {init = "nope"}}]'), "[axes] rule[0]"),
    "negative budget": (spec_text(base=GOOD_BASE.replace("steps = 2", "steps = -2")), "[base] steps"),
    "zero budget in an axis": (spec_text(base=GOOD_BASE.replace("steps = 2\n", ""), axes='epochs = [1, 0]'), "[axes] epochs[1]"),
    "per-rule lr for an absent label": (spec_text(axes='rule = ["backprop"]\nlr = {fa = [1e-3]}'), "[axes] lr"),
    "unknown model option": (spec_text(axes='model_options = [{widthz = [8]}]'), "[axes] model_options[0]"),
}


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_malformed_spec_is_one_line_with_its_place_and_exit_2(tmp_path, capsys, kind):
    text, place = CASES[kind]
    spec = tmp_path / "s.toml"
    spec.write_text(text)
    for command in ("run", "check"):
        code, out, err = cli(capsys, "study", command, spec)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and place in lines[0], (kind, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # no store, nothing else


def test_unreadable_missing_and_directory_specs(tmp_path, capsys):
    (tmp_path / "d.toml").mkdir()
    (tmp_path / "bytes.toml").write_bytes(b"\xff\xfe\x00name")
    for path in (tmp_path / "missing.toml", tmp_path / "d.toml", tmp_path / "bytes.toml"):
        code, _, err = cli(capsys, "study", "run", path)
        assert code == 2 and len(err.strip().splitlines()) == 1 and path.name in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bytes.toml", "d.toml"]


def test_a_store_of_another_study_is_refused_and_left_alone(tmp_path, capsys):
    first = tmp_path / "a.toml"
    first.write_text(spec_text(study='name = "first"', axes="seed = [0]"))
    assert cli(capsys, "study", "run", first, "--quiet")[0] == 0
    before = (tmp_path / "a.db").read_bytes()
    second = tmp_path / "b.toml"
    second.write_text(spec_text(study='name = "second"', axes="seed = [0]"))
    code, _, err = cli(capsys, "study", "run", second, "--store", tmp_path / "a.db")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "first" in err and "second" in err
    assert (tmp_path / "a.db").read_bytes() == before
