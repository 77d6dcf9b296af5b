"""``compare``: the one-axis study over rules, run in this process on one shared data set (one per
seed for a set whose seed follows the run's, such as ``matrix-completion``).

Its runs are planned by :func:`beyondbp.study.spec.plan_axis`, the planner of study grids, so
each has the run id and the checks it would have in a study spec with a ``rule`` axis.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..training import RunConfig, RunResult, check, effective_data_options, load_dataset, run
from ..training.loop import Progress
from .spec import plan_axis

__all__ = ["compare"]


def compare(
    config: RunConfig,
    rules: Sequence[str],
    rule_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
    seeds: Sequence[int] | None = None,
) -> list[RunResult]:
    """Run every rule in ``rules`` with ``config`` otherwise unchanged (same model, data, budget,
    seed). ``rule_options`` maps a rule name to its options (default: ``config.rule_options``
    for every rule). A comparison is the one-axis study over ``rule``: its runs are planned by
    :func:`beyondbp.study.spec.plan_axis`, the planner of study grids, so each has the run id it
    would have in a study. Every configuration is checked before the first one trains, and the
    data set is loaded once and shared.

    Args:
        config: the settings every rule runs with (its ``rule`` is replaced by each of ``rules``).
        rules: registered rule names, each once.
        rule_options: rule name -> that rule's options (default: ``config.rule_options`` for every
            rule).
        progress: the run loop's progress callback, for every run.
        seeds: distinct whole numbers >= 0: the comparison is repeated with each seed instead of
            ``config.seed``; the results come rule by rule, each rule's in the order of ``seeds``
            (:func:`beyondbp.reporting.runs.comparison_table` then gives each rule's mean and
            spread).

    Returns:
        One :class:`RunResult` per (rule, seed).
    """
    if not rules:
        raise ConfigError("compare needs at least one rule")
    if config.checkpoint is not None:
        raise ConfigError("compare does not save checkpoints; leave checkpoint unset and use run() for one rule")
    if config.state is not None:
        raise ConfigError("compare does not resume runs; leave state unset and use run() for one rule")
    dupes = sorted({r for r in rules if list(rules).count(r) > 1})
    if dupes:
        raise ConfigError(f"rule {dupes[0]!r} is listed more than once")
    per_rule = dict(rule_options or {})
    entries = [
        {"name": r, "options": dict(per_rule.get(r, config.rule_options if rule_options is None else {}))}
        for r in rules
    ]
    if seeds is None:
        seed_list = [config.seed]
    else:
        seed_list = list(seeds)
        if not seed_list:
            raise ConfigError("compare needs at least one seed")
        for s in seed_list:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"invalid seed {s!r}: seeds must be whole numbers of at least 0")
        if len(set(seed_list)) != len(seed_list):
            raise ConfigError(f"seed {next(s for s in seed_list if seed_list.count(s) > 1)} is listed more than once")
    per_seed = [[planned.config for planned in plan_axis(config.replace(seed=s), "rule", entries)] for s in seed_list]
    configs = [per_seed[j][i] for i in range(len(entries)) for j in range(len(seed_list))]  # rule by rule
    # one data set per distinct data (a set whose seed follows the run's differs from seed to seed)
    datasets: dict[str, Any] = {}
    data = []
    for c in configs:
        key = repr(sorted(effective_data_options(c).items()))
        data.append(datasets[key] if key in datasets else datasets.setdefault(key, load_dataset(c)))
    for c, ds in zip(configs, data):
        check(c, ds)
    return [run(c, progress, dataset=ds) for c, ds in zip(configs, data)]
