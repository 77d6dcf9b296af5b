"""Data set options declared once (``beyondbp.options``): each set lists its options in one
``Options`` class (type, default, bounds, one line of help) and ``data.load`` validates against
it with one-sentence errors naming the set and the option; ``data.options`` derives from it."""

from __future__ import annotations

import inspect
import math

import pytest

import beyondbp as bbp
from beyondbp import data
from beyondbp.cli import main
from beyondbp.errors import ConfigError


@pytest.mark.parametrize("name", data.names())
def test_every_set_declares_its_options_once_with_defaults_and_help(name):
    cls = data.options_class(name)
    assert issubclass(cls, bbp.options.Options)
    for option, field in cls.model_fields.items():
        assert not field.is_required(), f"{name}: option {option} needs a default"
        assert field.description and len(field.description.splitlines()) == 1, f"{name}: {option} needs one line of help"
    assert data.options(name) == {o: f.default for o, f in cls.model_fields.items()}
    rows = data.describe_options(name)
    assert [r["name"] for r in rows] == list(cls.model_fields)
    assert all(r["accepts"] and r["help"] and r["default"] for r in rows)
    # The loader repeats no option (and no default): it takes data_dir and passes the rest on.
    loader = data._SETS[name][0]
    params = inspect.signature(loader).parameters
    assert [p.name for p in params.values() if p.kind is not p.VAR_KEYWORD] == ["data_dir"]


def test_declared_defaults_are_the_documented_ones():
    assert data.options("mnist1d") == {
        "num_samples": 5000, "train_split": 0.8, "length": 40, "seed": 42,
        "shuffle_seq": False, "cache": True, "cache_dir": None,
    }
    assert data.options("mnist") == data.options("fashion-mnist") == {"normalize": True, "pad_to_32": False}
    assert data.options("text") == data.options("shakespeare-char") == {"path": None, "val_fraction": 0.1}
    assert data.options("digits") == {}
    assert data.options("Fashion_MNIST") == data.options("fashion-mnist")  # names are canonicalised


