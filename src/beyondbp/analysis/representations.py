"""Similarity measures between the responses of two networks to the same stimuli.

Every function takes responses as 2-D arrays ``X (n_stimuli, p)`` and ``Y (n_stimuli, q)``
(numpy arrays or torch tensors, converted to float64 numpy; ``p != q`` is allowed; row ``s`` of
both is the response to the same stimulus ``s``). The stochastic metric takes 3-D arrays
``(repeats, n_stimuli, p)``: several noisy responses to every stimulus.

Measures (each one documented exactly in its function; CKA and RSA here, the shape metrics in
:mod:`beyondbp.analysis.shape`, the encoding model in :mod:`beyondbp.analysis.encoding`):

* **Linear CKA** -- "Similarity of Neural Network Representations Revisited", Kornblith,
  Norouzi, Lee, Hinton (ICML 2019). With column-centred ``X, Y`` the (biased) CKA is
  ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, the same number as
  ``<K, L> / (||K|| ||L||)`` with the centred Gram matrices ``K = X X^T``, ``L = Y Y^T``.
  The unbiased variant replaces every HSIC by the unbiased U-statistic estimator of
  "Feature Selection via Dependence Maximization", Song, Smola, Gretton, Bedo, Borgwardt (JMLR
  2012), as used for CKA by "Do Wide and Deep Networks Learn the Same Things?", Nguyen, Raghu,
  Kornblith (ICLR 2021); it is near 0 for independent representations even when the number of
  features is large next to the number of stimuli, where the biased one is not.
* **RSA** -- "Representational similarity analysis", Kriegeskorte, Mur, Bandettini (2008):
  the representational dissimilarity matrix (RDM) of each network (1 - Pearson correlation, or
  Euclidean distance, between the response patterns of every pair of stimuli), compared by a
  correlation (Spearman, Kendall's tau_a, or Pearson) of their upper triangles.
* **Procrustes shape metrics** -- "Generalized Shape Metrics on Neural Representations",
  Williams, Kunz, Kornblith, Linderman (NeurIPS 2021): centre, partially whiten with
  ``alpha`` (1: nothing, rotation-only Procrustes; 0: full whitening, the CCA-based metric),
  then the best orthogonal alignment; the angle (arccos of the aligned normalised inner
  product) or the Euclidean residual. Both are metrics (the triangle inequality holds).
* **Stochastic (Gaussian) shape metric** -- "Representational dissimilarity metric spaces for
  stochastic neural networks", Duong, Zhou, Nassar, Berman, Olieslagers, Williams (ICLR 2023):
  each stimulus' responses are summarised by their mean and covariance over repeats, and two
  networks are compared by the (alpha-interpolated) 2-Wasserstein distance between these
  Gaussians, averaged over stimuli, after the best common rotation.
* **Linear encoding model** -- ridge regression from one network's features to the other's
  units with the penalty chosen by inner cross-validation, held-out R^2 (the model of the
  system-identification literature, e.g. "System identification of neural systems: If we got
  it right, would we know?", Han, Poggio, Cheung, ICML 2023).

:data:`MEASURES` turns each into a distance (0 for identical representations) under a fixed
name, and :func:`distance_matrix` computes one of them for all pairs of a list of networks,
preparing every network once (centring, SVDs, RDM ranks, fold statistics) so that the pairwise
work is only what the pair needs. Everything is float64 numpy; nothing here draws from the
global numpy or torch random generators (the encoding model's fold split uses its own
``numpy.random.Generator``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import stats

from beyondbp.errors import ConfigError

from ._responses import (
    _check_max_stimuli,
    _choice,
    _repeated,
    _responses,
    _same_stimuli,
    _subset,
)
from .encoding import (
    _check_encoding,
    _enc_pair,
    _enc_x,
    _enc_y,
    _fold_index,
)
from .shape import (
    _check_dims,
    _check_iter,
    _gauss_pair,
    _gauss_prep,
    _shape_pair,
    _shape_prep,
)

__all__ = [
    "MEASURES",
    "Measure",
    "distance_matrix",
    "linear_cka",
    "rdm",
    "rsa",
]

_RDM_METRICS = ("correlation", "euclidean")
_COMPARES = ("spearman", "kendall", "pearson")


# --------------------------------------------------------------------------------------------
# linear CKA


@dataclass
class _CkaPrep:
    xc: np.ndarray                # column-centred responses (n, p)
    self_hsic: float              # HSIC(X, X) by the chosen estimator (unnormalised)
    diag: np.ndarray | None       # row norms^2 of xc (unbiased only)
    gram: np.ndarray | None = None  # centred Gram matrix, built on demand

    def gram_matrix(self) -> np.ndarray:
        if self.gram is None:
            self.gram = self.xc @ self.xc.T
        return self.gram


def _hsic_u_from_terms(cross: float, kl: float, sk: float, sl: float, n: int) -> float:
    """Unbiased HSIC of centred linear kernels from ||X^T Y||^2, k.l and the diagonal sums."""
    # K~ = K - diag(K); with centred features K 1 = 0, so 1^T K~ 1 = -sum(k), K~ 1 = -k.
    tr = cross - kl
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))


def _hsic_u_gram(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) from two n x n kernel matrices."""
    n = k.shape[0]
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    k1 = kt.sum(axis=1)
    l1 = lt.sum(axis=1)
    tr = float(np.sum(kt * lt))
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * float(k1 @ l1) / (n - 2)) / (n * (n - 3))


