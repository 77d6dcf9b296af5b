"""What a new user meets first: one spelling of model names, ``beyondbp models`` / ``beyondbp
data`` listing what ``--model`` / ``--data`` accept, and a command line that answers ``--help``
and bad input without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beyondbp import data, models
from beyondbp.cli import main
from beyondbp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _markdown_names(out: str) -> list[str]:
    return [line.split("|")[1].strip() for line in out.splitlines()[2:] if line.startswith("|")]


def test_model_names_have_one_spelling_the_command_lines():
    assert all("_" not in n for n in models.names()), models.names()
    assert {"snn-mlp", "snn-cnn", "softhebb-mlp", "softhebb-conv"} <= set(models.names())
    with pytest.raises(ConfigError, match="valid names are: .*snn-mlp") as info:
        models.build("no-such-model", (1, 8, 8), 10)
    assert "snn_mlp" not in str(info.value)
    with pytest.raises(ConfigError, match="model 'snn-mlp'"):  # the underscore spelling still builds, errors say snn-mlp
        models.build("snn_mlp", (1, 8, 8), 10, T=0)


def test_models_command_lists_every_model_and_its_options(capsys):
    code, out, err = cli(capsys, "models", "--markdown")
    assert code == 0 and err == ""
    assert _markdown_names(out) == models.names()
    code, out, err = cli(capsys, "models", "--options", "snn-mlp", "--markdown")
    assert code == 0 and _markdown_names(out) == list(models.options("snn-mlp"))
    code, out, _ = cli(capsys, "models", "--options", "mlp")
    assert code == 0 and "widths" in out and "--model-opt" in out


def test_data_command_lists_every_set_and_its_options(capsys):
    code, out, err = cli(capsys, "data", "--markdown")
    assert code == 0 and err == ""
    assert _markdown_names(out) == data.names()
    code, out, _ = cli(capsys, "data", "--options", "mnist1d", "--markdown")
    assert code == 0 and _markdown_names(out) == list(data.options("mnist1d"))
    code, out, _ = cli(capsys, "data", "--options", "digits")
    assert code == 0 and "takes no options" in out


@pytest.mark.parametrize("command", ["models", "data"])
def test_catalogue_of_an_unknown_name_is_one_line_with_status_2(capsys, command):
    code, out, err = cli(capsys, command, "--options", "nope")
    assert code == 2 and out == ""
    assert err.startswith("error: Unknown ") and "valid names are" in err and err.count("\n") == 1


def test_help_never_spells_a_model_with_an_underscore(capsys):
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0 and "beyondbp models" in out
    assert "snn_mlp" not in out and "softhebb_" not in out


def _imported_after(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after ``code`` (run with ``args`` as sys.argv[1:])."""
    probe = code + "\nimport sys\nsys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")]
    assert line, done.stderr
    return set(line[-1].split()[1:])


def test_importing_the_command_line_does_not_import_torch():
    loaded = _imported_after("import beyondbp.cli")
    assert "beyondbp.cli" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "numpy", "matplotlib", "sklearn", "scipy"))
    assert not heavy, f"import beyondbp.cli imported {heavy[:5]}"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["study", "run", "--help"], ["train", "--model", "mlp"],
                                  ["train", "--model", "mlp", "--data", "mnist1d", "--epochs", "abc"]])
def test_help_and_usage_errors_answer_without_torch(args):
    code = ("import sys\nfrom beyondbp.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert exc.code in (0, 2), exc.code\n")
    assert "torch" not in _imported_after(code, *args)


def test_an_option_given_twice_is_refused_instead_of_the_last_one_winning(capsys, tmp_path):
    code, out, err = cli(capsys, "train", "--model", "mlp", "--data", "digits", "--model-opt", "widths=[4]",
                         "--model-opt", "widths=[8]", "--steps", "1", "--out", tmp_path / "run")
    assert code == 2 and err.strip() == "error: --model-opt widths is given twice ([4] and [8]); give each option once"
    assert not (tmp_path / "run").exists()
    code, out, err = cli(capsys, "train", "--model", "mlp", "--data", "digits", "--data-opt", "a=1", "--data-opt", "a=1")
    assert code == 2 and "--data-opt a is given twice" in err and err.count("\n") == 1


def test_an_option_given_twice_to_compare_continual_or_memory_is_refused(capsys, tmp_path):
    # compare's --rule-opt, continual's --rule-opt / --method-opt and memory's --opt went through
    # their own parsers, where the last value still won silently (also a general KEY=VALUE
    # overwriting a RULE:KEY=VALUE given before it, or the reverse)
    from beyondbp.cli.common import split_rule_options
    from beyondbp.cli.continual import _continual_method_options
    from beyondbp.cli.memory import _memory_options

    code, out, err = cli(capsys, "compare", "--rules", "fa,dfa", "--model", "mlp", "--data", "digits", "--steps", "1",
                         "--rule-opt", "seed=1", "--rule-opt", "seed=2", "--out", tmp_path / "cmp")
    assert code == 2 and err.strip() == "error: --rule-opt seed is given twice for rule 'fa' (1 and 2); give each option once"
    assert not (tmp_path / "cmp").exists()
    for items in (["fa:seed=1", "fa:seed=2"], ["fa:seed=1", "seed=2"], ["seed=2", "fa:seed=1"]):
        with pytest.raises(ConfigError, match="--rule-opt seed is given twice for rule 'fa'"):
            split_rule_options(items, ["fa", "dfa"])
    assert split_rule_options(["fa:seed=1", "dfa:seed=2"], ["fa", "dfa"]) == {"fa": {"seed": 1}, "dfa": {"seed": 2}}
    with pytest.raises(ConfigError, match="--method-opt lam is given twice for method 'ewc'"):
        _continual_method_options(["ewc:lam=1", "lam=2"], ["finetune", "ewc"])
    with pytest.raises(ConfigError, match="--opt beta is given twice for memory 'modern-hopfield'"):
        _memory_options(["beta=1", "modern-hopfield:beta=2"], ["modern-hopfield"])
    assert _memory_options(["hopfield:a=1", "modern-hopfield:a=2"], ["hopfield", "modern-hopfield"]) == {
        "hopfield": {"a": 1}, "modern-hopfield": {"a": 2}}
