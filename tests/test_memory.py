"""beyondbp.memory: storage/recall equations, the Hopfield capacity, modern Hopfield retrieval,
key-value rules, the sparse code, measurements and bad input (issue 27)."""

from __future__ import annotations

import pytest
import torch

from beyondbp import memory as M
from beyondbp.errors import ConfigError
from beyondbp.memory import measure

torch.set_num_threads(1)


# -- classic Hopfield -----------------------------------------------------------------------------
def test_hopfield_weights_are_hebbian_outer_products_without_self_connections():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
    m = M.ClassicHopfield(8).store(a)
    expected = (torch.outer(a[0], a[0]) + torch.outer(a[1], a[1])) / 8
    expected.fill_diagonal_(0)
    assert torch.equal(m.weights, expected)
    assert m.fixed_points(a).all()
    noisy = a.clone()
    noisy[0, 2] = -1.0  # one bit flipped of 8
    for update in ("async", "sync"):
        assert torch.equal(M.ClassicHopfield(8, update=update).store(a).recall(noisy[:1]), a[:1])


def _hopfield_load(alpha: float, n: int = 200, seeds: int = 3) -> tuple[float, float]:
    """(fraction of stored patterns that are fixed points, fraction recalled with overlap >= 0.95)."""
    fixed = good = 0.0
    for seed in range(seeds):
        x = M.random_patterns(round(alpha * n), n, seed=seed)
        m = M.make("hopfield", n, seed=seed).store(x)
        fixed += float(m.fixed_points(x).float().mean())
        good += float(((m.recall(x) * x).mean(dim=1) >= 0.95).float().mean())
    return fixed / seeds, good / seeds


def test_hopfield_classical_capacity_on_random_patterns():
    """N = 200 neurons: at 0.05 N patterns nearly all are fixed points, at 0.3 N nearly none;
    recall collapses between 0.1 N and 0.2 N (the ~0.138 N transition)."""
    fixed_05, good_05 = _hopfield_load(0.05)
    fixed_10, good_10 = _hopfield_load(0.10)
    fixed_20, good_20 = _hopfield_load(0.20)
    fixed_30, good_30 = _hopfield_load(0.30)
    assert fixed_05 >= 0.95 and good_05 == 1.0
    assert good_10 >= 0.9
    assert good_20 <= 0.6
    assert fixed_30 <= 0.05 and good_30 <= 0.1
    assert M.make("hopfield", 200).theoretical_capacity() == pytest.approx(27.6)


def test_hopfield_recall_is_deterministic_and_reset_forgets():
    x = M.random_patterns(20, 100, seed=3)
    q = measure.corrupt(x, 0.2, "flip", "sign", torch.Generator().manual_seed(0))
    a = M.ClassicHopfield(100, seed=5).store(x)
    r1 = a.recall(q)
    assert torch.equal(r1, a.recall(q))  # recalling changes nothing
    assert torch.equal(r1, M.ClassicHopfield(100, seed=5).store(x).recall(q))
    a.reset()
    assert a.stored == 0 and not a.weights.any()
    assert torch.equal(a.store(x).recall(q), r1)


# -- modern Hopfield --------------------------------------------------------------------------------
def test_modern_hopfield_retrieves_exactly_from_a_noisy_query():
    x = M.random_patterns(20, 64, seed=0)
    q = measure.corrupt(x, 0.2, "flip", "sign", torch.Generator().manual_seed(1))
    sims = q @ x.T
    own = sims.diagonal()
    others = sims.masked_fill(torch.eye(20, dtype=torch.bool), -1e9).amax(dim=1)
    assert (own - others).min() >= 4  # every noisy query is nearest to its pattern
    m = M.ModernHopfield(64, beta=8.0).store(x)
    assert (m.recall(q) - x).abs().max() < 1e-6
    # a small beta averages instead of retrieving
    assert (M.ModernHopfield(64, beta=0.01).store(x).recall(q) - x).abs().max() > 0.5


def _spread_patterns(n: int, dim: int, distance: int, seed: int) -> torch.Tensor:
    """``n`` random ±1 patterns, each at Hamming distance >= ``distance`` from the others."""
    g = torch.Generator().manual_seed(seed)
    kept: list[torch.Tensor] = []
    while len(kept) < n:
        c = torch.randint(0, 2, (dim,), generator=g).float() * 2 - 1
        if not kept or ((torch.stack(kept) != c).sum(dim=1) >= distance).all():
            kept.append(c)
    return torch.stack(kept)


