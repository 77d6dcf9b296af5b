"""A sparse-distributed-code memory in the spirit of Sparsey.

Paper: G. J. Rinkus, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation" (and his earlier "A cortical sparse distributed coding model linking mini- and
macrocolumn-scale functionality", 2010). No official code exists; the paper gives the idea, not
every equation. **What follows is this package's reading**, and the parts marked (ours) are
choices made here, not taken from the paper.

Structure. A coding field of ``modules`` competitive modules (Rinkus's "competitive modules",
CMs, minicolumn-like), each of ``units`` binary units. A code is exactly one active unit per
module (winner-take-all per module), so every code has ``modules`` active units of
``modules × units``. Binary weights connect the input (key) pixels to the code units
(bottom-up) and the code units to the value pixels (top-down). All weights start at 0.

Code selection (learning). For an input x (binary, |x| active pixels):

1. Each unit j measures its match ``u_j = |x ∧ W_j| / √(|x| |W_j|)`` ∈ [0, 1], the cosine
   between the active pixels and the unit's bottom-up weights (0 for an unused unit). Rinkus
   normalises by |x| only; dividing by √|W_j| too (ours) keeps a unit that many inputs have
   wired up from matching everything once the weights fill in.
2. Familiarity ``G`` is the mean over modules of the largest ``u`` in the module: 1 for an input
   whose code units were wired by it alone, lower for a novel one.
3. Each module keeps its best-matching unit (drawn ∝ ``exp(sharpness · u_j)``, nearly the
   argmax) with probability ``keep = max(0, (G − novelty) / (1 − novelty)) ** power``, and
   otherwise takes a unit drawn uniformly. A familiar input thus gets back the code it had; a
   novel one (G ≤ ``novelty``) a random code, nearly disjoint from the stored ones; in between,
   the code shares a fraction of modules with the codes of the most similar stored inputs that
   grows with familiarity ("similar inputs map to similar codes"). Rinkus obtains this with a
   sigmoid whose height grows with G; this mixture form and the defaults ``sharpness=50``,
   ``novelty=0.7``, ``power=1`` are (ours). Draws come from the memory's seeded generator.

Storage is one-shot and binary Hebbian: after its code is chosen, every weight from an active
input pixel to an active code unit, between two active code units (lateral), and from an
active code unit to an active value pixel is set to 1 (it stays 1). One presentation stores an
item; there are no epochs.

Recall (ours in detail). A query's code first takes, in each module, the unit with the largest
``u`` (no randomness); then for up to ``settle`` rounds (default 5) each module re-picks the unit
with the largest ``u × h``, ``h`` being the fraction of the current code's units laterally wired
to it (Sparsey's product of bottom-up and horizontal inputs), which pulls a partly wrong code
onto a stored one. The value is read top-down: value pixel i is 1 when at least
``threshold × modules`` (default 0.9) of the code's units are wired to it — a high threshold,
since codes of similar items share units and a low one lets their pixels in.
:meth:`SparseCodeMemory.encode` returns the code as a ``(N, modules × units)`` 0/1 vector, so the
learned codes can serve as keys of another memory (e.g.
:class:`~beyondbp.memory.keyvalue.KeyValueMemory`'s ``encoder``).

Keys and values must be 0/1 (binarise images first); queries may hold any numbers, a pixel
counting as active when it is > 0.5 (a masked pixel, 0, is off).
"""

from __future__ import annotations

import torch

from beyondbp.errors import ConfigError

from .base import Memory, check_binary, check_count, check_positive

__all__ = ["SparseCodeMemory"]


