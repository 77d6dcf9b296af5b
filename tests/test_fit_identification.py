"""Fits that say when they are not identified (issue 23 §3): the checks of
:func:`beyondbp.analysis.scaling.identify`, the predictive hold-out check, and the study analysis
that reports "not identified" and does not extrapolate with such a law."""

import math

import numpy as np
import pytest

from beyondbp.analysis.scaling import FrontierFit, Intervals, LossLawFit, identify, predictive_check
from beyondbp.study.verdict import judge_study

N = np.repeat([1e5, 1e6, 1e7], 3)
D = np.tile([1e7, 1e8, 1e9], 3)
LOSS = 1.7 + 400 / N**0.34 + 410 / D**0.28


def _iv(fit, **bounds):
    low = {k: v[0] for k, v in bounds.items()}
    high = {k: v[1] for k, v in bounds.items()}
    return Intervals(fit=fit, level=0.95, n_resamples=10, seed=0, low=low, high=high, samples={})


def _law(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28):
    return LossLawFit(E, A, B, alpha, beta, 1e-6, len(N), 1, 1e-3)


def test_a_known_law_is_identified():
    fit = _law()
    iv = _iv(fit, E=(1.6, 1.8), A=(300, 500), B=(300, 500), alpha=(0.3, 0.38), beta=(0.25, 0.31))
    ident = identify(fit, variables={"N": N, "D": D}, losses=LOSS, intervals=iv)
    assert ident.identified and ident.why is None
    assert ident.to_dict() == {"identified": True, "why": None, "failed": []}


def test_the_issues_bad_fits_are_not_identified():
    # backprop: E = 3.8e-9, alpha = 0.95 with interval (0.40 - 12.31)
    fit = _law(E=3.8e-9, alpha=0.95)
    iv = _iv(fit, E=(0, 1.9), A=(1, 1e6), B=(1, 1e3), alpha=(0.40, 12.31), beta=(0.2, 0.4))
    ident = identify(fit, variables={"N": N, "D": D}, losses=LOSS, intervals=iv)
    assert not ident.identified and "α interval (0.4 – 12.3) is 12.5 times its estimate" in ident.why
    # dfa-linear: alpha = -1.82
    ident = identify(_law(alpha=-1.82), variables={"N": N, "D": D}, losses=LOSS)
    assert not ident.identified and "α = -1.82 is outside the plausible range (0, 3]" in ident.why
    # pfa: A = 4.9e44 (with sizes up to 1e7 a term needs at most L_max * 1e21)
    ident = identify(_law(A=4.9e44, alpha=2.5), variables={"N": N, "D": D}, losses=LOSS)
    assert not ident.identified and "A = 4.9e+44 exceeds" in ident.why and "N = 1e+07" in ident.why
    # E negative, E above the best loss, an interval that is not finite
    assert "E = -0.1 is not a finite loss" in identify(_law(E=-0.1), variables={"N": N, "D": D}, losses=LOSS).why
    assert "not below the best observed loss" in identify(_law(E=5.0), variables={"N": N, "D": D}, losses=LOSS).why
    fit = _law()
    iv = _iv(fit, E=(1.6, 1.8), A=(300, math.inf), B=(300, 500), alpha=(0.3, 0.38), beta=(0.25, 0.31))
    assert "interval of A is not finite" in identify(fit, variables={"N": N, "D": D}, losses=LOSS, intervals=iv).why


def test_too_few_distinct_sizes_and_budgets():
    n, d = N[N < 1e7], D[N < 1e7]  # 2 sizes x 3 budgets
    ident = identify(_law(), variables={"N": n, "D": d}, losses=LOSS[N < 1e7])
    assert not ident.identified
    assert "only 2 distinct sizes (N) on the frontier; L(N, D) needs at least 3 × 3 distinct sizes and budgets" in ident.why
    C = np.array([1e8, 1e8, 1e9, 1e9])
    ident = identify(FrontierFit(1.0, 50.0, 0.2, 1e-6, 4, 1, 1e-3), variables={"C": C}, losses=[3.0, 3.1, 2.5, 2.6])
    assert "only 2 distinct computes on the frontier; L(C) needs at least 3 distinct computes" in ident.why


def test_predictive_check_passes_and_fails():
    ok = predictive_check("the largest compute", [2.00], [2.01], [[1.99], [2.02], [2.03]])
    assert ok.passed and ok.error == pytest.approx(-0.01) and ok.low <= 0 <= ok.high
    bad = predictive_check("the largest compute", [2.5], [2.0], [[1.95], [2.0], [2.05]])
    assert bad.passed is False and "an error of 20%" in bad.why and "outside the 95% prediction interval" in bad.why
    assert bad.to_dict()["relative_error"] == pytest.approx(0.2)


# -- the study analysis ---------------------------------------------------------------------------
def _records(label, law, computes, seeds=(0, 1, 2)):
    out = []
    for seed in seeds:
        for i, C in enumerate(computes):
            loss = law(C) * (1 + 0.001 * (seed - 1))
            steps = 100
            out.append({
                "id": f"{label}-{i}-{seed}", "status": "done", "label": label,
                "axes": {"rule": label, "model_options": {"widths": [i]}},
                "config": {"rule": label, "lr": 1e-3, "seed": seed, "batch_size": 32, "steps": steps, "data": "mnist1d"},
                "result": {"status": "ok", "n_params": 1000 * (i + 1), "flops_per_step": C / steps, "steps": steps,
                           "final": {"test_loss": loss}, "history": []},
                "error": None, "n_params": 1000 * (i + 1), "flops_per_step": C / steps, "flops_total": C, "eval_flops": 0,
                "seed": seed, "diverged_at_step": None,
            })  # fmt: skip
    return out


COMPUTES = [1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9]


def test_a_known_frontier_is_identified_and_predicts_its_largest_compute():
    recs = _records("backprop", lambda C: 1.0 + 60.0 * C**-0.25, COMPUTES) + _records("rule", lambda C: 1.0 + 45.0 * C**-0.25, COMPUTES)
    out = judge_study(recs, n_bootstrap=20, loss_law=False)
    fr = out.fits["backprop"].frontier
    assert fr.identified and fr.prediction.passed and fr.extrapolates
    assert fr.prediction.relative_error < 0.01 and "1.0e9" in fr.prediction.held_out
    d = fr.to_dict()
    assert d["identified"] and d["used_for_extrapolation"] and d["prediction"]["passed"]
    v = out.verdicts["rule"]
    assert v.cls == "A" and v.extrapolated is not None and v.basis is None


def test_a_frontier_that_curves_away_at_its_largest_compute_is_not_extrapolated():
    # a power law up to 3e8, then the loss barely improves at 1e9: the law curves away at its largest point
    def law(C):
        return 1.0 + 60.0 * min(C, 3e8) ** -0.25 - (0.002 if C > 3e8 else 0.0)

    recs = _records("backprop", lambda C: 1.0 + 60.0 * C**-0.25, COMPUTES) + _records("rule", law, COMPUTES)
    out = judge_study(recs, n_bootstrap=20, loss_law=False)
    fr = out.fits["rule"].frontier
    assert fr.prediction.passed is False and not fr.extrapolates, fr.prediction
    assert "does not predict its own largest compute" in out.verdicts["rule"].extrapolated_sentence
    assert out.verdicts["rule"].extrapolated is None
