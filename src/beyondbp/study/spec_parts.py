"""Planning a study's grid by parts (:func:`plan_by_parts`), so that a spec of
:data:`~beyondbp.study.spec.MAX_RUNS` runs plans in about a second instead of building every
combination's ``RunConfig`` and every rule (issue 23 §7; bench/spec_scale.py measures it).

The result is exactly what planning each combination through ``RunConfig`` gives (the runs, in
the same order, with the same ids, configs, labels and axes): the settings of
:data:`~beyondbp.training.config.INDEPENDENT_SETTINGS` are checked by their own field only and
enter a run's identity as themselves (``seed`` also as the rule's seed option), so their values
are validated once each and their canonical JSON fragments put into the identity text of each
distinct combination of the other axes, which is validated once through ``RunConfig``. Anything
the reference would refuse (a combination, a repeated run) makes :func:`plan_by_parts` answer
None, and :mod:`beyondbp.study.spec` plans and reports the grid one combination at a time.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import operator
from typing import Any

from .. import rules as rules_mod
from ..jsonable import plain
from ..training import RunConfig
from ..training.config import INDEPENDENT_SETTINGS, canonical_rule_options

__all__ = ["plan_by_parts"]


def plan_by_parts(grid: Any, planned_run: type) -> list[Any] | None:
    """The runs (``planned_run(id, config, axes, label)``) of ``grid`` (a
    :class:`beyondbp.study.spec._Grid`) when every combination is valid and gives its own run;
    None otherwise (or when no axis is free), for the caller to plan one combination at a time."""
    collecting = gc.isenabled()
    gc.disable()  # the cyclic collector would rescan the growing list of runs many times: a third of the time
    try:
        return _plan(grid, planned_run)
    finally:
        if collecting:
            gc.enable()


def _json(value: Any) -> str:
    """``value`` as ``RunConfig.run_id`` writes it (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _updated(config: RunConfig, update: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with ``update``'s values (already validated) set: what
    ``config.model_copy(update=update)`` gives, without its generic copying (the copy shares
    ``config``'s option tables, as a shallow copy does)."""
    copy = RunConfig.__new__(RunConfig)
    object.__setattr__(copy, "__dict__", {**config.__dict__, **update})
    object.__setattr__(copy, "__pydantic_fields_set__", config.__pydantic_fields_set__ | update.keys())
    object.__setattr__(copy, "__pydantic_extra__", None)
    object.__setattr__(copy, "__pydantic_private__", None)
    return copy


def _plan(grid: Any, planned_run: type) -> list[Any] | None:
    """The runs of a grid in which every combination is valid and gives its own run, planned
    without building every combination's ``RunConfig``; None when some combination is refused
    or repeats another's run, which the caller then plans (and reports) one combination at a
    time. The result is exactly what that would give: the same runs, ids, configs, in the same
    order.

    How: the axes of :data:`~beyondbp.training.config.INDEPENDENT_SETTINGS` (``lr``, ``seed``, ...;
    ``seed`` not under SET sparsity, whose check reads it) are "free": no check relates them
    to another setting, and they enter the identity as themselves (``seed`` also as the rule's
    seed option). Each distinct combination of the other axes is validated once through
    ``RunConfig`` (with its first free values), each free value once (in the first such
    combination), and each (rule, options, seed) once; a run's identity text is its
    combination's canonical JSON with the free fragments put in, and its config a copy of the
    combination's with the free values set."""
    axes = grid.axes
    if not axes:
        return None
    sparse = grid.base.get("sparsity") is not None or any("sparsity" in c.changes for a in axes for c in a)
    free_keys = [k for k in INDEPENDENT_SETTINGS if not (k == "seed" and sparse)]
    free = [i for i, a in enumerate(axes) if all(set(c.changes) <= set(free_keys) and len(c.changes) == 1 for c in a)]
    if not free:
        return None
    fixed = [i for i in range(len(axes)) if i not in free]
    free_key = {i: next(iter(axes[i][0].changes)) for i in free}
    if len(set(free_key.values())) < len(free):
        return None
    # each free value once, in the first combination: its validated value and its JSON
    combos = grid.combinations()
    first = next(combos, None)
    if first is None:
        return None
    values: dict[int, list[tuple[Any, str]]] = {}
    for i in free:
        validated = []
        for choice in axes[i]:
            config, message = grid.check(grid.settings(first[:i] + (choice,) + first[i + 1:]))
            if config is None:
                return None
            value = getattr(config, free_key[i])
            validated.append((value, json.dumps(free_key[i]) + ":" + _json(plain(value))))
        values[i] = validated
    fixed_of = operator.itemgetter(*fixed) if fixed else (lambda indices: ())
    parts: dict[Any, Any] = {}  # fixed choices -> (config, identity fragments, free slots, rule options slot, ...)
    rule_options: dict[tuple[str, str, int], str] = {}
    runs: list[Any] = []
    seen: set[str] = set()
    free_names = [free_key[i] for i in free]
    names_of = [a[0].axis for a in axes]
    shown = [[c.value for c in a] for a in axes]
    lr_axis, rule_axis = grid._lr_axis, grid._rule_axis
    rule_labels = [c.label for c in axes[rule_axis]] if rule_axis is not None else None
    lr_labels = [c.label for c in axes[lr_axis]] if grid.per_rule_lr else None
    for indices in itertools.product(*(range(len(a)) for a in axes)):
        label = rule_labels[indices[rule_axis]] if rule_labels is not None else grid.base_label
        if lr_labels is not None and lr_labels[indices[lr_axis]] != label:
            continue
        key = fixed_of(indices)
        part = parts.get(key)
        if part is None:
            config, message = grid.check(grid.settings(tuple(a[j] for a, j in zip(axes, indices))))
            if config is None:
                return None
            identity = config.identity()
            names = sorted(identity)
            fragments = [json.dumps(k) + ":" + _json(identity[k]) for k in names]
            slots = [names.index(k) for k in free_names]
            options = dict(config.rule_options)
            coupled = ("seed" in free_names and "seed" not in options
                       and "seed" in rules_mod.rule_class(config.rule).option_names())
            rule_slot = names.index("rule_options") if coupled else None
            part = parts[key] = (config, fragments, slots, rule_slot, _json(plain(options)), options)
        config, fragments, slots, rule_slot, options_text, options = part
        text = fragments.copy()
        update = {}
        for i, name, slot in zip(free, free_names, slots):
            value, fragment = values[i][indices[i]]
            text[slot] = fragment
            update[name] = value
        if rule_slot is not None:
            seed = update["seed"]
            cached = rule_options.get((config.rule, options_text, seed))
            if cached is None:
                try:
                    rules_mod.get(config.rule, **{**options, "seed": seed})  # the check RunConfig makes
                    canonical = canonical_rule_options(config.rule, {**options, "seed": seed})
                except Exception:  # noqa: BLE001 - refused: the caller plans it again and says why
                    return None
                cached = rule_options[(config.rule, options_text, seed)] = '"rule_options":' + _json(plain(canonical))
            text[rule_slot] = cached
        run_id = hashlib.sha256(("{" + ",".join(text) + "}").encode()).hexdigest()[:16]
        if run_id in seen:
            return None
        seen.add(run_id)
        axes_shown = {name: values_[j] for name, values_, j in zip(names_of, shown, indices)}
        runs.append(planned_run(run_id, _updated(config, update), axes_shown, label))
    return runs
