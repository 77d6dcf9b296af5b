"""A verdict compared on the frontier points (an L(C) that is not identified) compares only the
computes every seed's frontier reaches: beyond them a bootstrap resample would average fewer
seeds, and at the very top one seed's point alone gives an interval of zero width (the shipped
MLP study's uSF verdict was class B on such an interval before this)."""

from types import SimpleNamespace

import numpy as np

from beyondbp.study.verdict import _Curves, _delta_on


def frontier(points):
    return SimpleNamespace(points=[SimpleNamespace(seed=s, C=c, loss=l_) for s, c, l_ in points])


def test_point_curves_cover_only_the_computes_every_seed_reaches():
    # seed 0's frontier goes on to C = 100; seeds 1 and 2 stop at 10
    rule = frontier([("0", 1.0, 2.0), ("0", 10.0, 1.5), ("0", 100.0, 1.0),
                     ("1", 2.0, 2.1), ("1", 10.0, 1.6), ("2", 1.0, 2.2), ("2", 10.0, 1.4)])
    curves = _Curves.from_points(rule, n_bootstrap=200, seed=0, basis="not identified")
    assert curves.covered == (2.0, 10.0)
    base = _Curves.from_points(frontier([(s, c, 2.0 + 0.1 * int(s)) for s in "012" for c in (1.0, 10.0, 100.0)]),
                               n_bootstrap=200, seed=0, basis="not identified")
    assert base.covered == (1.0, 100.0)
    # inside the covered range every resample averages three seeds: the interval has width
    inside = _delta_on(np.array([2.0, 10.0]), curves, base, 0.95)
    assert inside.high[-1] - inside.low[-1] > 0.05
