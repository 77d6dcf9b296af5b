"""A liquid run's cached features read back for analysis (model ``lsm``; the cache of
:mod:`beyondbp.training.liquid`).

:func:`load_features` takes

* a cache file ``<feature_cache>/<key>.pt`` (its path),
* a run's output folder (``beyondbp train/compare --out``) or its ``results.json``: the entry the
  run recorded (``data["liquid"]["cache"]``), or
* a :class:`~beyondbp.training.RunConfig` (or a mapping of its settings): the entry its run
  would use, found as the run finds it (same key); with ``generate=True`` a missing entry is
  generated and written as the run would, else it is refused in one sentence,

and returns a :class:`LiquidFeatures`: the **raw spike counts** of every liquid neuron for every
training and test image (``counts_train``, ``counts_test``; :meth:`LiquidFeatures.features`
gives them as the readout sees them), the labels, ``W_INI``, the liquid's measurements and a
``stimuli`` record (data set, its options, the fingerprint of the test images, split sizes, run
seed, ``rate_max``, ``duration``, ``feature_batch``), which says whether two liquids saw the
same images and the same input spike trains. Input spikes are drawn from the **run's** seed (and
the feature batch's index), not from the liquid's structure seed (model option ``seed``): two
liquids with different structure seeds, run under the same run seed, ``feature_batch``,
``duration`` and ``rate_max`` on the same images, received identical input spikes.

A cache file written before 2026-12-07 holds neither labels nor the stimuli record: read by its
path alone, ``labels_*`` and ``stimuli`` are None (give the run's output folder or config to
have them). Reading never writes: the cache file is only loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import models as models_mod
from ..errors import ConfigError
from . import liquid
from .config import RunConfig

__all__ = ["LiquidFeatures", "load_features"]


@dataclass
class LiquidFeatures:
    """A liquid's features (see the module docstring). ``counts_*``: raw spike counts, shape
    (images, neurons), integers; ``labels_*``: the images' labels or None where unknown;
    ``weight``: ``W_INI``; ``record``: ``path`` (the cache file), ``key``, ``init_images``,
    ``seconds``, ``workers``, and, from a run's output or config, ``config`` (its settings)."""

    counts_train: Tensor
    counts_test: Tensor
    labels_train: Tensor | None
    labels_test: Tensor | None
    weight: Tensor
    measurements: dict[str, float]
    stimuli: dict[str, Any] | None
    record: dict[str, Any]

    @property
    def neurons(self) -> int:
        """Liquid neurons (feature columns)."""
        return int(self.counts_test.shape[1])

    def features(self, kind: str = "authors") -> tuple[Tensor, Tensor]:
        """(train, test) features as the readout of model option ``features=kind`` sees them
        (float32): ``"counts"`` the counts, ``"l1"`` each image's counts divided by their sum,
        ``"authors"`` those divided by their largest value over the training features."""
        kinds = liquid.feature_kinds()
        if kind not in kinds:
            raise ConfigError(f"features kind {kind!r} is not one of {', '.join(kinds)}.")
        train, scale = liquid.readout_features(self.counts_train, kind)
        test, _ = liquid.readout_features(self.counts_test, kind, scale)
        return train, test


def load_features(source: str | os.PathLike | RunConfig | Mapping[str, Any], *, run: int | None = None,
                  generate: bool = False) -> LiquidFeatures:
    """A liquid's cached features from ``source``: a cache file, a run's output folder or
    ``results.json`` (``run``: which of its runs, when they used different liquids), or a run
    config (``generate``: make a missing entry, as the run would). Anything else, a missing or
    unreadable entry, raises :class:`ConfigError` in one sentence."""
    if isinstance(source, RunConfig):
        return _from_config(source, generate)
    if isinstance(source, Mapping):
        return _from_config(RunConfig.from_dict(source), generate)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"load_features takes a cache file, a run's output folder, its results.json or a RunConfig, "
                          f"not {type(source).__name__}.")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "results.json").is_file():
            raise ConfigError(f"{str(path)!r} is a folder without results.json; give a liquid run's output folder, "
                              "its results.json or a feature cache file (<feature_cache>/<key>.pt).")
        path = path / "results.json"
    if path.suffix == ".json":
        return _from_results(path, run, generate)
    return _from_file(path)


def _entry(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"there is no liquid feature cache file at {str(path)!r}; give an existing "
                          "<feature_cache>/<key>.pt, a run's output folder or its config.")
    entry = liquid.read_entry(path)
    if entry is None or not all(k in entry for k in ("counts_train", "counts_test", "weight", "measurements")):
        raise ConfigError(f"{str(path)!r} is not a liquid feature cache file of layout {liquid.FEATURE_FORMAT} "
                          "(unreadable, or written by another beyondbp); regenerate it with the run that wrote it.")
    return entry


