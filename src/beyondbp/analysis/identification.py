"""Could a similarity measure tell learning rules apart? Identification statistics over a
network × network distance matrix, and classical MDS.

Every function takes a distance matrix ``D`` (n × n, float): row ``i`` is the reference (the
"recording"), column ``j`` the candidate, so ``D`` may be asymmetric (an encoding model's
1 − R² of ``j`` predicting ``i``); the diagonal is ignored (it may even be non-finite). ``labels``
gives each network's rule, ``groups`` each network's seed.

Nearest-neighbour identification (leave one out)
    For each network ``i`` its neighbour is ``j* = argmin_{j ≠ i} D[i, j]``; the accuracy is the
    fraction of networks whose neighbour has their rule. Ties are resolved by fractional credit:
    when several candidates share the smallest distance exactly, network ``i`` scores the fraction
    of them that have its rule (the expected score of a uniformly random tie-break, and
    independent of the order of the networks). The chance level is what a uniformly random other
    network would score: ``mean_i (n_{rule(i)} − 1) / (n − 1)``.

Reference identification (Han, Poggio & Cheung, "System identification of neural systems: If we
got it right, would we know?", ICML 2023)
    Each network ``i`` in turn plays the recording; every rule ``k`` is a candidate model, scored
    by the mean (``score="mean"``) or the smallest (``score="best"``) distance ``D[i, j]`` over its
    networks ``j ≠ i``. The identification is correct when the best-scoring (smallest) rule is
    ``i``'s own; ties again earn fractional credit (1 / number of tied rules if the true rule is
    among them). Chance is ``1 / number of rules``. Each rule needs at least two networks, or
    the recording's own rule would have no candidate.

Bootstrap over seeds
    The uncertainty that matters is over training seeds. Every network is scored once, as a
    recording against all the other networks (its *credit*: 1, 0 or a tie's fraction); a
    replicate draws as many seeds as there are, with replacement, and averages the credits of
    every network of each drawn seed (all rules of a seed together, so the rule × seed design is
    kept; a seed drawn twice counts twice). The candidate pool stays the full set of networks:
    resampling the pool as well would put copies of a network beside it, and a copy is no new
    network — with 4 seeds a replicate would hold only 2.7 distinct seeds on average, every
    network would have fewer others of its rule to find, and the replicates would sit well below
    the estimate (measured: nearest-neighbour accuracy 0.61 with replicates averaging 0.52). So
    the interval says how much the accuracy depends on which seeds' networks were the
    recordings, given the networks there are; it does not cover the variation of a fresh set of
    candidates. The interval is the 2.5th and 97.5th percentile of the replicates (linear
    interpolation, :func:`numpy.percentile`). A statistic given as a function is instead
    recomputed on each replicate's networks (copies of a network are treated like the network
    itself on the diagonal: never its own neighbour or candidate), with replicates of a single
    distinct seed redrawn. The draws use their own :class:`numpy.random.Generator` seeded with
    ``seed``; the global NumPy and torch generators are never touched.

Classical MDS (Torgerson 1952; Gower 1966)
    The symmetrised distances ``S = (D + Dᵀ) / 2`` (diagonal set to 0) are double-centred,
    ``B = −½ J S∘S J`` with ``J = I − 11ᵀ/n``, and the coordinates are the top eigenvectors of
    ``B`` scaled by the square roots of their eigenvalues (negative eigenvalues, from distances
    that are not Euclidean, give zero coordinates). Each axis's sign is chosen so that its
    entry of largest magnitude is positive, so the embedding is deterministic.

The figures, the Markdown and the files of a representation analysis are written by
:mod:`beyondbp.reporting.similarity`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..jsonable import finite_number

__all__ = [
    "Identification",
    "IdentificationScore",
    "as_distance_matrix",
    "bootstrap",
    "identify",
    "label_codes",
    "mds",
    "nearest_neighbour",
    "nn_chance",
    "reference_chance",
    "reference_identification",
]

STATISTICS = ("nn", "reference_mean", "reference_best")


# -- input checks -------------------------------------------------------------------------------


def as_distance_matrix(D: Any) -> np.ndarray:
    """``D`` as a float64 square matrix with finite off-diagonal entries, n ≥ 2 (``ConfigError``
    otherwise)."""
    try:
        if hasattr(D, "detach"):
            D = D.detach().cpu().numpy()
        M = np.array(D, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("the distance matrix must be an array of numbers") from None
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ConfigError(f"the distance matrix must be square (n × n), got shape {tuple(M.shape)}")
    n = M.shape[0]
    if n < 2:
        raise ConfigError(f"identification needs at least two networks, got {n}")
    off = ~np.eye(n, dtype=bool)
    if not np.all(np.isfinite(M[off])):
        raise ConfigError("the distance matrix has NaN or infinite entries off the diagonal; every pair of networks needs a finite distance")
    return M


def _labels(labels: Sequence[Any], n: int, what: str = "labels") -> list:
    labels = list(labels)
    if len(labels) != n:
        raise ConfigError(f"{what} has {len(labels)} entries but the distance matrix has {n} networks; give one per network")
    for x in labels:
        if not isinstance(x, Hashable):
            raise ConfigError(f"{what} must be strings or numbers, got {type(x).__name__}")
    return labels


def label_codes(labels: Sequence[Any]) -> tuple[np.ndarray, list]:
    """Integer code of each label and the distinct labels in order of first appearance."""
    order: "OrderedDict[Any, int]" = OrderedDict()
    for x in labels:
        order.setdefault(x, len(order))
    return np.array([order[x] for x in labels], dtype=np.int64), list(order)


def _check_reference(labels: Sequence[Any]) -> None:
    codes, rules = label_codes(labels)
    counts = np.bincount(codes, minlength=len(rules))
    for rule, count in zip(rules, counts):
        if count < 2:
            raise ConfigError(
                f"rule {rule!r} has only one network; reference identification needs at least two per rule"
            )
    if len(rules) < 2:
        raise ConfigError(f"reference identification needs at least two rules, got only {rules[0]!r}")


# -- statistics with an exclusion mask (copies of a network are excluded like the network) --------


def _nn_credit(D: np.ndarray, codes: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Per-recording credit (fraction of tied nearest candidates with the recording's rule)."""
    Dm = np.where(excluded, np.inf, D)
    best = Dm.min(axis=1)
    tied = (Dm == best[:, None]) & ~excluded
    same = codes[:, None] == codes[None, :]
    return (tied & same).sum(axis=1) / tied.sum(axis=1)


