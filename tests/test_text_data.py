"""Text data: codec, deterministic split, seeded windows, validation loss and the n-gram baselines."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from beyondbp import data
from beyondbp.data.text import SHAKESPEARE_SHA256, TextCodec, TextDataset, load_shakespeare_char, load_text, shakespeare_bytes
from beyondbp.errors import ConfigError, DataError

CORPUS = "the cat sat on the mat. the dog sat on the log.\n" * 20 + "a zebra!\n"


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def test_char_level_vocabulary_split_and_roundtrip(corpus):
    ds = load_shakespeare_char(path=corpus)
    assert ds.vocab == sorted(set(CORPUS)) and ds.vocab_size == len(set(CORPUS))
    assert ds.num_classes == ds.vocab_size
    n_train = round(len(CORPUS) * 0.9)
    assert len(ds.train) == n_train and len(ds.val) == len(CORPUS) - n_train
    assert ds.decode(torch.cat([ds.train, ds.val])) == CORPUS  # split by position, nothing lost
    assert torch.equal(ds.encode("the cat"), torch.tensor([ds.vocab.index(c) for c in "the cat"]))
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        ds.encode("Q")
    # the same file gives the same split every time; data_dir may be the directory
    again = data.load("shakespeare-char", data_dir=corpus.parent)
    assert torch.equal(again.train, ds.train) and torch.equal(again.val, ds.val)
    other = load_shakespeare_char(path=corpus, val_fraction=0.25)
    assert len(other.val) == len(CORPUS) - round(len(CORPUS) * 0.75)


def test_byte_level_text(tmp_path):
    path = tmp_path / "notes.md"
    text = "naïve café — 東京\n" * 10
    path.write_text(text, encoding="utf-8")
    ds = data.load("text", path=path)
    raw = text.encode("utf-8")
    assert ds.vocab_size == 256 and ds.level == "byte"
    assert bytes(torch.cat([ds.train, ds.val]).tolist()) == raw
    assert ds.decode(ds.encode("東京 café")) == "東京 café"
    assert data.load("text", data_dir=path).train.equal(ds.train)


def test_codec_records_roundtrip():
    codec = TextCodec("char", "abc\n")
    again = TextCodec.from_dict(codec.to_dict())
    assert again.vocab == ["a", "b", "c", "\n"] and again.decode(again.encode("cab\n")) == "cab\n"
    assert TextCodec.from_dict(TextCodec("byte").to_dict()).vocab_size == 256
    with pytest.raises(ConfigError):
        TextCodec("char", "aab")
    with pytest.raises(ConfigError):
        TextCodec("word")


def test_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        load_shakespeare_char(path=tmp_path / "nope.txt")
    msg = str(info.value)
    assert "nope.txt" in msg and "path=" in msg and "tinyshakespeare/input.txt" in msg
    with pytest.raises(DataError, match="input.txt"):
        load_shakespeare_char(data_dir=tmp_path)
    with pytest.raises(DataError, match="path="):
        data.load("text")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_text(path=empty)


def test_packaged_corpus_is_tiny_shakespeare_byte_for_byte():
    raw = shakespeare_bytes()
    assert len(raw) == 1115394
    assert hashlib.sha256(raw).hexdigest() == SHAKESPEARE_SHA256


def test_default_corpus_loads_from_any_directory_and_data_dir_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared here: the packaged copy must be used
    ds = data.load("shakespeare-char")
    assert ds.vocab_size == 65 and ds.decode(ds.train[:14]) == "First Citizen:"
    (tmp_path / "input.txt").write_text("abcabcabd" * 50, encoding="utf-8")
    own = data.load("shakespeare-char", str(tmp_path))
    assert own.vocab_size == 4 and own.decode(own.train[:4]) == "abca"


def test_batches_are_seeded_windows_of_the_training_split(corpus):
    ds = load_shakespeare_char(path=corpus)
    a = list(ds.batches(4, 8, seed=3, steps=5))
    b = list(ds.batches(4, 8, seed=3, steps=5))
    c = list(ds.batches(4, 8, seed=4, steps=5))
    assert len(a) == 5
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    stream = ds.decode(ds.train)
    for x, y in a:
        assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
        for row_x, row_y in zip(x, y):
            window = ds.decode(row_x) + ds.decode(row_y[-1:])
            assert window in stream
    state = torch.random.get_rng_state()
    next(ds.batches(2, 8, seed=0))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    with pytest.raises(ConfigError, match="context"):
        next(ds.batches(2, len(ds.train), seed=0))


def test_val_windows_are_fixed_and_non_overlapping(corpus):
    ds = load_shakespeare_char(path=corpus)
    x, y = ds.val_windows(10)
    assert x.shape == ((len(ds.val) - 1) // 10, 10)
    assert torch.equal(x.reshape(-1), ds.val[: x.numel()]) and torch.equal(y.reshape(-1), ds.val[1 : x.numel() + 1])
    x3, _ = ds.val_windows(10, max_windows=3)
    assert len(x3) == 3 and torch.equal(x3[0], x[0]) and torch.equal(x3[-1], x[-1])


class _Table(nn.Module):
    """A "language model" whose logits are a fixed table row per previous token (or constant)."""

    def __init__(self, logp: torch.Tensor) -> None:
        super().__init__()
        self.logp = nn.Parameter(logp)

    def forward(self, idx):
        if self.logp.dim() == 1:
            return self.logp.expand(*idx.shape, -1)
        return self.logp[idx]


def test_baselines_equal_the_loss_of_the_count_models(corpus):
    ds = load_shakespeare_char(path=corpus)
    v = ds.vocab_size
    counts = torch.bincount(ds.train, minlength=v).double() + 1
    unigram = _Table((counts / counts.sum()).log())
    # every validation token is a target of some window when the windows cover the split
    x, y = ds.val_windows(len(ds.val) - 1)
    assert x.shape == (1, len(ds.val) - 1)
    assert ds.val_loss(unigram, len(ds.val) - 1) == pytest.approx(
        float(-(counts / counts.sum()).log()[ds.val[1:]].mean()), rel=1e-12
    )
    # hand-computed unigram over all validation tokens
    expected = -sum(math.log((int((ds.train == t).sum()) + 1) / (len(ds.train) + v)) for t in ds.val.tolist()) / len(ds.val)
    assert ds.unigram_loss() == pytest.approx(expected, rel=1e-12)
    pair = torch.ones(v, v, dtype=torch.float64)
    for a, b in zip(ds.train[:-1].tolist(), ds.train[1:].tolist()):
        pair[a, b] += 1
    logp = (pair / pair.sum(1, keepdim=True)).log()
    assert ds.bigram_loss() == pytest.approx(float(-logp[ds.val[:-1], ds.val[1:]].mean()), rel=1e-12)
    assert ds.val_loss(_Table(logp), len(ds.val) - 1) == pytest.approx(ds.bigram_loss(), rel=1e-12)
    b = ds.baselines()
    assert b["uniform"] == pytest.approx(math.log(v)) and b["bigram"] < b["unigram"] < b["uniform"]


def test_val_loss_is_deterministic_and_restores_training_mode(corpus):
    ds = load_shakespeare_char(path=corpus)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(ds.vocab_size, 8), nn.Dropout(0.5), nn.Linear(8, ds.vocab_size))
    model.train()
    first = ds.val_loss(model, 12, batch_size=3)
    assert first == pytest.approx(ds.val_loss(model, 12, batch_size=5), rel=1e-12)  # eval mode: dropout off
    assert model.training


def test_shakespeare_defaults():
    ds = data.load("shakespeare-char")
    assert isinstance(ds, TextDataset) and ds.vocab_size == 65
    assert len(ds.train) + len(ds.val) == 1115394 and len(ds.train) == round(1115394 * 0.9)
    assert ds.decode(ds.train[:14]) == "First Citizen:"
    assert ds.bigram_loss() < ds.unigram_loss() < math.log(65)
