"""A study spec's tables checked and its axes read: the first two of
:func:`~beyondbp.study.spec.load_spec`'s checks.

The tables ``[study]``, ``[base]``, ``[axes]`` and ``[execution]`` are pydantic models with
unknown keys refused (:func:`_validate_tables`); each axis's values become choices
(:class:`_Choice`: :func:`_rule_choices`, :func:`_lr_choices`, :func:`_axis_choices`), checked
one axis at a time (lists, distinct values, rule entries and labels, per-rule learning rates).
Every mistake is a :class:`_SpecError` (place, message); independent ones are raised together.
Which settings go where (:data:`RUN_SETTINGS`, :data:`EXECUTION_KEYS`, :data:`REFUSED`) is
declared here and described in :mod:`beyondbp.study.spec`, which plans and checks the grid's
combinations.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator

from ..training import EXECUTION_FIELDS, MAX_COUNT, RunConfig

__all__ = ["EXECUTION_KEYS", "REFUSED", "RUN_SETTINGS", "TABLE_SETTINGS"]

TABLE_SETTINGS = ("rule_options", "model_options", "data_options")

#: Run settings the run store sets for each run itself (never the user, in a study).
_STORE_MANAGED = ("checkpoint", "state")
#: What ``[execution]`` accepts: the run's execution settings (declared on :class:`RunConfig`)
#: that the store does not manage, and the executor's ``keep_models`` and ``workers_per_gpu``.
EXECUTION_KEYS = (*(k for k in RunConfig.model_fields if k in EXECUTION_FIELDS and k not in _STORE_MANAGED), "keep_models",
                  "workers_per_gpu")

#: Run settings a study refuses everywhere, and why.
REFUSED = {
    "checkpoint": "a study names its runs' checkpoints itself; leave it out and set keep_models = true in "
    "[execution] to save every run's model (checkpoint_every writes resume state)",
    "state": "the run store manages each run's resume-state file; leave it out and set checkpoint_every in [execution]",
    "init_from": "a study's runs train from scratch (a run's id would name the checkpoint's path, not its "
    "contents); leave it out",
}

_EXECUTION_ONLY = frozenset(EXECUTION_KEYS) | frozenset(EXECUTION_FIELDS)

#: The settings ``[base]`` and ``[axes]`` accept: what defines a run's result.
RUN_SETTINGS = tuple(k for k in RunConfig.model_fields if k not in _EXECUTION_ONLY and k not in REFUSED)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class _SpecError(Exception):
    def __init__(self, place: str, message: str) -> None:
        super().__init__(place, message)
        self.place = place
        self.message = message


class _SpecErrors(_SpecError):
    """Several independent mistakes, each a :class:`_SpecError` (the first gives place and message)."""

    def __init__(self, errors: list[_SpecError]) -> None:
        super().__init__(errors[0].place, errors[0].message)
        self.errors = [e for err in errors for e in (err.errors if isinstance(err, _SpecErrors) else [err])]



def _raise_all(errors: list[_SpecError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise _SpecErrors(errors)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the tables, as pydantic models ------------------------------------------------------------
class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _File(_Table):
    study: dict[str, Any]
    base: dict[str, Any] = {}
    axes: dict[str, Any] = {}
    execution: dict[str, Any] = {}
    search: dict[str, Any] = {}


class _Study(_Table):
    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _usable(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a usable study name; use {_NAME_RULE}")
        return v


class _ExecutionChecks(_Table):
    """Checks of ``[execution]`` beyond :class:`RunConfig`'s own (its fields are
    :data:`EXECUTION_KEYS`, added by :data:`_Execution`)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("keep_models", check_fields=False)
    @classmethod
    def _flag(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError(f"must be true or false (save every run's final model), got {_show(v)}")
        return v

    @field_validator("workers_per_gpu", check_fields=False)
    @classmethod
    def _per_gpu(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
            raise ValueError(f"must be a whole number from 1 to 64 (runs sharing one GPU when device is cuda), got {_show(v)}")
        return v

    @field_validator("checkpoint_every", check_fields=False)
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_COUNT:
            raise ValueError(f"must be a whole number of at least 1 (optimizer steps between resume-state writes), got {_show(v)}")
        return v


_Execution = create_model("_Execution", __base__=_ExecutionChecks, **{k: (Any, None) for k in EXECUTION_KEYS})


class _RuleEntry(_Table):
    name: str
    label: str | None = None
    options: dict[str, Any] = {}


_Base = create_model("_Base", __config__=ConfigDict(extra="forbid"), **{k: (Any, None) for k in RUN_SETTINGS})
_Axes = create_model("_Axes", __config__=ConfigDict(extra="forbid"), **{k: (Any, None) for k in RUN_SETTINGS})


def _ordered_errors(exc: ValidationError, data: dict[str, Any]) -> dict[str, Any]:
    """The first of pydantic's errors in the file's order of keys."""
    return _all_errors(exc, data)[0]


def _all_errors(exc: ValidationError, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Pydantic's errors in the file's order of keys, one per key."""
    order = {k: i for i, k in enumerate(data)}
    errors = sorted(exc.errors(include_url=False),
                    key=lambda e: order.get(e["loc"][0], len(order)) if e["loc"] else -1)
    seen, kept = set(), []
    for e in errors:
        key = e["loc"][0] if e["loc"] else None
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return _show(value)


def _unknown_setting(key: str, table: str) -> str:
    if key in REFUSED:
        return REFUSED[key]
    if key in _EXECUTION_ONLY:
        return f"{key} says how runs execute, not what they compute; put it in [execution]"
    close = difflib.get_close_matches(key, RUN_SETTINGS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = "an axis" if table == "axes" else "a run setting"
    return f"unknown run setting{hint}, so it cannot be {where}; run settings are: {', '.join(RUN_SETTINGS)}"


def _validate_tables(doc: dict[str, Any]) -> tuple[_Study, dict[str, Any], dict[str, Any], _Execution, list[_SpecError], dict[str, Any]]:
    """The tables, with what is wrong in them left out (an unknown key dropped, a bad
    ``[study]`` or ``[execution]`` value unset), every mistake found, and the raw ``[search]``
    table (parsed by :func:`~beyondbp.study.search_settings.parse_search`): the axes and the
    grid can then be checked too, so that all of a spec's mistakes are reported at once. A
    file whose top level is not made of these tables raises at once (nothing else can be read)."""
    try:
        top = _File(**doc)
    except ValidationError as exc:
        err = _ordered_errors(exc, doc)
        key = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            place = f"[{key}]" if isinstance(doc.get(key), dict) else key
            raise _SpecError(place, "unknown top-level entry; a spec has the tables [study], [base], [axes], [execution] and [search]") from None
        if err["type"] == "missing":
            raise _SpecError("[study]", f"missing; every spec starts with a [study] table giving its name ({_NAME_RULE})") from None
        raise _SpecError(f"[{key}]", f"must be a table, got {_kind(doc.get(key))}") from None
    errors: list[_SpecError] = []  # the tables are checked independently: every mistake at once
    study = execution = None
    try:
        study = _Study(**top.study)
    except ValidationError as exc:
        for err in _all_errors(exc, top.study):
            key = str(err["loc"][0])
            if err["type"] == "extra_forbidden":
                errors.append(_SpecError(f"[study] {key}", "unknown key; [study] takes name and description"))
            elif err["type"] == "missing":
                errors.append(_SpecError("[study] name", f"missing; give the study a name ({_NAME_RULE})"))
            elif err["type"] == "value_error":
                errors.append(_SpecError(f"[study] {key}", str(err["ctx"]["error"])))
            else:
                errors.append(_SpecError(f"[study] {key}", f"must be a string, got {_kind(top.study[key])}"))
    if study is None:  # checked on: a placeholder name (the errors are raised before it is used)
        study = _Study.model_construct(name=str(top.study.get("name", "?")), description="")
    tables = {}
    for table, model, values in (("base", _Base, top.base), ("axes", _Axes, top.axes)):
        tables[table] = values
        try:
            model(**values)
        except ValidationError as exc:
            bad = []
            for err in _all_errors(exc, values):
                key = str(err["loc"][0])
                bad.append(key)
                errors.append(_SpecError(f"[{table}] {key}", _unknown_setting(key, table)))
            tables[table] = {k: v for k, v in values.items() if k not in bad}
    try:
        execution = _Execution(**top.execution)
    except ValidationError as exc:
        wrong = _all_errors(exc, top.execution)
        execution = _Execution(**{k: v for k, v in top.execution.items() if k not in {str(e["loc"][0]) for e in wrong}})
        for err in wrong:
            key = str(err["loc"][0])
            if err["type"] == "extra_forbidden":
                if key in REFUSED:
                    why = REFUSED[key]
                elif key in RUN_SETTINGS:
                    why = f"{key} is a run setting, not an execution setting; put it in [base] or [axes]"
                else:
                    why = f"unknown execution setting; [execution] takes {', '.join(EXECUTION_KEYS)}"
                errors.append(_SpecError(f"[execution] {key}", why))
            else:
                errors.append(_SpecError(f"[execution] {key}", str(err["ctx"]["error"])))
    return study, tables["base"], tables["axes"], execution, errors, top.search


# -- axes -------------------------------------------------------------------------------------
def _normal(value: Any) -> Any:
    """A hashable form of a TOML value in which equal settings compare equal (1 == 1.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value)) if math.isfinite(float(value)) else ("num", repr(float(value)))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_normal(v) for v in value))
    if isinstance(value, dict):
        return ("table", tuple(sorted((str(k), _normal(v)) for k, v in value.items())))
    return (type(value).__name__, repr(value))