class SparseCodeMemory(Memory):
    """Sparsey-like memory: WTA modules, familiarity-dependent codes, one-shot binary weights.

    Args:
        key_dim: input length.
        value_dim: value length (default: auto-associative, ``key_dim``).
        modules: number of competitive modules Q (default 24).
        units: units per module K (default 64).
        sharpness: how nearly a kept module takes its best match (default 50).
        novelty: familiarity at or below which codes are drawn uniformly (default 0.7, in [0, 1)).
        power: exponent of the keep probability (default 1).
        threshold: fraction of a code's units that must be wired to a value pixel for it to be
            recalled on (default 0.9, in (0, 1]).
        settle: rounds of lateral code completion at recall (default 5; 0: bottom-up only).
        seed: seeds the code draws.
        max_stored: refuse storing more items than this (default: no limit).
    """

    name = "sparse-code"

    def __init__(self, key_dim: int, value_dim: int | None = None, *, modules: int = 24, units: int = 64,
                 sharpness: float = 50.0, novelty: float = 0.7, power: float = 1.0, threshold: float = 0.9, settle: int = 5, seed: int = 0,
                 max_stored: int | None = None) -> None:
        super().__init__(key_dim, value_dim, seed=seed, max_stored=max_stored)
        self.modules = check_count(modules, "modules")
        self.units = check_count(units, "units")
        self.sharpness = check_positive(sharpness, "sharpness")
        if isinstance(novelty, bool) or not isinstance(novelty, (int, float)) or not 0 <= novelty < 1:
            raise ConfigError(f"novelty must be a number in [0, 1), got {novelty!r}")
        self.novelty = float(novelty)
        self.power = check_positive(power, "power")
        self.settle = check_count(settle, "settle", 0)
        self.threshold = check_positive(threshold, "threshold")
        if self.threshold > 1:
            raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
        self._reset()

    @property
    def code_dim(self) -> int:
        return self.modules * self.units

    @property
    def neurons(self) -> int:
        return self.code_dim

    @property
    def synapses(self) -> int:
        return self.code_dim * (self.key_dim + self.value_dim)

    def _reset(self) -> None:
        self.bottom_up = torch.zeros(self.key_dim, self.code_dim)
        self.top_down = torch.zeros(self.code_dim, self.value_dim)
        self.lateral = torch.zeros(self.code_dim, self.code_dim)
        #: the winner index of each module for every item stored, in order: ``(stored, modules)``
        self.codes = torch.zeros(0, self.modules, dtype=torch.long)
        #: the familiarity G each stored item had when it was stored
        self.familiarity = torch.zeros(0)

    def _check_items(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        check_binary(keys, "keys of the sparse-code memory", (0.0, 1.0))
        if values is not keys:
            check_binary(values, "values of the sparse-code memory", (0.0, 1.0))

    def _match(self, x: torch.Tensor) -> torch.Tensor:
        """``u``: ``(N, modules, units)``, the cosine between each input's active pixels and each
        unit's bottom-up weights, |x ∧ W_j| / √(|x| |W_j|) (0 for a unit with no weights)."""
        active = (x > 0.5).to(torch.float32)
        fan_in = self.bottom_up.sum(dim=0)
        norm = (active.sum(dim=1, keepdim=True) * fan_in).sqrt().clamp(min=1.0)
        return (active @ self.bottom_up / norm).view(-1, self.modules, self.units)

    def _one_hot(self, winners: torch.Tensor) -> torch.Tensor:
        """``(N, modules)`` winner indices -> ``(N, modules × units)`` 0/1 codes."""
        offsets = torch.arange(self.modules) * self.units
        codes = torch.zeros(winners.shape[0], self.code_dim)
        return codes.scatter_(1, winners + offsets, 1.0)

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        offsets = torch.arange(self.modules) * self.units
        winners_all, fam_all = [], []
        for x, v in zip(keys, values):
            u = self._match(x.unsqueeze(0))[0]
            g = float(u.max(dim=1).values.mean())
            keep = max(0.0, (g - self.novelty) / (1.0 - self.novelty)) ** self.power
            best = torch.multinomial(torch.softmax(self.sharpness * u, dim=1), 1, generator=self.generator).squeeze(1)
            fresh = torch.randint(0, self.units, (self.modules,), generator=self.generator)
            winners = torch.where(torch.rand(self.modules, generator=self.generator) < keep, best, fresh)
            cols = winners + offsets
            self.bottom_up[(x > 0.5).nonzero().squeeze(1).unsqueeze(1), cols] = 1.0
            self.top_down[cols.unsqueeze(1), (v > 0.5).nonzero().squeeze(1)] = 1.0
            self.lateral[cols.unsqueeze(1), cols] = 1.0
            winners_all.append(winners)
            fam_all.append(g)
        self.codes = torch.cat([self.codes, torch.stack(winners_all)])
        self.familiarity = torch.cat([self.familiarity, torch.tensor(fam_all)])

    def winners(self, queries: torch.Tensor) -> torch.Tensor:
        """The recall code of each query: ``(M, modules)`` winner indices (no randomness)."""
        u = self._match(queries)
        winners = u.argmax(dim=2)
        for _ in range(self.settle):
            support = self._one_hot(winners) @ self.lateral / self.modules
            nxt = (u * support.view_as(u)).argmax(dim=2)
            if torch.equal(nxt, winners):
                break
            winners = nxt
        return winners

    def encode(self, queries: torch.Tensor) -> torch.Tensor:
        """The recall codes as ``(M, modules × units)`` 0/1 vectors (usable as keys elsewhere)."""
        if queries.dim() != 2 or queries.shape[1] != self.key_dim:
            raise ConfigError(f"inputs to encode must have shape (N, {self.key_dim}), got {tuple(queries.shape)}")
        return self._one_hot(self.winners(queries.to(torch.float32)))

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        codes = self.encode(queries)
        votes = codes @ self.top_down
        return (votes >= self.threshold * self.modules - 1e-6).to(torch.float32)
