"""Every figure the package makes has :func:`beyondbp.reporting.ticks.tidy_axes`'s tick labels:
no offset text, no "×10^0" (issue 23 §4, beyond the study report): one figure from each of
reporting/runs, similarity, adapt, continual and memory, drawn on values that make matplotlib's
defaults print an offset or "m×10^0"."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from beyondbp.reporting import adapt, continual, memory, runs, similarity


def _read(fig):
    """Per numeric axis of ``fig`` (linear or log; not one whose labels were set by hand, which
    matplotlib formats with a FixedFormatter or FuncFormatter): the module of its formatters, its
    offset text and its tick labels."""
    out = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if axis.get_scale() not in ("linear", "log") or type(fmt).__name__ in ("FixedFormatter", "FuncFormatter", "NullFormatter"):
                continue
            labels = [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_text()]
            out.append({"module": type(fmt).__module__, "minor": type(axis.get_minor_formatter()).__module__,
                        "scale": axis.get_scale(), "offset": axis.get_offset_text().get_text(), "labels": labels})
    return out


@pytest.fixture
def caught(monkeypatch):
    """The axes of every figure saved, read as saved (a figure is cleared or closed after)."""
    seen = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        result = save(fig, *args, **kwargs)
        seen.append(_read(fig))
        return result

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def _check(figures):
    axes = [a for fig in figures for a in fig]
    assert axes and any(a["labels"] for a in axes)
    for a in axes:
        assert a["offset"] == "", a
        assert not any("10^{0}" in t for t in a["labels"]), a
        assert a["module"] == "beyondbp.reporting.ticks", a
        if a["scale"] == "log":
            assert a["minor"] == "beyondbp.reporting.ticks", a


def test_runs_curves(caught, tmp_path):
    # the training loss within one decade (a log axis: "2×10^0"), the test loss close to 1000 (an offset)
    history = [{"epoch": e, "train_loss": 2.0 + 0.3 * e, "test_loss": 1000.001 + 1e-4 * e, "test_accuracy": 0.5 + 0.01 * e}
               for e in range(1, 6)]
    runs.plot_curves([{"rule": "backprop", "history": history}], tmp_path / "c.png", title="t")
    _check(caught)
    labels = [t for a in caught[0] for t in a["labels"]]
    assert "3" in labels or "4" in labels  # the log axis's minor labels read as plain numbers


def test_similarity_heatmaps(caught):
    D = 0.5 + 1e-5 * np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], dtype=float)  # close values
    networks = [{"id": f"n{i}", "rule": r, "seed": i % 2} for i, r in enumerate(["bp", "bp", "dfa", "dfa"])]
    result = {"title": "t", "networks": networks, "layers": ["layer1"],
              "measures": {"cka": {"description": "1 − linear CKA", "symmetric": True}},
              "distances": {"cka": {"layer1": D}}, "identification": {}, "stochastic_vs_deterministic": [],
              "gradient_snr": {}, "settings": {}}  # fmt: skip
    similarity.render_outputs(result)
    assert len(caught) >= 2
    _check(caught)


def test_adapt_errors(caught, tmp_path):
    corr, methods, sev = ["gaussian_noise"], ["none", "tent"], [1, 2]
    rows = [{"method": m, "corruption": c, "severity": s, "error": 0.5, "seconds_per_batch": 0.01}
            for m in methods for c in corr for s in sev]
    mean = {"none": {1: 0.500001, 2: 0.500002}, "tent": {1: 0.500003, 2: 0.500004}}  # close: an offset by default
    adapt.plot_errors({"severities": sev, "corruptions": corr, "methods": methods, "rows": rows, "mean": mean},
                      tmp_path / "e.png", title="t")
    _check(caught)


def test_continual_matrices(caught, tmp_path):
    res = {"method": "hlop", "rule": "fa", "acc": 50.0, "bwt": -1.0, "fwt": None, "seconds": 3.0,
           "matrix": [[50.0, 10.0], [49.0, 51.0]]}
    continual.plot_matrices([res], tmp_path / "m.png", "t")
    _check(caught)


def test_memory_recall(caught, tmp_path):
    rows = [{"memory": "hopfield", "stored": n, "noise": 0.0, "mode": "flip", "exact": 0.9 - 0.001 * n, "item": 0.9,
             "class": None} for n in (200, 300, 500)]  # N within one decade
    memory.plot_recall(rows, tmp_path / "r.png", "t")
    _check(caught)
