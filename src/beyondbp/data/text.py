"""Text corpora for language modelling: character-level tiny-shakespeare and any UTF-8 file as bytes.

A :class:`TextDataset` is a different record from the vision :class:`~beyondbp.data.Dataset`:
a language model trains on random windows of one long token stream, and a run's length is a
token budget, not a number of epochs.

* ``shakespeare-char`` — character level. The vocabulary is the sorted set of characters of
  the whole file (65 for tiny-shakespeare). The file is read from ``path`` if given, else from
  ``data_dir`` (the file itself, or a directory holding ``input.txt`` or
  ``tinyshakespeare/input.txt``), else from the copy shipped inside the package
  (``beyondbp/data/corpora/tinyshakespeare.txt.xz``), so it works after a plain install from any
  working directory.

  Origin of the shipped copy: tiny-shakespeare, about 40,000 lines of Shakespeare's plays (public
  domain), as published in ``data/tinyshakespeare/input.txt`` of Andrej Karpathy's public
  repository karpathy/char-rnn — 1,115,394 bytes, SHA-256
  ``86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed`` — compressed with xz
  (about 0.36 MB). Decompressing it gives that file byte for byte (a test checks the hash).
* ``text`` — any UTF-8 (or other) file at byte level: 256 tokens, one per byte value; decoding
  turns bytes back into text, replacing invalid UTF-8 sequences.

Split: the first ``1 - val_fraction`` of the tokens (default 90 %) train, the rest validate —
by position, so it is deterministic and no window straddles the two halves.

Baselines, in nats per token on the validation tokens: the unigram model of the training
tokens and the bigram model ``p(b | a)`` of the training tokens, both add-one (Laplace)
smoothed over the vocabulary so that a token unseen in training costs a finite amount.

Validation loss (:meth:`TextDataset.val_loss`) averages the per-token cross-entropy of a model
over fixed, non-overlapping windows of the validation tokens (the same windows every call).
"""

from __future__ import annotations

import lzma
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beyondbp.data.dataset import PathOption
from beyondbp.errors import ConfigError, DataError
from beyondbp.options import Options, opt, parse

__all__ = [
    "ShakespeareOptions",
    "TextCodec",
    "TextDataset",
    "TextOptions",
    "load_shakespeare_char",
    "load_text",
    "shakespeare_bytes",
]

#: The packaged tiny-shakespeare corpus (xz-compressed) and the SHA-256 of its decompressed bytes.
SHAKESPEARE_PACKAGED = "tinyshakespeare.txt.xz"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


