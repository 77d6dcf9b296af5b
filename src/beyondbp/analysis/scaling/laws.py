"""Scaling-law fits: the loss as a function of model size and data, and of compute (the laws
and their fits; the bootstrap intervals are in :mod:`beyondbp.analysis.scaling.intervals`).

Two laws, both fitted the way Chinchilla's approach 3 does it ("Training Compute-Optimal Large
Language Models", Hoffmann et al. 2022), as replicated by Epoch AI ("Chinchilla Scaling: A
replication attempt", Besiroglu et al. 2024):

* the parametric loss ``L(N, D) = E + A / N^α + B / D^β`` (``N`` parameters, ``D`` training
  tokens): :func:`fit_loss_law`;
* the compute-efficient frontier ``L(C) = E + A · C^(−α)`` (``C`` training FLOPs), fitted to the
  lowest loss reached at or below each compute (:func:`efficient_frontier`): :func:`fit_frontier`.

The objective. With ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)`` the law's logarithm is a
log-sum-exp, ``log L̂ = LSE(a − α log N, b − β log D, e)``, which stays finite and smooth for any
parameter values. The fit minimises the sum over points of the Huber loss of the residual
``r = log L̂ − log L``: ``r²/2`` for ``|r| ≤ δ`` and ``δ (|r| − δ/2)`` beyond, with ``δ = 1e-3``
by default, so points off the law by more than about 0.1 % count linearly (robust to outliers).
The gradient is written out (the softmax weights of the log-sum-exp times the clipped residual).

Minimisation. Every start runs L-BFGS with its own history (10 pairs) and its own backtracking
(Armijo) line search, all starts advancing together so that one vectorised NumPy call evaluates
the objective for every start still running; the best few distinct end points are then polished
with SciPy's L-BFGS-B (``scipy.optimize.minimize``, ``jac=True``, tight tolerances) and the
lowest objective is kept. The result is the grid's L-BFGS-B optimum, reached without a Python
loop over thousands of starts.

Starts. The loss surface has many local minima, so the fit starts L-BFGS-B from every point of a
grid and keeps the lowest objective. The default grid is Chinchilla's: α, β ∈ {0, 0.5, …, 2},
e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (4,500 starts for ``L(N, D)``; the frontier uses the
α, e and a axes, 150 starts). ``exclude_top=K`` drops the ``K`` highest-loss points first
(Epoch excludes 5 of the Chinchilla points this way).

Intervals: :mod:`beyondbp.analysis.scaling.intervals` (the bootstrap). Both are importable
from :mod:`beyondbp.analysis.scaling`.

This package is a leaf: NumPy and SciPy only, no torch, no rules.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize

from ...errors import ConfigError, DataError

__all__ = [
    "DEFAULT_DELTA",
    "FrontierFit",
    "LossLawFit",
    "degenerate",
    "default_frontier_starts",
    "default_starts",
    "efficient_frontier",
    "fit_frontier",
    "fit_loss_law",
    "huber_objective",
]

#: Huber threshold on the log-loss residual (Chinchilla's and Epoch's value).
DEFAULT_DELTA = 1e-3
_EXPONENTS = tuple(np.arange(0.0, 2.01, 0.5))
_E_GRID = tuple(np.arange(-1.0, 1.01, 0.5))
_COEF_GRID = tuple(np.arange(0.0, 25.01, 5.0))
#: L-BFGS-B settings: tight tolerances, since Huber objectives with δ = 1e-3 are small numbers.
_OPTIONS = {"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-12}
#: The batched first stage: iterations, tolerances, elements per vectorised chunk; then the best
#: ``_POLISH`` distinct end points are polished with L-BFGS-B.
_BATCH_MAXITER = 300
_BATCH_FTOL = 1e-10
_BATCH_GTOL = 1e-7
_CHUNK = 400_000
_POLISH = 8
#: Distinct (N, D) pairs, and distinct values of each, that L(N, D) needs; distinct computes
#: that L(C) needs (the thresholds of the study report, :mod:`beyondbp.study.verdict`).
_LAW_MIN_PAIRS, _LAW_MIN_EACH, _FRONTIER_MIN_COMPUTES = 6, 2, 3


# -- the objective ------------------------------------------------------------------------------
# Internally a law with k power-law terms has parameters theta = (c_1..c_k, e, p_1..p_k): the log
# coefficients, the log of the irreducible loss, and the exponents; features X (n, k) hold the
# logs of N, D (or of C). Public parameter orders are (a, b, e, alpha, beta) and (a, e, alpha).


def _value_and_grad(theta: np.ndarray, X: np.ndarray, y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    k = X.shape[1]
    c, e, p = theta[:k], theta[k], theta[k + 1 :]
    u = np.empty((X.shape[0], k + 1))
    u[:, :k] = c - X * p
    u[:, k] = e
    m = u.max(axis=1, keepdims=True)
    w = np.exp(u - m)
    s = w.sum(axis=1, keepdims=True)
    pred = (m + np.log(s))[:, 0]
    w /= s
    r = pred - y
    absr = np.abs(r)
    inside = absr <= delta
    value = float(np.where(inside, 0.5 * r * r, delta * (absr - 0.5 * delta)).sum())
    g = np.where(inside, r, delta * np.sign(r))  # dHuber/dr
    gw = w * g[:, None]
    grad = np.empty_like(theta)
    grad[:k] = gw[:, :k].sum(axis=0)
    grad[k] = gw[:, k].sum()
    grad[k + 1 :] = -(gw[:, :k] * X).sum(axis=0)
    return value, grad


def _log(x: float) -> float:
    """``log(x)`` for a fitted coefficient ``exp(θ)`` that may have underflowed to 0 (a fit
    driving a term to nothing): the smallest normal float's log stands in, so a fit can always
    be restarted from its own parameters."""
    return math.log(max(x, np.finfo(float).tiny))


def huber_objective(params: Sequence[float], N: Any, D: Any, loss: Any, *, delta: float = DEFAULT_DELTA) -> tuple[float, np.ndarray]:
    """The fit's objective and its gradient at ``params = (a, b, e, alpha, beta)``: the sum over
    points of Huber(δ) of ``LSE(a − α log N, b − β log D, e) − log loss``."""
    X, y = _features([N, D], loss)
    a, b, e, alpha, beta = (float(v) for v in params)
    value, g = _value_and_grad(np.array([a, b, e, alpha, beta]), X, y, delta)
    return value, g.copy()


# -- starts -------------------------------------------------------------------------------------
def default_starts() -> np.ndarray:
    """Chinchilla's grid of starts for ``L(N, D)``, rows ``(a, b, e, alpha, beta)``: 4,500 rows."""
    rows = itertools.product(_COEF_GRID, _COEF_GRID, _E_GRID, _EXPONENTS, _EXPONENTS)
    return np.array(list(rows), dtype=float)


