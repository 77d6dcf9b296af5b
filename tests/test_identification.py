"""Identification statistics (hand-made matrices), the seed bootstrap, classical MDS, and the
representations writer (files that load, folder safety, all or nothing)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from beyondbp import files
from beyondbp.analysis import identification as idf
from beyondbp.errors import ConfigError
from beyondbp.reporting import similarity as writer

# -- nearest neighbour ------------------------------------------------------------------------------


def test_nearest_neighbour_hand_made_rows_are_references():
    D = np.array([[0, 1, 9], [1, 0, 9], [1, 9, 0]], dtype=float)
    labels = ["a", "a", "b"]
    # rows: 0 -> 1 (a, right), 1 -> 0 (a, right), 2 -> 0 (a, wrong)
    assert idf.nearest_neighbour(D, labels) == pytest.approx(2 / 3, abs=1e-12)
    # columns as references: 0 ties 1 (a) and 2 (b) -> 1/2, 1 -> 0 right, 2 ties 0 and 1 (both a) -> wrong
    assert idf.nearest_neighbour(D.T, labels) == pytest.approx(0.5, abs=1e-12)


def test_nearest_neighbour_ties_share_credit_and_diagonal_is_ignored():
    D = np.array([[np.nan, 1, 1, 1], [1, 0, 2, 2], [3, 3, 0, 1], [1, 2, 2, 0]], dtype=float)
    labels = ["a", "a", "b", "b"]
    # 0: tie of 1 (a), 2 (b), 3 (b) -> 1/3; 1 -> 0 right; 2 -> 3 right; 3 -> 0 wrong
    assert idf.nearest_neighbour(D, labels) == pytest.approx((1 / 3 + 1 + 1 + 0) / 4, abs=1e-12)
    # torch input and integer labels give the same number
    assert idf.nearest_neighbour(torch.tensor(D), [0, 0, 1, 1]) == pytest.approx((1 / 3 + 2) / 4, abs=1e-12)


def test_nn_chance_formula():
    assert idf.nn_chance(["a", "a", "b", "b", "b"]) == pytest.approx((2 * 1 / 4 + 3 * 2 / 4) / 5, abs=1e-12)
    assert idf.nn_chance(["a", "b", "c"]) == 0.0
    assert idf.nn_chance(["a"] * 4) == 1.0


# -- reference identification -----------------------------------------------------------------------


def _reference_case():
    D = np.array([[0, 2, 1, 5], [2, 0, 3, 3], [1, 1, 0, 1], [0.5, 6, 1, 0]], dtype=float)
    return D, ["a", "a", "b", "b"]


def test_reference_identification_mean_and_best_hand_made():
    D, labels = _reference_case()
    # 0: a=2, b mean 3 / best 1; 1: a=2, b=3; 2: tie (a 1 vs b 1); 3: b=1, a mean 3.25 / best 0.5
    assert idf.reference_identification(D, labels, "mean") == pytest.approx((1 + 1 + 0.5 + 1) / 4, abs=1e-12)
    assert idf.reference_identification(D, labels, "best") == pytest.approx((0 + 1 + 0.5 + 0) / 4, abs=1e-12)
    assert idf.reference_chance(labels) == 0.5


def test_reference_identification_three_rules_tie_between_two_wrong_rules():
    # recording 0 (rule a): a=3, b=1, c=1 -> wrong; every other recording is right
    D = np.full((6, 6), 10.0)
    np.fill_diagonal(D, 0)
    labels = ["a", "a", "b", "b", "c", "c"]
    for i in range(6):
        for j in range(6):
            if i != j and labels[i] == labels[j]:
                D[i, j] = 1.0
    D[0, 1] = 3.0
    D[0, 2:] = 1.0
    assert idf.reference_identification(D, labels, "mean") == pytest.approx(5 / 6, abs=1e-12)
    D[0, 1] = 1.0  # now a ties with b and c: one third of the credit
    assert idf.reference_identification(D, labels, "best") == pytest.approx((1 / 3 + 5) / 6, abs=1e-12)


# -- identify and the bootstrap -----------------------------------------------------------------------


def _clustered(rules=3, seeds=4, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    labels = [f"r{r}" for s in range(seeds) for r in range(rules)]
    groups = [s for s in range(seeds) for _ in range(rules)]
    codes = np.array([int(x[1:]) for x in labels])
    D = np.where(codes[:, None] == codes[None, :], 0.2, 1.0) + noise * rng.random((len(labels), len(labels)))
    np.fill_diagonal(D, 0.0)
    return D, labels, groups


def test_bootstrap_is_deterministic_and_contains_the_estimate_on_a_clean_case():
    D, labels, groups = _clustered()
    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    a = idf.bootstrap(D, labels, groups, "nn", n_boot=200, seed=3)
    b = idf.bootstrap(D, labels, groups, "nn", n_boot=200, seed=3)
    assert a == b
    assert a == (1.0, 1.0)
    assert idf.nearest_neighbour(D, labels) == 1.0
    for stat in ("reference_mean", "reference_best"):
        low, high = idf.bootstrap(D, labels, groups, stat, n_boot=100, seed=1)
        assert low <= 1.0 <= high
    # the global generators are untouched
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_bootstrap_interval_on_a_noisy_case_is_ordered_and_seed_dependent():
    D, labels, groups = _clustered(noise=1.5, seed=2)
    low, high = idf.bootstrap(D, labels, groups, "nn", n_boot=300, seed=0)
    assert 0.0 <= low <= high <= 1.0
    assert idf.bootstrap(D, labels, groups, "nn", n_boot=300, seed=0) == (low, high)


def test_bootstrap_resamples_recordings_by_seed_and_centres_on_the_estimate():
    # the named statistics resample whole seeds of recordings over the full candidate pool:
    # the interval holds the estimate, and equals the percentiles of seed-resampled credit means
    D, labels, groups = _clustered(noise=1.5, seed=2)
    for stat, point in (("nn", idf.nearest_neighbour(D, labels)),
                        ("reference_mean", idf.reference_identification(D, labels, "mean"))):
        low, high = idf.bootstrap(D, labels, groups, stat, n_boot=2000, seed=0)
        assert low <= point <= high and (high - low > 0 or point in (0.0, 1.0))
    codes = {s: [i for i, g in enumerate(groups) if g == s] for s in sorted(set(groups))}
    excluded = np.eye(len(labels), dtype=bool)
    credit = idf._nn_credit(np.asarray(D), idf.label_codes(labels)[0], excluded)
    rng = np.random.default_rng(0)
    seeds = sorted(codes)
    draws = rng.integers(0, len(seeds), size=(500, len(seeds)))
    means = [np.mean(np.concatenate([credit[codes[seeds[c]]] for c in row])) for row in draws]
    assert idf.bootstrap(D, labels, groups, "nn", n_boot=500, seed=0) == pytest.approx(
        tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)


def test_bootstrap_copies_never_count_as_their_own_neighbour_or_candidate():
    # anti-clustered: every other network of the same rule is farther than every other rule's,
    # so the estimate is 0; a copy (distance D[i, i] = 0) counted as neighbour/candidate would raise it
    D, labels, groups = _clustered()
    anti = np.where(D == 0, 0.0, 1.2 - D)
    np.fill_diagonal(anti, 0.0)
    assert idf.nearest_neighbour(anti, labels) == 0.0
    assert idf.bootstrap(anti, labels, groups, "nn", n_boot=200, seed=0) == (0.0, 0.0)
    assert idf.reference_identification(anti, labels, "best") == 0.0
    assert idf.bootstrap(anti, labels, groups, "reference_best", n_boot=200, seed=0) == (0.0, 0.0)
    assert idf.bootstrap(anti, labels, groups, "reference_mean", n_boot=200, seed=0) == (0.0, 0.0)


def test_bootstrap_callable_gets_the_copy_mask_and_at_least_two_seeds():
    D, labels, groups = _clustered(rules=2, seeds=2)
    seen = []

    def stat(sub, sub_labels, excluded):
        assert excluded.shape == sub.shape and excluded.dtype == bool
        assert np.all(np.diag(excluded)) and np.array_equal(excluded, excluded.T)
        # copies of a network have identical rows; the excluded pairs are exactly those
        same = np.array([[np.array_equal(sub[a], sub[b]) for b in range(len(sub))] for a in range(len(sub))])
        assert np.array_equal(same, excluded)
        seen.append(len(sub))
        distinct = len({tuple(np.flatnonzero(row)) for row in excluded})
        assert distinct >= 2 * 2  # two seeds of two rules: both seeds are present (single-seed draws are redrawn)
        return 0.5

    assert idf.bootstrap(D, labels, groups, stat, n_boot=30, seed=0) == (0.5, 0.5)
    assert len(seen) == 30


def test_identify_reports_accuracies_chances_intervals_and_confusion():
    D, labels, groups = _reference_case()[0], ["a", "a", "b", "b"], [0, 1, 0, 1]
    out = idf.identify(D, labels, groups, n_boot=50, seed=0)
    assert out.rules == ("a", "b") and out.n_networks == 4
    assert out.nn.accuracy == idf.nearest_neighbour(D, labels)
    assert out.nn.chance == pytest.approx(1 / 3)
    assert out.reference.accuracy == pytest.approx(0.875)
    assert out.reference_best.accuracy == pytest.approx(0.375)
    assert out.reference.chance == 0.5
    for key in ("nn", "reference", "reference_best"):
        low, high = getattr(out, key).interval
        assert 0.0 <= low <= high <= 1.0
    # NN choices: 0 -> 2 (b); 1 -> 0 (a); 2 -> tie of 0, 1, 3 (a, a, b); 3 -> 0 (a)
    assert out.confusion == {"a": {"a": 1.0, "b": 1.0}, "b": {"a": 1.0 + 2 / 3, "b": 1 / 3}}
    # the JSON form: every key, in the order representations.json has always had
    data = json.loads(json.dumps(out.to_dict(), allow_nan=False))
    assert list(data) == ["n_networks", "rules", "n_boot", "seed", "nn", "reference", "reference_best", "confusion"]
    assert data["rules"] == ["a", "b"] and data["n_boot"] == 50 and data["seed"] == 0
    assert data["nn"] == {"accuracy": out.nn.accuracy, "chance": out.nn.chance, "interval": list(out.nn.interval)}
    assert data["confusion"] == out.confusion


# -- MDS --------------------------------------------------------------------------------------------


def test_mds_recovers_points_up_to_rotation():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(7, 2))
    D = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))
    X = idf.mds(D, 2)
    DX = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    np.testing.assert_allclose(DX, D, atol=1e-10)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    for c in range(2):  # sign convention: each axis's largest-magnitude entry is positive
        assert X[np.argmax(np.abs(X[:, c])), c] > 0
    # an antisymmetric part is removed by the symmetrisation
    A = rng.normal(size=(7, 7))
    np.testing.assert_allclose(idf.mds(D + (A - A.T), 2), X, atol=1e-10)
    assert idf.mds(D, 1).shape == (7, 1)


# -- bad input ----------------------------------------------------------------------------------------


def test_bad_input_is_one_config_error():
    D, labels = _reference_case()
    with pytest.raises(ConfigError, match="square"):
        idf.nearest_neighbour(np.zeros((3, 4)), ["a", "a", "b"])
    with pytest.raises(ConfigError, match="labels has 3 entries"):
        idf.nearest_neighbour(D, labels[:3])
    bad = D.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        idf.reference_identification(bad, labels)
    with pytest.raises(ConfigError, match="at least two networks"):
        idf.nearest_neighbour(np.zeros((1, 1)), ["a"])
    with pytest.raises(ConfigError, match="rule 'c' has only one network"):
        idf.reference_identification(np.ones((5, 5)), ["a", "a", "b", "b", "c"])
    with pytest.raises(ConfigError, match="at least two seeds"):
        idf.bootstrap(D, labels, [0, 0, 0, 0], "nn")
    with pytest.raises(ConfigError, match="groups has 2 entries"):
        idf.identify(D, labels, [0, 1])
    with pytest.raises(ConfigError, match="score"):
        idf.reference_identification(D, labels, "worst")
    with pytest.raises(ConfigError, match="stat"):
        idf.bootstrap(D, labels, [0, 1, 0, 1], "median")
    with pytest.raises(ConfigError, match="dims"):
        idf.mds(D, 5)


# -- the writer -----------------------------------------------------------------------------------------


def _result(n_boot=20):
    rules, seeds, layers = ["backprop", "fa", "dfa"], [0, 1], ["fc1", "fc2"]
    networks = [{"id": f"{r}-{s}", "rule": r, "seed": s, "label": r} for s in seeds for r in rules]
    labels = [n["rule"] for n in networks]
    groups = [n["seed"] for n in networks]
    rng = np.random.default_rng(0)
    distances, ident = {}, {}
    for m in ("cka", "encoding"):
        distances[m], ident[m] = {}, {}
        for layer in layers:
            D = rng.random((6, 6))
            np.fill_diagonal(D, 0)
            if m == "cka":
                D = 0.5 * (D + D.T)
            distances[m][layer] = D
            ident[m][layer] = idf.identify(D, labels, groups, n_boot=n_boot)
    return {
        "title": "Test | study",
        "networks": networks,
        "layers": layers,
        "measures": {"cka": {"description": "1 − linear CKA", "symmetric": True},
                     "encoding": {"description": "1 − R² of ridge regression", "symmetric": False}},
        "distances": distances,
        "identification": ident,
        "stochastic_vs_deterministic": [
            {"layer": "fc1", "stochastic": "stochastic", "deterministic": "procrustes_euclidean",
             "nn": (idf.IdentificationScore(0.5, 0.2, (0.25, 0.75)), idf.IdentificationScore(0.25, 0.2, (0.0, 0.5))),
             "reference": (ident["cka"]["fc1"].reference, ident["encoding"]["fc1"].reference)}],
        "gradient_snr": {"fa-0": {"layers": {"fc1.weight": {"rule": 0.5, "backprop": 2.0, "ratio": 0.25}},
                                  "batches": 4, "batch_size": 8}},
        "settings": {"probe": "test", "n_boot": n_boot, "nan": float("nan")},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("repr") / "out"
    result = _result()
    paths = writer.write_outputs(result, out)
    return out, paths, result


def test_writer_writes_files_that_load(written):
    from matplotlib.image import imread

    out, paths, result = written
    names = sorted(p.name for p in paths)
    expected = {"representations.json", "representations.md", "heatmaps_fc1.png", "heatmaps_fc2.png", "mds_fc1.png",
                "mds_fc2.png"} | {f"heatmap_{m}_{l}.png" for m in ("cka", "encoding") for l in ("fc1", "fc2")}
    assert set(names) == expected == set(os.listdir(out)) - {files.MANIFEST}
    data = json.loads((out / "representations.json").read_text())
    assert data["beyondbp_representations"] == 1
    assert np.allclose(np.array(data["distances"]["encoding"]["fc2"]), result["distances"]["encoding"]["fc2"])
    assert data["settings"]["nan"] is None
    for name in names:
        if name.endswith(".png"):
            img = imread(out / name)
            assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    md = (out / "representations.md").read_text()
    assert "# Test | study" in md
    assert "| cka | fc1 |" in md and "| encoding | fc2 |" in md
    entry = result["identification"]["cka"]["fc1"].nn
    assert f"{entry.accuracy:.2f} [{entry.interval[0]:.2f}, {entry.interval[1]:.2f}]" in md
    assert "| fc1 | stochastic | procrustes_euclidean | 0.50 [0.25, 0.75] | 0.25 [0.00, 0.50] |" in md
    assert data["identification"]["cka"]["fc1"] == result["identification"]["cka"]["fc1"].to_dict()
    assert data["stochastic_vs_deterministic"][0]["nn"][1] == {"accuracy": 0.25, "chance": 0.2, "interval": [0.0, 0.5]}
    assert "| fa-0 | fa | fc1.weight | 0.5 | 2 | 0.25 | 4 | 8 |" in md
    for name in names:
        if name.endswith(".png"):
            assert f"({name})" in md


def test_heatmap_order_is_rule_then_seed():
    nets = [{"rule": r, "seed": s} for s in (3, 1) for r in ("b", "a")]
    order, rules, blocks = writer._order(nets)
    assert rules == ["b", "a"] and blocks == [(0, 2), (2, 4)]
    assert [(nets[i]["rule"], nets[i]["seed"]) for i in order] == [("b", 1), ("b", 3), ("a", 1), ("a", 3)]


def _tiny(result):
    return {"representations.json": json.dumps({"beyondbp_representations": 1}).encode(), "representations.md": b"x\n",
            "heatmaps_l.png": b"png"}


def test_writer_refuses_a_foreign_folder_and_replaces_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "render_outputs", _tiny)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="does not hold a previous representations output"):
        writer.write_outputs({}, out)
    assert os.listdir(out) == ["mine.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    writer.write_outputs({}, out, overwrite=True)
    assert sorted(os.listdir(out)) == [files.MANIFEST, "heatmaps_l.png", "representations.json", "representations.md"]
    writer.write_outputs({}, out)  # a previous output is replaced without asking
    assert sorted(os.listdir(tmp_path)) == ["out"]
    (out / "notes.png").write_text("mine")  # a user's file, even one named like a figure, survives a rerun
    with pytest.raises(ConfigError, match=r"holds files the previous representations output did not write \(notes.png\)"):
        writer.write_outputs({}, out)
    assert (out / "notes.png").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        writer.write_outputs({}, tmp_path / "file")


def test_writer_leaves_nothing_on_error(tmp_path, monkeypatch):
    out = tmp_path / "out"
    bad = _result(n_boot=5)
    bad["distances"]["cka"]["fc1"][0, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        writer.write_outputs(bad, out)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(writer, "render_outputs", _tiny)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files, "publish_directory", fail)
    with pytest.raises(OSError, match="disk full"):
        writer.write_outputs({}, out)
    assert os.listdir(tmp_path) == []


def test_writer_bad_result_is_one_config_error(tmp_path):
    result = _result(n_boot=5)
    result["distances"]["cka"]["fc1"] = np.zeros((5, 5))
    with pytest.raises(ConfigError, match="5 × 5 but there are 6 networks"):
        writer.write_outputs(result, tmp_path / "out")
    with pytest.raises(ConfigError, match="no 'networks' entry"):
        writer.write_outputs({"layers": []}, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_files_output_directory_helpers(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert files.check_output_directory(out, False, "output directory", "thing", "thing") is False  # missing
    out.mkdir()
    assert files.check_output_directory(out, False, "output directory", "thing", "thing") is False  # empty
    (out / "r.json").write_text(json.dumps({"mark": 1}))
    (out / "a.png").write_bytes(b"x")
    assert not files.is_previous_output(out, "thing")  # no manifest: not ours
    files.write_manifest(out, "thing")
    assert files.manifest_names(out, "thing") == {"r.json", "a.png", files.MANIFEST}
    assert files.is_previous_output(out, "thing")
    assert files.check_output_directory(out, False, "output directory", "thing", "thing") is True
    assert not files.is_previous_output(out, "other")
    (out / "sub").mkdir()
    assert files.foreign_entries(out, "thing") == ["sub"]
    (out / "sub").rmdir()
    (out / "b.png").symlink_to(out / "a.png")
    assert files.foreign_entries(out, "thing") == ["b.png"]
    with pytest.raises(ConfigError, match=r"holds files the previous thing did not write \(b.png\)"):
        files.check_output_directory(out, False, "output directory", "thing", "thing")
    (out / "b.png").unlink()
    (out / files.MANIFEST).write_text("[]")
    with pytest.raises(ConfigError, match="exists, is not empty and does not hold a previous thing"):
        files.check_output_directory(out, False, "output directory", "thing", "thing")
    assert files.check_output_directory(out, True, "output directory", "thing", "thing") is True
    with pytest.raises(ConfigError, match="the output directory is empty"):
        files.check_output_directory("", False, "output directory", "thing")
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(ConfigError, match="symbolic link"):
        writer.write_outputs({}, tmp_path / "link", overwrite=True)
    monkeypatch.chdir(out)
    with pytest.raises(ConfigError, match="current directory"):
        writer.write_outputs({}, tmp_path, overwrite=True)


def test_figures_stay_bounded_with_many_long_group_names():
    """Issue 21 §2: grouping by every setting gave names like "lr=0.001, model_options={...}, steps=..."
    and PNGs 13,683 px wide. Long names are cut on the figures (kept whole in the tables)."""
    import struct

    groups = [f"rule=dfa-{i}, lr=0.001, model_options={{'widths': [64, 64, 64]}}, steps={1000 * i}, batch_size=32"
              for i in range(16)]
    networks = [{"id": f"n{g}-{s}", "rule": g, "seed": s} for g in range(16) for s in (0, 1)]
    for net in networks:
        net["rule"] = groups[net["rule"]]
    labels, seeds = [n["rule"] for n in networks], [n["seed"] for n in networks]
    D = np.random.default_rng(0).random((32, 32))
    D = 0.5 * (D + D.T)
    np.fill_diagonal(D, 0)
    result = {
        "title": "Representations of 32 networks (" + ", ".join(groups) + ")",
        "networks": networks, "layers": ["layer1"],
        "measures": {m: {"description": "1 − linear CKA", "symmetric": True} for m in ("cka", "rsa", "procrustes")},
        "distances": {m: {"layer1": D} for m in ("cka", "rsa", "procrustes")},
        "identification": {m: {"layer1": idf.identify(D, labels, seeds, n_boot=5)} for m in ("cka", "rsa", "procrustes")},
        "stochastic_vs_deterministic": [], "gradient_snr": {}, "settings": {},
    }
    out = writer.render_outputs(result)
    sizes = {name: struct.unpack(">II", data[16:24]) for name, data in out.items() if name.endswith(".png")}
    assert len(sizes) == 5
    for name, (width, height) in sizes.items():
        assert width <= 2400 and height <= 2400, (name, width, height)
    assert groups[3] in out["representations.md"].decode()  # the table keeps the whole name