class TextCodec:
    """Maps text to token ids and back: ``level="char"`` with a vocabulary of characters (id =
    position in ``vocab``), or ``level="byte"`` (ids are UTF-8 byte values, 256 of them).

    :meth:`to_dict` / :meth:`from_dict` let a checkpoint carry it, so samples can be decoded
    without the corpus.
    """

    def __init__(self, level: str, vocab: str | list[str] | None = None) -> None:
        if level not in ("char", "byte"):
            raise ConfigError(f"text level must be 'char' or 'byte', got {level!r}.")
        if level == "char":
            if not vocab:
                raise ConfigError("a character-level codec needs a non-empty vocabulary")
            vocab = list(vocab)
            if len(set(vocab)) != len(vocab) or any(len(c) != 1 for c in vocab):
                raise ConfigError("a character-level vocabulary must list distinct single characters")
        elif vocab is not None:
            raise ConfigError("a byte-level codec takes no vocabulary")
        self.level = level
        self.vocab: list[str] | None = vocab
        self.vocab_size = len(vocab) if vocab is not None else 256
        self._index = {c: i for i, c in enumerate(vocab)} if vocab is not None else None

    def encode(self, text: str) -> Tensor:
        """Token ids of ``text`` (int64, 1-D). Characters outside the vocabulary are an error."""
        if self._index is None:
            return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)
        missing = sorted({c for c in text if c not in self._index})
        if missing:
            raise ConfigError(
                f"the text contains characters outside the vocabulary: {''.join(missing)!r}; "
                "use only characters that occur in the training corpus"
            )
        return torch.tensor([self._index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Text of token ids (bytes are decoded as UTF-8, invalid sequences replaced)."""
        values = [int(i) for i in (ids.reshape(-1).tolist() if isinstance(ids, Tensor) else ids)]
        if any(i < 0 or i >= self.vocab_size for i in values):
            raise ConfigError(f"token ids must lie in 0..{self.vocab_size - 1}")
        if self.vocab is None:
            return bytes(values).decode("utf-8", errors="replace")
        return "".join(self.vocab[i] for i in values)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "vocab": "".join(self.vocab) if self.vocab is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextCodec":
        try:
            return cls(d["level"], d.get("vocab"))
        except (KeyError, TypeError, AttributeError):
            raise ConfigError("a text codec record needs 'level' and 'vocab' entries") from None


class TextDataset:
    """A tokenised corpus with a deterministic train/validation split.

    Attributes:
        name: ``"shakespeare-char"`` or ``"text"``.
        level: ``"char"`` or ``"byte"``.
        vocab: the tokens, in id order (characters for ``char``; ``None`` for ``byte``).
        vocab_size: number of token ids (``num_classes`` of a model).
        train, val: int64 token ids, 1-D.
        description: one human-readable line; ``meta``: provenance (file, sizes, split).
    """

    def __init__(
        self,
        name: str,
        tokens: Tensor,
        *,
        level: str,
        vocab: list[str] | None,
        val_fraction: float = 0.1,
        description: str = "",
        meta: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}.")
        self.name = name
        self.level = level
        self.codec = TextCodec(level, vocab)
        self.vocab = self.codec.vocab
        self.vocab_size = self.codec.vocab_size
        tokens = tokens.to(torch.int64).reshape(-1)
        n_train = int(round(len(tokens) * (1 - val_fraction)))
        if n_train < 2 or len(tokens) - n_train < 2:
            raise DataError(
                f"Data set {name!r} holds {len(tokens)} tokens, too few to split into train and "
                f"validation parts of at least 2 tokens each with val_fraction={val_fraction}."
            )
        self.train = tokens[:n_train].clone()
        self.val = tokens[n_train:].clone()
        self.val_fraction = float(val_fraction)
        self.description = description
        self.meta = dict(meta or {})
        self.meta.update(n_tokens=len(tokens), n_train=len(self.train), n_val=len(self.val))
        self._baselines: dict[str, float] = {}

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"TextDataset(name={self.name!r}, level={self.level!r}, vocab_size={self.vocab_size}, "
            f"train={len(self.train)}, val={len(self.val)})"
        )

    # -- codec -----------------------------------------------------------------------------------
    def encode(self, text: str) -> Tensor:
        """Token ids of ``text`` (int64, 1-D). Characters outside the vocabulary are an error."""
        return self.codec.encode(text)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Text of token ids (bytes are decoded as UTF-8, invalid sequences replaced)."""
        return self.codec.decode(ids)

    # -- batches ---------------------------------------------------------------------------------
    def _check_context(self, context: Any, split: Tensor, what: str) -> int:
        context = _positive_int(context, "context")
        if len(split) < context + 1:
            raise ConfigError(
                f"context {context} is too long for the {what} split of {self.name!r} "
                f"({len(split)} tokens); use at most {len(split) - 1}."
            )
        return context

    def batch(self, batch_size: int, context: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One batch of ``batch_size`` random training windows: inputs ``(B, T)`` and the
        next-token targets ``(B, T)`` (inputs shifted by one)."""
        batch_size = _positive_int(batch_size, "batch_size")
        context = self._check_context(context, self.train, "train")
        starts = torch.randint(len(self.train) - context, (batch_size,), generator=generator)
        offsets = torch.arange(context + 1)
        windows = self.train[starts[:, None] + offsets]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def batches(
        self, batch_size: int, context: int, seed: int = 0, steps: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Random training windows from a generator seeded with ``seed`` (endless unless
        ``steps`` is given). Same seed → same batches; the global RNG is not touched."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        batch_size = _positive_int(batch_size, "batch_size")
        context = self._check_context(context, self.train, "train")
        if steps is not None:
            steps = _positive_int(steps, "steps")
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while steps is None or done < steps:
            yield self.batch(batch_size, context, gen)
            done += 1

    def val_windows(self, context: int, max_windows: int | None = None) -> tuple[Tensor, Tensor]:
        """Fixed validation windows: non-overlapping, from the start of the split; with
        ``max_windows``, that many evenly spaced among them. Inputs and targets ``(W, T)``."""
        context = self._check_context(context, self.val, "validation")
        starts = torch.arange(0, len(self.val) - context, context)
        if max_windows is not None:
            max_windows = _positive_int(max_windows, "max_windows")
            if max_windows < len(starts):
                pick = torch.linspace(0, len(starts) - 1, max_windows).round().long()
                starts = starts[pick]
        windows = self.val[starts[:, None] + torch.arange(context + 1)]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def val_loss(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        context: int,
        batch_size: int = 64,
        max_windows: int | None = None,
        device: torch.device | str | None = None,
    ) -> float:
        """Mean cross-entropy (nats/token) of ``model`` on the fixed validation windows.

        Runs in eval mode without gradients (training mode is restored afterwards)."""
        return self.val_metrics(model, context, batch_size, max_windows, device)["loss"]

    def val_metrics(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        context: int,
        batch_size: int = 64,
        max_windows: int | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, float]:
        """``{"loss": nats/token, "accuracy": next-token accuracy}`` on the fixed validation
        windows (see :meth:`val_windows`), in eval mode without gradients."""
        x, y = self.val_windows(context, max_windows)
        batch_size = _positive_int(batch_size, "batch_size")
        was_training = getattr(model, "training", None)
        if isinstance(model, nn.Module):
            model.eval()
            if device is None:
                device = next((p.device for p in model.parameters()), None)
        total = 0.0
        correct = 0
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                    if device is not None:
                        xb, yb = xb.to(device), yb.to(device)
                    logits = model(xb).reshape(-1, self.vocab_size)
                    target = yb.reshape(-1)
                    total += float(F.cross_entropy(logits.double(), target, reduction="sum"))
                    correct += int((logits.argmax(dim=-1) == target).sum())
        finally:
            if isinstance(model, nn.Module) and was_training:
                model.train()
        return {"loss": total / y.numel(), "accuracy": correct / y.numel()}

    # -- baselines -------------------------------------------------------------------------------
    def unigram_loss(self) -> float:
        """Cross-entropy (nats/token) on the validation tokens of the add-one smoothed unigram
        distribution of the training tokens."""
        if "unigram" not in self._baselines:
            counts = torch.bincount(self.train, minlength=self.vocab_size).double() + 1.0
            logp = (counts / counts.sum()).log()
            self._baselines["unigram"] = float(-logp[self.val].mean())
        return self._baselines["unigram"]

    def bigram_loss(self) -> float:
        """Cross-entropy (nats/token) on the validation tokens (from the second one on) of the
        add-one smoothed bigram model ``p(next | previous)`` counted on the training tokens."""
        if "bigram" not in self._baselines:
            v = self.vocab_size
            pairs = self.train[:-1] * v + self.train[1:]
            counts = torch.bincount(pairs, minlength=v * v).double().reshape(v, v) + 1.0
            logp = (counts / counts.sum(dim=1, keepdim=True)).log()
            self._baselines["bigram"] = float(-logp[self.val[:-1], self.val[1:]].mean())
        return self._baselines["bigram"]

    def baselines(self) -> dict[str, float]:
        """``{"uniform": log V, "unigram": ..., "bigram": ...}`` in nats/token."""
        return {"uniform": math.log(self.vocab_size), "unigram": self.unigram_loss(), "bigram": self.bigram_loss()}


# -- loaders ---------------------------------------------------------------------------------------
def shakespeare_bytes() -> bytes:
    """The tiny-shakespeare corpus shipped inside the package, decompressed."""
    source = resources.files("beyondbp.data").joinpath("corpora", SHAKESPEARE_PACKAGED)
    try:
        return lzma.decompress(source.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise DataError(
            f"the packaged tiny-shakespeare corpus ({source}) is missing or damaged ({exc}); reinstall "
            "beyondbp, or pass the text with path=... or data_dir=... (--data-dir on the command line)"
        ) from exc


def _resolve(path: str | os.PathLike | None, data_dir: str | os.PathLike | None,
             names: tuple[str, ...], hint: str) -> Path:
    if path is not None:
        file = Path(path).expanduser()
    elif data_dir is not None:
        file = Path(data_dir).expanduser()
        if file.is_dir():
            found = [file / n for n in names if (file / n).is_file()]
            if not found:
                listed = " or ".join(str(file / n) for n in names)
                raise DataError(f"No text file {listed} exists; {hint}.")
            file = found[0]
    else:
        raise DataError(f"No text file was given; {hint}.")
    if not file.is_file():
        raise DataError(f"The text file {file} does not exist; {hint}.")
    return file


def _read(file: Path, hint: str) -> bytes:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {file} ({exc.strerror or exc}); {hint}.") from exc
    if not raw:
        raise DataError(f"The text file {file} is empty; {hint}.")
    return raw


_SHAKESPEARE_HINT = (
    "give the text as a file, or a directory holding input.txt or tinyshakespeare/input.txt, with "
    "path=... or data_dir=... (--data-dir on the command line); without either, the copy shipped "
    "with the package is used"
)


class TextOptions(Options):
    """Options of ``text``."""

    path: PathOption | None = opt(
        None,
        "the text file (overrides data_dir); None: the file given by data_dir",
        accepts="a file path (a non-blank string) or null (None)",
    )
    val_fraction: float = opt(0.1, "fraction of the tokens, from the end, kept for validation", gt=0, lt=1)


class ShakespeareOptions(TextOptions):
    """Options of ``shakespeare-char``."""

    path: PathOption | None = opt(
        None,
        "the text file (overrides data_dir); None: data_dir, else the copy shipped with the package",
        accepts="a file path (a non-blank string) or null (None)",
    )


def load_shakespeare_char(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> TextDataset:
    """Character-level tiny-shakespeare (or any text file treated the same way); options:
    :class:`ShakespeareOptions`."""
    o = parse(ShakespeareOptions, opts, "data set 'shakespeare-char'")
    path, val_fraction = o.path, o.val_fraction
    if path is None and data_dir is None:
        file, raw = "the packaged tiny-shakespeare", shakespeare_bytes()
    else:
        file = _resolve(path, data_dir, ("input.txt", "tinyshakespeare/input.txt"), _SHAKESPEARE_HINT)
        raw = _read(file, _SHAKESPEARE_HINT)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file} is not valid UTF-8 text ({exc.reason} at byte {exc.start}); {_SHAKESPEARE_HINT}.") from exc
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    return TextDataset(
        "shakespeare-char",
        tokens,
        level="char",
        vocab=vocab,
        val_fraction=val_fraction,
        description=(
            f"character-level text from {file} ({len(text)} characters, vocabulary of {len(vocab)}); "
            f"first {1 - val_fraction:.0%} train, last {val_fraction:.0%} validation"
        ),
        meta={"file": str(file), "bytes": len(raw)},
    )


_TEXT_HINT = "pass the file with path=... or data_dir=... (--data-dir on the command line)"


def load_text(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> TextDataset:
    """Any file at byte level (256 tokens); ``data_dir`` may be the file or a directory with
    ``input.txt``; options: :class:`TextOptions`."""
    o = parse(TextOptions, opts, "data set 'text'")
    path, val_fraction = o.path, o.val_fraction
    file = _resolve(path, data_dir, ("input.txt",), _TEXT_HINT)
    raw = _read(file, _TEXT_HINT)
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
    return TextDataset(
        "text",
        tokens,
        level="byte",
        vocab=None,
        val_fraction=val_fraction,
        description=(
            f"byte-level text from {file} ({len(raw)} bytes, 256 byte values); "
            f"first {1 - val_fraction:.0%} train, last {val_fraction:.0%} validation"
        ),
        meta={"file": str(file), "bytes": len(raw)},
    )

