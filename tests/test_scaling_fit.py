"""The scaling-law fitter (issue 11, section 5): Chinchilla's approach 3 as Epoch AI replicated it,
checked on Epoch's 245 extracted Chinchilla points, on synthetic data from known laws, and
through ``beyondbp study fit``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import huber

from beyondbp.analysis import scaling
from beyondbp.analysis.scaling import intervals, laws
from beyondbp.cli import main
from beyondbp.errors import ConfigError, DataError

CHINCHILLA = Path(__file__).resolve().parent / "data" / "chinchilla_svg_extracted_data.csv"


def chinchilla_points():
    with open(CHINCHILLA, newline="") as fh:
        rows = list(csv.DictReader(fh))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    return N, C / (6 * N), C, loss


@pytest.fixture(scope="module")
def chinchilla_fit():
    N, D, _, loss = chinchilla_points()
    return scaling.fit_loss_law(N, D, loss, exclude_top=5)


TRUTH = dict(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)


def synthetic_points(n=120, noise=0.002, seed=1, truth=TRUTH):
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(6, 10, n)
    D = 10 ** rng.uniform(8, 12, n)
    clean = truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]
    return N, D, clean * np.exp(noise * rng.standard_normal(n))


FRONTIER_TRUTH = dict(E=2.0, A=80.0, alpha=0.16)


def synthetic_frontier(n=40, noise=0.002, seed=2):
    rng = np.random.default_rng(seed)
    C = 10 ** rng.uniform(12, 20, n)
    clean = FRONTIER_TRUTH["E"] + FRONTIER_TRUTH["A"] * C ** (-FRONTIER_TRUTH["alpha"])
    return C, clean * np.exp(noise * rng.standard_normal(n))


# -- the Chinchilla check -------------------------------------------------------------------------
def test_the_test_data_is_epochs_file():
    import hashlib

    digest = hashlib.sha256(CHINCHILLA.read_bytes()).hexdigest()
    assert digest == "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
    N, D, C, loss = chinchilla_points()
    assert len(loss) == 245 and np.all(N > 0) and np.all(D > 0)


def test_chinchilla_fit_matches_epochs_replication(chinchilla_fit):
    """Epoch AI's grid L-BFGS fit of these points, 5 highest-loss points excluded:
    α 0.3473, β 0.3672, E 1.817."""
    fit = chinchilla_fit
    assert fit.n_points == 240 and fit.n_starts == 4500 and fit.excluded == 5
    assert fit.alpha == pytest.approx(0.347, abs=0.005)
    assert fit.beta == pytest.approx(0.367, abs=0.005)
    assert fit.E == pytest.approx(1.817, abs=0.01)
    # and the coefficients near Epoch's bootstrapped refit (A 482.0, B 2085.4)
    assert 400 < fit.A < 560 and 1700 < fit.B < 2600


def test_the_best_start_is_a_minimum_scipy_agrees_with(chinchilla_fit):
    """Polishing the result with plain L-BFGS-B does not lower the objective: the batched stage
    found the grid's best basin."""
    from scipy.optimize import minimize

    N, D, _, loss = chinchilla_points()
    keep = np.argsort(-loss, kind="stable")[5:]
    res = minimize(scaling.huber_objective, chinchilla_fit.params, args=(N[keep], D[keep], loss[keep]),
                   jac=True, method="L-BFGS-B")
    assert res.fun >= chinchilla_fit.objective - 1e-12


def test_chinchilla_bootstrap_brackets_the_fit(chinchilla_fit):
    N, D, _, loss = chinchilla_points()
    iv = scaling.bootstrap(N, D, loss, exclude_top=5, fit=chinchilla_fit, n_resamples=60, seed=0)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert iv.low[name] < iv.estimate[name] < iv.high[name], name
    assert iv.high["alpha"] - iv.low["alpha"] < 0.1


