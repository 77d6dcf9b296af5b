"""A run's resume state: everything needed to continue a killed run so that it ends exactly as
if it had never stopped.

With ``state=PATH`` and ``checkpoint_every=k``, the run loop writes, every ``k`` optimizer
steps (after that step's evaluation, if one falls there), one ``torch.save`` file holding::

    {"format": "beyondbp-run-state", "version": 1, "run_id": ..., "config": {...},
     "model": model.state_dict(),              # weights, buffers, rule tensors (bbp_*)
     "rule_state": learner.rule_state(),       # rule tensors kept outside the model
     "generators": [...],                      # learner.generators() states (brSF, FF, SET, ...)
     "learner": {...},                         # SET's rewiring history
     "optimizer": ..., "scheduler": ...,       # their state_dicts
     "rng": {"python", "numpy", "torch", "cuda"},  # the global generators
     "data": {...},                            # the data order position (the task's state)
     "loop": {...},                            # step, periods, partial sums, history, first loss,
                                               # FLOP counts, evaluation FLOPs, elapsed time
     "meter": {...}}                           # FLOPs counted, step timings

It is written atomically (:func:`beyondbp.files.atomic_write_bytes`: a temporary file, then
``os.replace``), so a kill at any moment leaves either the previous state or the new one.
:func:`read` loads it with ``torch.load(weights_only=True)``; a file that belongs to another
run (another :attr:`~beyondbp.training.RunConfig.run_id`) or is not a run state is refused with a
:class:`~beyondbp.errors.ConfigError`. When the run ends (done or diverged) the loop deletes it.

A state file lacking any of the entries above (:data:`CONTENTS`) is refused the same way, and so
is a state path whose folder does not exist: the run does not create folders (a mistyped path
must not train into a new one; a checkpoint path and a study's ``--store`` are refused the same
way).

Resuming restores all of the above in the order the loop needs (:func:`restore`); with the same
machine and library versions the resumed run's weights, history and final metrics are
bit-identical to an uninterrupted run's. Step timings are kept too (``time_per_step`` then
mixes the two processes' steps) but are not part of that promise.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_safely, not_torch_kind
from ..errors import ConfigError
from ..files import atomic_write_bytes, remove_stale_temporaries

__all__ = ["FORMAT", "VERSION", "capture_rng", "read", "remove", "restore_rng", "write"]

FORMAT = "beyondbp-run-state"
VERSION = 1

#: What a state file holds besides its header: each entry's type, and for some the keys it needs.
CONTENTS: dict[str, tuple[type, tuple[str, ...]]] = {
    "run_id": (str, ()),
    "config": (dict, ()),
    "model": (dict, ()),
    "rule_state": (dict, ()),
    "generators": (list, ()),
    "learner": (dict, ()),
    "optimizer": (dict, ("state", "param_groups")),
    "scheduler": (dict, ()),
    "rng": (dict, ("python", "numpy", "torch")),
    "data": (dict, ()),
    "loop": (dict, ("step", "periods", "sums", "seen", "history", "first_loss", "flops_batch", "eval_costs",
                    "eval_flops", "elapsed")),
    "meter": (dict, ("flops", "effective_flops", "untimed", "times")),
}


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global generators' states: Python's ``random``, NumPy's, torch's (and CUDA's)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def write(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a resume state atomically (``payload`` without the format header)."""
    full = {"format": FORMAT, "version": VERSION, **payload}
    return atomic_write_bytes(path, lambda fh: torch.save(full, fh))


def read(path: str | os.PathLike, run_id: str) -> dict[str, Any] | None:
    """The resume state at ``path`` for run ``run_id``; ``None`` when there is no file.

    Raises :class:`ConfigError` when the file is not a beyondbp run state, is damaged, or
    belongs to another run."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(
            f"the folder of state path {str(path)!r} does not exist; give a state file in an existing folder "
            "(or create the folder first)"
        )
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"the state path {str(path)!r} exists but is not a regular file; give a file path")
    kind = not_torch_kind(path)
    if kind is not None:  # never "delete it": it may be a study's store or the user's own file
        raise ConfigError(f"the state path {str(path)!r} is not a run state but {kind}; give the run a state file of its own "
                          "(it is created when the run starts)")
    try:
        payload = load_safely(path)
    except ValueError as exc:
        raise ConfigError(
            f"the state file {str(path)!r} is damaged or not a torch file ({exc}); delete it to start the run afresh"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a beyondbp run state (no '{FORMAT}' header); give another state path")
    if payload.get("version") != VERSION:
        raise ConfigError(
            f"the state file {str(path)!r} has format version {payload.get('version')!r}; this beyondbp reads version {VERSION}"
        )
    if payload.get("run_id") != run_id:
        raise ConfigError(
            f"the state file {str(path)!r} belongs to run {payload.get('run_id')!r}, not to this run {run_id!r}; "
            "give this run its own state path (or delete the file)"
        )
    for key, (kind, needed) in CONTENTS.items():
        value = payload.get(key)
        missing = [k for k in needed if isinstance(value, dict) and k not in value]
        if not isinstance(value, kind) or missing:
            what = f"its {key!r} entry lacks {missing[0]!r}" if missing and isinstance(value, kind) else (
                f"its {key!r} entry is missing" if value is None else f"its {key!r} entry is not a {kind.__name__}")
            raise ConfigError(
                f"the state file {str(path)!r} is damaged ({what}); delete it to start the run afresh"
            )
    return payload


def remove(path: str | os.PathLike) -> None:
    """Delete the state file (a finished run needs none), and any temporary file a write killed
    half-way left beside it."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    remove_stale_temporaries(path.parent, path.name)
