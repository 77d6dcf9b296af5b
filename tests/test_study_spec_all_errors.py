"""Issue 23 §4: every mistake of a spec is reported at once — an unknown key no longer hides a
bad axis, a bad axis no longer hides a bad combination of the others — each on its own line
with its place; the command line exits 2 and writes nothing."""

from __future__ import annotations

import pytest

from beyondbp.cli import main
from beyondbp.errors import ConfigErrors
from beyondbp.study.spec import load_spec

THREE = """\
[study]
name = "s"

[base]
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 200}
steps = 2
stepz = 3

[axes]
seed = [0, 1, 0]
lr = [0.1, -0.1]
"""


def test_three_mistakes_in_three_stages_at_once_from_the_command_line(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(THREE)
    for command in ("run", "check", "report"):
        with pytest.raises(SystemExit) as info:
            main(["study", command, str(spec)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2
        assert [line.split(": ", 3)[:3] for line in lines] == [
            ["error", "s.toml", "[base] stepz"],  # a table's unknown key
            ["error", "s.toml", "[axes] seed[2]"],  # an axis's repeated value
            ["error", "s.toml", "[axes] lr[1]"],  # a value refused by the run's settings, in the grid
        ], lines
        assert lines[0].startswith("error: s.toml: [base] stepz: unknown run setting (did you mean 'steps'?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # no store, no report


def test_every_table_and_every_axis_and_each_blamed_on_its_own_entry(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("""\
[study]
name = "s"
colour = "red"

[base]
model = "mlp"
data = "mnist1d"
steps = 10
bogus = 3

[axes]
lr = [0.1, -0.1]
seed = [0, 0]
batch_size = [0, 32]
nope = [1]

[execution]
threads = -1
workers = 2
""")
    with pytest.raises(ConfigErrors) as info:
        load_spec(spec)
    places = [p.split(": ")[1] for p in info.value.problems]
    assert places == ["[study] colour", "[base] bogus", "[axes] nope", "[execution] workers", "[axes] seed[1]",
                      "[axes] batch_size[0]", "[execution] threads", "[axes] lr[1]"], info.value.problems


def test_a_bad_axis_that_names_the_model_stops_before_the_grid(tmp_path):
    """With the model (or the data) given only by a broken axis, the grid cannot be checked: its
    combinations are not, and no "model missing" is made up."""
    spec = tmp_path / "s.toml"
    spec.write_text('[study]\nname = "s"\n[base]\ndata = "mnist1d"\nsteps = 2\n[axes]\nmodel = "mlp"\nlr = [-1.0]\n')
    with pytest.raises(Exception) as info:
        load_spec(spec)
    assert str(info.value).splitlines() == ["s.toml: [axes] model: must be a list of values to try, got a string; e.g. model = ['mlp']"]
