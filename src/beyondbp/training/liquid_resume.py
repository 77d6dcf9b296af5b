"""A liquid run's feature generation kept as it goes, so that a stopped run continues where it
was (the partial progress of :mod:`beyondbp.training.liquid`'s cache entries).

While the features of cache entry ``<feature_cache>/<key>.pt`` are generated, their progress is
kept beside it, in the folder ``<feature_cache>/<key>.partial/`` (every file written atomically,
:func:`beyondbp.files.atomic_write_bytes`):

* ``meta.pt``: what the progress belongs to (the key, split sizes, liquid size, initialisation
  images, feature batch, duration);
* ``init.pt``: phase 1's state at an image boundary — the images done and the liquid's weights
  after them, written every :data:`INIT_SAVE_EVERY` images and when phase 1 ends (then the
  weights are ``W_INI``). The weights are all that carries over from one initialisation image to
  the next (traces, astrocyte and rates restart with each image; the image order and each
  image's input spikes come from generators seeded by the run's seed and the image's index);
* ``<split>-<c>.pt``: the spike counts of feature batch ``c`` of ``split``, written as each
  batch completes (each batch starts from ``W_INI`` with its own seeded generator, so batches
  are independent), with a fingerprint of the ``W_INI`` they came from.

A run that finds progress of its own key continues from it and writes an entry bit-identical to
that of a run never stopped (counts, ``W_INI``, measurements; the time it took aside). A file
that cannot be read or does not fit (another layout, another key, shapes, another ``W_INI``) is
ignored with a warning and its part generated again: it is never trusted. The folder is removed
once the entry is in place. Keeping progress is best effort: a folder that cannot be written
warns once and the generation goes on without it.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import files

__all__ = ["INIT_SAVE_EVERY", "PARTIAL_FORMAT", "Partial", "weight_digest"]

#: Layout of the progress files.
PARTIAL_FORMAT = 1
#: Phase 1 keeps its state every this many initialisation images (bench/lsm_resume.py: saving
#: costs well under 1 % of phase 1's time at the authors' 1000 neurons).
INIT_SAVE_EVERY = 1000


def weight_digest(weight: Tensor) -> str:
    """A fingerprint (sha256) of a weight tensor's dtype, shape and bytes."""
    w = weight.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{w.dtype}{tuple(w.shape)}".encode())
    digest.update(w.numpy().tobytes())
    return digest.hexdigest()


