"""Known answers of the representation measures (beyondbp.analysis.representations)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from beyondbp.analysis import encoding
from beyondbp.analysis import representations as R
from beyondbp.analysis import shape as shapes
from beyondbp.errors import ConfigError


def _rng(seed=0):
    return np.random.default_rng(seed)


def _orth(rng, d):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


def _relu_features(rng, n=120, p=15, width=20):
    """Correlated, non-trivial responses: a random ReLU layer of a shared input."""
    z = rng.standard_normal((n, p))
    return np.maximum(z @ rng.standard_normal((p, width)), 0.0)


# ------------------------------------------------------------------------------------ CKA


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_is_one_for_identical_rotated_scaled_and_shifted(unbiased):
    rng = _rng(1)
    x = rng.standard_normal((100, 12))
    q = _orth(rng, 12)
    assert R.linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    assert R.linear_cka(x, x @ q, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    assert R.linear_cka(x, -3.7 * (x @ q) + 5.0, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_not_invariant_to_invertible_linear_maps(unbiased):
    rng = _rng(2)
    x = rng.standard_normal((200, 10))
    a = rng.standard_normal((10, 10)) @ np.diag(np.linspace(0.1, 10.0, 10))
    assert abs(np.linalg.det(a)) > 1e-6
    assert R.linear_cka(x, x @ a, unbiased=unbiased) < 0.9


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("shape", [(60, 10, 7), (20, 30, 25)])
def test_cka_feature_and_gram_forms_agree(unbiased, shape):
    rng = _rng(3)
    n, p, q = shape
    x = rng.standard_normal((n, p))
    y = x[:, :1] * rng.standard_normal((1, q)) + rng.standard_normal((n, q))
    f = R.linear_cka(x, y, unbiased=unbiased, method="features")
    g = R.linear_cka(x, y, unbiased=unbiased, method="gram")
    assert f == pytest.approx(g, abs=1e-12)
    assert R.linear_cka(x, y, unbiased=unbiased) == pytest.approx(f, abs=1e-12)


def test_cka_gram_form_matches_definition():
    """Biased CKA = <HKH, HLH> / (||HKH|| ||HLH||) with the centring matrix H."""
    rng = _rng(4)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 8))
    h = np.eye(30) - 1.0 / 30
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    expected = np.sum(k * l) / (np.linalg.norm(k) * np.linalg.norm(l))
    assert R.linear_cka(x, y) == pytest.approx(expected, abs=1e-12)


def test_unbiased_cka_near_zero_for_independent_wide_features():
    rng = _rng(5)
    x, y = rng.standard_normal((100, 1000)), rng.standard_normal((100, 1000))
    biased = R.linear_cka(x, y)
    unbiased = R.linear_cka(x, y, unbiased=True)
    assert biased > 0.3
    assert abs(unbiased) < 0.05


def test_cka_of_constant_representation_is_zero():
    rng = _rng(6)
    x = rng.standard_normal((20, 4))
    c = np.ones((20, 3))
    assert R.linear_cka(x, c) == 0.0
    assert R.linear_cka(x, c, unbiased=True) == 0.0


def test_torch_input_is_accepted():
    rng = _rng(7)
    x = rng.standard_normal((40, 6))
    y = rng.standard_normal((40, 5))
    assert R.linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y)) == pytest.approx(
        R.linear_cka(x.astype(np.float32), y), abs=1e-12)


# ------------------------------------------------------------------------------------ RSA


def test_rdm_definitions():
    rng = _rng(8)
    x = rng.standard_normal((9, 5))
    d = R.rdm(x)
    e = R.rdm(x, "euclidean")
    for s, t in itertools.product(range(9), repeat=2):
        if s != t:
            assert d[s, t] == pytest.approx(1 - np.corrcoef(x[s], x[t])[0, 1], abs=1e-12)
            assert e[s, t] == pytest.approx(np.linalg.norm(x[s] - x[t]), abs=1e-12)
    assert np.all(np.diag(d) == 0) and np.all(np.diag(e) == 0)
    assert np.array_equal(d, d.T) and np.array_equal(e, e.T)


def _tau_a_bruteforce(a, b):
    m = len(a)
    s = 0.0
    for i in range(m):
        for j in range(i + 1, m):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return s / (m * (m - 1) / 2)


def test_rsa_compares_upper_triangles():
    from scipy import stats
    rng = _rng(9)
    x, y = _relu_features(rng, n=12), _relu_features(rng, n=12)
    iu = np.triu_indices(12, k=1)
    dx, dy = R.rdm(x)[iu], R.rdm(y)[iu]
    assert R.rsa(x, y) == pytest.approx(stats.spearmanr(dx, dy).statistic, abs=1e-12)
    assert R.rsa(x, y, compare="pearson") == pytest.approx(np.corrcoef(dx, dy)[0, 1], abs=1e-12)
    assert R.rsa(x, y, compare="kendall") == pytest.approx(_tau_a_bruteforce(dx, dy), abs=1e-12)
    ex, ey = R.rdm(x, "euclidean")[iu], R.rdm(y, "euclidean")[iu]
    assert R.rsa(x, y, "euclidean", "pearson") == pytest.approx(np.corrcoef(ex, ey)[0, 1], abs=1e-12)


def test_kendall_tau_a_with_ties():
    # coarse responses give tied RDM entries: tau_a keeps the full pair count in the denominator
    x = np.array([[0.0], [1.0], [1.0], [2.0], [4.0], [4.0]])
    y = np.array([[0.0], [2.0], [1.0], [1.0], [3.0], [9.0]])
    iu = np.triu_indices(6, k=1)
    dx, dy = R.rdm(x, "euclidean")[iu], R.rdm(y, "euclidean")[iu]
    assert R.rsa(x, y, "euclidean", "kendall") == pytest.approx(_tau_a_bruteforce(dx, dy), abs=1e-12)


def test_rsatoolbox_agrees():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    rng = _rng(10)
    x, y = _relu_features(rng, n=25), rng.standard_normal((25, 7)) + _relu_features(rng, n=25)[:, :7]
    for metric in ("correlation", "euclidean"):
        rx = rsatoolbox.rdm.RDMs(R.rdm(x, metric)[np.triu_indices(25, k=1)][None, :])
        ry = rsatoolbox.rdm.RDMs(R.rdm(y, metric)[np.triu_indices(25, k=1)][None, :])
        for compare, method in (("spearman", "spearman"), ("kendall", "tau-a"), ("pearson", "corr")):
            ref = float(rsatoolbox.rdm.compare(rx, ry, method=method)[0, 0])
            assert R.rsa(x, y, metric, compare) == pytest.approx(ref, abs=1e-6)
    data = rsatoolbox.data.Dataset(x)
    ref_rdm = rsatoolbox.rdm.calc_rdm(data, method="correlation").get_matrices()[0]
    assert np.allclose(R.rdm(x), ref_rdm, atol=1e-6)
    ref_sq = rsatoolbox.rdm.calc_rdm(data, method="euclidean").get_matrices()[0]
    assert np.allclose(R.rdm(x, "euclidean") ** 2 / x.shape[1], ref_sq, atol=1e-6)


# ------------------------------------------------------------------------------ Procrustes


def test_procrustes_zero_under_rotation_translation_scaling():
    rng = _rng(11)
    x = rng.standard_normal((80, 10))
    q = _orth(rng, 10)
    moved = x @ q + rng.standard_normal(10)
    for alpha in (0.0, 0.5, 1.0):
        assert shapes.procrustes_distance(x, moved, alpha, "angular") == pytest.approx(0.0, abs=1e-8)
        assert shapes.procrustes_distance(x, moved, alpha, "euclidean") == pytest.approx(0.0, abs=1e-8)
    for alpha in (0.0, 1.0):  # between them, the weight of I against C^-1/2 depends on the scale
        assert shapes.procrustes_distance(x, 2.5 * moved, alpha, "angular") == pytest.approx(0.0, abs=1e-8)
    assert shapes.procrustes_distance(x, 2.5 * moved, 0.5, "angular") > 1e-3
    # zero-padding: a rotation into a wider space is still distance 0
    wide = np.hstack([x, np.zeros((80, 4))]) @ _orth(rng, 14)
    assert shapes.procrustes_distance(x, wide, 1.0, "euclidean") == pytest.approx(0.0, abs=1e-8)
    # scaling is not free for the Euclidean kind: RMS distance of x and 2x is the RMS norm of x
    xc = x - x.mean(axis=0)
    assert shapes.procrustes_distance(x, 2 * x, 1.0, "euclidean") == pytest.approx(
        np.linalg.norm(xc) / math.sqrt(80), abs=1e-10)


def test_procrustes_euclidean_matches_explicit_alignment():
    from scipy.linalg import orthogonal_procrustes
    rng = _rng(12)
    x, y = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    xc, yc = x - x.mean(0), y - y.mean(0)
    q, _ = orthogonal_procrustes(yc, xc)
    assert shapes.procrustes_distance(x, y, 1.0, "euclidean") == pytest.approx(
        np.linalg.norm(xc - yc @ q) / math.sqrt(50), abs=1e-12)
    cos = np.sum(xc * (yc @ q)) / (np.linalg.norm(xc) * np.linalg.norm(yc))
    assert shapes.procrustes_distance(x, y) == pytest.approx(math.acos(cos), abs=1e-12)


def test_alpha_zero_is_the_cca_angle():
    rng = _rng(13)
    x = rng.standard_normal((100, 6))
    y = x @ rng.standard_normal((6, 6)) + rng.standard_normal((100, 6))
    qx, _ = np.linalg.qr(x - x.mean(0))
    qy, _ = np.linalg.qr(y - y.mean(0))
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    assert shapes.procrustes_distance(x, y, alpha=0.0) == pytest.approx(math.acos(rho.mean()), abs=1e-10)
    # fully whitened: any invertible linear map of the same responses is distance 0
    assert shapes.procrustes_distance(x, x @ rng.standard_normal((6, 6)), alpha=0.0) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("kind", ["angular", "euclidean"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_procrustes_triangle_inequality(kind, alpha):
    rng = _rng(14)
    for _ in range(15):
        reps = [rng.standard_normal((20, w)) * rng.uniform(0.5, 2.0) for w in rng.integers(3, 8, size=3)]
        a, b, c = reps
        dab = shapes.procrustes_distance(a, b, alpha, kind)
        dbc = shapes.procrustes_distance(b, c, alpha, kind)
        dac = shapes.procrustes_distance(a, c, alpha, kind)
        assert dac <= dab + dbc + 1e-10
        assert shapes.procrustes_distance(b, a, alpha, kind) == pytest.approx(dab, abs=1e-12)


def test_angular_range():
    rng = _rng(15)
    for _ in range(5):
        d = shapes.procrustes_distance(rng.standard_normal((30, 4)), rng.standard_normal((30, 5)))
        assert 0.0 <= d <= math.pi / 2


# ------------------------------------------------------------------------------ stochastic


def _noisy(rng, mean, repeats, scale):
    return mean[None] + scale * rng.standard_normal((repeats,) + mean.shape)


def test_stochastic_mean_only_is_sqrt2_times_euclidean_procrustes_of_means():
    rng = _rng(16)
    x = _noisy(rng, rng.standard_normal((40, 5)), 6, 0.5)
    y = _noisy(rng, rng.standard_normal((40, 7)), 4, 0.2)
    det = shapes.procrustes_distance(x.mean(0), y.mean(0), 1.0, "euclidean")
    assert shapes.stochastic_shape_distance(x, y, alpha=2.0) == pytest.approx(math.sqrt(2) * det, abs=1e-10)
    d = R.distance_matrix("stochastic_mean", [x, y])
    assert d[0, 1] == pytest.approx(det, abs=1e-10)


def test_stochastic_without_noise_is_the_deterministic_metric():
    rng = _rng(17)
    mx, my = rng.standard_normal((30, 4)), rng.standard_normal((30, 6))
    x = np.repeat(mx[None], 3, axis=0)
    y = np.repeat(my[None], 5, axis=0)
    det = shapes.procrustes_distance(mx, my, 1.0, "euclidean")
    assert shapes.stochastic_shape_distance(x, y, alpha=1.0) == pytest.approx(det, abs=1e-10)
    # vanishing noise: the Bures terms shrink with it (the aligned means barely move)
    for eps, tol in ((1e-3, 1e-4), (1e-6, 1e-8)):
        xn, yn = _noisy(rng, mx, 5, eps), _noisy(rng, my, 5, eps)
        det_n = shapes.procrustes_distance(xn.mean(0), yn.mean(0), 1.0, "euclidean")
        assert shapes.stochastic_shape_distance(xn, yn, alpha=1.0) == pytest.approx(det_n, abs=tol)


def test_stochastic_is_wasserstein_for_fixed_alignment_when_identity_is_optimal():
    """Same means, isotropic covariances a^2 I and b^2 I: every rotation is optimal and
    d_1^2 = mean_s W2^2 = p (a - b)^2, d_0^2 = 2 p (a - b)^2."""
    rng = _rng(18)
    mean = rng.standard_normal((10, 3))
    e = rng.standard_normal((3, 3))
    e -= e.mean(0)
    # repeats whose per-stimulus covariance is exactly a^2 I: orthonormal centred rows scaled
    basis, _ = np.linalg.qr(np.vstack([np.ones(4), rng.standard_normal((3, 4))]).T)
    noise = basis[:, 1:]  # (4, 3): centred, orthonormal columns
    a, b = 0.5, 2.0
    x = mean[None] + a * math.sqrt(3) * noise[:, None, :]
    y = mean[None] + b * math.sqrt(3) * noise[:, None, :]
    assert np.allclose(np.cov(x[:, 0, :].T), a * a * np.eye(3))
    assert shapes.stochastic_shape_distance(x, y, alpha=1.0) == pytest.approx(math.sqrt(3) * (b - a), abs=1e-10)
    assert shapes.stochastic_shape_distance(x, y, alpha=0.0) == pytest.approx(math.sqrt(6) * (b - a), abs=1e-10)


def test_stochastic_separates_equal_means_with_different_noise():
    rng = _rng(19)
    mean = rng.standard_normal((25, 4))

    def with_noise(scale):
        noise = scale * rng.standard_normal((8, 25, 4))
        return mean[None] + noise - noise.mean(axis=0, keepdims=True)

    x, y = with_noise(0.1), with_noise(1.0)
    assert np.allclose(x.mean(0), y.mean(0))
    assert shapes.procrustes_distance(x.mean(0), y.mean(0), 1.0, "euclidean") == pytest.approx(0.0, abs=1e-8)
    assert R.distance_matrix("procrustes_euclidean", [x, y])[0, 1] == pytest.approx(0.0, abs=1e-8)
    assert shapes.stochastic_shape_distance(x, y) > 0.5


def test_stochastic_symmetric_and_triangle_inequality():
    rng = _rng(20)
    for _ in range(6):
        reps = [_noisy(rng, rng.standard_normal((15, 3)), r, rng.uniform(0.1, 1.0)) for r in (4, 5, 6)]
        d = {(i, j): shapes.stochastic_shape_distance(reps[i], reps[j]) for i in range(3) for j in range(3) if i != j}
        for i, j in itertools.combinations(range(3), 2):
            assert d[i, j] == pytest.approx(d[j, i], rel=1e-6)
        for i, j, k in itertools.permutations(range(3)):
            assert d[i, k] <= d[i, j] + d[j, k] + 1e-8


def test_stochastic_alternating_updates_decrease_the_objective():
    """Small means and anisotropic noise: the means' alignment is not the best one for the
    covariances, the updates lower the distance monotonically and then settle."""
    rng = _rng(29)

    def net():
        mean = 0.1 * rng.standard_normal((12, 4))
        mix = rng.standard_normal((4, 4)) * np.array([3.0, 1.0, 0.3, 0.1])
        return mean[None] + rng.standard_normal((6, 12, 4)) @ mix

    x, y = net(), net()
    ds = [shapes.stochastic_shape_distance(x, y, max_iter=k, tol=0.0) for k in (0, 1, 2, 5, 20, 200)]
    assert all(b <= a + 1e-12 for a, b in zip(ds, ds[1:]))
    assert ds[-1] < ds[0] - 1e-3
    assert shapes.stochastic_shape_distance(x, y) == pytest.approx(ds[-1], rel=1e-6)


def test_stochastic_rotation_invariant_and_options():
    rng = _rng(21)
    x = _noisy(rng, rng.standard_normal((20, 5)), 4, 0.3)
    moved = x @ _orth(rng, 5) + 2.0
    assert shapes.stochastic_shape_distance(x, moved) == pytest.approx(0.0, abs=1e-7)
    # dims >= width and max_stimuli >= n change nothing
    y = _noisy(rng, rng.standard_normal((20, 5)), 4, 0.3)
    base = shapes.stochastic_shape_distance(x, y)
    assert shapes.stochastic_shape_distance(x, y, dims=5, max_stimuli=20) == pytest.approx(base, abs=1e-12)
    assert shapes.stochastic_shape_distance(x, y, dims=2, max_stimuli=10) != pytest.approx(base, abs=1e-6)


# ------------------------------------------------------------------------------ encoding


def test_encoding_r2_linear_map_and_noise():
    rng = _rng(22)
    x = rng.standard_normal((200, 10))
    assert encoding.encoding_r2(x, x @ rng.standard_normal((10, 6)) + 3.0) == pytest.approx(1.0, abs=1e-6)
    assert encoding.encoding_r2(x, rng.standard_normal((200, 6))) <= 0.05


def test_encoding_r2_of_constant_inputs():
    rng = _rng(30)
    y = rng.standard_normal((30, 3))
    assert encoding.encoding_r2(rng.standard_normal((30, 4)), np.ones((30, 2))) == 0.0   # nothing to predict
    r2 = encoding.encoding_r2(np.ones((30, 4)), y)      # predicts the training mean
    assert math.isfinite(r2) and r2 <= 0.0


def test_encoding_r2_equals_sklearn_ridge_with_a_fixed_penalty():
    from sklearn.linear_model import Ridge
    rng = _rng(23)
    x = rng.standard_normal((60, 5))
    y = x @ rng.standard_normal((5, 3)) + rng.standard_normal((60, 3))
    a = 0.7
    got = encoding.encoding_r2(x, y, alphas=[a], folds=4, seed=3)
    index = encoding._fold_index(60, 4, 3)
    sse = sst = 0.0
    for o in range(4):
        train = np.concatenate([index[f] for f in range(4) if f != o])
        xc = x[train] - x[train].mean(0)
        lam = a * np.trace(xc.T @ xc) / 5
        pred = Ridge(alpha=lam).fit(x[train], y[train]).predict(x[index[o]])
        sse += np.sum((y[index[o]] - pred) ** 2)
        sst += np.sum((y[index[o]] - y[index[o]].mean(0)) ** 2)
    assert got == pytest.approx(1 - sse / sst, abs=1e-9)


def test_encoding_penalty_chosen_by_inner_cv():
    """The grid point the inner folds prefer is the one used: a grid of one good and one absurd
    penalty gives the good one's R^2."""
    rng = _rng(24)
    x = rng.standard_normal((100, 8))
    y = x @ rng.standard_normal((8, 4)) + 0.5 * rng.standard_normal((100, 4))
    good = encoding.encoding_r2(x, y, alphas=[1e-3])
    assert encoding.encoding_r2(x, y, alphas=[1e-3, 1e6]) == pytest.approx(good, abs=1e-12)
    assert encoding.encoding_r2(x, y, alphas=[1e6]) < good - 0.3