# -- the objective --------------------------------------------------------------------------------
def test_huber_objective_value_and_gradient_match_finite_differences():
    N, D, loss = synthetic_points(n=50)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = np.array([rng.uniform(4, 8), rng.uniform(5, 9), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)])
        value, grad = scaling.huber_objective(theta, N, D, loss)
        a, b, e, al, be = theta
        r = np.log(np.exp(a - al * np.log(N)) + np.exp(b - be * np.log(D)) + np.exp(e)) - np.log(loss)
        assert value == pytest.approx(huber(1e-3, r).sum(), rel=1e-10)
        h = 1e-6
        fd = np.array([(scaling.huber_objective(theta + h * ei, N, D, loss)[0]
                        - scaling.huber_objective(theta - h * ei, N, D, loss)[0]) / (2 * h) for ei in np.eye(5)])
        np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-8)
    # near the truth both branches of the Huber loss are in use
    truth = np.log([TRUTH["A"], TRUTH["B"], TRUTH["E"]]).tolist() + [TRUTH["alpha"], TRUTH["beta"]]
    a, b, e, al, be = truth
    r = np.log(np.exp(a - al * np.log(N)) + np.exp(b - be * np.log(D)) + np.exp(e)) - np.log(loss)
    assert (np.abs(r) < 1e-3).any() and (np.abs(r) > 1e-3).any()
    value, grad = scaling.huber_objective(truth, N, D, loss)
    fd = np.array([(scaling.huber_objective(np.add(truth, 1e-7 * ei), N, D, loss)[0]
                    - scaling.huber_objective(np.subtract(truth, 1e-7 * ei), N, D, loss)[0]) / 2e-7 for ei in np.eye(5)])
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-9)


def test_the_vectorised_objective_matches_the_single_one_with_and_without_weights():
    N, D, loss = synthetic_points(n=40)
    X, y = np.log(np.stack([N, D], axis=1)), np.log(loss)
    rng = np.random.default_rng(3)
    T = np.column_stack([rng.uniform(0, 10, (6, 2)), rng.uniform(-1, 1, 6), rng.uniform(0, 1, (6, 2))])
    W = rng.integers(0, 3, (6, 40)).astype(float)
    values, grads = laws._batch_value_and_grad(T, X, y, 1e-3)
    wvalues, wgrads = laws._batch_value_and_grad(T, X, y, 1e-3, W)
    for i in range(6):
        v, g = laws._value_and_grad(T[i], X, y, 1e-3)
        assert values[i] == pytest.approx(v, rel=1e-10)
        np.testing.assert_allclose(grads[i], g, rtol=1e-8, atol=1e-14)
        rows = np.repeat(np.arange(40), W[i].astype(int))
        v, g = laws._value_and_grad(T[i], X[rows], y[rows], 1e-3)
        assert wvalues[i] == pytest.approx(v, rel=1e-10)
        np.testing.assert_allclose(wgrads[i], g, rtol=1e-8, atol=1e-14)


# -- synthetic recovery ---------------------------------------------------------------------------
def test_fit_recovers_a_known_loss_law():
    N, D, loss = synthetic_points()
    fit = scaling.fit_loss_law(N, D, loss)
    assert fit.n_points == 120 and fit.n_starts == 4500
    assert fit.alpha == pytest.approx(TRUTH["alpha"], abs=0.02)
    assert fit.beta == pytest.approx(TRUTH["beta"], abs=0.02)
    assert fit.E == pytest.approx(TRUTH["E"], rel=0.02)
    assert fit.A == pytest.approx(TRUTH["A"], rel=0.3)
    assert fit.B == pytest.approx(TRUTH["B"], rel=0.3)
    assert np.abs(np.log(fit.predict(N, D) / loss)).max() < 0.01