def test_modern_hopfield_stores_many_more_patterns_than_neurons():
    """d = 16: 300 patterns (about 19 per neuron, over 100 times the classic 0.138 d) are all
    retrieved exactly, also from a one-bit-flipped query; the classic net holds none of them."""
    x = _spread_patterns(300, 16, 3, seed=0)
    q = measure.corrupt(x, 1 / 16, "flip", "sign", torch.Generator().manual_seed(2))
    m = M.ModernHopfield(16, beta=20.0).store(x)
    assert (m.recall(x) - x).abs().max() < 1e-6
    assert (m.recall(q) - x).abs().max() < 1e-6
    assert m.capacity()["per_neuron"] > 0.9  # 300 / (16 + 300)
    classic = M.ClassicHopfield(16).store(x)
    assert classic.fixed_points(x).float().mean() < 0.05


def test_modern_hopfield_hetero_reads_values_with_softmax_weights():
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    m = M.ModernHopfield(2, 3, beta=1.0).store(k, v)
    q = torch.tensor([[1.0, 0.0]])
    w = torch.softmax(torch.tensor([1.0, 0.0]), dim=0)
    assert torch.allclose(m.recall(q), w[0] * v[0] + w[1] * v[1])


# -- key-value memories ------------------------------------------------------------------------------
def test_key_value_hebbian_is_the_outer_product_sum_and_exact_for_orthonormal_keys():
    g = torch.Generator().manual_seed(0)
    keys = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))[0][:, :10].T.float()
    values = torch.randn(10, 5, generator=g)
    m = M.make("key-value-hebbian", 32, value_dim=5).store(keys, values)
    assert torch.allclose(m.matrix.float(), values.T @ keys, atol=1e-6)
    assert (m.recall(keys) - values).abs().max() < 1e-5


def test_delta_rule_recalls_correlated_keys_exactly_where_hebbian_fails():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 20, generator=g)
    keys = base + 0.3 * torch.randn(8, 20, generator=g)  # strongly correlated, linearly independent
    assert torch.linalg.matrix_rank(keys) == 8
    values = torch.randn(8, 4, generator=g)
    hebb = M.KeyValueMemory(20, 4, rule="hebbian").store(keys, values)
    delta = M.KeyValueMemory(20, 4, rule="delta", epochs=3000, tol=1e-7).store(keys, values)
    assert (hebb.recall(keys) - values).abs().max() > 1.0
    assert (delta.recall(keys) - values).abs().max() < 1e-5
    # the step of one item with lr = 1, normalised: that item is then written exactly
    one = M.KeyValueMemory(20, 4, rule="delta", epochs=1).store(keys[:1], values[:1])
    assert (one.recall(keys[:1]) - values[:1]).abs().max() < 1e-5
    assert delta.theoretical_capacity() == 20


def test_random_sparse_keys_reduce_cross_talk():
    x = M.random_patterns(60, 100, seed=4)
    plain = M.KeyValueMemory(100, binarize=True).store(x)
    coded = M.KeyValueMemory(100, encoder=M.RandomSparseKeys(100, 2000, 40, seed=0), binarize=True).store(x)
    assert (coded.recall(x) == x).all(dim=1).float().mean() > 0.9
    assert (plain.recall(x) == x).all(dim=1).float().mean() < 0.5
    codes = M.RandomSparseKeys(100, 2000, 40, seed=0)(x)
    assert torch.equal(codes.sum(dim=1), torch.full((60,), 40.0))


# -- the sparse-code memory ----------------------------------------------------------------------------
def test_sparse_code_stores_in_one_shot_and_is_deterministic():
    x = M.random_patterns(30, 300, seed=0, sparsity=0.15)
    a = M.SparseCodeMemory(300, seed=3).store(x)
    assert a.stored == 30 and set(a.bottom_up.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a.recall(x), x)  # one presentation each, recalled exactly
    noisy = measure.corrupt(x, 0.1, "mask", "binary", torch.Generator().manual_seed(0))
    assert torch.equal(a.recall(noisy), x)
    b = M.SparseCodeMemory(300, seed=3).store(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.bottom_up, b.bottom_up)
    c = M.SparseCodeMemory(300, seed=4).store(x)
    assert not torch.equal(a.codes, c.codes)
    assert torch.equal(a.reset().store(x).codes, b.codes)
    assert a.encode(x).sum(dim=1).eq(a.modules).all()


def test_sparse_code_overlap_follows_input_overlap():
    """Variants of a few prototypes at graded noise: similar inputs get overlapping codes."""
    g = torch.Generator().manual_seed(0)
    protos = M.random_patterns(6, 400, seed=1, sparsity=0.2)
    rows = []
    for p in protos:
        for level in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4):
            rows.append(measure.corrupt(p.unsqueeze(0), level, "flip", "binary", g)[0])
    # a lower novelty threshold than the default lets moderately similar inputs share modules
    out = measure.similarity_preservation(torch.stack(rows), seed=0, novelty=0.3)
    assert out["spearman"] > 0.4 and out["pvalue"] < 1e-6, out
    assert out["pairs"] == 36 * 35 // 2
    default = measure.similarity_preservation(torch.stack(rows), seed=0)
    assert default["spearman"] > 0.1 and default["pvalue"] < 0.01, default


