"""bench/critical_periods.py's bookkeeping: the plateau check and the intervals (no training)."""

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "critical_periods.py"


@pytest.fixture(scope="module")
def cp():
    spec = importlib.util.spec_from_file_location("bench_critical_periods", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tail_change_compares_the_last_point_with_the_one_a_window_before(cp):
    curve = [[1000, 1.0], [2000, 0.5], [3000, 0.4], [4000, 0.35], [5000, 0.30]]
    assert cp.tail_change(curve, window=2000) == pytest.approx(0.10)  # 0.30 vs 0.40 at step 3000
    assert cp.tail_change(curve, window=2500) == pytest.approx(0.20)  # the last point ≤ 2500: step 2000
    assert cp.tail_change([[1000, 0.9], [2000, 0.9]], window=1000) == 0.0
    assert math.isnan(cp.tail_change(curve, window=10000))
    assert math.isnan(cp.tail_change([], window=10))


def test_mean_interval_is_the_student_t_interval(cp):
    m, h = cp.mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0
    assert h == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(cp.mean_interval([1.0])[1])
