"""Checkpoints: save and load a model, its rule's state and its optimizer, with shape checks.

A checkpoint is one ``torch.save`` file holding a dict::

    {"format": "beyondbp-checkpoint", "version": 1,
     "model": model.state_dict(),        # includes rule tensors registered as ``*.bbp_*``
     "rule_state": learner.rule_state(),  # rule tensors kept outside the model (e.g. DFA's B)
     "optimizer": optimizer.state_dict() or None,
     "meta": {...}}                        # rule / model / data names and options, shapes, ...

:func:`save` writes it atomically (:func:`beyondbp.files.atomic_write_bytes`): to a temporary
file in the target directory, then ``os.replace`` — a crash or an error never leaves a
half-written checkpoint behind — with the permissions of the user's umask.
:func:`load` reads it with ``torch.load(weights_only=True)`` and checks, before changing
anything, that the key set and every tensor's shape agree with the model (and the optimizer);
a mismatch, a missing file, a corrupt file or one holding NaN or infinite values (weights,
rule state or optimizer state: a diverged or damaged model; :func:`read` refuses it, so every
command that loads a checkpoint does) is a :class:`~beyondbp.errors.CheckpointError` naming the
first offending key.

Rules whose tensors live in the model (FA, sign-symmetry, KP: ``<layer>.bbp_feedback``) must be
attached to the model *before* :func:`load`, so that the model's state dict has those keys.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .errors import BeyondBPError, CheckpointError
from .files import atomic_write_bytes
from .jsonable import plain
from .rules.base import is_rule_tensor

__all__ = ["FORMAT", "VERSION", "check_state", "load", "load_safely", "not_torch_kind", "read", "save"]

FORMAT = "beyondbp-checkpoint"
VERSION = 1


def _plain(value: Any) -> Any:
    """Meta values as plain Python (what ``torch.load(weights_only=True)`` accepts)."""
    try:
        return plain(value)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint meta: {exc}") from None


def save(
    path: str | os.PathLike,
    model: nn.Module,
    learner: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (and the learner's rule state, the optimizer) to ``path``.

    A ``path`` that is a directory, or lies under a file, is a :class:`CheckpointError` (one
    sentence); a failed write (``OSError``) leaves nothing behind."""
    target = Path(path)
    if target.is_dir():
        raise CheckpointError(f"checkpoint path {str(target)!r} is a directory; give a file path")
    blocking = next((p for p in target.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise CheckpointError(f"checkpoint {str(target)!r} cannot be written: {str(blocking)!r} is not a directory")
    rule_state = {} if learner is None else dict(learner.rule_state())
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "rule_state": {k: v.detach().cpu() for k, v in rule_state.items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "meta": _plain(dict(meta or {})),
    }
    if learner is not None and "rule" not in payload["meta"]:
        payload["meta"]["rule"] = learner.rule.name
    return atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def not_torch_kind(path: str | os.PathLike) -> str | None:
    """What the file ``path`` plainly is when it cannot be a torch file at all (neither a zip
    archive nor a pickle, what ``torch.save`` writes), in words that follow "is": an SQLite
    database (a study's run store), a PNG image, a text file (a spec, a JSON result), an empty
    file; ``None`` for a file that may be a torch file (a damaged one included)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"\x80")):  # a zip archive, or a pickle (torch's legacy format)
        return None
    if head.startswith(b"SQLite format 3\x00"):
        return "an SQLite database (a study's run store?)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if b"\x00" not in head:
        try:  # incremental: a character cut at the end of the first 4096 bytes is no error
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            return "a file that torch.save did not write"
        return "a text file"
    return "a file that torch.save did not write"


def load_safely(path: str | os.PathLike) -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True`` (tensors and plain values
    only); any failure becomes a ``ValueError`` whose message is one short reason, never torch's
    advice to load the file unsafely. Checkpoints and run states both read through it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in reason:
            reason = "it holds objects other than tensors and plain values"
        raise ValueError(reason) from None


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict at ``path`` (validated as a beyondbp checkpoint, not as a model)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; give the checkpoint file that a --checkpoint option wrote")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {str(path)!r}")
    kind = not_torch_kind(path)
    if kind is not None:
        raise CheckpointError(f"{str(path)!r} is not a checkpoint but {kind}; give the checkpoint file that a --checkpoint option wrote")
    try:
        payload = load_safely(path)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a beyondbp checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {payload.get('version')!r}; this beyondbp reads version {VERSION}"
        )
    for key, kind in (("model", dict), ("rule_state", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its '{key}' entry is not a dict")
    _check_finite(payload, path)
    return payload


def _non_finite(tensors: Mapping[str, Any]) -> str | None:
    """The first key whose value is a floating-point tensor holding a NaN or an infinity."""
    for key, value in tensors.items():
        if isinstance(value, Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                return str(key)
    return None


def _check_finite(payload: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose weights, rule state or optimizer state hold NaN or infinity (a
    diverged or damaged model): every command that loads one goes through :func:`read`."""
    places = [("model tensor", payload["model"]), ("rule state entry", payload["rule_state"])]
    optimizer = payload.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict):
        places += [(f"optimizer state of parameter {pid!r},", state) for pid, state in optimizer["state"].items()
                   if isinstance(state, dict)]
    for what, tensors in places:
        key = _non_finite(tensors)
        if key is not None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds NaN or infinite values in {what} '{key}' (a diverged or damaged "
                "model), so it is refused; load a checkpoint of a model with finite weights"
            )


def _shape(t: Any) -> tuple[int, ...] | None:
    return tuple(t.shape) if isinstance(t, Tensor) else None


def check_state(saved: Mapping[str, Any], current: Mapping[str, Any], what: str, hint: str = "") -> None:
    """:class:`CheckpointError` unless ``saved`` (a state dict read from a file) has exactly the
    keys of ``current`` with the same shapes; ``current`` may live on the meta device, so a model
    described by a checkpoint can be checked against it before it is allocated."""
    _check_state(saved, current, what, hint)


def _check_state(saved: Mapping[str, Any], current: Mapping[str, Any], what: str, hint: str = "") -> None:
    missing = [k for k in current if k not in saved]
    if missing:
        raise CheckpointError(f"the checkpoint has no entry for {what} key '{missing[0]}'{hint}")
    unexpected = [k for k in saved if k not in current]
    if unexpected:
        extra = ""
        if is_rule_tensor(unexpected[0]):
            extra = "; it holds rule tensors, so attach the same rule before loading"
        raise CheckpointError(f"the checkpoint has {what} key '{unexpected[0]}' that the target lacks{extra}")
    for key, value in current.items():
        a, b = _shape(saved[key]), _shape(value)
        if a != b:
            raise CheckpointError(
                f"{what} key '{key}' has shape {a} in the checkpoint but {b} in the target"
            )


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(saved, dict) or "param_groups" not in saved or "state" not in saved:
        raise CheckpointError("the checkpoint holds no optimizer state to load")
    groups = optimizer.param_groups
    saved_groups = saved["param_groups"]
    if len(saved_groups) != len(groups):
        raise CheckpointError(
            f"the checkpoint's optimizer has {len(saved_groups)} parameter groups but the target has {len(groups)}"
        )
    params: list[Tensor] = []
    for i, (g, sg) in enumerate(zip(groups, saved_groups)):
        if len(g["params"]) != len(sg["params"]):
            raise CheckpointError(
                f"optimizer group {i} holds {len(sg['params'])} parameters in the checkpoint but "
                f"{len(g['params'])} in the target"
            )
        params.extend(g["params"])
    saved_ids = [pid for sg in saved_groups for pid in sg["params"]]
    index = dict(zip(saved_ids, params))
    for pid, state in saved["state"].items():
        p = index.get(pid)
        if p is None:
            raise CheckpointError(f"the checkpoint's optimizer state names parameter {pid!r}, which no group holds")
        for name, value in state.items():
            if isinstance(value, Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"optimizer state '{name}' of parameter {pid} has shape {tuple(value.shape)} in the "
                    f"checkpoint but the parameter has shape {tuple(p.shape)}"
                )


def load(
    path: str | os.PathLike | Mapping[str, Any],
    model: nn.Module,
    learner: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    weights_only: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (and ``learner``'s rule state, ``optimizer``); return meta.

    ``path`` may also be what :func:`read` returned, so a caller that inspected the file does not
    read it twice. Everything is checked before anything is changed: a mismatch leaves the model
    as it was. ``weights_only`` loads the model's own tensors only: rule tensors (``*.bbp_*``)
    on either side, the rule state and the optimizer state are left as they are (how a run
    starts from a checkpoint that another rule trained).
    """
    payload = path if isinstance(path, Mapping) else read(path)
    if weights_only:
        if optimizer is not None:
            raise CheckpointError("a weights-only load takes no optimizer")
        saved = {k: v for k, v in payload["model"].items() if not is_rule_tensor(k)}
        _check_state(saved, {k: v for k, v in model.state_dict().items() if not is_rule_tensor(k)}, "model")
        model.load_state_dict(saved, strict=False)
        return dict(payload["meta"])
    _check_state(payload["model"], model.state_dict(), "model")
    if optimizer is not None:
        _check_optimizer(payload.get("optimizer"), optimizer)
    rule_state = payload["rule_state"]
    if learner is None and rule_state:
        raise CheckpointError(
            f"the checkpoint holds state of rule {payload['meta'].get('rule', '?')!r}; pass its learner to load it"
        )
    if learner is not None and rule_state:
        current = learner.rule_state()
        for key, value in rule_state.items():
            if key in current and _shape(current[key]) != _shape(value):
                raise CheckpointError(
                    f"rule state key '{key}' has shape {_shape(value)} in the checkpoint but "
                    f"{_shape(current[key])} in the learner"
                )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.load_state_dict(payload["model"], strict=True)
    if learner is not None and rule_state:
        try:
            learner.load_rule_state({k: v.to(device) for k, v in rule_state.items()})
        except BeyondBPError as exc:
            raise CheckpointError(f"the checkpoint's rule state does not fit the learner: {exc}") from None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"the checkpoint's optimizer state does not fit the optimizer: {exc}") from None
    return dict(payload["meta"])