def _make(entry: dict[str, Any], path: Path, stimuli: dict[str, Any] | None = None,
          labels: tuple[Tensor, Tensor] | None = None, config: RunConfig | None = None) -> LiquidFeatures:
    if labels is None and "labels_test" in entry:
        labels = (entry["labels_train"], entry["labels_test"])
    stimuli = stimuli if stimuli is not None else entry.get("stimuli")
    record = {"path": str(path), "key": path.stem, "init_images": int(entry.get("init_images", 0)),
              "seconds": float(entry.get("seconds", 0.0)), "workers": int(entry.get("workers", 1))}
    if config is not None:
        record["config"] = config.model_dump(mode="json")
    return LiquidFeatures(
        counts_train=entry["counts_train"], counts_test=entry["counts_test"],
        labels_train=None if labels is None else labels[0], labels_test=None if labels is None else labels[1],
        weight=entry["weight"], measurements={k: float(v) for k, v in entry["measurements"].items()},
        stimuli=dict(stimuli) if stimuli is not None else None, record=record,
    )


def _from_file(path: Path) -> LiquidFeatures:
    return _make(_entry(path), path)


class _Run:
    """A config's data set, liquid model and cache place (built without touching the caller's RNG)."""

    def __init__(self, config: RunConfig) -> None:
        from .loop import load_dataset

        if not liquid.is_liquid_model(config.model):
            raise ConfigError(f"model {config.model!r} has no liquid; load_features reads the features of model 'lsm' runs.")
        with torch.random.fork_rng(devices=[]):
            self.ds = load_dataset(config)
            self.model = models_mod.build(config.model, self.ds.input_shape, self.ds.num_classes,
                                          **config.model_options)
        liquid.feature_stage(config, self.ds, self.model, torch.device("cpu"), generate=False)  # its checks
        self.plastic, _ = liquid.liquid_rules(config)
        self.place = liquid.locate(config, self.plastic, self.ds, self.model)
        self.stimuli = liquid.stimuli_record(config, self.ds, self.model, self.place)

    def labels(self) -> tuple[Tensor, Tensor]:
        return self.stimuli["labels_train"], self.stimuli["labels_test"]


def _from_config(config: RunConfig, generate: bool) -> LiquidFeatures:
    built = _Run(config)
    path, n_train, n_test = built.place.path, len(built.ds.y_train), len(built.ds.y_test)
    entry = liquid.fitting_entry(path, built.model, n_train, n_test)
    if entry is None:
        if not generate:
            raise ConfigError(
                f"the liquid features of this run are not cached (no {path.name} in {str(path.parent)!r}); make them "
                f"by running the config once (beyondbp.training.run, or `beyondbp train` with the same settings and "
                f"--feature-cache {str(path.parent)!r}; any readout budget) or call load_features(config, generate=True)."
            )
        with torch.random.fork_rng(devices=[]):
            liquid.feature_stage(config, built.ds, built.model, torch.device("cpu"))  # writes the entry
        entry = _entry(path)
    return _make(entry, path, built.stimuli["stimuli"], built.labels(), config)


def _from_results(path: Path, run: int | None, generate: bool) -> LiquidFeatures:
    try:
        runs = json.loads(path.read_text())["runs"]
        liquids = [(i, r) for i, r in enumerate(runs) if isinstance(r.get("data", {}).get("liquid"), dict)]
        for _, r in liquids:  # what is read of a liquid run below: its cache path and its config
            r["data"]["liquid"]["cache"], r["config"] = str(r["data"]["liquid"]["cache"]), dict(r["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{str(path)!r} is not a readable beyondbp results.json (a 'runs' list whose liquid runs "
                          "hold their config and feature cache).") from None
    if run is not None:
        if (isinstance(run, bool) or not isinstance(run, int) or not 0 <= run < len(runs)
                or all(i != run for i, _ in liquids)):
            raise ConfigError(f"run={run!r} is not a liquid run of {str(path)!r}; its liquid runs are "
                              f"{', '.join(str(i) for i, _ in liquids) or 'none'}.")
        liquids = [(i, r) for i, r in liquids if i == run]
    if not liquids:
        raise ConfigError(f"{str(path)!r} holds no run of a liquid (model 'lsm'); give a liquid run's output.")
    caches = {r["data"]["liquid"].get("cache") for _, r in liquids}
    if len(caches) > 1:
        raise ConfigError(f"{str(path)!r} holds runs of {len(caches)} different liquids; pick one with run= one of "
                          f"{', '.join(str(i) for i, _ in liquids)}.")
    index, chosen = liquids[0]
    config = RunConfig.from_dict(chosen["config"])
    recorded = Path(str(next(iter(caches))))
    if not recorded.is_file():
        return _from_config(config, generate)  # moved or versions changed: find it as the run would
    built = _Run(config)
    entry = _entry(recorded)
    if tuple(entry["counts_test"].shape[:1]) != (len(built.ds.y_test),):
        raise ConfigError(f"{str(recorded)!r} holds {entry['counts_test'].shape[0]} test images but run {index} of "
                          f"{str(path)!r} has {len(built.ds.y_test)}; the cache file is not this run's.")
    return _make(entry, recorded, built.stimuli["stimuli"], built.labels(), config)