def test_exclude_top_drops_the_highest_loss_points():
    N, D, loss = synthetic_points(n=60)
    starts = scaling.default_starts()[::7]
    base = scaling.fit_loss_law(N, D, loss, starts=starts)
    N2, D2, loss2 = np.append(N, [1e6, 2e6]), np.append(D, [1e8, 2e8]), np.append(loss, [50.0, 40.0])
    spoiled = scaling.fit_loss_law(N2, D2, loss2, exclude_top=2, starts=starts)
    assert spoiled.n_points == 60 and spoiled.excluded == 2
    assert spoiled.alpha == pytest.approx(base.alpha, abs=1e-6) and spoiled.E == pytest.approx(base.E, rel=1e-6)


def test_fit_frontier_recovers_a_known_frontier_law():
    C, loss = synthetic_frontier()
    fit = scaling.fit_frontier(C, loss)
    assert fit.n_starts == 150 and fit.n_points == 40
    assert fit.alpha == pytest.approx(FRONTIER_TRUTH["alpha"], abs=0.01)
    assert fit.E == pytest.approx(FRONTIER_TRUTH["E"], rel=0.01)
    assert fit.A == pytest.approx(FRONTIER_TRUTH["A"], rel=0.25)
    iv = scaling.bootstrap_frontier(C, loss, fit=fit, n_resamples=100, seed=0)
    for name in ("E", "A", "alpha"):
        assert iv.low[name] <= FRONTIER_TRUTH[name] <= iv.high[name], name


def test_efficient_frontier_keeps_the_lowest_loss_at_or_below_each_compute():
    C = [1, 2, 2, 3, 4, 5, 5, 6]
    loss = [5.0, 4.0, 3.5, 3.8, 3.0, 3.1, 2.9, 2.9]
    fc, fl = scaling.efficient_frontier(C, loss)
    assert fc.tolist() == [1, 2, 4, 5] and fl.tolist() == [5.0, 3.5, 3.0, 2.9]
    # runs of several sizes: the frontier is the lower envelope
    rng = np.random.default_rng(0)
    C = 10 ** rng.uniform(10, 16, 200)
    loss = 2 + 50 * C ** -0.15 + rng.uniform(0, 1, 200)
    fc, fl = scaling.efficient_frontier(C, loss)
    assert np.all(np.diff(fc) > 0) and np.all(np.diff(fl) < 0)
    for c, l_ in zip(C, loss):
        assert fl[fc <= c].min() <= l_


# -- bootstrap ------------------------------------------------------------------------------------
def test_bootstrap_intervals_contain_the_truth_and_are_reproducible():
    N, D, loss = synthetic_points()
    fit = scaling.fit_loss_law(N, D, loss, starts=scaling.default_starts()[::5])
    iv = scaling.bootstrap(N, D, loss, fit=fit, n_resamples=100, seed=7)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert iv.low[name] <= TRUTH[name] <= iv.high[name], (name, iv.low[name], iv.high[name])
        assert iv.low[name] < iv.high[name]
    again = scaling.bootstrap(N, D, loss, fit=fit, n_resamples=100, seed=7)
    assert again.low == iv.low and again.high == iv.high
    other = scaling.bootstrap(N, D, loss, fit=fit, n_resamples=100, seed=8)
    assert other.low != iv.low
    assert iv.to_dict()["resampled"] == "points" and iv.to_dict()["n_resamples"] == 100


def test_bootstrap_over_groups_resamples_whole_groups():
    N, D, loss = synthetic_points(n=90)
    groups = np.repeat([0, 1, 2], 30)  # e.g. three seeds
    fit = scaling.fit_loss_law(N, D, loss, starts=scaling.default_starts()[::5])
    iv = scaling.bootstrap(N, D, loss, fit=fit, n_resamples=30, groups=groups, seed=0, level=0.9)
    assert iv.by_groups and iv.level == 0.9
    assert iv.low["alpha"] <= fit.alpha <= iv.high["alpha"]
    with pytest.raises(DataError, match="groups"):
        scaling.bootstrap(N, D, loss, fit=fit, n_resamples=5, groups=groups[:10])


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda N, D, L: (N, D, np.where(np.arange(len(L)) == 3, -1.0, L)), DataError, "positive"),
        (lambda N, D, L: (N, D, np.where(np.arange(len(L)) == 3, np.nan, L)), DataError, "positive"),
        (lambda N, D, L: (N[:-1], D, L), DataError, "same length"),
        (lambda N, D, L: (N[:5], D[:5], L[:5]), DataError, "too few points"),
        (lambda N, D, L: (N, D, ["x"] * len(L)), DataError, "numbers"),
    ],
)
def test_bad_data_is_refused_in_one_sentence(change, error, match):
    N, D, loss = synthetic_points(n=20)
    with pytest.raises(error, match=match):
        scaling.fit_loss_law(*change(N, D, loss), starts=[[5, 5, 0.5, 0.3, 0.3]])


