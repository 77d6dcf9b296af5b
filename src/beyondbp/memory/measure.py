"""Measuring memories: recall quality against the number stored and the query noise, and the
sparse code's similarity preservation.

:func:`recall_quality` stores the first ``N`` of some patterns (auto-association: each pattern
is its own key and value) in a fresh memory for each ``N``, queries ``queries`` of the stored
items (the first ones; default at most 200) after corrupting each query, and reports, per
``(N, noise)``:

* ``exact`` — the fraction of recalls equal to the stored item: every pixel right after
  thresholding (at 0 for ±1 patterns, 0.5 for 0/1 ones), or within 0.01 of it for real ones;
* ``mse`` — the mean squared error between the recall and the stored item (the recall as
  returned, before thresholding);
* ``item`` — the fraction whose nearest stored item (Euclidean) is the queried one;
* ``class`` — the fraction whose nearest stored item has the queried item's label;
* ``classifier`` — with ``classifier=`` (a callable from ``(M, dim)`` recalls to ``(M,)``
  labels), the fraction it labels right.

Noise (:func:`corrupt`) changes exactly ``round(noise × dim)`` pixels of every query, chosen at
random: ``"flip"`` turns them to their opposite (−x for ±1, 1 − x for 0/1 and real pixels),
``"mask"`` sets them to 0 (no information for ±1, background for 0/1 and real).

Patterns come from :func:`fashion_mnist_patterns` (the project's Fashion-MNIST loader; pixels in
[0, 1], ``kind="binary"`` thresholds them at 0.5 to 0/1, ``"sign"`` to ±1, ``"real"`` keeps
them) or :func:`beyondbp.memory.random_patterns`.

:func:`similarity_preservation` stores inputs in a :class:`~.sparse.SparseCodeMemory` and
returns the Spearman rank correlation, over all pairs, between the inputs' overlap
(|x ∧ y| / √(|x| |y|)) and their codes' overlap (the fraction of modules with the same winner).
Measuring changes nothing but the fresh memories it builds.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from beyondbp.errors import ConfigError

from . import make
from .base import RandomSparseKeys, check_count
from .sparse import SparseCodeMemory

__all__ = ["KINDS", "NOISE_MODES", "corrupt", "fashion_mnist_patterns", "recall_quality", "similarity_preservation"]

KINDS = ("binary", "sign", "real")
NOISE_MODES = ("flip", "mask")
KEY_CODES = ("given", "random", "learned")
#: the pattern kind each memory is measured on by default
DEFAULT_KIND = {"hopfield": "sign", "modern-hopfield": "sign", "key-value-hebbian": "sign",
                "key-value-delta": "sign", "sparse-code": "binary"}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"pattern kind must be one of {', '.join(KINDS)}, got {kind!r}")


def fashion_mnist_patterns(n: int, kind: str = "binary", *, split: str = "train", seed: int = 0,
                           data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Fashion-MNIST images (a seeded random choice) as ``(n, 784)`` patterns, and labels."""
    from beyondbp import data

    _check_kind(kind)
    check_count(n, "n")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got {split!r}")
    ds = data.load("fashion-mnist", data_dir=data_dir, normalize=False)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    if n > x.shape[0]:
        raise ConfigError(f"n must be at most {x.shape[0]} (the {split} images), got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    x = x[idx].reshape(n, -1).to(torch.float32)
    if kind == "binary":
        x = (x > 0.5).to(torch.float32)
    elif kind == "sign":
        x = torch.where(x > 0.5, 1.0, -1.0)
    return x, y[idx].clone()


def corrupt(x: torch.Tensor, noise: float, mode: str = "flip", kind: str = "binary",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``x`` with exactly ``round(noise × dim)`` random pixels per row flipped or masked."""
    _check_kind(kind)
    if mode not in NOISE_MODES:
        raise ConfigError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ConfigError(f"noise must be a fraction of pixels in [0, 1], got {noise!r}")
    n, d = x.shape
    k = round(noise * d)
    out = x.clone()
    if k == 0:
        return out
    scores = torch.rand(n, d, generator=generator)
    chosen = torch.zeros(n, d, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)
    if mode == "mask":
        return out.masked_fill_(chosen, 0.0)
    flipped = -x if kind == "sign" else 1.0 - x
    return torch.where(chosen, flipped, out)


def _threshold(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "sign":
        return torch.where(x >= 0, 1.0, -1.0)
    if kind == "binary":
        return (x >= 0.5).to(torch.float32)
    return x


def _build(name: str, dim: int, kind: str, key_code: str, stored: torch.Tensor, seed: int,
           options: dict[str, Any]) -> Any:
    opts = dict(options)
    opts.setdefault("seed", seed)
    if name.startswith("key-value"):
        opts.setdefault("binarize", kind == "sign")
        if key_code == "random":
            opts["encoder"] = RandomSparseKeys(dim, seed=seed)
        elif key_code == "learned":
            coder = SparseCodeMemory(dim, seed=seed).store(_threshold(stored, "binary").clamp(min=0))
            opts["encoder"] = coder.encode
            opts["code_dim"] = coder.code_dim
    elif key_code != "given":
        raise ConfigError(f"key codes {key_code!r} apply to the key-value memories only; {name} takes its keys as given")
    return make(name, dim, **opts)


def recall_quality(name: str, patterns: torch.Tensor, labels: torch.Tensor | None = None, *,
                   stored: Sequence[int], noise: Sequence[float] = (0.0, 0.1, 0.2, 0.3), mode: str = "flip",
                   kind: str = "sign", queries: int = 200, key_code: str = "given", seed: int = 0,
                   options: dict[str, Any] | None = None,
                   classifier: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """One row per ``(N, noise)``: ``memory``, ``stored``, ``noise``, ``mode``, ``exact``, ``mse``,
    ``item``, ``class`` (None without labels), ``classifier`` (None without one), ``per_neuron``
    and ``per_synapse`` (see the module docstring)."""
    _check_kind(kind)
    if key_code not in KEY_CODES:
        raise ConfigError(f"key codes must be one of {', '.join(KEY_CODES)}, got {key_code!r}")
    if patterns.dim() != 2:
        raise ConfigError(f"patterns must have shape (N, dim), got {tuple(patterns.shape)}")
    ns = [check_count(n, "the number stored N") for n in stored]
    if not ns:
        raise ConfigError("give at least one number of items to store")
    if max(ns) > patterns.shape[0]:
        raise ConfigError(f"cannot store {max(ns)} items: only {patterns.shape[0]} patterns were given")
    check_count(queries, "queries")
    for level in noise:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
            raise ConfigError(f"noise must be fractions of pixels in [0, 1], got {level!r}")
    if mode not in NOISE_MODES:
        raise ConfigError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    dim = patterns.shape[1]
    rows: list[dict[str, Any]] = []
    for n in ns:
        items = patterns[:n]
        memory = _build(name, dim, kind, key_code, items, seed, options or {})
        memory.store(items)
        load = memory.capacity()
        q = min(n, queries)
        targets = items[:q]
        for level in noise:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + n * 101 + round(level * 1000))
            noisy = corrupt(targets, level, mode, kind, gen)
            recalled = memory.recall(noisy)
            rows.append(_score(name, n, level, mode, targets, recalled, items, labels, kind, classifier, load))
    return rows


def _score(name: str, n: int, level: float, mode: str, targets: torch.Tensor, recalled: torch.Tensor,
           items: torch.Tensor, labels: torch.Tensor | None, kind: str,
           classifier: Callable[[torch.Tensor], torch.Tensor] | None, load: dict[str, Any]) -> dict[str, Any]:
    q = targets.shape[0]
    if kind == "real":
        exact = ((recalled - targets).abs().amax(dim=1) <= 0.01).float().mean()
    else:
        exact = (_threshold(recalled, kind) == targets).all(dim=1).float().mean()
    nearest = torch.cdist(recalled.double(), items.double()).argmin(dim=1)
    row: dict[str, Any] = {
        "memory": name, "stored": n, "noise": float(level), "mode": mode, "queries": q,
        "exact": float(exact), "mse": float(((recalled - targets) ** 2).mean()),
        "item": float((nearest == torch.arange(q)).float().mean()),
        "class": None, "classifier": None,
        "per_neuron": load["per_neuron"], "per_synapse": load["per_synapse"],
    }
    if labels is not None:
        row["class"] = float((labels[nearest] == labels[:q]).float().mean())
        if classifier is not None:
            row["classifier"] = float((classifier(recalled) == labels[:q]).float().mean())
    return row


def similarity_preservation(inputs: torch.Tensor, *, pairs: int | None = None, seed: int = 0,
                            **options: Any) -> dict[str, Any]:
    """Store 0/1 ``inputs`` in a fresh sparse-code memory (``options`` go to it) and return
    ``spearman`` (code overlap vs input overlap over the pairs), ``pvalue``, ``pairs``, and
    ``mean_code_overlap`` / ``mean_input_overlap``. With ``pairs``, a seeded random sample of
    that many pairs is used instead of all of them."""
    from scipy.stats import spearmanr

    if inputs.dim() != 2 or inputs.shape[0] < 3:
        raise ConfigError(f"inputs must have shape (N, dim) with N >= 3, got {tuple(inputs.shape)}")
    memory = SparseCodeMemory(inputs.shape[1], seed=seed, **options).store(inputs)
    n = inputs.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    if pairs is not None and check_count(pairs, "pairs") < i.numel():
        pick = torch.randperm(i.numel(), generator=torch.Generator().manual_seed(seed))[:pairs]
        i, j = i[pick], j[pick]
    x = inputs.double()
    sizes = x.sum(dim=1)
    input_overlap = (x[i] * x[j]).sum(dim=1) / (sizes[i] * sizes[j]).sqrt().clamp(min=1.0)
    codes = memory.codes
    code_overlap = (codes[i] == codes[j]).double().mean(dim=1)
    rho, p = spearmanr(input_overlap.numpy(), code_overlap.numpy())
    rho = float(rho) if math.isfinite(rho) else 0.0
    return {"spearman": rho, "pvalue": float(p), "pairs": int(i.numel()),
            "mean_code_overlap": float(code_overlap.mean()), "mean_input_overlap": float(input_overlap.mean())}