def _nn_choice(D: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Confusion counts (true rule × chosen rule), ties shared fractionally."""
    n = D.shape[0]
    excluded = np.eye(n, dtype=bool)
    Dm = np.where(excluded, np.inf, D)
    tied = (Dm == Dm.min(axis=1)[:, None]) & ~excluded
    share = tied / tied.sum(axis=1, keepdims=True)
    onehot = np.eye(k)[codes]
    return onehot.T @ share @ onehot


def _rule_scores(D: np.ndarray, codes: np.ndarray, k: int, excluded: np.ndarray, score: str) -> np.ndarray:
    """(n, k) score of each rule for each recording: mean or smallest distance over its
    non-excluded networks; +inf where a rule has none."""
    valid = ~excluded
    onehot = np.eye(k, dtype=bool)[codes]  # (n, k)
    if score == "mean":
        counts = valid.astype(np.float64) @ onehot
        sums = np.where(valid, D, 0.0) @ onehot
        with np.errstate(divide="ignore", invalid="ignore"):
            out = sums / counts
        out[counts == 0] = np.inf
        return out
    out = np.empty((D.shape[0], k))
    for r in range(k):
        out[:, r] = np.where(valid & onehot[:, r][None, :], D, np.inf).min(axis=1)
    return out


def _reference_credit(D: np.ndarray, codes: np.ndarray, k: int, excluded: np.ndarray, score: str) -> np.ndarray:
    """Per-recording credit; NaN for a recording whose rule has no candidate left."""
    S = _rule_scores(D, codes, k, excluded, score)
    n = D.shape[0]
    own = S[np.arange(n), codes]
    best = S.min(axis=1)
    tied = S == best[:, None]
    credit = tied[np.arange(n), codes] / tied.sum(axis=1)
    return np.where(np.isfinite(own), credit, np.nan)


def _statistic(name: str, D: np.ndarray, codes: np.ndarray, k: int, excluded: np.ndarray) -> float:
    if name == "nn":
        return float(np.mean(_nn_credit(D, codes, excluded)))
    credit = _reference_credit(D, codes, k, excluded, "mean" if name == "reference_mean" else "best")
    kept = credit[np.isfinite(credit)]
    return float(np.mean(kept)) if kept.size else math.nan


# -- public statistics ----------------------------------------------------------------------------


def nearest_neighbour(D: Any, labels: Sequence[Any]) -> float:
    """Leave-one-out nearest-neighbour identification accuracy: the fraction of networks ``i``
    whose closest other network ``argmin_{j≠i} D[i, j]`` has ``i``'s rule (exact ties share the
    credit: the fraction of the tied networks with ``i``'s rule)."""
    M = as_distance_matrix(D)
    codes, _ = label_codes(_labels(labels, M.shape[0]))
    return float(np.mean(_nn_credit(M, codes, np.eye(M.shape[0], dtype=bool))))


def nn_chance(labels: Sequence[Any]) -> float:
    """Chance level of :func:`nearest_neighbour`: ``mean_i (count(label_i) − 1) / (n − 1)``."""
    labels = list(labels)
    n = len(labels)
    if n < 2:
        raise ConfigError(f"identification needs at least two networks, got {n}")
    codes, _ = label_codes(labels)
    counts = np.bincount(codes)
    return float(np.mean((counts[codes] - 1) / (n - 1)))


def reference_chance(labels: Sequence[Any]) -> float:
    """Chance level of :func:`reference_identification`: one over the number of rules."""
    return 1.0 / len(set(labels)) if len(labels) else math.nan


def reference_identification(D: Any, labels: Sequence[Any], score: str = "mean") -> float:
    """Han et al.'s identification accuracy: each network in turn is the recording, each rule is
    scored by the mean (``score="mean"``) or smallest (``"best"``) distance from the recording to
    that rule's other networks, and the recording is identified when its own rule scores best
    (smallest; ties share the credit). Every rule needs at least two networks."""
    if score not in ("mean", "best"):
        raise ConfigError(f"score must be 'mean' or 'best', got {score!r}")
    M = as_distance_matrix(D)
    labels = _labels(labels, M.shape[0])
    _check_reference(labels)
    codes, rules = label_codes(labels)
    credit = _reference_credit(M, codes, len(rules), np.eye(M.shape[0], dtype=bool), score)
    return float(np.mean(credit))


def _check_groups(groups: Sequence[Any], n: int) -> tuple[np.ndarray, list]:
    codes, distinct = label_codes(_labels(groups, n, "groups"))
    if len(distinct) < 2:
        raise ConfigError(
            f"the bootstrap over seeds needs networks from at least two seeds, got {len(distinct)}"
        )
    return codes, distinct


def bootstrap(
    D: Any,
    labels: Sequence[Any],
    groups: Sequence[Any],
    stat: str | Callable[[np.ndarray, Sequence[Any], np.ndarray], float] = "nn",
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % percentile interval of an identification statistic over seeds (see the module
    docstring for how copies of a network are excluded). ``stat`` is ``"nn"``,
    ``"reference_mean"``, ``"reference_best"``, or a function ``stat(D, labels, excluded)`` of a
    replicate's distance matrix, labels and boolean (n, n) mask of the pairs that must not count
    (the diagonal and the copies), returning a number (NaN if undefined: redrawn)."""
    M = as_distance_matrix(D)
    n = M.shape[0]
    labels = _labels(labels, n)
    gcodes, distinct = _check_groups(groups, n)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot!r}")
    if isinstance(stat, str):
        if stat not in STATISTICS:
            raise ConfigError(f"stat must be one of {', '.join(STATISTICS)} or a function, got {stat!r}")
        if stat != "nn":
            _check_reference(labels)
    elif not callable(stat):
        raise ConfigError(f"stat must be one of {', '.join(STATISTICS)} or a function, got {type(stat).__name__}")
    codes, rules = label_codes(labels)
    g = len(distinct)
    members = [np.flatnonzero(gcodes == c) for c in range(g)]
    rng = np.random.default_rng(seed)
    if isinstance(stat, str):  # cluster bootstrap of the per-recording credits (module docstring)
        excluded = np.eye(n, dtype=bool)
        if stat == "nn":
            credit = _nn_credit(M, codes, excluded)
        else:
            credit = _reference_credit(M, codes, len(rules), excluded, "mean" if stat == "reference_mean" else "best")
        sums = np.array([np.nansum(credit[m]) for m in members])
        counts = np.array([np.isfinite(credit[m]).sum() for m in members], dtype=np.float64)
        drawn = rng.integers(0, g, size=(int(n_boot), g))
        with np.errstate(invalid="ignore", divide="ignore"):
            values = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ConfigError("the bootstrap statistic was undefined in every replicate; check the labels and groups")
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)
    values = np.empty(int(n_boot))
    done = attempts = 0
    while done < n_boot:
        attempts += 1
        if attempts > 100 * n_boot + 1000:  # cannot happen with ≥ 2 seeds unless stat is never defined
            raise ConfigError("the bootstrap statistic was undefined in nearly every replicate; check the labels and groups")
        drawn = rng.integers(0, g, size=g)
        if np.unique(drawn).size < 2:
            continue
        idx = np.concatenate([members[c] for c in drawn])
        excluded = idx[:, None] == idx[None, :]
        sub = M[np.ix_(idx, idx)]
        if isinstance(stat, str):
            value = _statistic(stat, sub, codes[idx], len(rules), excluded)
        else:
            value = finite_number(stat(sub, [labels[i] for i in idx], excluded))
            value = math.nan if value is None else value
        if not math.isfinite(value):
            continue
        values[done] = value
        done += 1
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class IdentificationScore:
    """One identification statistic: its ``accuracy``, the ``chance`` level and the 95 %
    bootstrap ``interval`` over seeds ``(low, high)``."""

    accuracy: float
    chance: float
    interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "chance": self.chance, "interval": list(self.interval)}


@dataclass(frozen=True)
class Identification:
    """Every identification statistic of one distance matrix (:func:`identify`): nearest
    neighbour (``nn``), reference identification with the mean (``reference``) and the best
    (``reference_best``) score, and the nearest-neighbour ``confusion`` counts
    (``confusion[true rule][chosen rule]``, ties shared fractionally)."""

    n_networks: int
    rules: tuple[str, ...]
    n_boot: int
    seed: int
    nn: IdentificationScore
    reference: IdentificationScore
    reference_best: IdentificationScore
    confusion: Mapping[str, Mapping[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"n_networks": self.n_networks, "rules": list(self.rules), "n_boot": self.n_boot, "seed": self.seed,
                "nn": self.nn.to_dict(), "reference": self.reference.to_dict(),
                "reference_best": self.reference_best.to_dict(),
                "confusion": {a: dict(row) for a, row in self.confusion.items()}}


def identify(D: Any, labels: Sequence[Any], groups: Sequence[Any], n_boot: int = 1000, seed: int = 0) -> Identification:
    """All identification statistics of one distance matrix (:class:`Identification`):
    nearest-neighbour accuracy, reference identification with the mean and the best score, each
    with its chance level and 95 % bootstrap interval over seeds, and the nearest-neighbour
    confusion counts (``confusion[true rule][chosen rule]``, ties shared fractionally)."""
    M = as_distance_matrix(D)
    n = M.shape[0]
    labels = _labels(labels, n)
    _check_groups(groups, n)
    _check_reference(labels)
    codes, rules = label_codes(labels)
    nn = IdentificationScore(nearest_neighbour(M, labels), nn_chance(labels), bootstrap(M, labels, groups, "nn", n_boot, seed))
    ref = {
        score: IdentificationScore(reference_identification(M, labels, score), reference_chance(labels),
                                   bootstrap(M, labels, groups, f"reference_{score}", n_boot, seed))
        for score in ("mean", "best")
    }
    counts = _nn_choice(M, codes, len(rules))
    return Identification(
        n_networks=n, rules=tuple(str(r) for r in rules), n_boot=int(n_boot), seed=seed, nn=nn,
        reference=ref["mean"], reference_best=ref["best"],
        confusion={str(a): {str(b): float(counts[i, j]) for j, b in enumerate(rules)} for i, a in enumerate(rules)},
    )


def mds(D: Any, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS of the symmetrised ``(D + Dᵀ)/2``: (n, dims) coordinates whose
    distances approximate it (exactly, for Euclidean distances of points in ≤ dims dimensions);
    each axis's largest-magnitude entry is positive."""
    M = as_distance_matrix(D)
    n = M.shape[0]
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or not 1 <= dims <= n:
        raise ConfigError(f"dims must be an integer from 1 to the number of networks ({n}), got {dims!r}")
    S = 0.5 * (M + M.T)
    np.fill_diagonal(S, 0.0)
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (S * S) @ J
    B = 0.5 * (B + B.T)
    w, V = np.linalg.eigh(B)
    order = np.argsort(w)[::-1][:dims]
    w, V = np.clip(w[order], 0.0, None), V[:, order]
    X = V * np.sqrt(w)[None, :]
    for c in range(dims):
        r = int(np.argmax(np.abs(X[:, c])))
        if X[r, c] < 0:
            X[:, c] = -X[:, c]
    return X
