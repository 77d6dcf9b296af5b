"""Tick labels every figure of the package shares: plain numbers, never an offset or "×10^0".

Matplotlib's defaults print a log axis that spans less than a decade with minor labels such as
``4×10^0`` or ``6×10^-1``, and a linear axis whose values are close together with an offset
text (``+3.9``, ``×10^0``) that a reader must add back in. :func:`tidy_axes` replaces the tick
formatters of every axis of a figure once it is drawn up (call it just before saving):

* log axes keep matplotlib's choice of *which* ticks carry a label (decades, and the minor
  ticks it labels when few decades are shown), but each label reads as :func:`tick_text`
  writes it;
* linear axes label their ticks with :func:`tick_text` and have no offset text at all.

Every figure of :mod:`beyondbp.reporting` goes through it, once, just before it is saved: the
study report's, the run curves (:func:`beyondbp.reporting.runs.curves_figure`), the
representation heatmaps, the adaptation, continual-learning and memory plots. Ticks labelled by
hand (categories, task numbers set with their labels) keep their labels.

:func:`tick_text` writes a number from 0.001 to 9999 plainly (``0.4``, ``3``, ``2000``) and
others as ``10^k`` or ``m×10^k`` (mathtext) with ``|k| ≥ 3``, so no label is ever "×10^0".
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["tick_text", "tidy_axes"]


def tick_text(value: float, digits: int = 4) -> str:
    """One tick label: plain from 0.001 to 9999, else a power of ten (``$10^{6}$``) or a
    mantissa times one (``$2.5\\times10^{-4}$``); ``digits`` significant digits at most."""
    x = float(value)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    a = abs(x)
    plain = f"{x:.{digits}g}"
    if 1e-3 <= a < 1e4 and "e" not in plain:  # 9999.9 -> "1e+04": written as a power below
        return plain.replace("-", "\u2212")  # matplotlib's minus sign
    k = math.floor(math.log10(a))
    m = round(x / 10.0**k, digits - 1)
    if abs(m) >= 10:  # rounding carried over: 9.9996e5 -> 1e6
        m, k = m / 10, k + 1
    sign = "-" if m < 0 else ""
    if abs(abs(m) - 1) < 1e-9:
        return f"$\\mathdefault{{{sign}10^{{{k}}}}}$"
    return f"$\\mathdefault{{{m:g}\\times10^{{{k}}}}}$"


def _log_formatter(minor: bool) -> Any:
    from matplotlib.ticker import LogFormatterSciNotation

    class _LogText(LogFormatterSciNotation):
        """Matplotlib's decision of which log ticks are labelled, with :func:`tick_text`'s words."""

        def __call__(self, x: float, pos: Any = None) -> str:
            return tick_text(x) if super().__call__(x, pos) else ""

    return _LogText(labelOnlyBase=False) if minor else _LogText()


def _linear_formatter() -> Any:
    from matplotlib.ticker import Formatter

    class _Plain(Formatter):
        """:func:`tick_text` with as many digits as it takes to tell the ticks apart."""

        digits, scale = 4, 1.0

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            self.digits, self.scale = 4, max([1.0, *map(abs, locs)])
            near = [v if abs(v) > 1e-12 * self.scale else 0.0 for v in locs]
            while self.digits < 12 and len({tick_text(v, self.digits) for v in near}) < len(set(near)):
                self.digits += 1

        def __call__(self, x: float, pos: Any = None) -> str:
            return tick_text(0.0 if abs(x) < 1e-12 * self.scale else x, self.digits)

    return _Plain()


def tidy_axes(fig: Any) -> None:
    """Give every axis of ``fig`` (colour bars included) :func:`tick_text` labels and no offset
    text; symlog, logit and categorical axes are left as they are."""
    from matplotlib.ticker import ScalarFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            scale = axis.get_scale()
            if scale == "log":
                axis.set_major_formatter(_log_formatter(minor=False))
                axis.set_minor_formatter(_log_formatter(minor=True))
            elif scale == "linear" and isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(_linear_formatter())
