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


def test_closing_reports_damage_done_and_still_to_come(cp, capsys):
    cells = {
        ("usf", 3, 0): {1: 0.05, 2: 0.06, 3: 0.04},
        ("usf", 3, 1000): {1: 0.05, 2: 0.07, 3: 0.04},  # no damage yet: all of it still to come
        ("usf", 3, 10000): {1: 0.35, 2: 0.36, 3: 0.34},  # all the damage done: closed by 10k
        ("usf", 3, 40000): {1: 0.35, 2: 0.37, 3: 0.34},
        ("usf", 2, 0): {1: 0.3, 2: 0.3},  # only two deficits: no intermediate T, no row
        ("usf", 2, 40000): {1: 0.4, 2: 0.4},
    }
    cp.closing(cells, ["usf"], {2, 3})
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("usf")]
    assert [r[:3] for r in rows] == [["usf", "3", "1000"], ["usf", "3", "10000"]]
    early, late = rows
    assert float(early[4]) == pytest.approx(1 / 3 * 0.01, abs=1e-3) and " ".join(early[-2:]) == "above 0"
    assert float(early[7]) == pytest.approx(0.30, abs=1e-3)
    assert float(late[4]) == pytest.approx(0.30, abs=1e-3) and " ".join(late[-2:]) == "contains 0"