def test_bad_options_are_refused():
    N, D, loss = synthetic_points(n=20)
    with pytest.raises(ConfigError, match="delta"):
        scaling.fit_loss_law(N, D, loss, delta=0)
    with pytest.raises(ConfigError, match="exclude_top"):
        scaling.fit_loss_law(N, D, loss, exclude_top=-1)
    with pytest.raises(ConfigError, match="starts"):
        scaling.fit_loss_law(N, D, loss, starts=[[1, 2, 3]])
    with pytest.raises(DataError, match="too few points"):
        scaling.fit_loss_law(N, D, loss, exclude_top=15)
    with pytest.raises(ConfigError, match="resamples"):
        scaling.bootstrap(N, D, loss, n_resamples=0)
    with pytest.raises(ConfigError, match="level"):
        scaling.bootstrap(N, D, loss, level=1.5)


# -- the command line -----------------------------------------------------------------------------
def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_study_fit_command_reproduces_the_chinchilla_check(capsys):
    code, out, err = cli(capsys, "study", "fit", CHINCHILLA, "--params", "Model Size", "--flops", "Training FLOP",
                         "--loss", "loss", "--exclude-top", "5", "--bootstrap", "20", "--seed", "1", "--json")
    assert code == 0, err
    payload = json.loads(out)
    fit = payload["fit"]
    assert fit["alpha"] == pytest.approx(0.347, abs=0.005)
    assert fit["beta"] == pytest.approx(0.367, abs=0.005)
    assert fit["E"] == pytest.approx(1.817, abs=0.01)
    assert fit["n_points"] == 240 and fit["excluded"] == 5
    assert payload["n_resamples"] == 20 and payload["seed"] == 1
    for name in ("E", "A", "B", "alpha", "beta"):
        iv = payload["intervals"][name]
        assert iv["low"] <= iv["estimate"] <= iv["high"]
    assert any("D = FLOPs / (6 N)" in note for note in payload["notes"])


def test_study_alone_shows_its_help(capsys):
    code, out, err = cli(capsys, "study")
    assert code == 0 and "fit" in out and err == ""


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_study_fit_prints_a_table_with_tokens_given(capsys, tmp_path):
    N, D, loss = synthetic_points(n=60)
    path = write_csv(tmp_path / "points.csv", ["n", "d", "l"], zip(N, D, loss))
    code, out, err = cli(capsys, "study", "fit", path, "--params", "n", "--tokens", "d", "--loss", "l", "--bootstrap", "10")
    assert code == 0, err
    for label in ("E", "A", "B", "α", "β", "95 % interval", "60 points", "10 bootstrap resamples"):
        assert label in out
    assert "derived" not in out


def test_study_fit_with_compute_only_fits_the_frontier(capsys, tmp_path):
    C, loss = synthetic_frontier()
    rng = np.random.default_rng(0)
    worse = loss * (1 + rng.uniform(0.01, 0.2, len(loss)))  # runs off the frontier
    path = write_csv(tmp_path / "runs.csv", ["flops", "loss"], list(zip(C, loss)) + list(zip(C * 1.01, worse)))
    code, out, err = cli(capsys, "study", "fit", path, "--flops", "flops", "--loss", "loss", "--json", "--bootstrap", "20")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["fit"]["law"].startswith("L(C)")
    assert payload["fit"]["alpha"] == pytest.approx(FRONTIER_TRUTH["alpha"], abs=0.02)
    assert set(payload["intervals"]) == {"E", "A", "alpha"}
    assert "frontier" in payload["notes"][0]
    code, out, err = cli(capsys, "study", "fit", path, "--flops", "flops", "--loss", "loss", "--bootstrap", "0")
    assert code == 0 and "L(C) = E + A · C^(-α)" in out and "bootstrap" not in out