def test_encoding_deterministic_and_leaves_global_rng():
    rng = _rng(25)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
    np.random.seed(123)
    torch.manual_seed(123)
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    a = encoding.encoding_r2(x, y, seed=7)
    b = encoding.encoding_r2(x, y, seed=7)
    assert a == b
    assert encoding.encoding_r2(x, y, seed=8) != a
    got = np.random.get_state()
    assert got[0] == np_state[0] and np.array_equal(got[1], np_state[1]) and got[2:] == np_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)


# ------------------------------------------------------------------------ distance matrices

_PAIR = {
    "cka": lambda x, y: 1 - R.linear_cka(x, y),
    "cka_unbiased": lambda x, y: 1 - R.linear_cka(x, y, unbiased=True),
    "rsa_spearman": lambda x, y: 1 - R.rsa(x, y, "correlation", "spearman"),
    "rsa_kendall": lambda x, y: 1 - R.rsa(x, y, "correlation", "kendall"),
    "rsa_pearson": lambda x, y: 1 - R.rsa(x, y, "euclidean", "pearson"),
    "procrustes": lambda x, y: shapes.procrustes_distance(x, y, 1.0, "angular"),
    "cca": lambda x, y: shapes.procrustes_distance(x, y, 0.0, "angular"),
    "procrustes_euclidean": lambda x, y: shapes.procrustes_distance(x, y, 1.0, "euclidean"),
    "encoding": lambda x, y: 1 - encoding.encoding_r2(y, x),
}