def _cka_prep(x: np.ndarray, unbiased: bool) -> _CkaPrep:
    xc = x - x.mean(axis=0)
    n, p = xc.shape
    small = xc.T @ xc if p <= n else xc @ xc.T
    fro2 = float(np.sum(small * small))  # ||X^T X||_F^2 = ||X X^T||_F^2
    if not unbiased:
        return _CkaPrep(xc, math.sqrt(fro2), None)
    d = np.einsum("ij,ij->i", xc, xc)
    self_hsic = _hsic_u_from_terms(fro2, float(d @ d), float(d.sum()), float(d.sum()), n)
    return _CkaPrep(xc, self_hsic, d)


def _cka_pair(a: _CkaPrep, b: _CkaPrep, unbiased: bool, method: str = "auto") -> float:
    n, p = a.xc.shape
    q = b.xc.shape[1]
    if method == "auto":
        method = "features" if n > p + q else "gram"
    if unbiased:
        if a.self_hsic <= 0.0 or b.self_hsic <= 0.0:
            return 0.0
        if method == "features":
            m = a.xc.T @ b.xc
            cross = float(np.sum(m * m))
            h = _hsic_u_from_terms(cross, float(a.diag @ b.diag), float(a.diag.sum()), float(b.diag.sum()), n)
        else:
            h = _hsic_u_gram(a.gram_matrix(), b.gram_matrix())
        return float(h / math.sqrt(a.self_hsic * b.self_hsic))
    if a.self_hsic == 0.0 or b.self_hsic == 0.0:
        return 0.0
    if method == "features":
        m = a.xc.T @ b.xc
        cross = float(np.sum(m * m))
    else:
        cross = float(np.sum(a.gram_matrix() * b.gram_matrix()))
    return float(cross / (a.self_hsic * b.self_hsic))


def linear_cka(X: Any, Y: Any, unbiased: bool = False, method: str = "auto") -> float:
    """Linear centred kernel alignment between the responses ``X`` (n, p) and ``Y`` (n, q).

    Columns are centred first. Biased (``unbiased=False``, Kornblith et al. 2019):
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = <K, L>_F`` for the
    centred Gram matrices ``K = X X^T``, ``L = Y Y^T``; in feature space this is
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. In [0, 1]; 1 for ``Y = c X R + t`` with
    ``R`` orthogonal, ``c != 0``.

    Unbiased (``unbiased=True``): every HSIC is the unbiased estimator of Song et al. (2012),
    ``HSIC_u(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 1^T K~ L~ 1 / (n-2)]
    / (n (n-3))`` with ``K~, L~`` the (centred) Gram matrices with their diagonals set to 0;
    near 0 for independent representations. It can be slightly negative; needs n >= 4.

    ``method``: ``"features"`` computes from ``X^T Y`` (cost ``n p q``), ``"gram"`` from the
    ``n x n`` Gram matrices (cost ``n^2 (p + q)``); ``"auto"`` (default) uses features when
    ``n > p + q``. Both give the same number up to rounding.

    A constant representation (all zero after centring; or, unbiased, a non-positive
    ``HSIC_u(K, K)``) has no defined CKA: this returns 0.0 for it (distance 1 in
    :data:`MEASURES`).
    """
    unbiased = bool(unbiased)
    method = _choice(method, ("auto", "features", "gram"), "CKA method")
    need = 4 if unbiased else 3
    x = _responses(X, "X", need)
    y = _responses(Y, "Y", need)
    _same_stimuli(x.shape[0], y.shape[0])
    return _cka_pair(_cka_prep(x, unbiased), _cka_prep(y, unbiased), unbiased, method)