@dataclass(frozen=True)
class _Choice:
    """One value of one axis: the settings it sets, how to name it, and the rule label it has
    (rule axis) or applies to (per-rule lr)."""

    axis: str
    value: Any
    changes: dict[str, Any]
    single: str
    short: str
    label: str | None = None


def _distinct(axis: str, values: list[Any], place: str, keys: list[Any] | None = None) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        key = _normal(v if keys is None else keys[i])
        if key in seen:
            raise _SpecError(
                f"{place}[{i}]",
                f"{_show(v)} repeats {place.removeprefix('[axes] ')}[{seen[key]}]; each value of an axis must be different",
            )
        seen[key] = i


def _list_of_values(axis: str, values: Any, place: str) -> list[Any]:
    if not isinstance(values, list):
        example = f"{axis} = [{values!r}]" if not isinstance(values, (dict, list)) else f"{axis} = [...]"
        what = "tables" if axis in TABLE_SETTINGS else "values"
        raise _SpecError(place, f"must be a list of {what} to try, got {_kind(values)}; e.g. {example}")
    if not values:
        raise _SpecError(place, "is empty; an axis needs at least one value (leave the axis out to use [base]'s value)")
    return values


def _rule_choices(values: Any) -> list[_Choice]:
    values = _list_of_values("rule", values, "[axes] rule")
    choices: list[_Choice] = []
    labels: dict[str, int] = {}
    for i, v in enumerate(values):
        if isinstance(v, str):
            entry = _RuleEntry(name=v)
        elif isinstance(v, dict):
            try:
                entry = _RuleEntry(**v)
            except ValidationError as exc:
                err = _ordered_errors(exc, v)
                key = str(err["loc"][0]) if err["loc"] else ""
                if err["type"] == "extra_forbidden":
                    why = "unknown key; a rule entry takes name, label and options"
                elif err["type"] == "missing":
                    why = "missing; a rule entry needs the rule's name"
                else:
                    want = "a table of the rule's options" if key == "options" else "a string"
                    why = f"must be {want}, got {_kind(v.get(key))}"
                raise _SpecError(f"[axes] rule[{i}] {key}", why) from None
        else:
            raise _SpecError(f"[axes] rule[{i}]", f"must be a rule name or a table {{name, label, options}}, got {_kind(v)}")
        label = entry.label if entry.label is not None else entry.name
        if not _NAME.fullmatch(label):
            raise _SpecError(
                f"[axes] rule[{i}]",
                f"label {label!r} is not fit for file names and reports; give a label of {_NAME_RULE}",
            )
        if label.lower() in labels:  # case-blind: labels name files, and some file systems are
            raise _SpecError(
                f"[axes] rule[{i}] {label!r}",
                f"label {label!r} is already used by rule[{labels[label.lower()]}]; give each entry its own label = ... "
                "(labels differing only in case count as the same)",
            )
        labels[label.lower()] = i
        choices.append(_Choice(
            "rule", label, {"rule": entry.name, "rule_options": dict(entry.options)},
            f"rule[{i}] {label!r}", f"rule={label!r}", label,
        ))
    return choices