@pytest.mark.parametrize(
    "rows, args, match",
    [
        (None, ["--params", "n", "--tokens", "d", "--loss", "l"], "does not exist"),
        ([[1e8, 1e10, 3.0]] * 10, ["--params", "size", "--tokens", "d", "--loss", "l"], "--params 'size' is not a column"),
        ([[1e8, 1e10, "abc"]] * 10, ["--params", "n", "--tokens", "d", "--loss", "l"], "not a number"),
        ([[1e8, 0, 3.0]] * 10, ["--params", "n", "--tokens", "d", "--loss", "l"], "finite positive"),
        ([[1e8, 1e10, 3.0]] * 3, ["--params", "n", "--tokens", "d", "--loss", "l"], "too few points"),
        ([[1e8, 1e10, 3.0]] * 10, ["--params", "n", "--loss", "l"], "--params needs --tokens"),
        ([[1e8, 1e10, 3.0]] * 10, ["--loss", "l"], "give --params"),
        ([[1e8, 1e10, 3.0]] * 10, ["--params", "n", "--tokens", "d", "--loss", "l", "--exclude-top", "-1"], "--exclude-top"),
    ],
)
def test_study_fit_bad_input_is_one_line_and_exit_2(capsys, tmp_path, rows, args, match):
    path = tmp_path / "points.csv"
    if rows is not None:
        write_csv(path, ["n", "d", "l"], rows)
    code, out, err = cli(capsys, "study", "fit", path, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err


def test_params_survive_an_underflowed_coefficient():
    # A fit whose E went to exp(-800) == 0.0 must still give finite log-space parameters (a
    # bootstrap restarts from them) instead of raising a math domain error.
    common = dict(objective=0.0, n_points=10, n_starts=1, delta=1e-3)
    p = scaling.LossLawFit(E=0.0, A=2.0, B=3.0, alpha=0.3, beta=0.4, **common).params
    assert np.all(np.isfinite(p)) and p[2] < -700 and p[0] == pytest.approx(np.log(2.0))
    q = scaling.FrontierFit(E=0.0, A=2.0, alpha=0.3, **common).params
    assert np.all(np.isfinite(q)) and q[1] < -700


# -- data that cannot identify the law (issue 21 §2, §4) ------------------------------------------
@pytest.mark.parametrize(
    "rows, match",
    [
        ([[1000, 5000, 2.5]] * 10, "every loss is 2.5, so the points cannot identify"),
        ([[1e308, 1e308, 1e308]] * 10, "every loss is 1e+308"),
        ([[1000, 10.0 ** (3 + i % 5), 2.0 + i] for i in range(10)], "N takes only 1 distinct value"),
        ([[1000 * (1 + i % 2), 5000 * (1 + i // 2 % 2), 2.0 + i] for i in range(10)], "only 4 distinct (N, D) value"),
    ],
)
def test_study_fit_refuses_points_that_cannot_identify_the_law(capsys, tmp_path, rows, match):
    path = write_csv(tmp_path / "points.csv", ["n", "d", "l"], rows)
    code, out, err = cli(capsys, "study", "fit", path, "--params", "n", "--tokens", "d", "--loss", "l", "--bootstrap", "5")
    assert code == 2 and out == "" and err.count("\n") == 1 and match in err, err


def test_the_frontier_needs_three_distinct_computes_and_differing_losses():
    with pytest.raises(DataError, match="every loss is 3"):
        scaling.fit_frontier([1e9, 2e9, 3e9, 4e9], [3.0] * 4)
    with pytest.raises(DataError, match="C takes only 2 distinct value"):
        scaling.fit_frontier([1e9, 1e9, 2e9, 2e9], [3.0, 2.9, 2.8, 2.7])


def test_study_fit_refuses_a_degenerate_fit(capsys, tmp_path, monkeypatch):
    """A coefficient that underflowed to 0 (or overflowed): the report refuses such a fit, and so does `study fit`."""
    common = dict(objective=0.0, n_points=12, n_starts=1, delta=1e-3)
    assert scaling.degenerate(scaling.LossLawFit(E=2.0, A=2.0, B=3.0, alpha=0.3, beta=0.4, **common)) is None
    assert scaling.degenerate(scaling.LossLawFit(E=2.0, A=2.0, B=0.0, alpha=0.3, beta=0.4, **common)).startswith("B went to 0")
    assert scaling.degenerate(scaling.FrontierFit(E=2.0, A=float("inf"), alpha=0.3, **common)).startswith("A went to inf")
    assert "alpha went to nan" in scaling.degenerate(scaling.FrontierFit(E=2.0, A=1.0, alpha=float("nan"), **common))
    N, D, loss = synthetic_points(n=30)
    path = write_csv(tmp_path / "points.csv", ["n", "d", "l"], zip(N, D, loss))
    monkeypatch.setattr(scaling, "fit_loss_law", lambda *a, **k: scaling.LossLawFit(E=0.0, A=2.0, B=3.0, alpha=0.3, beta=0.4, **common))
    code, out, err = cli(capsys, "study", "fit", path, "--params", "n", "--tokens", "d", "--loss", "l", "--bootstrap", "0")
    assert code == 2 and out == "" and err.count("\n") == 1 and "the fit is degenerate: E went to 0" in err, err


def test_study_fit_bounds_the_bootstrap_and_counts_its_memory_first(capsys, tmp_path, monkeypatch):
    N, D, loss = synthetic_points(n=30)
    path = write_csv(tmp_path / "points.csv", ["n", "d", "l"], zip(N, D, loss))
    args = ("study", "fit", path, "--params", "n", "--tokens", "d", "--loss", "l", "--bootstrap")
    code, _, err = cli(capsys, *args, 10**9)
    assert code == 2 and err.count("\n") == 1 and "from 0 (no intervals) to 100000" in err, err
    with pytest.raises(ConfigError, match="from 1 to 100000"):
        scaling.bootstrap(N, D, loss, n_resamples=100_001)
    assert scaling.bootstrap_bytes(30, 100_000, 5) > scaling.bootstrap_bytes(30, 10, 5) > 0
    monkeypatch.setattr(intervals, "_memory_budget", lambda: 1 << 20)  # a machine with 1 MiB to spare
    monkeypatch.setattr(intervals, "fit_loss_law", lambda *a, **k: pytest.fail("fitted before the memory was counted"))
    with pytest.raises(ConfigError, match=r"would need about .* GiB of memory"):
        scaling.bootstrap(N, D, loss, n_resamples=50_000)


def test_an_estimate_outside_its_interval_is_marked():
    N, D, loss = synthetic_points(n=30)
    fit = scaling.fit_loss_law(N, D, loss)
    iv = scaling.bootstrap(N, D, loss, n_resamples=10, fit=fit)
    iv.low["A"], iv.high["A"] = fit.A * 1.5, fit.A * 2  # as a biased resampling can put it
    assert iv.outside("A") and not iv.outside("E")
    d = iv.to_dict()["intervals"]
    assert d["A"]["estimate_outside"] is True and d["E"]["estimate_outside"] is False
    from rich.console import Console

    from beyondbp.cli.fit import _fit_table

    console = Console(record=True, width=120)
    console.print(_fit_table("t", fit, iv, ["E", "A", "B", "alpha", "beta"]))
    text = console.export_text()
    assert text.count("†") == 2 and "outside its own bootstrap interval" in text  # the A row and the caption