# --------------------------------------------------------------------------------------------
# RDMs and RSA


def _rdm(x: np.ndarray, metric: str, symmetrise: bool = True) -> np.ndarray:
    if metric == "correlation":
        z = x - x.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", z, z))
        live = norms > 0
        z[live] /= norms[live, None]
        z[~live] = 0.0
        d = z @ z.T
        np.subtract(1.0, d, out=d)
    else:
        sq = np.einsum("ij,ij->i", x, x)
        d = x @ x.T
        d *= -2.0
        d += sq[:, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
    if symmetrise:
        d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return d


def rdm(X: Any, metric: str = "correlation") -> np.ndarray:
    """The representational dissimilarity matrix (n, n) of the responses ``X`` (n, p).

    ``"correlation"``: ``D[s, t] = 1 - Pearson correlation`` between the response patterns
    (rows) of stimuli ``s`` and ``t`` across features (as rsatoolbox's ``correlation``); a
    stimulus whose pattern is constant across features has correlation 0 with every other one
    (dissimilarity 1). ``"euclidean"``: ``D[s, t] = ||x_s - x_t||_2``, the plain Euclidean
    distance (not squared, not divided by p: rsatoolbox's ``euclidean`` is the squared distance
    divided by p). Symmetric, diagonal exactly 0.
    """
    metric = _choice(metric, _RDM_METRICS, "RDM metric")
    return _rdm(_responses(X, "X", 3), metric)


def _upper(d: np.ndarray) -> np.ndarray:
    """Upper triangle (k=1), row by row (the order of numpy.triu_indices)."""
    return d[np.triu(np.ones(d.shape, dtype=bool), k=1)]


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..m with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(v)
    sv = v[order]
    if np.any(sv[1:] == sv[:-1]):
        return stats.rankdata(v, method="average")
    r = np.empty(v.size, dtype=np.float64)
    r[order] = np.arange(1, v.size + 1, dtype=np.float64)
    return r


def _standardise(v: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit norm (zeros for a constant vector), so dot = Pearson r."""
    z = v - v.mean()
    norm = math.sqrt(float(z @ z))
    return z / norm if norm > 0 else np.zeros_like(z)


def _tie_pairs(v: np.ndarray) -> int:
    _, counts = np.unique(v, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


@dataclass
class _RsaPrep:
    vec: np.ndarray          # standardised RDM upper triangle (spearman: of its ranks) or raw (kendall)
    ties: int = 0            # pairs of tied entries (kendall)


def _rsa_prep(x: np.ndarray, metric: str, compare: str) -> _RsaPrep:
    v = _upper(_rdm(x, metric, symmetrise=False))
    if compare == "spearman":
        return _RsaPrep(_standardise(_ranks(v)))
    if compare == "pearson":
        return _RsaPrep(_standardise(v))
    return _RsaPrep(v, _tie_pairs(v))


def _rsa_pair(a: _RsaPrep, b: _RsaPrep, compare: str) -> float:
    if compare != "kendall":
        return float(np.clip(a.vec @ b.vec, -1.0, 1.0))
    m = a.vec.size
    tot = m * (m - 1) // 2
    if a.ties == tot or b.ties == tot:
        return 0.0
    tau_b = stats.kendalltau(a.vec, b.vec).statistic
    if not np.isfinite(tau_b):
        return 0.0
    # tau_b = (C - D) / sqrt((tot - xties)(tot - yties)); tau_a = (C - D) / tot.
    tau_a = tau_b * math.sqrt(float(tot - a.ties)) * math.sqrt(float(tot - b.ties)) / tot
    return float(min(1.0, max(-1.0, tau_a)))


def rsa(X: Any, Y: Any, metric: str = "correlation", compare: str = "spearman") -> float:
    """Representational similarity of ``X`` (n, p) and ``Y`` (n, q): a correlation of RDMs.

    The RDMs of both (:func:`rdm` with ``metric``) are compared over their upper triangles
    (the ``n (n - 1) / 2`` pairs of distinct stimuli) by ``compare``: ``"spearman"`` (Pearson
    correlation of the ranks, ties ranked by their average), ``"kendall"`` (Kendall's tau_a =
    (concordant - discordant pairs) / (m (m - 1) / 2) over the m entries, no tie correction in
    the denominator, as rsatoolbox's ``tau-a``) or ``"pearson"``. A constant RDM has no defined
    correlation: this returns 0.0 for it.
    """
    metric = _choice(metric, _RDM_METRICS, "RDM metric")
    compare = _choice(compare, _COMPARES, "RSA comparison")
    x = _responses(X, "X", 3)
    y = _responses(Y, "Y", 3)
    _same_stimuli(x.shape[0], y.shape[0])
    return _rsa_pair(_rsa_prep(x, metric, compare), _rsa_prep(y, metric, compare), compare)


# --------------------------------------------------------------------------------------------
# the catalogue and all-pairs distances


@dataclass(frozen=True)
class Measure:
    """One entry of :data:`MEASURES`: a distance between two networks' responses.

    ``defaults`` are the options :func:`distance_matrix` uses unless given (for speed; each
    documented in ``description`` where it changes the value); ``options`` are the names it
    accepts.
    """
    name: str
    description: str
    kind: str
    symmetric: bool
    stochastic: bool
    defaults: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()


_KENDALL_STIMULI = 300
_STOCH_DIMS = None
_STOCH_STIMULI = 500
_SPEARMAN_STIMULI = 1000
_STOCH_ITER = 1
_STOCH_TOL = 1e-6

MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("cka", "1 - linear CKA (biased HSIC estimator; Kornblith et al. 2019)",
                "distance", True, False),
        Measure("cka_unbiased", "1 - linear CKA with the unbiased HSIC estimator (Song et al. 2012)",
                "distance", True, False),
        Measure("rsa_spearman",
                f"1 - Spearman correlation of the correlation-distance RDMs (on {_SPEARMAN_STIMULI} evenly spaced stimuli by default)",
                "distance", True, False, {"max_stimuli": _SPEARMAN_STIMULI}, ("max_stimuli",)),
        Measure("rsa_kendall",
                f"1 - Kendall tau_a of the correlation-distance RDMs (on {_KENDALL_STIMULI} evenly spaced stimuli by default)",
                "distance", True, False, {"max_stimuli": _KENDALL_STIMULI}, ("max_stimuli",)),
        Measure("rsa_pearson", "1 - Pearson correlation of the Euclidean-distance RDMs",
                "distance", True, False, {"max_stimuli": None}, ("max_stimuli",)),
        Measure("procrustes", "angular Procrustes shape distance, alpha 1 (rotation only; Williams et al. 2021), radians",
                "distance", True, False),
        Measure("cca", "angular shape distance with full whitening, alpha 0 (CCA; Williams et al. 2021), radians",
                "distance", True, False),
        Measure("procrustes_euclidean",
                "Euclidean Procrustes distance (alpha 1), RMS per stimulus; deterministic counterpart of 'stochastic'",
                "distance", True, False),
        Measure("stochastic",
                f"2-Wasserstein stochastic shape distance, alpha 1 (Duong et al. 2023); "
                f"on {_STOCH_STIMULI} evenly spaced stimuli, {_STOCH_ITER} alternating update from the means' alignment by default",
                "distance", True, True,
                {"dims": _STOCH_DIMS, "max_stimuli": _STOCH_STIMULI, "max_iter": _STOCH_ITER, "tol": _STOCH_TOL},
                ("dims", "max_stimuli", "max_iter", "tol")),
        Measure("stochastic_mean",
                "stochastic shape distance, alpha 2 (means only; Duong et al. 2023) divided by sqrt(2): "
                "equals procrustes_euclidean of the mean responses",
                "distance", True, True, {"dims": None, "max_stimuli": None}, ("dims", "max_stimuli")),
        Measure("encoding",
                "1 - held-out R^2 of ridge regression (CV penalty) from network j's features to network i's units "
                "(row i = the recording)",
                "distance", False, False, {"alphas": None, "folds": 5, "seed": 0}, ("alphas", "folds", "seed")),
    )
}


def _options(measure: Measure, given: dict) -> dict:
    unknown = sorted(set(given) - set(measure.options))
    if unknown:
        allowed = ", ".join(measure.options) if measure.options else "none"
        raise ConfigError(f"measure {measure.name!r} has no option {unknown[0]!r}; allowed: {allowed}.")
    opts = dict(measure.defaults)
    opts.update(given)
    return opts


def _pairwise(preps: list, pair: Callable[[Any, Any], float], symmetric: bool) -> np.ndarray:
    n = len(preps)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1 if symmetric else 0, n):
            if i == j:
                continue
            d[i, j] = pair(preps[i], preps[j])
            if symmetric:
                d[j, i] = d[i, j]
    return d


def distance_matrix(name: str, reps: list, **options: Any) -> np.ndarray:
    """All pairwise distances ``D (n, n)`` of measure ``name`` (a key of :data:`MEASURES`).

    ``reps``: one response array per network, all to the same stimuli: 2-D ``(n_stimuli, p_i)``,
    or 3-D ``(repeats, n_stimuli, p_i)``; stochastic measures need 3-D, the others use the mean
    over repeats of 3-D input. ``options`` override the measure's ``defaults`` (see
    :class:`Measure`); ``D[i, j]`` equals the corresponding single-pair function on
    ``reps[i]``, ``reps[j]`` with the same options (for ``encoding``: 1 - R^2 of ``reps[j]``
    predicting ``reps[i]``). Every network is prepared once; symmetric measures compute each
    pair once. The diagonal is 0.
    """
    if name not in MEASURES:
        raise ConfigError(f"unknown measure {name!r}; allowed: {', '.join(MEASURES)}.")
    measure = MEASURES[name]
    opts = _options(measure, options)
    if not isinstance(reps, (list, tuple)) or len(reps) < 2:
        raise ConfigError("reps must be a list of at least two networks' responses.")

    if measure.stochastic:
        dims = _check_dims(opts.get("dims"))
        max_stimuli = _check_max_stimuli(opts.get("max_stimuli"))
        arrays = [_repeated(r, f"reps[{i}]", 3) for i, r in enumerate(reps)]
        _same_counts([a.shape[1] for a in arrays])
        if name == "stochastic_mean":
            # d_2 / sqrt(2) is the Euclidean Procrustes distance of the (centred) means
            means = [_shape_prep(_gauss_prep(a, dims, max_stimuli, False).mean, 1.0) for a in arrays]
            return _pairwise(means, lambda a, b: _shape_pair(a, b, "euclidean"), True)
        preps = [_gauss_prep(a, dims, max_stimuli) for a in arrays]
        max_iter, tol = _check_iter(opts["max_iter"], opts["tol"])
        return _pairwise(preps, lambda a, b: _gauss_pair(a, b, 1.0, max_iter, tol), True)

    need = {"cka_unbiased": 4, "encoding": None}.get(name, 3)
    if name == "encoding":
        grid, folds, seed = _check_encoding(opts["alphas"], opts["folds"], opts["seed"])
        need = max(3, 2 * folds)
    arrays = [_responses(r, f"reps[{i}]", need, mean_of_3d=True) for i, r in enumerate(reps)]
    _same_counts([a.shape[0] for a in arrays])

    if name in ("cka", "cka_unbiased"):
        unbiased = name == "cka_unbiased"
        preps = [_cka_prep(a, unbiased) for a in arrays]
        return _pairwise(preps, lambda a, b: 1.0 - _cka_pair(a, b, unbiased), True)
    if name.startswith("rsa_"):
        compare = name[4:]
        metric = "euclidean" if compare == "pearson" else "correlation"
        idx = _subset(arrays[0].shape[0], _check_max_stimuli(opts.get("max_stimuli")))
        if idx is not None:
            arrays = [a[idx] for a in arrays]
        preps = [_rsa_prep(a, metric, compare) for a in arrays]
        if compare == "kendall":
            return _pairwise(preps, lambda a, b: 1.0 - _rsa_pair(a, b, compare), True)
        vecs = [p.vec for p in preps]
        d = np.zeros((len(vecs), len(vecs)))
        for i in range(len(vecs)):
            for j in range(i + 1, len(vecs)):
                d[i, j] = d[j, i] = 1.0 - float(np.clip(vecs[i] @ vecs[j], -1.0, 1.0))
        return d
    if name in ("procrustes", "cca", "procrustes_euclidean"):
        alpha = 0.0 if name == "cca" else 1.0
        kind = "euclidean" if name == "procrustes_euclidean" else "angular"
        preps = [_shape_prep(a, alpha) for a in arrays]
        return _pairwise(preps, lambda a, b: _shape_pair(a, b, kind), True)
    # encoding: row i = the recording (predicted), column j = the model (predictor)
    index = _fold_index(arrays[0].shape[0], folds, seed)
    xs = [_enc_x(a, index) for a in arrays]
    ys = [_enc_y(a, index) for a in arrays]
    n = len(arrays)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = 1.0 - _enc_pair(xs[j], ys[i], grid)
    return d


def _same_counts(counts: list[int]) -> None:
    for i, c in enumerate(counts):
        if c != counts[0]:
            raise ConfigError(
                f"reps[{i}] has {c} stimuli but reps[0] has {counts[0]}; all networks must respond to the same stimuli."
            )
