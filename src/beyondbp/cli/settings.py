"""The run settings' flags, generated from their declarations.

Every flag of ``train`` and ``compare`` that sets a run setting (``--lr``, ``--batch-size``,
``--threads``, ...) is built here from :class:`beyondbp.settings.RunSettings`: its name (the
setting's, ``_`` written ``-``), its type, its help (the declaration's) and the default it names
(the declaration's). Nothing restates a default or a help text. :func:`with_run_settings`
adds the flags to a command and hands the command the values the user gave as one mapping
``settings``; :func:`config_values` turns that mapping into ``RunConfig`` keyword arguments.

Where the command line writes a value differently from the setting, it says so here:
``--milestones 0.5,0.75`` (a list), ``--tokens 2e6`` (a float for a whole number), ``--threads 0``
(torch's own choice, the setting's ``None``), and file settings are paths.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .. import files
from ..errors import ConfigError
from ..settings import NUMBER_KIND, RunSettings

__all__ = ["RUN_FLAGS", "check_switched", "config_values", "file_flag", "flag", "run_setting_parameters", "setting_type",
           "torch_threads", "with_run_settings"]

#: The run settings ``train`` and ``compare`` share, in the order ``--help`` lists them.
RUN_FLAGS = (
    "data_dir", "epochs", "steps", "batch_size", "eval_batch_size", "optimizer", "lr", "momentum", "weight_decay",
    "lr_schedule", "milestones", "gamma", "seed", "n_train", "n_test", "diagnostics", "device", "threads", "sparsity",
    "epsilon", "zeta", "tokens", "context", "eval_windows", "evals_per_epoch", "feature_cache", "feature_workers",
    "lr_control", "lr_control_interval", "lr_control_memory", "lr_control_step", "lr_control_floor",
)
#: File settings: typed as paths on the command line.
_PATHS = ("checkpoint", "init_from", "state")
#: How the command line writes a setting whose declared type it cannot take as is.
_WRITTEN = {
    "milestones": (Optional[str], "comma-separated, e.g. 0.5,0.75"),
    "tokens": (Optional[float], "e.g. 2e6"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(name: str) -> str:
    field = RunSettings.model_fields[name]
    text = str(field.description)
    text = text[0].upper() + text[1:]
    args = typing.get_args(field.annotation)
    choices = [a for a in args if isinstance(a, str)] if typing.get_origin(field.annotation) is typing.Literal else []
    if choices:
        text += f": {', '.join(choices)}"
    written = _WRITTEN.get(name)
    if written:
        text += f" ({written[1]})"
    if name == "threads":
        return ("Torch CPU threads during the run (default 1: reproducible, and fastest for small models on a busy "
                "machine; 0 keeps torch's own choice).")
    if not field.is_required() and field.default is not None and field.default is not False and field.default not in ({}, []):
        text += f" (default {_shown(field.default)})"
    return text + "."


def setting_type(name: str) -> Any:
    """The annotated type of the flag of run setting ``name``, for a command that declares the
    parameter itself (``threads: setting_type("threads") = 1``)."""
    return _annotation(name)[0]


def _annotation(name: str) -> tuple[Any, Any]:
    """``(annotation, default)`` of the flag of setting ``name``."""
    field = RunSettings.model_fields[name]
    option = typer.Option(flag(name), help=_help(name))
    if name == "threads":
        return Annotated[int, option], field.default
    if field.annotation is bool:
        return Annotated[bool, option], False
    if name in _WRITTEN:
        return Annotated[_WRITTEN[name][0], option], None
    if name in _PATHS:  # parsed from the text as given: a trailing separator (a folder) is refused
        return Annotated[Optional[Path], typer.Option(flag(name), help=_help(name), parser=file_flag(flag(name)))], None
    return Annotated[Optional[NUMBER_KIND.get(name, str)], option], None


def file_flag(name: str) -> Callable[[str], Path]:
    """The parser of flag ``name`` that names a file (``--checkpoint``, ``--state``, ``--store``):
    the path as given, one ending with a path separator (a folder, which ``Path`` would turn into
    a file of the folder's name) refused as a usage error (:func:`beyondbp.files.file_path`)."""

    def parse(text: str) -> Path:
        try:
            return files.file_path(text)
        except ConfigError as exc:  # not a ValueError to typer, which would prefix "Value error, "
            raise typer.BadParameter(str(exc), param_hint=f"'{name}'") from None

    return parse


def run_setting_parameters(names: tuple[str, ...]) -> list[inspect.Parameter]:
    """The flags of settings ``names`` as keyword-only parameters, for a command's signature."""
    out = []
    for name in names:
        annotation, default = _annotation(name)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return out


def with_run_settings(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the flags of run settings ``names`` (default :data:`RUN_FLAGS`) to a command whose
    function takes ``settings``: the values given, by setting name (``None`` where not given)."""
    names = names or RUN_FLAGS

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "settings"]
        hints = typing.get_type_hints(command, include_extras=True)  # the annotations, evaluated
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)) for p in own]
        params = own + run_setting_parameters(names)

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            settings = {name: kwargs.pop(name) for name in names}
            return command(settings=settings, **kwargs)

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def torch_threads(value: int) -> int | None:
    """``--threads``: 0 means "keep torch's setting" (the setting's ``None``)."""
    if value < 0:
        raise ConfigError(f"invalid --threads {value}: it must be a whole number of at least 0 (0 keeps torch's setting)")
    return None if value == 0 else value


def config_values(settings: dict[str, Any]) -> dict[str, Any]:
    """``RunConfig`` keyword arguments from the flags' values: only the settings given (so the
    declarations' defaults apply to the rest), each as the setting takes it."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name == "threads":  # always given: --threads 0 means "keep torch's setting"
            out[name] = torch_threads(value)
            continue
        if value is None or (name == "diagnostics" and value is False):
            continue
        if name == "milestones":
            try:
                value = [float(v) for v in value.split(",")]
            except ValueError:
                raise ConfigError(f"malformed --milestones {value!r}: expected comma-separated fractions, e.g. 0.5,0.75") from None
        elif name == "tokens":
            if not value >= 1 or value != int(value):
                raise ConfigError(f"invalid --tokens {value:g}: it must be a whole number of at least 1, e.g. 2e6")
            value = int(value)
        elif name in _PATHS:
            value = str(value)
        out[name] = value
    return out


def check_switched(settings: dict[str, Any]) -> None:
    """Flags that only mean something when another flag turns them on are refused without it."""
    groups = (
        (settings.get("sparsity") is not None, ("epsilon", "zeta"), "SET sparsity", "--sparsity set"),
        (settings.get("lr_schedule") == "step", ("milestones", "gamma"), "the step schedule", "--lr-schedule step"),
        (settings.get("lr_control") not in (None, "none"), ("lr_control_interval", "lr_control_memory", "lr_control_step",
                                                  "lr_control_floor"), "the learning-rate controller", "--lr-control"),
    )
    for on, names, what, switch in groups:
        given = [flag(n) for n in names if settings.get(n) is not None]
        if given and not on:
            raise ConfigError(f"{' and '.join(given)} configure {what}; add {switch} or leave them out")
