"""Study specs: one TOML file, read and fully validated before anything runs.

A study is a TOML file::

    [study]
    name = "dfa-vs-bp-mlp"          # required; identifies the study (see "Identity" below)
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
    keep_models = true              # save each finished run's model (for `beyondbp analyze`)

Each combination is a :class:`PlannedRun`: its :class:`~beyondbp.training.RunConfig`, its id
(``RunConfig.run_id``) and the value it takes on every axis (``axes``; the rule axis holds the
rule's label).

The tables
----------
* ``[study]``: ``name`` (required: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting with a
  letter or digit, since it names files and labels) and ``description``.
* ``[base]``: any run setting (:class:`~beyondbp.training.RunConfig`'s fields) except the
  execution settings below. ``model`` and ``data`` are needed here or as axes.
* ``[axes]``: any run setting, each a non-empty list of distinct values (compared normalised:
  ``1`` and ``1.0`` are the same value). An axis overrides ``[base]``'s value of the same
  setting; the table settings ``model_options``, ``data_options`` and ``rule_options`` take
  lists of tables, each merged over ``[base]``'s table. ``rule`` takes rule names or tables
  ``{name, label, options}``: the label (default: the name) tells entries of the same rule apart
  (``"dfa-macro"``, ``"dfa-linear"``), so labels must be distinct and fit for file names; with a
  rule axis, give options in the entries, not in ``[base] rule_options``. ``lr`` takes a list, or
  a table keyed by rule label giving each rule its own list (every label on the rule axis must
  have one, and no other key is allowed; without a rule axis the only label is ``[base]``'s
  rule). A spec without axes is a legitimate one-run study.
* ``[execution]``: ``feature_cache`` (model ``lsm``: where the liquid's features are cached;
  default ``<store dir>/<store stem>.features``; relative paths from the spec's folder),
  ``feature_workers`` (model ``lsm``: processes generating a run's features, default 1 in a
  study; the features are the same whatever the number), ``device``,
  ``threads`` (unset: the executor chooses, so that workers ×
  threads fit the cores), ``checkpoint_every``, ``data_dir`` (relative paths are taken from the
  spec's folder), ``diagnostics`` (record gradient alignment; it does not change the training)
  ``eval_batch_size`` and ``keep_models`` (true: every run saves its final model as a checkpoint in
  ``<store dir>/<store stem>.models/<run id>.pt``, which ``beyondbp analyze`` reads) and
  ``workers_per_gpu`` (with ``device = "cuda"``: runs sharing one GPU, default 1; the local
  executor gives each worker its own GPU, ``cuda:0``, ``cuda:1``, ..., and refuses more
  ``--workers`` than visible GPUs × workers_per_gpu; Ray asks ``num_gpus = 1/workers_per_gpu``
  per run). These say how a run executes, not what it computes, so they are
  refused in ``[base]`` and ``[axes]`` with a pointer here. ``checkpoint``, ``state`` and
  ``init_from`` are refused everywhere: the run store manages resume state, and a study's runs
  train from scratch.

* ``[search]``: what the study searches instead of running a fixed grid
  (:mod:`beyondbp.study.search`; read by :mod:`beyondbp.study.search_settings`)::

      [search]
      lr = {factor = 3, max_rounds = 4, refine = true}   # needs an lr axis: the rates each cell starts with
      seeds = {min = 3, max = 10}

  ``lr``: learning-rate bracketing per cell (a rule label with one value of every other axis):
  ``factor`` (> 1, default 3) the geometric step beyond an edge, ``max_rounds`` (0 to 100,
  default 4) the most extension rounds, ``refine`` (default false) one more round at the
  geometric midpoints around the best rate, ``margin`` (0 to 1, default 0) how much worse
  (relatively) a rate must be to close a side, ``warm_start`` (default false) the first rates of
  larger sizes centred on the trend of best rate against parameter count, ``seeds`` (a whole
  number ≥ 1, default every seed) how many of the cell's seeds the bracketing reads: the others
  run at the best rate only, once it is settled. ``seeds``: every cell
  starts with ``min`` seeds (at least the seed axis's; the next whole numbers are added), and
  frontier cells get one more per round while their verdict against ``baseline`` (default
  ``"backprop"``, a rule label of the study) is undecided, up to ``max`` (at least the seed
  axis's count, at most 1000). Unknown keys, other axes, values out of range are refused with
  their place (``[search] lr.factor``). Runs the search adds are ordinary runs of the study;
  :meth:`Spec.runs` is the grid only. A study stays within :data:`MAX_RUNS` whatever its runs
  give: a search whose worst case (every cell extended ``max_rounds`` times on both sides,
  refined, and given ``seeds.max`` seeds; :func:`~beyondbp.study.search_settings.search_run_bound`)
  exceeds it is refused when the spec is loaded, naming that count.

Checks, all before anything runs: the tables and their keys (pydantic models, unknown keys
refused; they and the axes are read in :mod:`beyondbp.study.spec_tables`), every value of
every axis and every combination, through ``RunConfig`` itself (so a study refuses exactly
what a run refuses, with the same words) plus the model's and the data set's option
declarations; grids above :data:`MAX_RUNS` runs are refused, and so are two axis
entries that give the same run (the same ``run_id``: e.g. a rule option equal to its default),
and a model whose weights alone would not fit this machine's memory (sized on the meta device,
nothing allocated; every such run would fail). A valid grid is planned by parts
(:mod:`beyondbp.study.spec_parts`: each value of an independent axis such as ``lr`` or ``seed``
and each distinct combination of the other axes checked once, giving exactly the runs and ids
checking every combination gives), so that :data:`MAX_RUNS` runs plan in about a second; a grid
with a mistake is checked combination by combination, for the messages below.
Every mistake is one line, ``<file name>: <place>: <what is wrong>; <what is allowed>``, and all
that are found are raised together (a :class:`~beyondbp.errors.ConfigError`, or for several a
:class:`~beyondbp.errors.ConfigErrors` listing them in ``problems``): the tables are checked
independently, then every axis, then every combination (each distinct message once) — an
unknown key is left out and a bad axis left out of the combinations (an axis whose only mistake
is a repeated value is kept without the repeat), so that one mistake never hides another; only
when the model or the data comes from a bad axis are the combinations not checked — e.g.
``spec.toml: [axes] lr[2]: invalid lr -0.1: it must be a finite number greater than 0``. The
place of an error found by ``RunConfig`` is the set of entries each of whose change alone alters
it: ``[base]`` keys (left out), ``[execution]`` keys (left out), axis values (replaced by another
value of their axis, or the axis left out) — one entry (``[axes] lr[2]``), or a combination
(``[axes] rule='fa', rule_options[1]``); ``[base]`` itself when none does. Not checked here:
whether a rule can be attached to the model built for the data (that needs the data set and the
model; ``beyondbp.training.check`` does it, and a run that fails it is recorded as failed).

Identity
--------
A study is identified by its name alone: :attr:`Spec.fingerprint` hashes ``[study] name`` and
nothing else, and a run store created for one study refuses a spec with another name. Editing
the grid keeps the study: adding a value to an axis adds runs (only those run next time), and
runs already done are recognised by their run ids, which depend on a run's settings only.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import data as data_mod
from .. import models as models_mod
from ..errors import ConfigError, ConfigErrors
from ..options import parse
from ..training import EXECUTION_FIELDS, RunConfig, lm_context
from .search_settings import Search, check_search_size, parse_search
from .spec_parts import plan_by_parts
from .spec_tables import (
    TABLE_SETTINGS,
    _axis_choices,
    _Choice,
    _lr_choices,
    _normal,
    _raise_all,
    _rule_choices,
    _SpecError,
    _validate_tables,
)

__all__ = ["MAX_DEPTH", "MAX_RUNS", "PlannedRun", "Spec", "check_device", "load_spec", "default_store_path"]

#: The largest grid a spec may ask for.
MAX_RUNS = 100_000
#: How deeply a spec's values may nest (arrays and tables inside each other).
MAX_DEPTH = 32

#: The rule of a run that names none (the label of a grid without a rule axis).
_DEFAULT_RULE = RunConfig.model_fields["rule"].default

#: The most distinct errors of the grid's combinations reported at once (each is blamed on its place).
MAX_GRID_ERRORS = 20

#: Plan a valid grid by parts (:func:`~beyondbp.study.spec_parts.plan_by_parts`); False plans every
#: combination through ``RunConfig``, the reference it agrees with (tests, bench/spec_scale.py).
_fast_planning = True


# -- the spec ---------------------------------------------------------------------------------
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
    """A validated study spec. ``base``, ``axes`` are the tables as written; ``execution`` has
    every key of :data:`~beyondbp.study.spec_tables.EXECUTION_KEYS` (``None``: not set; ``device`` defaults to ``"cpu"``,
    ``diagnostics`` to False; ``data_dir`` is resolved against the spec's folder)."""

    path: Path
    name: str
    description: str
    base: dict[str, Any]
    axes: dict[str, Any]
    execution: dict[str, Any]
    text: str
    search: Search | None = None
    _runs: list[PlannedRun] = field(default_factory=list, repr=False)

    def runs(self) -> list[PlannedRun]:
        """Every run of the grid, in a stable order (axes in file order, values in list order)."""
        return list(self._runs)

    @property
    def fingerprint(self) -> str:
        """What identifies the study (16 hex digits): a hash of its name only, so the grid may
        grow (or be edited) without leaving the study, while a store refuses another study."""
        return hashlib.sha256(f"beyondbp-study\0{self.name}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, description, fingerprint, number of runs, the labels, and
        per axis its number of values (per-rule ``lr``: a count per label)."""
        axes: dict[str, Any] = {}
        for axis, values in self.axes.items():
            if isinstance(values, dict):
                axes[axis] = {k: len(v) for k, v in values.items()}
            else:
                axes[axis] = len(values)
        labels = list(dict.fromkeys(r.label for r in self._runs))
        return {
            "name": self.name,
            "description": self.description,
            "fingerprint": self.fingerprint,
            "runs": len(self._runs),
            "labels": labels,
            "axes": axes,
            "execution": dict(self.execution),
        }

    def summary(self) -> str:
        """One line, e.g. ``dfa-vs-bp-mlp: 144 runs (rule 4 × lr 3 × seed 3 × model_options 4)``."""
        d = self.describe()
        parts = []
        for axis, n in d["axes"].items():
            parts.append(f"{axis} " + ("/".join(str(c) for c in n.values()) + " per rule" if isinstance(n, dict) else str(n)))
        grid = f" ({' × '.join(parts)})" if parts else " (no axes)"
        runs = "run" if d["runs"] == 1 else "runs"
        return f"{self.name}: {d['runs']} {runs}{grid}"


def default_store_path(spec_path: str | Path) -> Path:
    """The store beside the spec: ``spec.toml`` -> ``spec.db``."""
    return Path(spec_path).with_suffix(".db")


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    name = path.name or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; give the path of a study spec (a .toml file)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the path of a study spec (a .toml file)") from None
    except PermissionError:
        raise ConfigError(f"{name}: cannot be read (permission denied); make it readable or give another spec") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot be read ({exc.strerror or exc}); give a readable study spec (a .toml file)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{name}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the spec as UTF-8"
        ) from None
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(
            f"{name}: its arrays or tables are nested too deeply to read; a spec nests at most {MAX_DEPTH} levels"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
        if found:
            place = f"line {found.group(1)}, column {found.group(2)}"
            message = message[: found.start()]
        elif "(at end of document)" in message:
            place, message = "end of file", message.replace("(at end of document)", "").strip()
        else:
            place = "TOML"
        message = message.rstrip(".")
        raise ConfigError(f"{name}: {place}: not valid TOML ({message}); see https://toml.io for the syntax") from None
    _check_depth(name, doc)
    return text, doc


def _check_depth(name: str, doc: dict[str, Any]) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` (checked without recursion), which no
    setting needs and which would exhaust the recursion of the checks below."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    while stack:
        value, place, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{name}: {place}: values nest more than {MAX_DEPTH} levels deep; no setting needs that many")
        if isinstance(value, dict):
            stack.extend((v, f"{place}.{k}" if place else f"[{k}]", depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, place, depth + 1) for v in value)


def check_device(spec: "Spec") -> None:
    """Refuse (:class:`ConfigError`, one sentence) a spec whose ``[execution] device`` this
    machine lacks (``cuda`` without a CUDA GPU, ``cuda:N`` beyond the GPUs torch sees, ``mps``
    where it is not available): its runs would all fail. ``study run`` calls it before the
    store is created when the runs execute on this machine (not for a Ray cluster at an
    address, whose nodes may have the device); ``load_spec`` does not, so a study run on a GPU
    machine can still be reported on another."""
    device = str(spec.execution.get("device") or "cpu")
    if device == "cpu":
        return
    import torch

    where = f"{spec.path.name}: [execution] device"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1})"
            raise ConfigError(
                f"{where}: {device!r} is not available on this machine (torch sees {seen}); "
                "use 'cpu', or run the study where that device exists"
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: 'mps' is not available on this machine; use 'cpu', or run the study where it exists")


class _Grid:
    """The combinations of a spec's axes and their validation through ``RunConfig``."""

    def __init__(self, base: dict[str, Any], execution: dict[str, Any], axes: list[list[_Choice]], per_rule_lr: bool,
                 base_label: str) -> None:
        self.base = base
        self.execution = execution
        self.axes = axes
        self.per_rule_lr = per_rule_lr
        self.base_label = base_label
        self._rule_axis = next((i for i, a in enumerate(axes) if a[0].axis == "rule"), None)
        self._lr_axis = next((i for i, a in enumerate(axes) if a[0].axis == "lr"), None)
        self._parsed: dict[Any, str | None] = {}

    def size(self) -> int:
        if not self.per_rule_lr:
            return math.prod(len(a) for a in self.axes)
        others = math.prod(len(a) for i, a in enumerate(self.axes) if i not in (self._rule_axis, self._lr_axis))
        return others * len(self.axes[self._lr_axis])  # one lr list per label, each label once

    def combinations(self):
        for combo in itertools.product(*self.axes):
            if self.per_rule_lr and combo[self._lr_axis].label != self.label(combo):
                continue
            yield combo

    def label(self, combo: tuple[_Choice, ...]) -> str:
        return combo[self._rule_axis].label if self._rule_axis is not None else self.base_label

    def settings(self, combo: tuple[_Choice, ...], drop: tuple[str, str] | None = None) -> dict[str, Any]:
        values = {k: v for k, v in self.base.items() if drop != ("base", k)}
        values.update({k: v for k, v in self.execution.items() if drop != ("execution", k)})
        for choice in sorted(combo, key=lambda c: c.axis != "rule"):  # the rule first: its options, then others'
            for key, value in choice.changes.items():
                if key in TABLE_SETTINGS and choice.axis != "rule" and key in values:
                    under = values[key]
                    values[key] = {**under, **value} if isinstance(under, dict) else under
                else:
                    values[key] = value
        return values

    def check(self, settings: dict[str, Any]) -> tuple[RunConfig | None, str | None]:
        """The config, or RunConfig's (or the model's / data set's option declaration's) message."""
        try:
            config = RunConfig(**settings)
            for kind, name, options in (("model", config.model, config.model_options),
                                        ("data set", config.data, config.data_options)):
                key = (kind, name, _normal(options))
                if key not in self._parsed:  # many runs share them: parse each once
                    try:
                        cls = models_mod.options_class(name) if kind == "model" else data_mod.options_class(name)
                        parse(cls, options, f"{kind} {name!r}")
                        self._parsed[key] = None
                    except ConfigError as exc:
                        self._parsed[key] = str(exc)
                if self._parsed[key] is not None:
                    return None, self._parsed[key]
        except ConfigError as exc:
            return None, str(exc)
        return config, None

    def blame(self, combo: tuple[_Choice, ...], message: str, others: frozenset[str] = frozenset()) -> str:
        """The place of an error: the entries whose change alters the outcome (a [base] or
        [execution] key left out, an axis value replaced by another of its axis or left out);
        else [base]'s model or data if swapping it does, else [base] itself. A change that only
        trades it for another of the grid's errors (``others``) does not count."""
        def alters(settings: dict[str, Any]) -> bool:
            outcome = self.check(settings)[1]
            return outcome != message and outcome not in others

        base = [k for k in self.base if k not in ("model", "data") and alters(self.settings(combo, ("base", k)))]
        execution = [k for k in self.execution if alters(self.settings(combo, ("execution", k)))]
        chosen = []
        for i, choice in enumerate(combo):
            alternatives = [(c,) for c in self.axes[i] if c is not choice][:4] + [()]  # () leaves the axis out
            for alternative in alternatives:
                settings = self.settings(combo[:i] + alternative + combo[i + 1:])
                if "model" in settings and "data" in settings and alters(settings):
                    chosen.append(choice)
                    break
        parts = []
        if base:
            parts.append("[base] " + ", ".join(base))
        if execution:
            parts.append("[execution] " + ", ".join(execution))
        if len(chosen) == 1:
            parts.append("[axes] " + chosen[0].single)
        elif chosen:
            parts.append("[axes] " + ", ".join(c.short for c in chosen))
        if not parts:  # no change of an axis or a removable key alters it: [base]'s model or data
            swap = {"model": ("mlp", "gpt"), "data": ("mnist1d", "shakespeare-char")}
            named = [k for k, (one, other) in swap.items()
                     if k in self.base and not any(k in c.changes for c in combo) and self.check(
                {**self.settings(combo), k: other if self.base[k] == one else one})[1] != message]
            parts.append("[base] " + ", ".join(named) if named else "[base]")
        return " and ".join(parts)


def _describe_combo(combo: tuple[_Choice, ...], other: tuple[_Choice, ...]) -> str:
    differ = [c for c, o in zip(combo, other) if c is not o]
    if len(differ) == 1:
        return differ[0].single
    return "(" + ", ".join(c.short for c in differ) + ")"


def _deduplicated(axis: str, values: Any) -> list[_Choice] | None:
    """An axis whose only mistake is a repeated value, without its repeats (the grid it gives
    is the one meant), so that the combinations can still be checked; None otherwise."""
    if not isinstance(values, list) or axis in ("rule", "lr"):
        return None
    kept: dict[Any, Any] = {}
    for v in values:
        kept.setdefault(_normal(v), v)
    try:
        return _axis_choices(axis, list(kept.values()))
    except _SpecError:
        return None


def _plan(base: dict[str, Any], axes: dict[str, Any], execution: dict[str, Any],
          earlier: Sequence[_SpecError] = ()) -> list[PlannedRun]:
    """The grid's runs; raises every mistake found (``earlier``: the tables') at once. An axis
    with a mistake is left out of the combinations (or, when its only mistake is a repeated
    value, kept without the repeat), so a bad axis does not hide a bad combination of the others."""
    errors: list[_SpecError] = list(earlier)  # the axes are checked independently, then the combinations
    if "rule" in axes and "rule_options" in base:
        errors.append(_SpecError(
            "[base] rule_options",
            "with a rule axis, give each rule's options in its entry ({name = 'dfa', options = {...}}), "
            "since [base] rule_options would apply to every rule",
        ))
    choices: list[list[_Choice]] = []
    labels: list[str] = []
    rule_choices: list[_Choice] = []
    if "rule" in axes:
        try:
            rule_choices = _rule_choices(axes["rule"])
            labels = [c.label for c in rule_choices]
        except _SpecError as exc:
            errors.append(exc)
    base_rule = base.get("rule", _DEFAULT_RULE)
    base_label = base_rule if isinstance(base_rule, str) else repr(base_rule)
    for axis, values in axes.items():
        try:
            if axis == "rule":
                if rule_choices:
                    choices.append(rule_choices)
            elif axis == "lr":
                if "rule" in axes and not labels:
                    continue  # the rule axis is wrong: per-rule rates cannot be checked against its labels
                choices.append(_lr_choices(values, labels or [base_label]))
            else:
                choices.append(_axis_choices(axis, values))
        except _SpecError as exc:
            errors.append(exc)
            kept = _deduplicated(axis, values)
            if kept is not None:
                choices.append(kept)
    per_rule_lr = isinstance(axes.get("lr"), dict) and any(a[0].axis == "lr" for a in choices)
    known = ("model" in base or any(a[0].axis == "model" for a in choices)) and (
        "data" in base or any(a[0].axis == "data" for a in choices))
    if errors and not known:  # an axis left out named the model or the data: its combinations cannot be checked
        _raise_all(errors)
    grid = _Grid(base, execution, choices, per_rule_lr, base_label)
    total = grid.size()
    if total > MAX_RUNS:
        sizes = " × ".join(f"{a[0].axis} {len(a)}" for a in choices)
        _raise_all([*errors, _SpecError(
            "[axes]", f"the grid has {total:,} runs ({sizes}); a study may have at most {MAX_RUNS:,}, so drop values or split it"
        )])
    if _fast_planning and not errors:
        fast = plan_by_parts(grid, PlannedRun)
        if fast is not None:
            return fast
    runs: list[PlannedRun] = []
    seen: dict[str, tuple[_Choice, ...]] = {}
    failing: dict[str, list[tuple[_Choice, ...]]] = {}  # each distinct mistake once, blamed on its place below
    earlier_and_axes = list(errors)
    for combo in grid.combinations():
        config, message = grid.check(grid.settings(combo))
        if config is None:
            if message in failing and len(failing[message]) < 3:
                failing[message].append(combo)
            elif message not in failing and len(failing) < MAX_GRID_ERRORS:
                failing[message] = [combo]
            continue
        run_id = config.run_id
        if run_id in seen:
            first = seen[run_id]
            errors.append(_SpecError(
                f"[axes] {_describe_combo(first, combo)} and {_describe_combo(combo, first)}",
                f"give the same run (id {run_id}): their settings differ only where the run ignores them or "
                "repeat a default; keep one of them",
            ))
            continue
        seen[run_id] = combo
        shown = {c.axis: c.value for c in combo}
        runs.append(PlannedRun(run_id, config, shown, grid.label(combo)))
    messages = frozenset(failing)
    places = {message: _place(grid, combos, message, messages - {message}) for message, combos in failing.items()}
    # a mistake of one [base] or [execution] key is in every combination and can hide the others':
    # those blamed on [base] alone are blamed again without such keys
    keys: dict[str, set[str]] = {"[base]": set(), "[execution]": set()}
    for p in places.values():
        table, _, key = p.partition(" ")
        if table in keys and key.isidentifier():
            keys[table].add(key)
    if any(keys.values()) and "[base]" in places.values():
        clean = _Grid({k: v for k, v in base.items() if k not in keys["[base]"]},
                      {k: v for k, v in execution.items() if k not in keys["[execution]"]}, choices, per_rule_lr, base_label)
        for message, combos in failing.items():
            if places[message] == "[base]":
                combos = [c for c in combos if clean.check(clean.settings(c))[1] == message]
                places[message] = _place(clean, combos, message, messages - {message}) if combos else "[base]"
    blamed = [_SpecError(places[message], message) for message in failing]
    errors[len(earlier_and_axes):len(earlier_and_axes)] = blamed
    _raise_all(errors)
    return runs


def _place(grid: _Grid, combos: list[tuple[_Choice, ...]], message: str, others: frozenset[str]) -> str:
    """The place of a grid error: blamed on the first of its combinations where an entry
    alone alters it (a combination holding two mistakes may hide each behind the other)."""
    places = [grid.blame(combo, message, others) for combo in combos]
    return next((p for p in places if p != "[base]"), places[0])


def plan_axis(config: RunConfig, axis: str, values: Sequence[Any]) -> list[PlannedRun]:
    """The one-axis study around ``config``: one :class:`PlannedRun` per value of ``axis``, with
    everything else as ``config`` has it, planned and checked exactly as a spec's grid is
    (``values`` take the forms a spec's ``[axes]`` list takes; for ``rule``: names or tables
    ``{"name": ..., "label": ..., "options": {...}}``). This is how :func:`beyondbp.compare`
    plans its runs. :class:`ConfigError` (one line naming the value) on a bad value."""
    dump = config.model_dump()
    fields = type(config).model_fields
    base = {k: v for k, v in dump.items() if k not in EXECUTION_FIELDS and v != fields[k].default}
    execution = {k: dump[k] for k in EXECUTION_FIELDS if k in dump and dump[k] != fields[k].default}
    if axis == "rule":
        base.pop("rule", None)
        base.pop("rule_options", None)
    try:
        return _plan(base, {axis: list(values)}, execution)
    except _SpecError as exc:
        problems = [" ".join(f"{e.place}: {e.message}".split("\n")) for e in getattr(exc, "errors", [exc])]
        raise (ConfigError(problems[0]) if len(problems) == 1 else ConfigErrors(problems)) from None


#: The axes that decide a run's model size (for the place of a model-memory error).
_MODEL_AXES = ("model", "model_options", "data", "data_options", "context")


def _nominal_shape(config: RunConfig) -> tuple[tuple[int, ...], int]:
    """A run's input shape and number of classes as far as they are known without loading its
    data: exact for the bundled and generated sets and the IDX images, a lower bound (a
    vocabulary of 2) for a character-level corpus read from ``data_dir``."""
    name = config.data.strip().lower().replace("_", "-")
    if data_mod.is_text(name):
        vocab = 256 if name == "text" else (65 if not config.data_dir else 2)
        return (lm_context(config),), vocab
    if name == "mnist1d":
        return (int({**data_mod.options(name), **config.data_options}["length"]),), 10
    if name == "digits":
        return (1, 8, 8), 10
    return (1, 28, 28), 10  # fashion-mnist, mnist


def _check_model_memory(runs: list[PlannedRun]) -> None:
    """Refuse a grid with a model whose weights and buffers alone exceed this machine's memory
    (:func:`beyondbp.models.check_memory`, the check every run's build makes, sized on the meta
    device), when the spec is read: otherwise each such run would be recorded failed. Each
    distinct model is sized once; one that cannot be built for its data is left to the run."""
    sized: dict[Any, str | None] = {}
    failing: list[tuple[PlannedRun, str]] = []
    keys: dict[tuple[Any, ...], Any] = {}  # runs planned by parts share their option tables: each key once
    for run in runs:
        config = run.config
        cheap = (config.model, config.data, id(config.model_options), id(config.data_options), config.context, config.data_dir)
        key = keys.get(cheap)
        if key is None:
            shape, classes = _nominal_shape(config)
            key = keys[cheap] = (config.model, repr(_normal(config.model_options)), shape, classes)
        if key not in sized:
            sized[key] = None
            try:
                needed = models_mod.tensor_bytes(config.model, shape, classes, **config.model_options)
            except Exception:  # noqa: BLE001 - e.g. a model that does not take this data: the run reports it, as before
                continue
            try:
                models_mod.check_memory(config.model, needed)
            except ConfigError as exc:
                sized[key] = str(exc)
        if sized[key] is not None:
            failing.append((run, sized[key]))
    if not failing:
        return
    run, message = failing[0]
    chosen = [f"{k}={run.axes[k]!r}" for k in _MODEL_AXES if k in run.axes]
    place = "[axes] " + ", ".join(chosen) if chosen and len(failing) < len(runs) else "[base] model_options"
    more = f" ({len(failing)} of {len(runs)} runs)" if len(failing) > 1 else ""
    raise _SpecError(place, message.rstrip(".") + more)


def load_spec(path: str | Path) -> Spec:
    """Read and validate the study spec at ``path``. Every problem found is one line naming the
    file and the place; all of them are raised together as one :class:`ConfigErrors` (a
    :class:`ConfigError` whose ``problems`` lists the lines; its text is them joined by newlines).
    The tables, then each axis, then the combinations are checked, each past the mistakes of
    the one before (a file that is not TOML, or not made of the four tables, stops at once).
    Nothing is run or written."""
    path = Path(path)
    text, doc = _read(path)
    name = path.name
    try:
        study, base, axes, execution_table, table_errors, search_table = _validate_tables(doc)
        search = None
        try:
            search = parse_search(search_table, axes)
        except _SpecError as exc:  # reported with the other mistakes
            table_errors.extend(getattr(exc, "errors", [exc]))
        execution = execution_table.model_dump()
        for key in ("data_dir", "feature_cache"):  # relative paths: from the spec's folder
            if isinstance(execution[key], str) and execution[key]:
                where = Path(execution[key]).expanduser()
                execution[key] = str(where if where.is_absolute() else path.parent / where)
        # what every run's config gets from [execution] (checkpoint_every, keep_models and workers_per_gpu are the executor's)
        run_execution = {k: v for k, v in execution.items()
                         if v is not None and k not in ("checkpoint_every", "keep_models", "workers_per_gpu")}
        runs = _plan(base, axes, run_execution, table_errors)
        if search is not None:
            check_search_size(search, runs, MAX_RUNS)
        _check_model_memory(runs)
        labels = sorted({r.label for r in runs})
        if search is not None and search.seeds is not None and len(labels) > 1 and search.seeds.baseline not in labels:
            raise _SpecError("[search] seeds.baseline", f"{search.seeds.baseline!r} is not a rule label of this study; "
                                                        f"its labels are {', '.join(labels)}")
    except _SpecError as exc:
        problems = [" ".join(f"{name}: {e.place}: {e.message}".split("\n")) for e in getattr(exc, "errors", [exc])]
        raise (ConfigError(problems[0]) if len(problems) == 1 else ConfigErrors(problems)) from None
    execution["device"] = execution["device"] if execution["device"] is not None else "cpu"
    execution["diagnostics"] = bool(execution["diagnostics"]) if execution["diagnostics"] is not None else False
    execution["keep_models"] = bool(execution["keep_models"])
    execution["workers_per_gpu"] = int(execution["workers_per_gpu"] or 1)
    spec = Spec(path, study.name, study.description, dict(base), dict(axes), execution, text, search)
    spec._runs = runs
    return spec
