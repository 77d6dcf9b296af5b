"""The contract every memory keeps, its checks, and the key codes shared by the memories.

A memory is an object with

* ``store(keys, values=None)`` — add ``N`` items at once: ``keys`` is ``(N, key_dim)``, ``values``
  ``(N, value_dim)``; ``values=None`` stores the keys as their own values (auto-association).
  Storing again adds to what is held (each memory's learning rule is applied to the new items
  on top of the old weights).
* ``recall(queries)`` — ``(M, key_dim)`` queries to ``(M, value_dim)`` recalled values. Recall
  never changes the memory.
* ``reset()`` — forget everything (weights back to their initial state, the random stream back
  to its seed), so ``reset()`` then the same calls give the same results.
* ``capacity()`` — the load: items stored, neurons, synapses, items per neuron and per synapse,
  and the memory's own theoretical capacity where one is known.
* ``stored`` — the number of items stored since the last reset.

Every memory is deterministic given its ``seed``: its random draws come from its own
``torch.Generator``, never from the global stream. ``max_stored`` (default ``None``: no limit)
refuses a ``store`` that would take the memory past that many items, before anything changes.

Keys may be given (``encoder=None``), random sparse codes (:class:`RandomSparseKeys`: a fixed
random projection of the key followed by k-winners-take-all, the expansion coding of
cerebellum-like circuits), or codes learned by a local rule (the sparse-code memory,
:class:`beyondbp.memory.sparse.SparseCodeMemory`, whose codes can be used as keys through
:meth:`~beyondbp.memory.sparse.SparseCodeMemory.encode`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from beyondbp.errors import ConfigError

__all__ = ["Memory", "RandomSparseKeys", "check_count", "check_positive"]


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0, or a one-sentence :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number greater than 0, got {value!r}")
    return float(value)


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """A whole number ≥ ``minimum``, or a one-sentence :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def as_matrix(x: Any, name: str, dim: int | None, what: str) -> torch.Tensor:
    """``x`` as a finite float32 ``(N, dim)`` tensor (a single ``(dim,)`` vector is one row)."""
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{name} must be a torch tensor of shape (N, {dim if dim else 'dim'}), got {type(x).__name__}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ConfigError(f"{name} must have shape (N, {dim if dim else 'dim'}) with N >= 1, got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ConfigError(f"{name} have {x.shape[1]} entries each but this memory's {what} are {dim} long")
    x = x.detach().to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{name} must be finite numbers (found NaN or infinity)")
    return x


class Memory:
    """Base of the memories: the shared checks of ``store``/``recall`` and the capacity record.

    Subclasses set ``name``, call ``super().__init__`` and implement ``_store``, ``_recall``,
    ``_reset``, ``neurons``, ``synapses`` and (optionally) ``theoretical_capacity``.
    """

    name = "memory"
    #: whether ``values`` may differ from ``keys`` (hetero-association)
    hetero = True

    def __init__(self, key_dim: int, value_dim: int | None = None, *, seed: int = 0,
                 max_stored: int | None = None) -> None:
        self.key_dim = check_count(key_dim, "key_dim")
        if value_dim is not None and not self.hetero and value_dim != key_dim:
            raise ConfigError(f"the {self.name} memory is auto-associative: value_dim must equal key_dim ({key_dim}), got {value_dim}")
        self.value_dim = check_count(value_dim, "value_dim") if value_dim is not None else self.key_dim
        self.seed = check_count(seed, "seed", 0)
        self.max_stored = None if max_stored is None else check_count(max_stored, "max_stored")
        self.generator = torch.Generator().manual_seed(self.seed)
        self.stored = 0

    # -- the public contract ------------------------------------------------------------------
    def store(self, keys: torch.Tensor, values: torch.Tensor | None = None) -> "Memory":
        """Store ``N`` items: ``keys`` ``(N, key_dim)``, ``values`` ``(N, value_dim)`` or None
        (auto-association: each key is its own value). Returns the memory."""
        k = as_matrix(keys, "keys", self.key_dim, "keys")
        if values is None:
            if self.value_dim != self.key_dim:
                raise ConfigError(f"values are needed: this memory maps {self.key_dim}-long keys to {self.value_dim}-long values")
            v = k
        else:
            if not self.hetero:
                raise ConfigError(f"the {self.name} memory is auto-associative: store(keys) takes no values")
            v = as_matrix(values, "values", self.value_dim, "values")
            if v.shape[0] != k.shape[0]:
                raise ConfigError(f"keys and values must have as many rows, got {k.shape[0]} keys and {v.shape[0]} values")
        if self.max_stored is not None and self.stored + k.shape[0] > self.max_stored:
            raise ConfigError(
                f"cannot store {k.shape[0]} more items: the memory holds {self.stored} of at most {self.max_stored} (max_stored)")
        self._check_items(k, v)
        self._store(k, v)
        self.stored += k.shape[0]
        return self

    def recall(self, queries: torch.Tensor) -> torch.Tensor:
        """Recall the values of ``(M, key_dim)`` queries: ``(M, value_dim)``. Changes nothing."""
        q = as_matrix(queries, "queries", self.key_dim, "keys")
        if self.stored == 0:
            raise ConfigError(f"the {self.name} memory is empty: store items before recalling")
        with torch.no_grad():
            return self._recall(q)

    def reset(self) -> "Memory":
        """Forget every item and restart the random stream from the seed."""
        self.generator.manual_seed(self.seed)
        self.stored = 0
        self._reset()
        return self

    def capacity(self) -> dict[str, Any]:
        """The load: ``stored``, ``neurons``, ``synapses``, ``per_neuron`` (stored / neurons),
        ``per_synapse`` (stored / synapses) and ``theoretical`` (items, or None when unknown)."""
        n, s = self.neurons, self.synapses
        return {"memory": self.name, "stored": self.stored, "neurons": n, "synapses": s,
                "per_neuron": self.stored / n, "per_synapse": self.stored / s,
                "theoretical": self.theoretical_capacity()}

    # -- for subclasses ---------------------------------------------------------------------------
    @property
    def neurons(self) -> int:
        raise NotImplementedError

    @property
    def synapses(self) -> int:
        raise NotImplementedError

    def theoretical_capacity(self) -> float | None:
        return None

    def _check_items(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Refuse items this memory cannot hold (e.g. non-binary patterns); nothing by default."""

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        raise NotImplementedError

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_dim={self.key_dim}, value_dim={self.value_dim}, stored={self.stored}, seed={self.seed})"


def check_binary(x: torch.Tensor, name: str, values: tuple[float, ...]) -> None:
    """Refuse a pattern whose entries are not all in ``values`` (one sentence)."""
    ok = torch.zeros_like(x, dtype=torch.bool)
    for v in values:
        ok |= x == v
    if not bool(ok.all()):
        allowed = " or ".join(f"{v:g}" for v in values)
        raise ConfigError(f"{name} must hold only {allowed} entries (binarise them first)")


class RandomSparseKeys:
    """Random sparse key codes: ``code(x) = kWTA(R (x - mean(x)))`` with a fixed random
    ``(code_dim, dim)`` Gaussian matrix ``R``, ``mean(x)`` the mean entry of each input, and the
    ``active`` largest entries set to 1, the rest 0 (defaults: ``code_dim=2000``, ``active=40``).

    Similar inputs get overlapping codes; dissimilar ones nearly disjoint ones (an expansion
    code, as in cerebellum-like key-value circuits). Deterministic given ``seed``.
    """

    def __init__(self, dim: int, code_dim: int = 2000, active: int = 40, seed: int = 0) -> None:
        self.dim = check_count(dim, "dim")
        self.code_dim = check_count(code_dim, "code_dim")
        self.active = check_count(active, "active")
        if self.active > self.code_dim:
            raise ConfigError(f"active must be at most code_dim ({self.code_dim}), got {active}")
        g = torch.Generator().manual_seed(check_count(seed, "seed", 0))
        self.projection = torch.randn(self.code_dim, self.dim, generator=g) / math.sqrt(self.dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = as_matrix(x, "inputs", self.dim, "inputs")
        h = (x - x.mean(dim=1, keepdim=True)) @ self.projection.T
        idx = h.topk(self.active, dim=1).indices
        return torch.zeros_like(h).scatter_(1, idx, 1.0)