def default_frontier_starts() -> np.ndarray:
    """The grid of starts for ``L(C)``, rows ``(a, e, alpha)``: 150 rows."""
    return np.array(list(itertools.product(_COEF_GRID, _E_GRID, _EXPONENTS)), dtype=float)


# -- results ------------------------------------------------------------------------------------
@dataclass
class LossLawFit:
    """The best fit of ``L(N, D) = E + A / N^alpha + B / D^beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    n_starts: int
    delta: float
    excluded: int = 0

    @property
    def params(self) -> np.ndarray:
        """``(a, b, e, alpha, beta)``: the log-space parameters the fit works in."""
        return np.array([_log(self.A), _log(self.B), _log(self.E), self.alpha, self.beta])

    def predict(self, N: Any, D: Any) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "L(N, D) = E + A / N^alpha + B / D^beta",
            "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "objective": self.objective, "n_points": self.n_points, "n_starts": self.n_starts,
            "delta": self.delta, "excluded": self.excluded,
        }  # fmt: skip


@dataclass
class FrontierFit:
    """The best fit of ``L(C) = E + A · C^(-alpha)``."""

    E: float
    A: float
    alpha: float
    objective: float
    n_points: int
    n_starts: int
    delta: float
    excluded: int = 0

    @property
    def params(self) -> np.ndarray:
        """``(a, e, alpha)``: the log-space parameters the fit works in."""
        return np.array([_log(self.A), _log(self.E), self.alpha])

    def predict(self, C: Any) -> np.ndarray:
        return self.E + self.A * np.asarray(C, dtype=float) ** (-self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "L(C) = E + A * C^(-alpha)",
            "E": self.E, "A": self.A, "alpha": self.alpha,
            "objective": self.objective, "n_points": self.n_points, "n_starts": self.n_starts,
            "delta": self.delta, "excluded": self.excluded,
        }  # fmt: skip


# -- input checks -------------------------------------------------------------------------------
def _column(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numbers; got values that are not") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be a one-dimensional sequence of numbers; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = int(np.flatnonzero(~np.isfinite(arr) | (arr <= 0))[0])
        raise DataError(f"{name} must hold finite positive numbers; value {arr[bad]!r} at row {bad} is not")
    return arr


def _features(columns: Sequence[Any], loss: Any, names: Sequence[str] = ("N", "D")) -> tuple[np.ndarray, np.ndarray]:
    cols = [_column(c, n) for c, n in zip(columns, names)]
    y = _column(loss, "loss")
    for c, n in zip(cols, names):
        if len(c) != len(y):
            raise DataError(f"{n} and loss must have the same length; got {len(c)} and {len(y)}")
    return np.log(np.stack(cols, axis=1)), np.log(y)


def _check_options(delta: float, exclude_top: int) -> None:
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
        raise ConfigError(f"invalid delta {delta!r}: the Huber threshold must be a positive number such as 1e-3")
    if isinstance(exclude_top, bool) or not isinstance(exclude_top, (int, np.integer)) or exclude_top < 0:
        raise ConfigError(f"invalid exclude_top {exclude_top!r}: it must be a whole number of at least 0")


def _keep_mask(y: np.ndarray, exclude_top: int, n_params: int) -> np.ndarray:
    """Drop the ``exclude_top`` highest-loss points; require enough points left to fit."""
    keep = np.ones(len(y), dtype=bool)
    if exclude_top:
        keep[np.argsort(-y, kind="stable")[:exclude_top]] = False
    need = n_params + 1
    if keep.sum() < need:
        raise DataError(
            f"too few points to fit: {int(keep.sum())} left after excluding {exclude_top}, and a law with "
            f"{n_params} parameters needs at least {need}"
        )
    return keep


def _check_identifiable(X: np.ndarray, y: np.ndarray, names: Sequence[str], min_each: int, min_pairs: int) -> None:
    """Refuse points that cannot identify the law, whatever the optimiser would return: losses
    that are all equal (every term's coefficient and exponent fit them equally well), too few
    distinct values of a variable, or too few distinct points."""
    if float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        raise DataError(
            f"every loss is {math.exp(float(y[0])):.6g}, so the points cannot identify the law's terms; "
            "give points whose losses differ"
        )
    for j, name in enumerate(names):
        distinct = len(np.unique(X[:, j]))
        if distinct < min_each:
            raise DataError(
                f"{name} takes only {distinct} distinct value(s) among the points, and the law cannot be identified "
                f"from fewer than {min_each}; give points at more values of {name}"
            )
    pairs = len(np.unique(X, axis=0))
    if pairs < min_pairs:
        raise DataError(
            f"the points hold only {pairs} distinct ({', '.join(names)}) value(s), and a law with {X.shape[1] * 2 + 1} "
            f"parameters needs at least {min_pairs}; give points at more settings"
        )


def degenerate(fit: Any) -> str | None:
    """Why a fit does not pin down its law (a coefficient that went to 0 or overflowed, an
    exponent that is not finite), or None: the report's test, for ``study fit`` as well."""
    names = ("E", "A", "B") if isinstance(fit, LossLawFit) else ("E", "A")
    bad = [n for n in names if not (math.isfinite(getattr(fit, n)) and 0 < getattr(fit, n) < 1e300)]
    if bad:
        return f"{', '.join(bad)} went to {getattr(fit, bad[0]):g}, so the data do not pin down every term of the law"
    exps = ("alpha", "beta") if isinstance(fit, LossLawFit) else ("alpha",)
    bad = [n for n in exps if not math.isfinite(getattr(fit, n))]
    if bad:
        return f"{bad[0]} went to {getattr(fit, bad[0])!r}, so the data do not pin down the law"
    return None


def _starts_array(starts: Any, width: int, what: str) -> np.ndarray:
    arr = np.atleast_2d(np.asarray(starts, dtype=float))
    if arr.ndim != 2 or arr.shape[1] != width or len(arr) == 0 or not np.all(np.isfinite(arr)):
        raise ConfigError(f"starts must be rows of {width} finite numbers {what}; got shape {arr.shape}")
    return arr


# -- the fit ------------------------------------------------------------------------------------
def _batch_value_and_grad(
    T: np.ndarray, X: np.ndarray, y: np.ndarray, delta: float, W: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_value_and_grad` for many parameter rows ``T`` (S, P) at once, in chunks; ``W``
    (S, n), if given, weighs each row's points (bootstrap counts). Written
    term by term on (S, n) arrays; without the max-shift of the log-sum-exp (an overflow gives a
    non-finite value, which the line search rejects)."""
    S, k = T.shape[0], X.shape[1]
    values, grads = np.empty(S), np.empty_like(T)
    step = max(1, _CHUNK // max(1, X.shape[0]))
    Xt = [np.ascontiguousarray(X[:, j]) for j in range(k)]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for lo in range(0, S, step):
            t = T[lo : lo + step]
            terms = []
            total = np.repeat(np.exp(t[:, k])[:, None], X.shape[0], axis=1)
            for j in range(k):
                ej = np.multiply(t[:, k + 1 + j, None], Xt[j][None, :])
                np.subtract(t[:, j, None], ej, out=ej)
                np.exp(ej, out=ej)
                total += ej
                terms.append(ej)
            r = np.log(total)
            r -= y
            absr = np.abs(r)
            inside = absr <= delta
            hub = np.where(inside, 0.5 * r * r, delta * (absr - 0.5 * delta))
            h = np.where(inside, r, delta * np.sign(r))  # dHuber/dr, then divided by the sum
            if W is not None:
                hub *= W[lo : lo + step]
                h *= W[lo : lo + step]
            values[lo : lo + step] = hub.sum(axis=1)
            h /= total
            for j in range(k):
                grads[lo : lo + step, j] = np.einsum("sn,sn->s", terms[j], h)
                grads[lo : lo + step, k + 1 + j] = -np.einsum("sn,sn->s", terms[j], h * Xt[j])
            grads[lo : lo + step, k] = np.exp(t[:, k]) * h.sum(axis=1)
    return values, grads


def _batch_lbfgs(
    T0: np.ndarray, X: np.ndarray, y: np.ndarray, delta: float, W: np.ndarray | None = None, ftol: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run L-BFGS from every row of ``T0`` at once: each start keeps its own history (10 pairs)
    and its own backtracking (Armijo) line search; the objective is evaluated for all the starts
    still running in one vectorised call. Returns the end points and their objectives."""
    S, P = T0.shape
    hist = 10
    T = T0.astype(float).copy()
    ftol = _BATCH_FTOL if ftol is None else ftol
    f, G = _batch_value_and_grad(T, X, y, delta, W)
    Sh, Yh, rho = np.zeros((S, hist, P)), np.zeros((S, hist, P)), np.zeros((S, hist))
    active = np.isfinite(f)
    for _ in range(_BATCH_MAXITER):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        g = G[idx]
        q = g.copy()
        coef = np.zeros((len(idx), hist))
        # the running starts' histories gathered once, pair-major (each pair contiguous)
        Shi, Yhi, rhoi = Sh[idx].transpose(1, 0, 2).copy(), Yh[idx].transpose(1, 0, 2).copy(), rho[idx].T.copy()
        for j in range(hist):  # newest pair first
            coef[:, j] = rhoi[j] * np.einsum("sp,sp->s", Shi[j], q)
            q -= coef[:, j, None] * Yhi[j]
        yy = np.einsum("sp,sp->s", Yhi[0], Yhi[0])
        gnorm = np.sqrt(np.einsum("sp,sp->s", g, g))
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(rhoi[0] > 0, 1.0 / (rhoi[0] * yy), 1.0 / np.maximum(gnorm, 1e-300))
        r = gamma[:, None] * q
        for j in reversed(range(hist)):
            beta = rhoi[j] * np.einsum("sp,sp->s", Yhi[j], r)
            r += Shi[j] * (coef[:, j] - beta)[:, None]
        d = -r
        gd = np.einsum("sp,sp->s", g, d)
        uphill = ~(gd < 0) | ~np.isfinite(gd)
        if uphill.any():  # forget the history and go down the gradient
            d[uphill] = -g[uphill] / np.maximum(gnorm[uphill], 1e-300)[:, None]
            gd[uphill] = -gnorm[uphill]
            rho[idx[uphill]] = 0.0
        step = np.ones(len(idx))
        f_new, G_new, T_new = f[idx].copy(), g.copy(), T[idx].copy()
        done = np.zeros(len(idx), dtype=bool)
        pending = np.arange(len(idx))
        for _ls in range(50):
            cand = T[idx[pending]] + step[pending, None] * d[pending]
            fc, gc = _batch_value_and_grad(cand, X, y, delta, None if W is None else W[idx[pending]])
            ok = np.isfinite(fc) & (fc <= f[idx[pending]] + 1e-4 * step[pending] * gd[pending])
            acc = pending[ok]
            f_new[acc], G_new[acc], T_new[acc] = fc[ok], gc[ok], cand[ok]
            done[acc] = True
            pending = pending[~ok]
            if len(pending) == 0:
                break
            step[pending] *= 0.5
        stuck = idx[~done]
        active[stuck] = False
        moved = idx[done]
        if len(moved) == 0:
            continue
        sel = done
        s_vec = T_new[sel] - T[moved]
        y_vec = G_new[sel] - G[moved]
        sy = np.einsum("sp,sp->s", s_vec, y_vec)
        good = sy > 1e-16 * np.einsum("sp,sp->s", y_vec, y_vec)
        upd = moved[good]
        Sh[upd, 1:], Yh[upd, 1:], rho[upd, 1:] = Sh[upd, :-1], Yh[upd, :-1], rho[upd, :-1]  # the oldest pair drops out
        Sh[upd, 0], Yh[upd, 0], rho[upd, 0] = s_vec[good], y_vec[good], 1.0 / sy[good]
        f_old = f[moved]
        T[moved], f[moved], G[moved] = T_new[sel], f_new[sel], G_new[sel]
        small_change = (f_old - f[moved]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[moved])), 1.0)
        flat = np.abs(G[moved]).max(axis=1) <= _BATCH_GTOL
        active[moved[small_change | flat]] = False
    return T, f


def _best(X: np.ndarray, y: np.ndarray, starts: np.ndarray, delta: float) -> tuple[np.ndarray, float]:
    """Every start run with the batched L-BFGS, then the best few distinct end points polished
    with SciPy's L-BFGS-B at tight tolerances; the lowest objective wins."""
    if len(starts) > _POLISH:
        # starts far from the optimum overflow on their way; those end points are non-finite
        # and ranked last below, so the floating-point warnings carry no information
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ends, values = _batch_lbfgs(starts, X, y, delta)
        order = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")
        picked: list[np.ndarray] = []
        for i in order:
            if len(picked) >= _POLISH:
                break
            if all(np.abs(ends[i] - p).max() > 1e-6 for p in picked):
                picked.append(ends[i])
        candidates = np.array(picked)
    else:
        candidates = starts
    best_theta, best_value = None, math.inf
    for theta0 in candidates:
        res = minimize(_value_and_grad, theta0, args=(X, y, delta), jac=True, method="L-BFGS-B", options=_OPTIONS)
        value = float(res.fun)
        if math.isfinite(value) and value < best_value and np.all(np.isfinite(res.x)):
            best_theta, best_value = np.array(res.x, dtype=float), value
    if best_theta is None:  # pragma: no cover - the log-sum-exp form is finite everywhere
        raise DataError("the fit failed from every start: the objective was never finite")
    return best_theta, best_value


def fit_loss_law(
    N: Any,
    D: Any,
    loss: Any,
    *,
    delta: float = DEFAULT_DELTA,
    starts: Any = None,
    exclude_top: int = 0,
) -> LossLawFit:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to points ``(N, D, loss)``.

    Minimises the summed Huber(``delta``) loss between ``log loss`` and
    ``LSE(a − alpha log N, b − beta log D, e)`` with L-BFGS-B from every row ``(a, b, e, alpha,
    beta)`` of ``starts`` (default :func:`default_starts`, Chinchilla's 4,500-point grid) and
    keeps the best; ``exclude_top=K`` first drops the ``K`` highest-loss points.
    """
    _check_options(delta, exclude_top)
    X, y = _features([N, D], loss)
    keep = _keep_mask(y, int(exclude_top), 5)
    _check_identifiable(X[keep], y[keep], ("N", "D"), _LAW_MIN_EACH, _LAW_MIN_PAIRS)
    grid = default_starts() if starts is None else _starts_array(starts, 5, "(a, b, e, alpha, beta)")
    theta, value = _best(X[keep], y[keep], grid, float(delta))
    a, b, e, alpha, beta = (float(v) for v in theta)
    return LossLawFit(
        E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, objective=value,
        n_points=int(keep.sum()), n_starts=len(grid), delta=float(delta), excluded=int(exclude_top),
    )  # fmt: skip


def fit_frontier(
    C: Any,
    loss: Any,
    *,
    delta: float = DEFAULT_DELTA,
    starts: Any = None,
    exclude_top: int = 0,
) -> FrontierFit:
    """Fit ``L(C) = E + A · C^(-alpha)`` to points ``(C, loss)`` — usually the compute-efficient
    frontier from :func:`efficient_frontier` — the same way as :func:`fit_loss_law`: Huber on
    ``log loss`` against ``LSE(a − alpha log C, e)``, L-BFGS-B from every row ``(a, e, alpha)`` of
    ``starts`` (default :func:`default_frontier_starts`), best kept."""
    _check_options(delta, exclude_top)
    X, y = _features([C], loss, names=("C",))
    keep = _keep_mask(y, int(exclude_top), 3)
    _check_identifiable(X[keep], y[keep], ("C",), _FRONTIER_MIN_COMPUTES, _FRONTIER_MIN_COMPUTES)
    grid = default_frontier_starts() if starts is None else _starts_array(starts, 3, "(a, e, alpha)")
    theta, value = _best(X[keep], y[keep], grid, float(delta))
    a, e, alpha = (float(v) for v in theta)
    return FrontierFit(
        E=math.exp(e), A=math.exp(a), alpha=alpha, objective=value, n_points=int(keep.sum()),
        n_starts=len(grid), delta=float(delta), excluded=int(exclude_top),
    )  # fmt: skip


def efficient_frontier(C: Any, loss: Any) -> tuple[np.ndarray, np.ndarray]:
    """The compute-efficient frontier of points ``(C, loss)``: the points whose loss is lower than
    that of every point with less or equal compute, sorted by compute. Returns ``(C, loss)``
    arrays; at equal compute only the lowest loss is kept."""
    c = _column(C, "C")
    l_ = _column(loss, "loss")
    if len(c) != len(l_):
        raise DataError(f"C and loss must have the same length; got {len(c)} and {len(l_)}")
    order = np.lexsort((l_, c))  # by compute, then loss
    keep_c, keep_l, best = [], [], math.inf
    for i in order:
        if l_[i] < best:
            if keep_c and keep_c[-1] == c[i]:  # pragma: no cover - lexsort puts the lowest first
                continue
            keep_c.append(c[i])
            keep_l.append(l_[i])
            best = l_[i]
    return np.array(keep_c), np.array(keep_l)