# -- measurements ------------------------------------------------------------------------------------
def test_corrupt_changes_exactly_the_asked_fraction():
    x = M.random_patterns(5, 100, seed=0)
    assert ((measure.corrupt(x, 0.3, "flip", "sign") != x).sum(dim=1) == 30).all()
    m = measure.corrupt(x, 0.1, "mask", "sign")
    assert ((m == 0).sum(dim=1) == 10).all()


def test_recall_quality_rows():
    x = M.random_patterns(40, 64, seed=0)
    labels = torch.arange(40) % 4
    rows = measure.recall_quality("modern-hopfield", x, labels, stored=[10, 40], noise=[0.0, 0.1],
                                  options={"beta": 4.0})
    assert [(r["stored"], r["noise"]) for r in rows] == [(10, 0.0), (10, 0.1), (40, 0.0), (40, 0.1)]
    assert all(r["exact"] == 1.0 and r["item"] == 1.0 and r["class"] == 1.0 and r["mse"] < 1e-9 for r in rows)
    hop = measure.recall_quality("hopfield", x, None, stored=[40], noise=[0.0])
    assert hop[0]["exact"] < 0.2 and hop[0]["class"] is None
    assert hop[0]["per_neuron"] == pytest.approx(40 / 64)


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda: M.ClassicHopfield(4).store(torch.ones(2, 5)), "5 entries each"),
    (lambda: M.ClassicHopfield(4).store(torch.full((2, 4), 0.5)), "-1 or 1"),
    (lambda: M.ClassicHopfield(4).store(torch.ones(2, 4), torch.ones(2, 4)), "auto-associative"),
    (lambda: M.KeyValueMemory(4, 3).store(torch.ones(2, 4), torch.ones(3, 3)), "as many rows"),
    (lambda: M.KeyValueMemory(4, 3).store(torch.ones(2, 4)), "values are needed"),
    (lambda: M.ModernHopfield(4, beta=0), "beta"),
    (lambda: M.ModernHopfield(4, max_stored=2).store(torch.ones(3, 4)), "at most 2"),
    (lambda: M.ModernHopfield(4).recall(torch.ones(1, 4)), "empty"),
    (lambda: M.SparseCodeMemory(4).store(torch.full((1, 4), -1.0)), "0 or 1"),
    (lambda: M.make("hopfeld", 4), "unknown memory"),
    (lambda: M.make("modern-hopfield", 4, temperature=1), "no option 'temperature'"),
    (lambda: measure.recall_quality("hopfield", torch.ones(3, 4), stored=[0]), "at least 1"),
    (lambda: measure.recall_quality("hopfield", torch.ones(3, 4), stored=[5]), "only 3 patterns"),
    (lambda: measure.corrupt(torch.ones(3, 4), 1.5), "[0, 1]"),
])
def test_bad_input_is_one_sentence(call, words):
    with pytest.raises(ConfigError) as info:
        call()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_max_stored_refuses_before_changing_anything():
    m = M.ClassicHopfield(8, max_stored=3).store(M.random_patterns(2, 8, seed=0))
    before = m.weights.clone()
    with pytest.raises(ConfigError):
        m.store(M.random_patterns(2, 8, seed=1))
    assert m.stored == 2 and torch.equal(m.weights, before)


# -- the command line -----------------------------------------------------------------------------------
def _cli(args: list[str]) -> int:
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code


def test_cli_writes_the_table_and_one_figure_per_memory(tmp_path, capsys):
    out = tmp_path / "mem"
    code = _cli(["memory", "modern-hopfield,key-value-hebbian", "--data", "random", "--dim", "64", "--stored", "5,20",
                 "--noise", "0,0.1", "--queries", "10", "--opt", "modern-hopfield:beta=4", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "recall-key-value-hebbian.png", "recall-modern-hopfield.png", "results.json", "table.md"]
    import json

    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 8 and all(r["exact"] == 1.0 for r in rows if r["memory"] == "modern-hopfield")


@pytest.mark.parametrize("args, words", [
    (["hopfeld"], "unknown memory 'hopfeld'"),
    (["hopfield", "--kind", "binary"], "--kind sign"),
    (["modern-hopfield", "--opt", "beta=0"], "beta must be"),
    (["hopfield", "--stored", "0,5"], "--stored"),
    (["hopfield", "--noise", "0,1.5"], "--noise"),
    (["hopfield", "--keys", "random"], "key-value memories only"),
    (["hopfield", "--opt", "foo=1"], "no option 'foo'"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, words):
    out = tmp_path / "mem"
    assert _cli(["memory", *args, "--data", "random", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()
