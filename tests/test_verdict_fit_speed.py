"""The batched L-BFGS behind every frontier fit and bootstrap (beyondbp.analysis.scaling.laws)
gathers its running starts' histories once per iteration and shifts them without np.roll (the
hot spot of judge_study, which the seed search runs once per round): the verdict is unchanged,
digit for digit as far as a fit is reproducible (every number to 6 significant digits), for a
fixed study and bootstrap seed. The reference digest was computed before the change."""

from __future__ import annotations

import hashlib
import json
import math

from beyondbp.study.verdict import judge_study

#: sha256 of the rounded verdict JSON below, from the code before the change.
REFERENCE = "12064403e939c3bab3a46263d99964c9d7999c8a69042b674d85e1e482b434e0"


def _records() -> list[dict]:
    recs, i = [], 0
    for rule, worse in (("backprop", 0.0), ("dfa", 0.06), ("fa", 0.02)):
        for width in (32, 64, 128, 256):
            for steps in (400, 1200, 3600):
                for lr in (5e-4, 2e-3, 8e-3):
                    for seed in range(3):
                        i += 1
                        loss = (0.3 + 20 / steps + 2 / width + worse + 0.1 * math.log(lr / 2e-3) ** 2
                                + 0.01 * math.sin(i))
                        recs.append({
                            "id": f"r{i}", "status": "done", "label": rule,
                            "axes": {"rule": rule, "model_options": {"widths": [width]}, "steps": steps, "lr": lr,
                                     "seed": seed},
                            "config": {"rule": rule, "lr": lr, "seed": seed, "batch_size": 64},
                            "result": {"final": {"test_loss": loss}, "n_params": 50 * width, "steps": steps,
                                       "flops_per_step": 1000 * width * (3 if rule == "backprop" else 2)},
                        })
    return recs


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def digest() -> str:
    verdict = judge_study(_records(), loss_law=False, n_bootstrap=40, seed=7).to_dict()
    text = json.dumps(_rounded(json.loads(json.dumps(verdict, default=repr))), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_verdict_is_unchanged_by_the_faster_batched_fit():
    assert digest() == REFERENCE
