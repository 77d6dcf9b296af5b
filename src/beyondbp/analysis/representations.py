"""Similarity measures between the responses of two networks to the same stimuli.

Every function takes responses as 2-D arrays ``X (n_stimuli, p)`` and ``Y (n_stimuli, q)``
(numpy arrays or torch tensors, converted to float64 numpy; ``p != q`` is allowed; row ``s`` of
both is the response to the same stimulus ``s``). The stochastic metric takes 3-D arrays
``(repeats, n_stimuli, p)``: several noisy responses to every stimulus.

Measures (each one documented exactly in its function):

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

__all__ = [
    "MEASURES",
    "Measure",
    "distance_matrix",
    "encoding_r2",
    "linear_cka",
    "procrustes_distance",
    "rdm",
    "rsa",
    "stochastic_shape_distance",
]

_RDM_METRICS = ("correlation", "euclidean")
_COMPARES = ("spearman", "kendall", "pearson")
_KINDS = ("angular", "euclidean")


# --------------------------------------------------------------------------------------------
# input checks


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if type(a).__module__.split(".")[0] == "torch":
        a = a.detach().cpu().double().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array, got {type(a).__name__} ({exc}).") from None
    return arr


def _responses(a: Any, name: str, min_stimuli: int = 3, mean_of_3d: bool = False) -> np.ndarray:
    """A checked (n_stimuli, features) float64 array (3-D input averaged over repeats if allowed)."""
    arr = _to_numpy(a, name)
    if arr.ndim == 3 and mean_of_3d:
        _check_finite(arr, name)
        arr = arr.mean(axis=0)
    if arr.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D array (n_stimuli, features), got shape {tuple(arr.shape)}."
        )
    if arr.shape[0] < min_stimuli:
        raise ConfigError(
            f"{name} has {arr.shape[0]} stimuli but this measure needs at least {min_stimuli}."
        )
    if arr.shape[1] < 1:
        raise ConfigError(f"{name} has no features (shape {tuple(arr.shape)}); at least 1 is needed.")
    _check_finite(arr, name)
    return arr


def _repeated(a: Any, name: str, min_stimuli: int = 3) -> np.ndarray:
    arr = _to_numpy(a, name)
    if arr.ndim != 3:
        raise ConfigError(
            f"{name} must be a 3-D array (repeats, n_stimuli, features) of repeated responses, "
            f"got shape {tuple(arr.shape)}."
        )
    if arr.shape[0] < 2:
        raise ConfigError(f"{name} has {arr.shape[0]} repeat(s) but the stochastic metric needs at least 2.")
    if arr.shape[1] < min_stimuli:
        raise ConfigError(
            f"{name} has {arr.shape[1]} stimuli but this measure needs at least {min_stimuli}."
        )
    if arr.shape[2] < 1:
        raise ConfigError(f"{name} has no features (shape {tuple(arr.shape)}); at least 1 is needed.")
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or infinite values; responses must be finite.")


def _same_stimuli(n_x: int, n_y: int, what: str = "X and Y") -> None:
    if n_x != n_y:
        raise ConfigError(
            f"{what} have different numbers of stimuli ({n_x} and {n_y}); both must respond to the same stimuli."
        )


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}.")
    return value


def _subset(n: int, max_stimuli: int | None) -> np.ndarray | None:
    """Evenly spaced stimulus indices (deterministic), or None for all stimuli."""
    if max_stimuli is None or max_stimuli >= n:
        return None
    return np.unique(np.round(np.linspace(0, n - 1, max_stimuli)).astype(np.int64))


def _check_max_stimuli(max_stimuli: Any, minimum: int = 3) -> int | None:
    if max_stimuli is None:
        return None
    if isinstance(max_stimuli, bool) or not isinstance(max_stimuli, (int, np.integer)) or max_stimuli < minimum:
        raise ConfigError(f"max_stimuli must be None or an integer >= {minimum}, got {max_stimuli!r}.")
    return int(max_stimuli)


def _nuclear(m: np.ndarray) -> float:
    if m.size == 0:
        return 0.0
    return float(np.linalg.svd(m, compute_uv=False).sum())


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
# Procrustes shape metrics


def _check_alpha(alpha: Any, high: float, what: str) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} alpha must be a number in [0, {high:g}], got {alpha!r}.") from None
    if not (0.0 <= a <= high):
        raise ConfigError(f"{what} alpha must be in [0, {high:g}], got {alpha!r}.")
    return a


def _shape_prep(x: np.ndarray, alpha: float) -> np.ndarray:
    """Centred, partially whitened responses in their own principal axes: U diag(w), (n, rank).

    With ``X_c = U S V^T`` (thin SVD) and covariance ``C = X_c^T X_c / n``,
    ``X_c (alpha I + (1 - alpha) C^{-1/2}) = U diag(alpha s + (1 - alpha) sqrt(n)) V^T``;
    the right factor ``V^T`` is orthogonal and absorbed by the alignment, so it is dropped.
    Directions with singular value below the numerical rank tolerance are dropped (they carry
    no response: C^{-1/2} acts on the range of C only).
    """
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros((n, 0))
    keep = s > s[0] * max(xc.shape) * np.finfo(np.float64).eps
    u, s = u[:, keep], s[keep]
    w = alpha * s + (1.0 - alpha) * math.sqrt(n)
    return u * w


def _shape_pair(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    n = a.shape[0]
    na2 = float(np.sum(a * a))
    nb2 = float(np.sum(b * b))
    if a.shape[1] == 0 or b.shape[1] == 0:
        if kind == "euclidean":
            return math.sqrt((na2 + nb2) / n)
        return 0.0 if (na2 == 0.0 and nb2 == 0.0) else math.pi / 2
    m = a.T @ b
    if kind == "angular":
        c = _nuclear(m) / math.sqrt(na2 * nb2)
        if 1.0 - c > 1e-6:
            return float(math.acos(min(1.0, max(-1.0, c))))
        # nearly identical shapes: arccos(1 - eps) loses half the digits, use the residual
        ua, _, vta = np.linalg.svd(m, full_matrices=False)
        r = a / math.sqrt(na2) - (b / math.sqrt(nb2)) @ (ua @ vta).T
        chord = math.sqrt(float(np.sum(r * r)))
        return float(2.0 * math.asin(min(1.0, chord / 2.0)))
    d2 = na2 + nb2 - 2.0 * _nuclear(m)
    if d2 > 1e-6 * (na2 + nb2):
        return float(math.sqrt(d2 / n))
    ua, _, vta = np.linalg.svd(m, full_matrices=False)
    r = a - b @ (ua @ vta).T
    return float(math.sqrt(float(np.sum(r * r)) / n))


def procrustes_distance(X: Any, Y: Any, alpha: float = 1.0, kind: str = "angular") -> float:
    """Generalized shape metric of Williams et al. (2021) between ``X`` (n, p) and ``Y`` (n, q).

    Each representation is centred and partially whitened,
    ``X~ = X_c (alpha I + (1 - alpha) C_X^{-1/2})`` with ``C_X = X_c^T X_c / n`` (pseudo-inverse
    square root on the range of ``C_X``), ``alpha`` in [0, 1]: 1 leaves ``X_c`` as it is
    (rotation-only Procrustes), 0 whitens fully (the metric then depends only on the canonical
    correlations: CCA). The narrower one is zero-padded to equal width, and with the best
    orthogonal ``Q`` (``max_Q tr(X~^T Y~ Q) = ||X~^T Y~||_*``, the nuclear norm):

    * ``kind="angular"``: ``arccos(||X~^T Y~||_* / (||X~||_F ||Y~||_F))``, radians in [0, pi/2];
      invariant to rotation and translation of either input, and to isotropic scaling at
      alpha = 0 and 1 (in between, the relative weight of ``I`` and ``C^{-1/2}`` depends on the
      scale of the responses, as in the paper's definition). At alpha = 0
      with p = q full rank this is ``arccos(mean canonical correlation)``.
    * ``kind="euclidean"``: ``min_Q ||X~ - Y~ Q||_F / sqrt(n)``
      ``= sqrt((||X~||^2 + ||Y~||^2 - 2 ||X~^T Y~||_*) / n)``: the root-mean-square distance per
      stimulus after alignment, in the units of the responses; invariant to rotation and
      translation, not to scaling.

    Both satisfy the triangle inequality. When the shapes nearly coincide (``1 - cos < 1e-6``,
    or the squared distance below 1e-6 of ``||X~||^2 + ||Y~||^2``) the residual matrix is formed
    explicitly so that the distance keeps its precision. A constant representation (all zero
    after centring) is at angle pi/2 from every non-constant one (0 from another constant one).
    """
    alpha = _check_alpha(alpha, 1.0, "Procrustes")
    kind = _choice(kind, _KINDS, "Procrustes kind")
    x = _responses(X, "X", 3)
    y = _responses(Y, "Y", 3)
    _same_stimuli(x.shape[0], y.shape[0])
    return _shape_pair(_shape_prep(x, alpha), _shape_prep(y, alpha), kind)


# --------------------------------------------------------------------------------------------
# stochastic shape metric (Duong et al. 2023)


@dataclass
class _GaussPrep:
    mean: np.ndarray    # (n, d) per-stimulus means, centred over stimuli
    fac: np.ndarray     # (n, r, d) covariance factors: cov_s = fac[s]^T fac[s]
    mean2: float        # ||mean||_F^2
    fac2: float         # sum_s ||fac[s]||_F^2 = sum_s tr(cov_s)


def _gauss_prep(x: np.ndarray, dims: int | None, max_stimuli: int | None, covariances: bool = True) -> _GaussPrep:
    r, n, _ = x.shape
    idx = _subset(n, max_stimuli)
    if idx is not None:
        x = x[:, idx, :]
    mu = x.mean(axis=0)                                   # (n, p)
    if covariances:
        fac = np.transpose(x - mu, (1, 0, 2)) / math.sqrt(r - 1)   # (n, r, p)
    else:  # alpha = 2 never looks at them
        fac = np.zeros((mu.shape[0], 0, mu.shape[1]))
    mu = mu - mu.mean(axis=0)
    p = mu.shape[1]
    if dims is not None and dims < p:
        pooled = x.reshape(-1, p)
        pooled = pooled - pooled.mean(axis=0)
        _, vecs = np.linalg.eigh(pooled.T @ pooled)
        w = vecs[:, ::-1][:, :dims]
        mu = mu @ w
        fac = fac @ w
    return _GaussPrep(np.ascontiguousarray(mu), np.ascontiguousarray(fac),
                      float(np.sum(mu * mu)), float(np.sum(fac * fac)))


def _pad(a: np.ndarray, d: int) -> np.ndarray:
    if a.shape[-1] == d:
        return a
    width = [(0, 0)] * (a.ndim - 1) + [(0, d - a.shape[-1])]
    return np.pad(a, width)


def _polar(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


def _gauss_pair(a: _GaussPrep, b: _GaussPrep, alpha: float, max_iter: int, tol: float) -> float:
    n = a.mean.shape[0]
    d = max(a.mean.shape[1], b.mean.shape[1])
    mx, my = _pad(a.mean, d), _pad(b.mean, d)
    cmean = my.T @ mx
    t = _polar(cmean)               # aligns Y's means to X's: Y T ~ X
    if alpha == 2.0 or (a.fac2 == 0.0 and b.fac2 == 0.0):
        res = mx - my @ t
        j = float(np.sum(res * res)) * alpha / n
        return math.sqrt(max(j, 0.0))
    # Zero-padding the factors to width d only adds zero columns: the Bures terms need the
    # block T[:q, :p] of T (q, p the two widths), so the factors are used unpadded.
    fx, fy = a.fac, b.fac
    p, q = fx.shape[2], fy.shape[2]
    fy_rows = fy.reshape(-1, q)
    const = (2.0 - alpha) * (a.fac2 + b.fac2)
    prev = math.inf
    j = math.inf
    for it in range(max_iter + 1):
        gt = (fy_rows @ t[:q, :p]).reshape(fy.shape[0], fy.shape[1], p)   # aligned factors G_s T
        m = fx @ np.transpose(gt, (0, 2, 1))                     # F_s (G_s T)^T, (n, r_x, r_y)
        u, sv, vt = np.linalg.svd(m, full_matrices=False)
        res = mx - my @ t
        j = (alpha * float(np.sum(res * res)) + const - 2.0 * (2.0 - alpha) * float(sv.sum())) / n
        if it == max_iter or (math.isfinite(prev) and prev - j <= tol * abs(prev)):
            j = min(j, prev)   # a step that did not decrease it (rounding) is not taken
            break
        prev = j
        # T-step: maximise tr(T^T [alpha My^T Mx + (2 - alpha) sum_s G_s^T Q_s^T F_s]) with
        # Q_s = U_s V_s^T, the partial isometry attaining ||F_s T^T G_s^T||_* for the current T.
        qtf = np.transpose(u @ vt, (0, 2, 1)) @ fx               # Q_s^T F_s, (n, r_y, p)
        c = alpha * cmean
        c[:q, :p] += (2.0 - alpha) * (fy_rows.T @ qtf.reshape(-1, p))
        t = _polar(c)
    return math.sqrt(max(j, 0.0))


def _check_dims(dims: Any) -> int | None:
    if dims is None:
        return None
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 1:
        raise ConfigError(f"dims must be None or a positive integer, got {dims!r}.")
    return int(dims)


def _check_iter(max_iter: Any, tol: Any) -> tuple[int, float]:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ConfigError(f"max_iter must be a non-negative integer, got {max_iter!r}.")
    try:
        tol_f = float(tol)
    except (TypeError, ValueError):
        raise ConfigError(f"tol must be a non-negative number, got {tol!r}.") from None
    if not (tol_f >= 0.0 and math.isfinite(tol_f)):
        raise ConfigError(f"tol must be a non-negative number, got {tol!r}.")
    return int(max_iter), tol_f


def stochastic_shape_distance(
    X: Any,
    Y: Any,
    alpha: float = 1.0,
    dims: int | None = None,
    max_stimuli: int | None = None,
    max_iter: int = 200,
    tol: float = 1e-9,
) -> float:
    """Gaussian stochastic shape distance of Duong et al. (2023) between repeated responses.

    ``X`` (repeats, n, p) and ``Y`` (repeats', n, q): several noisy responses to each of the
    same n stimuli. Per stimulus s, the mean ``mu_s`` and the sample covariance ``Sigma_s``
    (divided by repeats - 1) over repeats (``nu_s``, ``Psi_s`` for Y); the means are centred
    over stimuli (translation invariance, as the deterministic shape metrics). The distance is

    ``d_alpha(X, Y)^2 = min_{T orthogonal} (1/n) sum_s [ alpha ||mu_s - T^T nu_s||^2
    + (2 - alpha) B(Sigma_s, T^T Psi_s T)^2 ]``

    with the Bures distance ``B(A, B)^2 = tr A + tr B - 2 tr (A^{1/2} B A^{1/2})^{1/2}``. alpha
    in [0, 2]: alpha = 1 is the mean over stimuli of the squared 2-Wasserstein distance between
    the Gaussians N(mu_s, Sigma_s) and N(T^T nu_s, T^T Psi_s T); alpha = 2 uses the means only,
    giving ``sqrt(2)`` times the Euclidean Procrustes distance of the means
    (:func:`procrustes_distance` ``kind="euclidean", alpha=1``), for any noise; alpha = 0 uses the
    covariances only. With no noise, alpha = 1 equals that Euclidean Procrustes distance, and it
    tends to it as the noise vanishes. (This is the paper's interpolated metric; its library is
    netrep, ahwillia/netrep.)

    The minimisation over T is not closed-form for alpha < 2: as in the authors' library it
    alternates between the best per-stimulus rotations of the Bures terms (``B^2 = min_Q
    ||A^{1/2} - B^{1/2} Q||^2``) and the best common T (an orthogonal Procrustes problem),
    starting from the alignment of the means, until an update lowers the objective by less than
    ``tol`` (relative) or after ``max_iter`` updates. The objective never increases; the value
    returned is the objective at the T reached (exact for that T, the Bures terms being computed
    exactly as ``tr A + tr B - 2 ||F G^T||_*`` from factors ``A = F^T F``, ``B = G^T G`` of
    repeats x features), so it is an upper bound on the minimum, a local minimum when converged;
    stopped early, the triangle inequality can fail by that gap. Cost per update ``n r_x r_y
    (p + q) + n r p q`` (r repeats, p, q widths).

    ``dims``: if set and smaller than a network's width, its responses are first projected on
    the ``dims`` leading principal components of its pooled responses (all repeats of the
    stimuli used): a reduction of cost that changes the value unless the responses lie in that
    subspace.
    ``max_stimuli``: if set, only that many stimuli (evenly spaced indices) are used. Widths that
    differ are zero-padded.
    """
    alpha = _check_alpha(alpha, 2.0, "stochastic shape metric")
    dims = _check_dims(dims)
    max_stimuli = _check_max_stimuli(max_stimuli)
    max_iter, tol = _check_iter(max_iter, tol)
    x = _repeated(X, "X", 3)
    y = _repeated(Y, "Y", 3)
    _same_stimuli(x.shape[1], y.shape[1])
    cov = alpha < 2.0
    return _gauss_pair(_gauss_prep(x, dims, max_stimuli, cov), _gauss_prep(y, dims, max_stimuli, cov),
                       alpha, max_iter, tol)


# --------------------------------------------------------------------------------------------
# ridge encoding model

_DEFAULT_ALPHAS = tuple(10.0 ** k for k in range(-6, 5))


def _check_encoding(alphas: Any, folds: Any, seed: Any) -> tuple[np.ndarray, int, int]:
    if alphas is None:
        grid = np.asarray(_DEFAULT_ALPHAS)
    else:
        try:
            grid = np.asarray(alphas, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"alphas must be a list of positive numbers, got {alphas!r}.") from None
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ConfigError(f"alphas must be a non-empty list of positive finite numbers, got {alphas!r}.")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 3:
        raise ConfigError(f"folds must be an integer >= 3 (outer folds, the rest are the inner folds), got {folds!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return grid, int(folds), int(seed)


def _fold_index(n: int, folds: int, seed: int) -> list[np.ndarray]:
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, folds)]


@dataclass
class _Fit:
    """A training set of the predictor: eigen-decomposition of its centred scatter."""
    folds: tuple[int, ...]
    n: int
    mean: np.ndarray        # (p,)
    vecs: np.ndarray        # (p, p)
    vals: np.ndarray        # (p,)
    scale: float            # tr(scatter) / p: penalties are multiples of this


@dataclass
class _EncX:
    """Predictor-side statistics of one network for the fold split."""
    parts: list[np.ndarray]            # X restricted to each fold
    n: list[int]
    sx: list[np.ndarray]               # per-fold column sums
    fits: dict[tuple[int, ...], _Fit]
    h: dict[tuple[tuple[int, ...], int], np.ndarray]   # V^T Xv~^T Xv~ V for (training folds, validation fold)


@dataclass
class _EncY:
    parts: list[np.ndarray]
    sy: list[np.ndarray]
    yy: list[float]


def _enc_plan(k: int) -> list[tuple[tuple[int, ...], int]]:
    """(training folds, validation fold) pairs: inner ones for every outer fold, then the outer ones."""
    plan = []
    for o in range(k):
        rest = [f for f in range(k) if f != o]
        for v in rest:
            plan.append((tuple(f for f in rest if f != v), v))
    for o in range(k):
        plan.append((tuple(f for f in range(k) if f != o), o))
    return plan


def _enc_x(x: np.ndarray, index: list[np.ndarray]) -> _EncX:
    k = len(index)
    parts = [x[i] for i in index]
    n = [len(i) for i in index]
    sx = [pt.sum(axis=0) for pt in parts]
    g = [pt.T @ pt for pt in parts]
    fits: dict[tuple[int, ...], _Fit] = {}
    h: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
    p = x.shape[1]
    for train, v in _enc_plan(k):
        if train not in fits:
            nt = sum(n[f] for f in train)
            st = sum(sx[f] for f in train)
            mean = st / nt
            scatter = sum(g[f] for f in train) - nt * np.outer(mean, mean)
            scatter = 0.5 * (scatter + scatter.T)
            vals, vecs = np.linalg.eigh(scatter)
            vals = np.maximum(vals, 0.0)
            scale = float(vals.sum()) / p
            # constant training features: W = 0 for any penalty (the prediction is the mean)
            fits[train] = _Fit(train, nt, mean, vecs, vals, scale if scale > 0.0 else 1.0)
        fit = fits[train]
        xm = fit.mean
        gv = g[v] - np.outer(sx[v], xm) - np.outer(xm, sx[v]) + n[v] * np.outer(xm, xm)
        h[(train, v)] = fit.vecs.T @ gv @ fit.vecs
    return _EncX(parts, n, sx, fits, h)


def _enc_y(y: np.ndarray, index: list[np.ndarray]) -> _EncY:
    parts = [y[i] for i in index]
    return _EncY(parts, [pt.sum(axis=0) for pt in parts], [float(np.sum(pt * pt)) for pt in parts])


def _enc_pair(ex: _EncX, ey: _EncY, grid: np.ndarray) -> float:
    """Held-out R^2 of Y predicted from X (see encoding_r2), from the prepared statistics.

    For a training set T (eigenbasis V, eigenvalues e of its centred scatter) and a validation
    fold v, with everything centred by T's means: ``Z = V^T X~_T^T Y~_T``, ``W = V D Z`` with
    ``D = diag(1 / (e + lambda))``, and the validation error
    ``||Y~_v - X~_v W||^2 = ||Y~_v||^2 - 2 sum_k D_k (V^T X~_v^T Y~_v * Z)_k. + D^T (H * Z Z^T) D``
    with ``H = V^T X~_v^T X~_v V``: all from per-fold sums, for every lambda at once.
    """
    k = len(ex.parts)
    s = [ex.parts[f].T @ ey.parts[f] for f in range(k)]          # X_f^T Y_f, (p, q)
    q = s[0].shape[1]

    def sse(train: tuple[int, ...], vals: list[int], penalties: list[np.ndarray]) -> list[np.ndarray]:
        fit = ex.fits[train]
        xm = fit.mean
        ym = sum(ey.sy[f] for f in train) / fit.n
        blocks = [sum(s[f] for f in train) - fit.n * np.outer(xm, ym)]
        for v in vals:
            blocks.append(s[v] - np.outer(ex.sx[v], ym) - np.outer(xm, ey.sy[v] - ex.n[v] * ym))
        rot = fit.vecs.T @ np.hstack(blocks)                     # V^T [X~^T Y~ (train), (val)...]
        z = rot[:, :q]
        zz = z @ z.T
        out = []
        for i, v in enumerate(vals):
            a = np.einsum("kj,kj->k", rot[:, (i + 1) * q:(i + 2) * q], z)
            yy = ey.yy[v] - 2.0 * float(ym @ ey.sy[v]) + ex.n[v] * float(ym @ ym)
            dd = 1.0 / (fit.vals[None, :] + penalties[i][:, None] * fit.scale)    # (L, p)
            quad = np.einsum("lk,lk->l", dd @ (ex.h[(train, v)] * zz), dd)
            out.append(yy - 2.0 * (dd @ a) + quad)
        return out

    inner = np.zeros((k, grid.size))      # inner[o]: summed validation error for outer fold o
    for o in range(k):
        for v in range(o + 1, k):
            # T = all folds but o and v serves outer fold o (validating on v) and outer v (on o)
            e_v, e_o = sse(tuple(f for f in range(k) if f not in (o, v)), [v, o], [grid, grid])
            inner[o] += e_v
            inner[v] += e_o
    total_sse = 0.0
    total_sst = 0.0
    for o in range(k):
        best = grid[int(np.argmin(inner[o]))]
        total_sse += float(sse(tuple(f for f in range(k) if f != o), [o], [np.asarray([best])])[0][0])
        yo = ey.parts[o]
        total_sst += float(np.sum((yo - yo.mean(axis=0)) ** 2))
    if total_sst <= 0.0:
        return 0.0
    return 1.0 - total_sse / total_sst


def encoding_r2(X: Any, Y: Any, alphas: Any = None, folds: int = 5, seed: int = 0) -> float:
    """Held-out R^2 of a ridge regression predicting ``Y``'s units (n, q) from ``X`` (n, p).

    The stimuli are split into ``folds`` outer folds (a permutation drawn from
    ``numpy.random.Generator(PCG64(seed))``; the global numpy / torch generators are not used).
    For each outer fold o, ridge regression with an unpenalised intercept (features and units
    centred by the training means) is fitted on the other folds,
    ``W = (X~^T X~ + lambda I)^{-1} X~^T Y~``, one lambda shared by all units. lambda is chosen
    from ``lambda = a * tr(X~^T X~) / p`` for ``a`` in ``alphas`` (multiples of the mean
    eigenvalue of the training scatter; default ``1e-6 ... 1e4``, one per decade) by inner
    cross-validation: each of the other ``folds - 1`` folds in turn is the validation set of a
    fit on the remaining ones, the summed validation squared error picks lambda (the smallest
    on ties). The fit on all training folds with that lambda predicts fold o.

    The result is the variance-weighted R^2 pooled over outer folds and units:
    ``1 - sum_o ||Y_o - Y^_o||^2 / sum_o ||Y_o - mean(Y_o)||^2`` (each test fold's own mean
    in the denominator). It is at most 1 and can be negative (worse than the test mean). If
    ``Y`` is constant (nothing to predict) this returns 0.0; features constant over a training
    set predict its mean. Needs ``n >= 2 * folds`` stimuli.
    """
    grid, folds, seed = _check_encoding(alphas, folds, seed)
    need = max(3, 2 * folds)
    x = _responses(X, "X", need)
    y = _responses(Y, "Y", need)
    _same_stimuli(x.shape[0], y.shape[0])
    index = _fold_index(x.shape[0], folds, seed)
    return _enc_pair(_enc_x(x, index), _enc_y(y, index), grid)


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
