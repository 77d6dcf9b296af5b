"""Study specs (MINIMAL FIRST VERSION: format fixed here, validation to be hardened).

A study is a TOML file::

    [study]
    name = "dfa-vs-bp-mlp"          # required; a run store belongs to one study name
    description = "..."             # optional

    [base]                          # one run's settings: RunConfig keys (train's flags, _ for -)
    model = "mlp"
    data = "mnist1d"
    steps = 200

    [axes]                          # the grid: every combination of the axes' values
    rule = ["backprop", "dfa"]      # or tables {name = "dfa", label = "dfa-linear", options = {...}}
    seed = [0, 1, 2]
    lr = [1e-3, 3e-3]               # or per rule label: lr = {backprop = [1e-3], dfa = [1e-4, 3e-4]}
    model_options = [{widths = [64]}, {widths = [128]}]   # table settings: merged into base's

    [execution]                     # how it runs; never part of a run's identity
    device = "cpu"
    threads = 1
    checkpoint_every = 100          # optimizer steps between resume-state writes

Each combination is a :class:`PlannedRun`: its :class:`~beyondbp.train.RunConfig`, its id
(``RunConfig.run_id``) and the value it takes on every axis (``axes``; the rule axis holds the
rule's label).
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..train import RunConfig

__all__ = ["PlannedRun", "Spec", "load_spec", "default_store_path"]

TABLE_SETTINGS = ("rule_options", "model_options", "data_options")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: ``id`` (the config's run id), ``config``, ``axes`` (axis -> value;
    ``axes["rule"]`` is the rule's label when the study has a rule axis) and ``label`` (the
    rule's label: its name unless the spec gave one)."""

    id: str
    config: RunConfig
    axes: dict[str, Any]
    label: str


@dataclass
class Spec:
    path: Path
    name: str
    description: str
    base: dict[str, Any]
    axes: dict[str, Any]
    execution: dict[str, Any]
    text: str
    _runs: list[PlannedRun] = field(default_factory=list, repr=False)

    def runs(self) -> list[PlannedRun]:
        """Every run of the grid, in a stable order (axes in file order, values in list order)."""
        return list(self._runs)


def default_store_path(spec_path: str | Path) -> Path:
    """The store beside the spec: ``spec.toml`` -> ``spec.db``."""
    return Path(spec_path).with_suffix(".db")


def _rule_values(values: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for v in values:
        if isinstance(v, str):
            out.append((v, v, {}))
        else:
            out.append((v.get("label", v["name"]), v["name"], dict(v.get("options", {}))))
    return out


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    text = path.read_text()
    doc = tomllib.loads(text)
    study = doc.get("study", {})
    base = dict(doc.get("base", {}))
    axes = dict(doc.get("axes", {}))
    execution = dict(doc.get("execution", {}))
    names = list(axes)
    choices: list[list[tuple[Any, dict[str, Any]]]] = []
    for name in names:
        values = axes[name]
        if name == "rule":
            choices.append([(label, {"rule": rule, "rule_options": opts}) for label, rule, opts in _rule_values(values)])
        elif name == "lr" and isinstance(values, dict):
            choices.append([(None, {"lr": values})])  # resolved per rule below
        else:
            choices.append([(v, {name: v}) for v in values])
    runs = []
    for combo in itertools.product(*choices):
        settings = dict(base)
        shown: dict[str, Any] = {}
        per_rule_lr = None
        for name, (value, change) in zip(names, combo):
            for key, v in change.items():
                if key in TABLE_SETTINGS:
                    settings[key] = {**settings.get(key, {}), **v}
                elif key == "lr" and isinstance(v, dict):
                    per_rule_lr = v
                else:
                    settings[key] = v
            shown[name] = value
        label = shown.get("rule", settings.get("rule", "backprop"))
        lrs = [None] if per_rule_lr is None else per_rule_lr[label]
        for lr in lrs:
            s = dict(settings)
            axes_values = dict(shown)
            if lr is not None:
                s["lr"] = lr
                axes_values["lr"] = lr
            config = RunConfig(**s, **{k: v for k, v in execution.items() if k in ("device", "threads")})
            runs.append(PlannedRun(config.run_id, config, axes_values, label))
    spec = Spec(path, study["name"], study.get("description", ""), base, axes, execution, text)
    spec._runs = runs
    return spec
