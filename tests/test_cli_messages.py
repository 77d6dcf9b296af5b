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