BAD = [
    # (set, options, words in the message)
    ("digits", {"bogus": 1}, "data set 'digits' has no option bogus; its options: none"),
    ("mnist", {"normalize": "yes"}, "data set 'mnist' option normalize must be true or false, got 'yes'"),
    ("mnist", {"pad_to_32": 1}, "data set 'mnist' option pad_to_32 must be true or false, got 1"),
    ("mnist", {"normalize": math.nan}, "option normalize must be true or false, got nan"),
    ("mnist", {"size": 32}, "data set 'mnist' has no option size; its options: normalize, pad_to_32"),
    ("fashion-mnist", {"pad_to_32": "true"}, "data set 'fashion-mnist' option pad_to_32 must be true or false"),
    ("fashion-mnist", {"colour": True}, "data set 'fashion-mnist' has no option colour"),
    ("fashion-mnist-shift", {"swaps_per_epoch": -1}, "data set 'fashion-mnist-shift' option swaps_per_epoch must be a whole number of at least 0"),
    ("mnist1d", {"num_samples": 5}, "data set 'mnist1d' option num_samples must be an integer >= 20, got 5"),
    ("mnist1d", {"num_samples": 200.0}, "option num_samples must be an integer >= 20, got 200.0"),
    ("mnist1d", {"num_samples": True}, "option num_samples must be an integer >= 20, got True"),
    ("mnist1d", {"train_split": 1.0}, "option train_split must be a number > 0 and < 1, got 1.0"),
    ("mnist1d", {"train_split": 0}, "option train_split must be a number > 0 and < 1, got 0"),
    ("mnist1d", {"train_split": "0.5"}, "option train_split must be a number > 0 and < 1, got '0.5'"),
    ("mnist1d", {"train_split": math.nan}, "option train_split must be a number > 0 and < 1, got nan"),
    ("mnist1d", {"train_split": math.inf}, "option train_split must be a number > 0 and < 1, got inf"),
    ("mnist1d", {"length": 1}, "option length must be an integer >= 2, got 1"),
    ("mnist1d", {"seed": -1}, "option seed must be an integer >= 0 and < 4294967296, got -1"),
    ("mnist1d", {"seed": 2**32}, "option seed must be an integer >= 0 and < 4294967296"),
    ("mnist1d", {"seed": 1.5}, "option seed must be an integer >= 0"),
    ("mnist1d", {"shuffle_seq": 1}, "option shuffle_seq must be true or false, got 1"),
    ("mnist1d", {"cache": "no"}, "option cache must be true or false, got 'no'"),
    ("mnist1d", {"cache_dir": [1]}, "option cache_dir must be a directory path (a non-blank string) or null (None), got [1]"),
    ("mnist1d", {"cache_dir": "  "}, "option cache_dir must be a directory path"),
    ("mnist1d", {"normalize": True}, "data set 'mnist1d' has no option normalize; its options: num_samples, train_split"),
    ("text", {"val_fraction": 1.5}, "data set 'text' option val_fraction must be a number > 0 and < 1, got 1.5"),
    ("text", {"val_fraction": math.nan}, "option val_fraction must be a number > 0 and < 1, got nan"),
    ("text", {"val_fraction": "0.1"}, "option val_fraction must be a number > 0 and < 1, got '0.1'"),
    ("text", {"path": 3}, "data set 'text' option path must be a file path (a non-blank string) or null (None), got 3"),
    ("text", {"path": ""}, "option path must be a file path"),
    ("text", {"context": 8}, "data set 'text' has no option context; its options: path, val_fraction"),
    ("shakespeare-char", {"val_fraction": 0.0}, "data set 'shakespeare-char' option val_fraction must be a number > 0"),
    ("shakespeare-char", {"val_fraction": -math.inf}, "option val_fraction must be a number > 0 and < 1, got -inf"),
    ("shakespeare-char", {"path": ["a"]}, "option path must be a file path"),
    ("shakespeare-char", {"level": "word"}, "data set 'shakespeare-char' has no option level"),
    ("adding", {"T": 1}, "data set 'adding' option T must be an integer >= 2, got 1"),
    ("adding", {"n_train": 0}, "data set 'adding' option n_train must be an integer >= 1, got 0"),
    ("copy", {"T": 10}, "data set 'copy' needs T > mem_len"),
    ("copy", {"mem_len": 0}, "data set 'copy' option mem_len must be an integer >= 1, got 0"),
    ("sfmnist", {"size": 20}, "data set 'sfmnist' option size must be one of 28, 14, got 20"),
    ("psfmnist", {"perm_seed": -1}, "data set 'psfmnist' option perm_seed must be an integer >= 0"),
    ("fmnist-adding", {"bins": 0}, "data set 'fmnist-adding' option bins must be an integer >= 1, got 0"),
    ("fmnist-adding", {"rate": 1.5}, "data set 'fmnist-adding' option rate must be a number > 0 and <= 1, got 1.5"),
    ("matrix-completion", {"deficit_steps": -1}, "option deficit_steps must be an integer >= 0"),
    ("matrix-completion", {"entries": 20000}, "entries 20000 exceeds the 10000 entries of a 100×100 matrix"),
    ("matrix-completion", {"rank": 200}, "rank 200 exceeds the matrix size 100"),
    ("matrix-completion", {"depth": 3}, "data set 'matrix-completion' has no option depth"),
    ("hierarchy", {"deficit_start": -1}, "option deficit_start must be an integer >= 0"),
    ("hierarchy", {"deficit_start": 900}, "the deficit [900, 1050) ends after the schedule's 1000 train_steps"),
]


@pytest.mark.parametrize("name, opts, words", BAD, ids=[f"{n}-{next(iter(o))}-{i}" for i, (n, o, _) in enumerate(BAD)])
def test_bad_options_are_one_sentence_errors(tmp_path, name, opts, words):
    # An empty data_dir: the options are checked before any file is looked for.
    with pytest.raises(ConfigError) as info:
        data.load(name, tmp_path, **opts)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_every_set_is_covered_by_the_bad_option_cases():
    assert {name for name, _, _ in BAD} == set(data.names())


def test_paths_may_be_strings_or_path_objects(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 4)
    assert data.load("text", path=corpus).vocab_size == 256
    assert data.load("text", path=str(corpus), val_fraction=0.25).meta["n_val"] == 41
    monkeypatch.delenv("BEYONDBP_CACHE", raising=False)
    ds = data.load("mnist1d", num_samples=40, length=8, cache_dir=tmp_path / "cache")
    assert ds.x_train.shape == (32, 8)
    assert list((tmp_path / "cache" / "mnist1d").glob("*.npz"))


def test_cli_data_opt_goes_through_the_declaration(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "mlp", "--data", "mnist1d", "--data-opt", "seed=-1", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and len(err.splitlines()) == 1
    assert "data set 'mnist1d' option seed must be an integer >= 0" in err
    assert list(tmp_path.iterdir()) == []

