"""Associative and key-value memories learned by local rules, with one API (issue 27).

Every memory has ``store(keys, values=None)``, ``recall(queries)``, ``reset()``, ``capacity()``
(items per neuron and per synapse) and a ``seed`` (:mod:`.base` states the contract):

================== ===================================================== ======================
name               memory                                                items
================== ===================================================== ======================
hopfield           classic Hopfield net, Hebbian outer products, sign    ±1 patterns
                   dynamics (:class:`~.hopfield.ClassicHopfield`)
modern-hopfield    softmax retrieval ξ ← Xᵀ softmax(β X ξ)               real vectors
                   (:class:`~.hopfield.ModernHopfield`)
key-value-hebbian  M = Σ v kᵀ, recall M q (:class:`~.keyvalue.KeyValueMemory`) real keys/values
key-value-delta    ΔM = η (v − M k) kᵀ over epochs                       real keys/values
sparse-code        Sparsey-like WTA modules, familiarity-dependent codes, 0/1 patterns
                   one-shot binary Hebbian weights
                   (:class:`~.sparse.SparseCodeMemory`)
================== ===================================================== ======================

:class:`~.ca3.CA3Memory` (one-hot cues to 0/1 contents and back, a spiking CA3 circuit with STDP)
keeps the same contract but is built directly, not by :func:`make`.

:func:`make` builds one by name; :mod:`.measure` measures recall quality against the number
stored and the query noise (on random patterns or Fashion-MNIST) and the sparse code's
similarity preservation.

    >>> from beyondbp import memory
    >>> m = memory.make("hopfield", 100, seed=0)
    >>> patterns = memory.random_patterns(5, 100, seed=1)
    >>> bool((m.store(patterns).recall(patterns) == patterns).all())
    True
"""

from __future__ import annotations

from typing import Any

import torch

from beyondbp.errors import ConfigError

from .base import Memory, RandomSparseKeys
from .ca3 import CA3Memory
from .hopfield import ClassicHopfield, ModernHopfield
from .keyvalue import KeyValueMemory
from .sparse import SparseCodeMemory

__all__ = [
    "MEMORIES",
    "CA3Memory",
    "ClassicHopfield",
    "KeyValueMemory",
    "Memory",
    "ModernHopfield",
    "RandomSparseKeys",
    "SparseCodeMemory",
    "make",
    "names",
    "random_patterns",
]

#: name -> (class, fixed options)
MEMORIES: dict[str, tuple[type[Memory], dict[str, Any]]] = {
    "hopfield": (ClassicHopfield, {}),
    "modern-hopfield": (ModernHopfield, {}),
    "key-value-hebbian": (KeyValueMemory, {"rule": "hebbian"}),
    "key-value-delta": (KeyValueMemory, {"rule": "delta"}),
    "sparse-code": (SparseCodeMemory, {}),
}


def names() -> list[str]:
    """The memories :func:`make` knows."""
    return list(MEMORIES)


def make(name: str, dim: int, **options: Any) -> Memory:
    """The memory ``name`` over ``dim``-long keys; ``options`` go to its class (e.g. ``beta``,
    ``update``, ``value_dim``, ``seed``). An unknown name or option is one sentence."""
    if name not in MEMORIES:
        raise ConfigError(f"unknown memory {name!r}: choose one of {', '.join(MEMORIES)}")
    cls, fixed = MEMORIES[name]
    clash = sorted(set(options) & set(fixed))
    if clash:
        raise ConfigError(f"memory {name!r} fixes {', '.join(clash)}; choose another memory name instead")
    try:
        return cls(dim, **fixed, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            bad = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else "?"
            raise ConfigError(f"memory {name!r} has no option {bad!r}") from None
        raise


def random_patterns(n: int, dim: int, seed: int = 0, sparsity: float | None = None) -> torch.Tensor:
    """``n`` random patterns of length ``dim``: ±1 with equal odds, or with ``sparsity`` = p,
    0/1 with each entry 1 with probability p. Deterministic given ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if sparsity is None:
        return torch.randint(0, 2, (n, dim), generator=g).to(torch.float32) * 2 - 1
    return (torch.rand(n, dim, generator=g) < sparsity).to(torch.float32)
