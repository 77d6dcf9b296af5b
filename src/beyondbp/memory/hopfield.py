"""Hopfield memories: the classic binary network and the modern (dense, softmax) one.

**Classic Hopfield network** (J. J. Hopfield, "Neural networks and physical systems with
emergent collective computational abilities", PNAS 1982). The items are ±1 patterns
ξ¹ … ξᴾ of ``n`` neurons. Storing is Hebbian: the weight between two neurons is the average,
over the stored patterns, of the product of their states, and no neuron connects to itself:

    W = (1/n) Σ_μ ξ^μ (ξ^μ)ᵀ,   W_ii = 0.

Recall starts the state at the query and lets each neuron take the sign of its input field,
s_i ← sign(Σ_j W_ij s_j), keeping its state when the field is exactly 0. ``update="async"``
(the default) updates one neuron at a time in a random order, every neuron once per sweep —
the energy −½ sᵀ W s then never rises, so the state settles on a fixed point;
``update="sync"`` updates all neurons at once (faster, but it can fall into a 2-cycle).
Dynamics stop at a fixed point or after ``max_sweeps`` sweeps (default 50). The random order of
asynchronous updates comes from a generator seeded by the memory's seed at every ``recall``,
so a query's answer does not depend on what was recalled before. For random patterns the
network holds about 0.138 n of them with few errors (Amit, Gutfreund & Sompolinsky 1985);
:meth:`ClassicHopfield.theoretical_capacity` returns that number. Queries may contain 0
entries (masked pixels: no information).

**Modern Hopfield network** ("Hopfield Networks is All You Need", Ramsauer et al., ICLR 2021).
The stored patterns are kept as the rows of ``X`` (``N × d``); one retrieval step replaces the
state by a softmax-weighted average of the stored patterns, the weights growing with each
pattern's dot product with the state:

    ξ ← Xᵀ softmax(β X ξ).

``beta`` (β, default 1.0) is the inverse temperature: large β retrieves the single nearest
pattern (exactly, up to exp(−β·gap) terms), small β averages many patterns — retrieving images
with a β too small for their dot products gives blurred mixtures. ``iterations`` (default 1)
steps are taken; one step usually suffices when the patterns are well separated. Given separate
values ``V``, the last step reads out ``Vᵀ softmax(β K ξ)`` (the softmax key-value form,
attention). The number of patterns it can retrieve grows exponentially with ``d``.
"""

from __future__ import annotations

import torch

from beyondbp.errors import ConfigError

from .base import Memory, check_binary, check_count, check_positive

__all__ = ["ClassicHopfield", "ModernHopfield"]

UPDATES = ("async", "sync")


def _sign_keep(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sign(h), keeping ``s`` where ``h`` is exactly 0."""
    return torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, s))


class ClassicHopfield(Memory):
    """The classic auto-associative Hopfield network on ±1 patterns (see the module docstring).

    Args:
        dim: number of neurons ``n`` (the pattern length).
        update: ``"async"`` (default: one neuron at a time, random order) or ``"sync"``.
        max_sweeps: most sweeps of the dynamics per recall (default 50).
        seed: seeds the asynchronous update order.
        max_stored: refuse storing more items than this (default: no limit).
    """

    name = "hopfield"
    hetero = False

    def __init__(self, dim: int, *, update: str = "async", max_sweeps: int = 50, seed: int = 0,
                 max_stored: int | None = None) -> None:
        super().__init__(dim, None, seed=seed, max_stored=max_stored)
        if update not in UPDATES:
            raise ConfigError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
        self.update = update
        self.max_sweeps = check_count(max_sweeps, "max_sweeps")
        self._reset()

    @property
    def neurons(self) -> int:
        return self.key_dim

    @property
    def synapses(self) -> int:
        return self.key_dim * (self.key_dim - 1)

    def theoretical_capacity(self) -> float:
        return 0.138 * self.key_dim

    def _reset(self) -> None:
        self.weights = torch.zeros(self.key_dim, self.key_dim)

    def _check_items(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        check_binary(keys, "Hopfield patterns", (-1.0, 1.0))

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.weights += keys.T @ keys / self.key_dim
        self.weights.fill_diagonal_(0.0)

    def fixed_points(self, patterns: torch.Tensor) -> torch.Tensor:
        """Whether each ±1 pattern is a fixed point of the dynamics (no neuron would flip)."""
        s = patterns.to(torch.float32)
        return (_sign_keep(s @ self.weights, s) == s).all(dim=1)

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        s = queries.clone()
        w = self.weights
        if self.update == "sync":
            for _ in range(self.max_sweeps):
                nxt = _sign_keep(s @ w, s)
                if torch.equal(nxt, s):
                    break
                s = nxt
            return s
        order_gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.max_sweeps):
            changed = False
            for i in torch.randperm(self.key_dim, generator=order_gen).tolist():
                new = _sign_keep(s @ w[:, i], s[:, i])
                if not torch.equal(new, s[:, i]):
                    changed = True
                    s[:, i] = new
            if not changed:
                break
        return s


class ModernHopfield(Memory):
    """The modern (dense) Hopfield network with softmax retrieval (see the module docstring).

    Args:
        key_dim: pattern (key) length ``d``.
        value_dim: value length when values differ from keys (default: auto-associative).
        beta: inverse temperature β > 0 (default 1.0).
        iterations: retrieval steps (default 1).
        seed: unused by the dynamics (kept for the common API).
        max_stored: refuse storing more items than this (default: no limit).
    """

    name = "modern-hopfield"

    def __init__(self, key_dim: int, value_dim: int | None = None, *, beta: float = 1.0, iterations: int = 1,
                 seed: int = 0, max_stored: int | None = None) -> None:
        super().__init__(key_dim, value_dim, seed=seed, max_stored=max_stored)
        self.beta = check_positive(beta, "beta")
        self.iterations = check_count(iterations, "iterations")
        self._reset()

    @property
    def neurons(self) -> int:
        """Feature units plus one hidden unit per stored pattern (Krotov & Hopfield's reading)."""
        return self.key_dim + self.stored

    @property
    def synapses(self) -> int:
        values = self.value_dim if self._hetero_values else 0
        return max(1, self.stored * (self.key_dim + values))

    def _reset(self) -> None:
        self.keys = torch.zeros(0, self.key_dim)
        self.values = torch.zeros(0, self.value_dim)
        self._hetero_values = False

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._hetero_values = self._hetero_values or values is not keys
        self.keys = torch.cat([self.keys, keys])
        self.values = torch.cat([self.values, values])

    def attention(self, queries: torch.Tensor) -> torch.Tensor:
        """softmax(β K ξ) for each query after ``iterations − 1`` steps: ``(M, N)`` weights."""
        q = queries
        for _ in range(self.iterations - 1):
            q = torch.softmax(self.beta * q @ self.keys.T, dim=1) @ self.keys
        return torch.softmax(self.beta * q @ self.keys.T, dim=1)

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        return self.attention(queries) @ self.values
