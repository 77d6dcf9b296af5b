"""Options declared once: every rule (and, in time, every model and data set) lists its options
in one :class:`Options` class — type, default, bounds and a one-line help each — and everything
else is derived from that declaration:

* validation with one-sentence errors (:func:`parse`), used by the constructors;
* ``--rule-opt KEY=VALUE`` parsing and ``compare``'s routing of an option to the rules that
  have it (the CLI asks :func:`names`);
* ``beyondbp rules --options NAME`` (:func:`describe`).

A declaration is a pydantic model::

    class Options(options.Options):
        seed: int = options.opt(0, "seed of the random feedback matrices", ge=0)
        init: Literal["gaussian", "uniform"] = options.opt("gaussian", "distribution of B's entries")

Values are checked strictly (no ``"1"`` for ``1``, no ``True`` for ``1``, no NaN or infinity);
sequence options take lists and tuples. Rules between options (``expansion`` must be 1 unless
``variant="random"``) are ``@model_validator(mode="after")`` methods raising ``ValueError``
with one sentence. ``accepts="..."`` overrides the generated description of what a field
accepts, for fields whose type says it badly.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

__all__ = ["Options", "NoOptions", "describe", "execution_names", "names", "opt", "parse"]


class Options(BaseModel):
    """Base of every option declaration (strict, frozen, unknown names refused)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, data: Any) -> Any:
        """A sequence option takes a tuple as well as a list (strict mode takes only lists)."""
        if isinstance(data, dict):
            return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        return data


class NoOptions(Options):
    """The declaration of something that takes no options."""


def opt(default: Any, help: str, *, accepts: str | None = None, execution: bool = False,
        identity_default: bool = False, **constraints: Any) -> Any:
    """A declared option: its default, one line of help, and pydantic constraints (``ge``,
    ``gt``, ``le``, ``lt``, ...). ``accepts`` replaces the generated "must be ..." text.
    ``execution=True`` marks an option that only says how something runs (where a cache lives),
    never what it computes: a run's identity leaves it out (:meth:`beyondbp.training.RunConfig.identity`).
    ``identity_default=True`` marks an option added after runs were stored: a run's identity
    leaves it out while it has its default value, so those runs keep their ids."""
    extra: dict[str, Any] = {}
    if accepts:
        extra["accepts"] = accepts
    if execution:
        extra["execution"] = True
    if identity_default:
        extra["identity_default"] = True
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)


def names(cls: type[Options]) -> list[str]:
    return list(cls.model_fields)


def execution_names(cls: type[Options]) -> list[str]:
    """The options of ``cls`` declared with ``execution=True``."""
    return [
        name for name, field in cls.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("execution")
    ]


def omit_at_default(cls: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the options of ``cls`` declared with ``identity_default=True`` that
    have their default value (what a run's identity keeps)."""
    fields = cls.model_fields
    return {
        k: v for k, v in values.items()
        if not (k in fields and isinstance(fields[k].json_schema_extra, dict)
                and fields[k].json_schema_extra.get("identity_default") and v == fields[k].default)
    }


def parse(cls: type[Options], values: Mapping[str, Any], owner: str) -> Options:
    """Validate ``values`` against the declaration; :class:`ConfigError` (one sentence naming
    ``owner``, e.g. ``"rule 'dfa'"``) on the first problem."""
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        known = ", ".join(cls.model_fields) or "none"
        raise ConfigError(f"{owner} has no option {', '.join(unknown)}; its options: {known}")
    try:
        return cls(**dict(values))
    except ValidationError as exc:
        raise ConfigError(_sentence(exc, cls, owner, values)) from None


def _sentence(exc: ValidationError, cls: type[Options], owner: str, values: Mapping[str, Any]) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    name = loc[0] if loc else ""
    if err["type"] == "value_error" or name not in cls.model_fields:
        ctx = err.get("ctx", {}).get("error")
        text = str(ctx) if ctx is not None else str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{owner}: {text}"
    return f"{owner} option {name} must be {accepts(cls, name)}, got {values.get(name)!r}"


def accepts(cls: type[Options], name: str) -> str:
    """What option ``name`` accepts, in words (``"an integer >= 0"``, ``"one of 'a', 'b'"``)."""
    field = cls.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("accepts"):
        return str(extra["accepts"])
    annotation = field.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        words = " or ".join(_type_words(a) for a in inner)
        return words + _bounds(field.metadata) + " or null (None)"
    return _type_words(annotation) + _bounds(field.metadata)


def _bounds(metadata: list[Any]) -> str:
    words = []
    for m in metadata:  # annotated_types.Ge / Gt / Le / Lt, as pydantic stores them
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if type(m).__name__ == attr.capitalize() and getattr(m, attr, None) is not None:
                words.append(f"{sign} {getattr(m, attr)}")
    return (" " + " and ".join(words)) if words else ""


def _type_words(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:  # Annotated[float, Field(gt=0)]: "a number > 0"
        metadata: list[Any] = []
        for m in annotation.__metadata__:
            metadata.extend(getattr(m, "metadata", None) or [m])  # a pydantic FieldInfo holds its bounds
        return _type_words(args[0]) + _bounds(metadata)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [_type_words(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null (None)")
        return " or ".join(parts)
    if origin in (list, tuple) or annotation in (list, tuple):
        inner = _type_words(args[0]) if args else "values"
        return f"a list of {_plural(inner)}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _plural(words: str) -> str:
    return {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(words, words)


def describe(cls: type[Options]) -> list[dict[str, str]]:
    """One row per option: name, what it accepts, default (``"required"`` for an option declared
    with ``opt(..., help)``, which has none), help."""
    rows = []
    for name, field in cls.model_fields.items():
        rows.append({
            "name": name,
            "accepts": accepts(cls, name),
            "default": "required" if field.is_required() else repr(field.default),
            "help": field.description or "",
        })
    return rows


def parse_names(text: str, what: str, known: list[str] | tuple[str, ...], *, allow_all: bool = False) -> list[str]:
    """A comma-separated list of names (``"fa,dfa"``; ``"all"`` for every known name when
    ``allow_all``) -> the names in the order given, each checked against ``known``: an empty
    list or item, an unknown name and a name given twice are refused with one sentence that
    says what ``what`` (``"method"``, ``"corruption"``, ...) may be."""
    known = list(known)
    allowed = ", ".join(known) + (" (or 'all')" if allow_all else "")
    items = [t.strip() for t in str(text).split(",")]
    if allow_all and items == ["all"]:
        return known
    if not str(text).strip() or any(not t for t in items):
        raise ConfigError(f"malformed list of {what}s {text!r}: give comma-separated names from: {allowed}")
    for item in items:
        if item not in known:
            raise ConfigError(f"unknown {what} {item!r}; known {what}s: {allowed}")
    for item in items:
        if items.count(item) > 1:
            raise ConfigError(f"{what} {item!r} is listed twice in {text!r}; name each once")
    return items
