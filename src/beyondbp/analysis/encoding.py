"""The linear encoding model between two networks' responses: ridge regression from one network's
features to the other's units, the penalty chosen by inner cross-validation, held-out R^2 (the
model of the system-identification literature, e.g. Han, Poggio, Cheung, "System identification
of neural systems: If we got it right, would we know?", ICML 2023). Documented exactly in
:func:`encoding_r2`; nothing here draws from the global random generators (the fold split uses
its own ``numpy.random.Generator``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from beyondbp.errors import ConfigError

from ._responses import _responses, _same_stimuli

__all__ = ["encoding_r2"]


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


