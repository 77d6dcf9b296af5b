"""Hetero-associative key-value memory: one weight matrix from keys to values.

As reviewed in "Key-value memory in the brain" (Gershman, Fiete & Irie, 2025), a key k selects
where an item is written and read, and its value v is what is written there. Here the memory
is a single matrix ``M`` (``value_dim × key_dim``); reading is the linear map ``v̂ = M q``.
Two local writing rules:

* ``rule="hebbian"`` (the default): each item adds the outer product of its value and key,
  ``M = Σ_μ v^μ (k^μ)ᵀ``. A query equal to a stored key returns its value plus cross-talk
  ``Σ_{ν≠μ} v^ν (k^ν·k^μ)``: recall is exact when the keys are orthonormal, and degrades as
  keys overlap.
* ``rule="delta"``: each item moves ``M`` to reduce its own error,
  ``ΔM = η (v − M k) kᵀ``, applied item by item for ``epochs`` passes (default 50) over the
  items stored so far, stopping early once every stored item's largest error is below ``tol``
  (default 1e-6). With ``normalize=True`` (the default) the step is ``η = lr / ‖k‖²``
  (``lr`` default 1.0: each step then writes its item exactly, the Kaczmarz iteration), else
  ``η = lr``. For linearly independent keys it converges to exact recall of every item, where
  the Hebbian sum leaves cross-talk.

Keys are given, or — with ``encoder=`` a callable such as
:class:`~beyondbp.memory.base.RandomSparseKeys` or a trained
:class:`~beyondbp.memory.sparse.SparseCodeMemory`'s ``encode`` — replaced by their code before
storing and recalling (``key_dim`` is then the raw key's length; ``code_dim`` the code's).
``binarize=True`` returns sign(M q) (±1 values) instead of M q.
"""

from __future__ import annotations

from typing import Callable

import torch

from beyondbp.errors import ConfigError

from .base import Memory, check_count, check_positive

__all__ = ["KeyValueMemory"]

RULES = ("hebbian", "delta")


class KeyValueMemory(Memory):
    """``M`` from keys to values, written by the Hebbian or the delta rule (module docstring).

    Args:
        key_dim: length of a (raw) key.
        value_dim: length of a value (default: ``key_dim``).
        rule: ``"hebbian"`` (default) or ``"delta"``.
        lr, normalize, epochs, tol: the delta rule's step and stopping (see the module docstring).
        encoder: maps ``(N, key_dim)`` keys to ``(N, code_dim)`` codes before storing/recalling.
        code_dim: the encoder's output length (required with an encoder that has no
            ``code_dim`` attribute).
        binarize: return ``sign(M q)`` instead of ``M q``.
        seed: the delta rule visits items in a seeded random order each epoch.
        max_stored: refuse storing more items than this (default: no limit).
    """

    name = "key-value"

    def __init__(self, key_dim: int, value_dim: int | None = None, *, rule: str = "hebbian", lr: float = 1.0,
                 normalize: bool = True, epochs: int = 50, tol: float = 1e-6,
                 encoder: Callable[[torch.Tensor], torch.Tensor] | None = None, code_dim: int | None = None,
                 binarize: bool = False, seed: int = 0, max_stored: int | None = None) -> None:
        super().__init__(key_dim, value_dim, seed=seed, max_stored=max_stored)
        if rule not in RULES:
            raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.rule = rule
        self.name = f"key-value-{rule}"
        self.lr = check_positive(lr, "lr")
        self.normalize = bool(normalize)
        self.epochs = check_count(epochs, "epochs")
        self.tol = check_positive(tol, "tol")
        self.encoder = encoder
        if encoder is not None:
            code_dim = code_dim if code_dim is not None else getattr(encoder, "code_dim", None)
            if code_dim is None:
                raise ConfigError("code_dim is needed: the encoder does not say how long its codes are")
        self.code_dim = check_count(code_dim, "code_dim") if encoder is not None else self.key_dim
        self.binarize = bool(binarize)
        self._reset()

    @property
    def neurons(self) -> int:
        return self.code_dim + self.value_dim

    @property
    def synapses(self) -> int:
        return self.code_dim * self.value_dim

    def theoretical_capacity(self) -> float | None:
        """The delta rule recalls exactly up to ``code_dim`` linearly independent keys."""
        return float(self.code_dim) if self.rule == "delta" else None

    def _reset(self) -> None:
        self.matrix = torch.zeros(self.value_dim, self.code_dim, dtype=torch.float64)
        self._keys = torch.zeros(0, self.code_dim, dtype=torch.float64)
        self._values = torch.zeros(0, self.value_dim, dtype=torch.float64)

    def encode(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys as the memory addresses them (the encoder's codes, or the keys)."""
        if self.encoder is None:
            return keys
        codes = self.encoder(keys).to(torch.float32)
        if codes.shape != (keys.shape[0], self.code_dim):
            raise ConfigError(f"the encoder returned codes of shape {tuple(codes.shape)}, expected ({keys.shape[0]}, {self.code_dim})")
        return codes

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        k = self.encode(keys).double()
        v = values.double()
        if self.rule == "hebbian":
            self.matrix += v.T @ k
            return
        # the delta rule revisits every item stored so far (it needs them to converge)
        self._keys = torch.cat([self._keys, k])
        self._values = torch.cat([self._values, v])
        norms = (self._keys * self._keys).sum(dim=1)
        for _ in range(self.epochs):
            for i in torch.randperm(self._keys.shape[0], generator=self.generator).tolist():
                ki, vi = self._keys[i], self._values[i]
                if norms[i] == 0:
                    continue
                eta = self.lr / norms[i] if self.normalize else self.lr
                self.matrix += eta * torch.outer(vi - self.matrix @ ki, ki)
            err = (self._keys @ self.matrix.T - self._values).abs().max()
            if not torch.isfinite(err):
                raise ConfigError(f"the delta rule diverged: lower lr (now {self.lr:g}) or use normalize=True")
            if err < self.tol:
                break

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        out = (self.encode(queries).double() @ self.matrix.T).to(torch.float32)
        return torch.where(out >= 0, 1.0, -1.0) if self.binarize else out