class Partial:
    """The progress folder of one cache entry (see the module docstring). ``identity``: what
    the progress belongs to (its ``key``, ``n_train``, ``n_test``, ``neurons``, ``synapses``,
    ``init_images``, ``feature_batch``, ``duration``). :meth:`load` reads what is there;
    ``init`` and ``batches`` then hold the usable progress."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.identity = {"format": PARTIAL_FORMAT, **identity}
        self.init: tuple[int, Tensor] | None = None  # (images done, weights after them)
        self.batches: dict[str, dict[int, Tensor]] = {}
        self._w_ini_of: dict[tuple[str, int], str] = {}  # the W_INI fingerprint each batch came from
        self.digest = ""  # this run's W_INI fingerprint (usable_batches)
        self.elapsed = 0.0  # seconds spent by earlier runs, as far as their saves tell
        self.started = time.perf_counter()
        self.writable = True
        self._meta_written = False

    # -- reading -------------------------------------------------------------------------------
    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is ignored, never trusted
            self._warn(f"cannot read {path.name} ({type(exc).__name__})")
            return None
        if not isinstance(data, dict) or data.get("key") != self.identity["key"]:
            self._warn(f"{path.name} belongs to other features")
            return None
        return data

    def _warn(self, why: str) -> None:
        warnings.warn(f"the liquid's partial feature progress in {str(self.folder)!r}: {why}; ignored, that part "
                      "is generated again.", stacklevel=3)

    def load(self) -> None:
        """Read the progress folder (absent: nothing done)."""
        if not self.folder.is_dir():
            return
        meta = self._read(self.folder / "meta.pt") if (self.folder / "meta.pt").is_file() else None
        if meta is None or meta.get("identity") != self.identity:
            if meta is not None:
                self._warn("meta.pt describes other features")
            if any(self.folder.iterdir()):
                self._warn("no valid meta.pt; the folder's files are removed")
                shutil.rmtree(self.folder, ignore_errors=True)  # none of them is trusted later either
            return
        self._meta_written = True
        init_path = self.folder / "init.pt"
        if init_path.is_file() and (init := self._read(init_path)) is not None:
            done, weight = init.get("done"), init.get("weight")
            if (isinstance(done, int) and 0 < done <= self.identity["init_images"] and isinstance(weight, Tensor)
                    and weight.dtype == torch.float32 and tuple(weight.shape) == (self.identity["synapses"],)):
                self.init = (done, weight)
                self.elapsed = max(self.elapsed, float(init.get("elapsed", 0.0)))
            else:
                self._warn("init.pt does not fit this liquid")
        for path in sorted(self.folder.glob("*-*.pt")):
            split, _, c = path.stem.partition("-")
            if split not in ("train", "test") or not c.isdigit():
                continue
            data = self._read(path)
            if data is None:
                continue
            counts, c = data.get("counts"), int(c)
            size = min(self.identity["feature_batch"], self.identity[f"n_{split}"] - c * self.identity["feature_batch"])
            if (not isinstance(counts, Tensor) or size <= 0 or tuple(counts.shape) != (size, self.identity["neurons"])
                    or data.get("split") != split or data.get("c") != c or not isinstance(data.get("w_ini"), str)):
                self._warn(f"{path.name} does not fit this liquid")
                continue
            self.batches.setdefault(split, {})[c] = counts
            self._w_ini_of[(split, c)] = data["w_ini"]
            self.elapsed = max(self.elapsed, float(data.get("elapsed", 0.0)))

    def usable_batches(self, w_ini: Tensor) -> dict[str, dict[int, Tensor]]:
        """The batches read by :meth:`load` that came from ``w_ini`` (others: warned, dropped)."""
        digest = weight_digest(w_ini)
        self.digest = digest
        kept: dict[str, dict[int, Tensor]] = {}
        for split, found in self.batches.items():
            for c, counts in found.items():
                if self._w_ini_of.get((split, c)) == digest:
                    kept.setdefault(split, {})[c] = counts
                else:
                    self._warn(f"{split}-{c}.pt came from another W_INI")
        self.batches = kept
        return kept

    # -- writing -------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def _write(self, name: str, payload: dict[str, Any]) -> None:
        if not self.writable:
            return
        try:
            if not self._meta_written:
                files.atomic_write_bytes(self.folder / "meta.pt", lambda fh: torch.save(
                    {"key": self.identity["key"], "identity": self.identity}, fh))
                self._meta_written = True
            payload = {"key": self.identity["key"], "elapsed": self._elapsed(), **payload}
            files.atomic_write_bytes(self.folder / name, lambda fh: torch.save(payload, fh))
        except OSError as exc:
            self.writable = False
            warnings.warn(f"cannot keep the liquid's partial feature progress in {str(self.folder)!r} "
                          f"({exc.strerror or exc}); generating on without it (a stopped run will start afresh).",
                          stacklevel=3)

    def save_init(self, done: int, weight: Tensor) -> None:
        """Phase 1's state after ``done`` initialisation images (the liquid's weights)."""
        self._write("init.pt", {"done": int(done), "weight": weight.detach().cpu().clone()})

    def save_batch(self, split: str, c: int, counts: Tensor) -> None:
        """Feature batch ``c`` of ``split`` is done (from the ``W_INI`` given to :meth:`usable_batches`)."""
        self._write(f"{split}-{c}.pt", {"split": split, "c": int(c), "counts": counts.cpu(), "w_ini": self.digest})

    def remove(self) -> None:
        """The entry is complete: the progress folder goes."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def summary(self, batches: int) -> dict[str, Any] | None:
        """What was found to continue from (None: nothing): images of phase 1 and feature batches done."""
        done = sum(len(b) for b in self.batches.values())
        if self.init is None and not done:
            return None
        return {"init_images_done": self.init[0] if self.init is not None else 0,
                "init_images": int(self.identity["init_images"]), "batches_done": done, "batches": int(batches)}
