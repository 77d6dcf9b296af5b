"""Shape metrics between two networks' responses: the Procrustes shape metrics of Williams, Kunz,
Kornblith, Linderman, "Generalized Shape Metrics on Neural Representations" (NeurIPS 2021), and
the stochastic (Gaussian) shape metric of Duong, Zhou, Nassar, Berman, Olieslagers, Williams,
"Representational dissimilarity metric spaces for stochastic neural networks" (ICLR 2023).
Each is documented exactly in its function; :data:`beyondbp.analysis.representations.MEASURES`
names them as distances."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from beyondbp.errors import ConfigError

from ._responses import (
    _check_max_stimuli,
    _choice,
    _nuclear,
    _repeated,
    _responses,
    _same_stimuli,
    _subset,
)

__all__ = ["procrustes_distance", "stochastic_shape_distance"]

_KINDS = ("angular", "euclidean")


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