def test_catalogue_names_and_fields():
    assert set(R.MEASURES) == set(_PAIR) | {"stochastic", "stochastic_mean"}
    for name, m in R.MEASURES.items():
        assert m.name == name and m.kind == "distance" and "\n" not in m.description
        assert m.symmetric == (name != "encoding")
        assert m.stochastic == name.startswith("stochastic")


@pytest.mark.parametrize("name", sorted(_PAIR))
def test_distance_matrix_equals_pairwise_calls(name):
    rng = _rng(26)
    reps = [_relu_features(rng, n=30, width=w) for w in (6, 9, 12)]
    reps.append(np.stack([reps[0] + 0.1 * rng.standard_normal(reps[0].shape) for _ in range(3)]))
    d = R.distance_matrix(name, reps, **({"max_stimuli": None} if name == "rsa_kendall" else {}))
    means = [r.mean(0) if r.ndim == 3 else r for r in reps]
    assert d.shape == (4, 4) and np.all(np.diag(d) == 0)
    for i, j in itertools.permutations(range(4), 2):
        assert d[i, j] == pytest.approx(_PAIR[name](means[i], means[j]), abs=1e-10)
    if R.MEASURES[name].symmetric:
        assert np.array_equal(d, d.T)


def test_distance_matrix_stochastic_equals_pairwise_calls():
    rng = _rng(27)
    reps = [_noisy(rng, rng.standard_normal((20, w)), 4, 0.3) for w in (3, 5, 8)]
    opts = dict(dims=4, max_stimuli=15, max_iter=30, tol=1e-8)
    d = R.distance_matrix("stochastic", reps, **opts)
    for i, j in itertools.combinations(range(3), 2):
        assert d[i, j] == d[j, i] == pytest.approx(shapes.stochastic_shape_distance(reps[i], reps[j], 1.0, **opts), abs=1e-12)
    assert np.all(np.diag(d) == 0)


