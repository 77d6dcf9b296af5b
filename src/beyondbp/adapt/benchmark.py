"""The adaptation benchmark: every method on every (corruption, severity).

:func:`benchmark` builds one result dict (:mod:`beyondbp.reporting.adapt` renders it)::

    {"methods": [...], "corruptions": [...], "severities": [...], "batch_size": 128,
     "batch_size_requested": 128, "episodic": False, "seed": 0, "samples": 10000,
     "rows": [{"method", "corruption", "severity", "error", "batches", "seconds_per_batch"}, ...],
     "mean": {method: {severity: mean error over corruptions}},
     "seconds_per_batch": {method: mean over the rows}}

``batch_size`` is the batch the methods were given: the requested one, or all the ``samples``
where they are fewer (``batch_size_requested``: what was asked). Errors are fractions in the
dict (percentages in the rendered table). The corrupted sets are generated once per
(corruption, severity) from ``seed`` and shared by all methods; every method starts from the
same source model.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .corruptions import corrupt
from .methods import make, stream_error

__all__ = ["benchmark"]


def benchmark(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: list[str], corruptions: list[str],
              severities: list[int], batch_size: int = 128, episodic: bool = False, seed: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Error of every method on ``x`` corrupted by every corruption at every severity."""
    rows: list[dict[str, Any]] = []
    total, done = len(corruptions) * len(severities) * len(methods), 0
    for corruption in corruptions:
        for severity in severities:
            xc = corrupt(x, corruption, severity, seed=seed)
            for method in methods:
                if progress is not None:
                    progress(f"{method} {corruption} s{severity}", done, total)
                adapter = make(method, model, episodic=episodic)
                r = stream_error(adapter, xc, y, batch_size=batch_size)
                rows.append({"method": method, "corruption": corruption, "severity": severity, **r})
                done += 1
    if progress is not None:
        progress("done", done, total)
    mean = {m: {s: sum(r["error"] for r in rows if r["method"] == m and r["severity"] == s) / len(corruptions)
                for s in severities} for m in methods}
    seconds = {m: sum(r["seconds_per_batch"] for r in rows if r["method"] == m) / (len(corruptions) * len(severities))
               for m in methods}
    return {"methods": list(methods), "corruptions": list(corruptions), "severities": list(severities),
            "batch_size": min(batch_size, len(x)), "batch_size_requested": batch_size, "episodic": bool(episodic), "seed": seed, "samples": len(x),
            "rows": rows, "mean": mean, "seconds_per_batch": seconds}