def _lr_choices(values: Any, labels: list[str]) -> list[_Choice]:
    if not isinstance(values, dict):
        values = _list_of_values("lr", values, "[axes] lr")
        _distinct("lr", values, "[axes] lr")
        return [_Choice("lr", v, {"lr": v}, f"lr[{i}]", f"lr={v!r}") for i, v in enumerate(values)]
    for key in values:
        if key not in labels:
            raise _SpecError(
                f"[axes] lr.{key}",
                f"{key!r} is not a rule label of this study; per-rule learning rates are keyed by the labels {', '.join(labels)}",
            )
    missing = [label for label in labels if label not in values]
    if missing:
        raise _SpecError(
            "[axes] lr",
            f"no learning rates for rule label {missing[0]!r}; a per-rule lr table needs one list per label ({', '.join(labels)})",
        )
    choices = []
    for label in labels:
        place = f"[axes] lr.{label}"
        got = values[label]
        if not isinstance(got, list):
            raise _SpecError(place, f"must be a list of learning rates, got {_kind(got)}; e.g. lr.{label} = [{got!r}]")
        if not got:
            raise _SpecError(place, "is empty; give each rule label at least one learning rate")
        _distinct("lr", got, place)
        choices += [_Choice("lr", v, {"lr": v}, f"lr.{label}[{i}]", f"lr={v!r}", label) for i, v in enumerate(got)]
    return choices


def _axis_choices(axis: str, values: Any) -> list[_Choice]:
    place = f"[axes] {axis}"
    values = _list_of_values(axis, values, place)
    if axis in TABLE_SETTINGS:
        for i, v in enumerate(values):
            if not isinstance(v, dict):
                raise _SpecError(f"{place}[{i}]", f"must be a table of options merged into [base]'s {axis}, got {_kind(v)}")
    _distinct(axis, values, place)
    if axis in TABLE_SETTINGS:
        return [_Choice(axis, v, {axis: v}, f"{axis}[{i}]", f"{axis}[{i}]") for i, v in enumerate(values)]
    return [_Choice(axis, v, {axis: v}, f"{axis}[{i}]", f"{axis}={v!r}") for i, v in enumerate(values)]