def test_kendall_default_subset_is_documented_and_applied():
    rng = _rng(28)
    reps = [_relu_features(rng, n=500) for _ in range(2)]
    assert R.MEASURES["rsa_kendall"].defaults["max_stimuli"] < 500
    d = R.distance_matrix("rsa_kendall", reps)
    idx = R._subset(500, R.MEASURES["rsa_kendall"].defaults["max_stimuli"])
    assert d[0, 1] == pytest.approx(1 - R.rsa(reps[0][idx], reps[1][idx], compare="kendall"), abs=1e-12)


# ------------------------------------------------------------------------------ bad input


def _one_sentence(excinfo):
    msg = str(excinfo.value)
    assert msg.endswith(".") and msg.count(". ") == 0 and "\n" not in msg


@pytest.mark.parametrize("call", [
    lambda: R.linear_cka(np.ones(10), np.ones((10, 2))),                      # 1-D
    lambda: R.linear_cka(np.ones((10, 2)), np.ones((9, 2))),                  # stimulus counts
    lambda: R.linear_cka(np.full((10, 2), np.nan), np.ones((10, 2))),         # NaN
    lambda: R.linear_cka(np.ones((2, 2)), np.ones((2, 2))),                   # too few stimuli
    lambda: R.linear_cka(np.ones((3, 2)), np.ones((3, 2)), unbiased=True),    # unbiased needs 4
    lambda: R.linear_cka(np.ones((5, 2)), np.ones((5, 2)), method="fast"),
    lambda: R.rdm(np.ones((5, 2)), metric="cosine"),
    lambda: R.rsa(np.ones((5, 2)), np.ones((5, 2)), compare="tau_b"),
    lambda: R.rsa(np.ones((5, 2)), np.ones((6, 2))),
    lambda: shapes.procrustes_distance(np.ones((5, 2)), np.ones((5, 2)), alpha=1.5),
    lambda: shapes.procrustes_distance(np.ones((5, 2)), np.ones((5, 2)), alpha=-0.1),
    lambda: shapes.procrustes_distance(np.ones((5, 2)), np.ones((5, 2)), kind="riemann"),
    lambda: shapes.procrustes_distance(np.ones((5, 2)), np.array([[np.inf, 1.0]] * 5)),
    lambda: shapes.stochastic_shape_distance(np.ones((2, 5, 2)), np.ones((2, 5, 2)), alpha=2.5),
    lambda: shapes.stochastic_shape_distance(np.ones((5, 2)), np.ones((5, 2))),    # not 3-D
    lambda: shapes.stochastic_shape_distance(np.ones((1, 5, 2)), np.ones((1, 5, 2))),   # one repeat
    lambda: shapes.stochastic_shape_distance(np.ones((2, 5, 2)), np.ones((2, 6, 2))),
    lambda: shapes.stochastic_shape_distance(np.ones((2, 5, 2)), np.ones((2, 5, 2)), dims=0),
    lambda: encoding.encoding_r2(np.ones((20, 2)), np.ones((20, 2)), folds=2),
    lambda: encoding.encoding_r2(np.ones((20, 2)), np.ones((20, 2)), alphas=[0.0]),
    lambda: encoding.encoding_r2(np.ones((8, 2)), np.ones((8, 2))),                  # fewer than 2 * folds
    lambda: R.distance_matrix("svcca", [np.ones((5, 2))] * 2),
    lambda: R.distance_matrix("cka", [np.ones((5, 2))]),
    lambda: R.distance_matrix("cka", [np.ones((5, 2)), np.ones((6, 2))]),
    lambda: R.distance_matrix("cka", [np.ones((5, 2))] * 2, alpha=0.5),
    lambda: R.distance_matrix("stochastic", [np.ones((5, 2))] * 2),
    lambda: R.distance_matrix("rsa_kendall", [np.ones((5, 2))] * 2, max_stimuli=2),
])
def test_bad_input_is_one_config_error(call):
    with pytest.raises(ConfigError) as excinfo:
        call()
    _one_sentence(excinfo)
