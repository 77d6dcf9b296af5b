"""Runs of a liquid state machine (model ``lsm``): the two-phase protocol of NALSM, with the
liquid's features generated once and cached, and the readout trained by the ordinary run loop.

Paper: "Increasing Liquid State Machine Performance with Edge-of-Chaos Dynamics Organized by
Astrocyte-modulated Plasticity" (Ivanov & Michmizos, NeurIPS 2021); their protocol as
``shared/reference/families-next.md`` §1 describes it.

When :func:`beyondbp.training.prepare` builds a model holding a spiking liquid, it calls
:func:`feature_stage`, which, before any training step:

1. **Liquid initialisation** (rules ``nalsm`` and ``stdp`` only; the rule's ``init_images``,
   default the authors' 50,000, and ``init_duration``, 20 ms): that many training images, drawn
   at random (a permutation from the run's seed, repeated when ``init_images`` exceeds the
   training set), are presented one at a time with the rule's plasticity in persistent mode: the
   weights carry over from image to image, traces, astrocyte and rates restart with each image,
   no decay. The weights left are ``W_INI``; they become the model's ``liquid.weight`` (so a
   checkpoint holds them).
2. **Feature generation**: every training and test image is presented for the model's
   ``duration`` (250 ms), ``feature_batch`` (250) images at a time, from ``W_INI`` — with the
   rule's transient plasticity (every image starts from ``W_INI``; ``η``, ``A``, ``w_A``, ``b_A``
   decay by ``decay`` = 0.99 per ms), or with fixed weights for any other rule (the paper's
   fixed-weight LSM; sweep ``w_init`` for its weight scale, the magnitude of every synapse as
   in the authors' code; ``w_liquid`` alone changes the recurrent ones only). The feature of an
   image is the spike count of every liquid neuron (the authors' choice), divided by the image's
   L1 norm and, for ``features="authors"``, by the largest such value over the training features.
   The batches run in ``feature_workers`` processes (an execution setting; default 2 on a machine
   with 2 cores or more, 1 for small runs and in a study's runs), with the same features whatever
   their number (:mod:`beyondbp.training.liquid_pool`). Phase 1 is one process by nature: each
   image's plasticity starts from the weights the previous image left.
3. **Measurements**, recorded in the result's ``spikes["liquid"]`` (and in ``data["liquid"]``):
   on the first 20 test images (the authors' sample count) presented like the features, the
   branching factor as the authors compute it (:func:`beyondbp.spiking.criticality.branching_factor`),
   excitatory / inhibitory / input firing rates (Hz), the fraction of silent liquid neurons, and
   the mean rate per neuron per ms (``rate``) as for other spiking models.

The run loop then trains the model's ``readout`` alone, on the features, as any model: the run's
rule when it is not a liquid rule (``backprop``, ``fa``, ``dfa``, ...; with model option
``readout_hidden`` the readout has a hidden layer, which feedback-alignment rules need), or the
liquid rule's ``readout_rule`` (default ``backprop``, options ``readout_options``). The liquid is
frozen: no rule other than ``nalsm``/``stdp`` sees it. Epochs never re-simulate the liquid.

Input encoding as the authors': an image's raw intensities (a standardised data set is
un-standardised with its recorded mean and std) divided by their sum, then by the largest such
ratio over the run's training and test images (or by the model's ``rate_max``), is every input
neuron's firing probability per ms. Input spikes of feature batch ``c`` of a split are drawn from
a generator seeded from (run seed, split, ``c``); those of initialisation image ``i`` from
(run seed, ``i``): features depend on the run's seed, never on the global RNG.

Cache. The features, ``W_INI`` and the measurements are stored in ``<feature_cache>/<key>.pt``
(the run's execution setting ``feature_cache``; default ``$BEYONDBP_CACHE/lsm-features`` or
``~/.cache/beyondbp/lsm-features``; a study's runs use ``<store dir>/<store stem>.features``),
written atomically. The key is a hash of everything the features depend on: the liquid's model
options (not the readout's), the liquid rule and its options (not ``readout_rule``,
``readout_options``, ``predict_seed``; ``None`` for a fixed liquid, so every readout rule on a
fixed liquid shares one entry), the run's seed, the data set's name, options and a fingerprint
of its samples, and the beyondbp and torch versions. A run that finds its entry loads it and
trains exactly as the run that wrote it; an unreadable entry is regenerated. An entry holds the
raw spike counts (``counts_train``, ``counts_test``), ``weight`` (W_INI), ``measurements``,
``init_images``, ``seconds``, ``workers`` and, in entries written since 2026-12-07, the labels
(``labels_train``, ``labels_test``) and a ``stimuli`` record (data set, its options, the samples'
fingerprint and the test samples' alone, split sizes, run seed, ``rate_max``, ``duration``,
``feature_batch``): what :func:`beyondbp.training.liquid_features.load_features` reads back.

Resuming. While an entry is generated its progress is kept beside it, in ``<key>.partial/``
(:mod:`beyondbp.training.liquid_resume`): phase 1's weights every ``INIT_SAVE_EVERY`` (1,000)
images and at its end (``W_INI``), and each feature batch's counts as it completes. A run
stopped by Ctrl-C, SIGTERM, a crash or a pre-emption, run again with the same settings (same
key), continues from there — it says so (progress event ``"liquid_resumed"``; ``train`` prints
how much was done; the result's ``data["liquid"]["resumed"]``) — and writes the entry bit-identical to that of a run
never stopped (its ``seconds`` aside); unreadable or unfitting progress is ignored with a
warning and generated again. The folder goes once the entry is written.

Departures (their reasons): the readout's features are divided by the training set's maximum,
not each readout batch's, so that a sample's features do not depend on its batch; the readout's
loss is the run's (cross-entropy on hard labels, not the authors' softmax-of-one-hot soft
targets), and the reported accuracy is the run's test accuracy after its budget, not the test
accuracy at the epoch of best validation accuracy (use ``n_train`` and a second run for a
validation split). The authors' readout optimiser is available as ``optimizer="adadelta"``
(their ``lr`` 0.1, ``weight_decay`` 5e-10 for their L2 term).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor, nn

from .. import data as data_mod
from .. import files
from .. import models as models_mod
from .. import rules as rules_mod
from ..errors import ConfigError
from ..jsonable import plain
from ..spiking.criticality import raster_measurements
from . import liquid_resume
from .config import RunConfig, effective_rule_options
from .liquid_pool import FeaturePool, batch_counts, feature_workers
from .liquid_pool import derive as _derive
from .liquid_resume import Partial

__all__ = ["FEATURE_FORMAT", "MEASURE_SAMPLES", "FeaturePlace", "FeatureStage", "cache_root", "feature_kinds",
           "feature_stage", "fitting_entry", "has_liquid", "is_liquid_model", "kept_progress", "liquid_rules", "locate",
           "partial_progress", "read_entry", "readout_features", "samples_digest", "stimuli_record"]

#: Version of the cache files' layout (part of the key).
FEATURE_FORMAT = 1
#: Test images the measurements are taken on (the authors' 20).
MEASURE_SAMPLES = 20
#: Model options that shape the readout only (left out of the cache key).
_READOUT_OPTIONS = ("readout_hidden", "features")
#: Liquid-rule options that do not change the features (left out of the cache key).
_NOT_FEATURES = ("readout_rule", "readout_options", "predict_seed")


def is_liquid_model(name: str) -> bool:
    """Whether runs of model ``name`` simulate a liquid before training (model ``lsm``)."""
    return bool(getattr(models_mod.options_class(name), "liquid", False))


def has_liquid(model: nn.Module) -> bool:
    """Whether ``model`` holds a spiking liquid and a ``readout`` (model ``lsm``)."""
    liquid = getattr(model, "liquid", None)
    return bool(getattr(type(liquid), "is_spiking_liquid", False)) and isinstance(getattr(model, "readout", None), nn.Module)


@dataclass
class FeatureStage:
    """What :func:`feature_stage` hands the run loop: the features as a data set, the module the
    readout rule trains, that rule, and the record of the liquid (measurements, provenance)."""

    dataset: data_mod.Dataset
    target: nn.Module
    rule: rules_mod.Rule
    record: dict[str, Any] = field(default_factory=dict)


def cache_root(config: RunConfig) -> Path:
    """The run's feature cache directory (see the module docstring)."""
    if config.feature_cache:
        return Path(config.feature_cache).expanduser()
    env = os.environ.get("BEYONDBP_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "beyondbp") / "lsm-features"


def liquid_rules(config: RunConfig) -> tuple[rules_mod.Rule | None, rules_mod.Rule]:
    """The liquid rule (None: a fixed liquid) and the readout's rule, checked."""
    rule = rules_mod.get(config.rule, **effective_rule_options(config))
    if not getattr(type(rule), "trains_liquid", False):
        return None, rule
    opts = rule.options()
    if opts["mode"] != "transient":
        raise ConfigError(
            f"rule '{config.rule}' in a run generates the liquid's features with transient plasticity (its "
            f"initialisation phase is persistent by itself); leave rule option mode out, not {opts['mode']!r}."
        )
    name = opts["readout_rule"]
    readout_cls = rules_mod.rule_class(name)
    if getattr(readout_cls, "trains_liquid", False):
        raise ConfigError(
            f"rule option readout_rule={name!r} names a liquid plasticity rule; the readout needs a rule that "
            "trains weight layers (backprop, fa, dfa, ...)."
        )
    ropts = dict(opts["readout_options"])
    if "seed" not in ropts and "seed" in readout_cls.option_names():
        ropts["seed"] = config.seed
    return rule, rules_mod.get(name, **ropts)


def _intensities(ds: data_mod.Dataset, x: Tensor, name: str) -> Tensor:
    """Raw non-negative intensities of images ``x`` (a standardised set un-standardised)."""
    meta = ds.meta
    x = x.reshape(len(x), -1).float()
    if meta.get("normalize") and "mean" in meta and "std" in meta:
        x = x * float(meta["std"]) + float(meta["mean"])
        return x.clamp_min(0.0)  # float rounding only
    if len(x) and float(x.min()) < 0:
        raise ConfigError(
            f"model 'lsm' encodes non-negative image intensities as spike rates and data {name!r} has negative "
            "values; give it raw intensities (for fashion-mnist or mnist, data option normalize=false)."
        )
    return x


def _check_data(config: RunConfig, ds: data_mod.Dataset) -> None:
    if len(ds.input_shape) != 3:
        raise ConfigError(
            f"model 'lsm' encodes images (channels, height, width) as spike rates and data {config.data!r} has "
            f"samples of shape {tuple(ds.input_shape)}; use an image data set (fashion-mnist, mnist, digits)."
        )


def samples_digest(*xs: Tensor) -> str:
    """A fingerprint (sha256) of sample tensors: their shapes and bytes, in order."""
    digest = hashlib.sha256()
    for x in xs:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _key(config: RunConfig, plastic: rules_mod.Rule | None, x_train: Tensor, x_test: Tensor) -> tuple[str, str]:
    """The cache key and the fingerprint of the samples (part of it)."""
    from .._version import __version__

    identity = config.identity()
    what = {
        "format": FEATURE_FORMAT, "beyondbp": __version__, "torch": torch.__version__,
        "model": config.model,
        "model_options": {k: v for k, v in identity["model_options"].items() if k not in _READOUT_OPTIONS},
        "rule": config.rule if plastic is not None else None,
        "rule_options": ({k: v for k, v in identity["rule_options"].items() if k not in _NOT_FEATURES}
                         if plastic is not None else None),
        "seed": config.seed, "data": config.data, "data_options": identity["data_options"],
        "samples": samples_digest(x_train, x_test),
    }
    text = json.dumps(plain(what), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24], what["samples"]


def _counts(out: list[Tensor], n: int, duration: int) -> Tensor:
    counts = torch.cat(out) if out else torch.zeros(0, n)
    return counts.to(torch.int16 if duration < 2**15 else torch.int32)


def _simulate(liquid: nn.Module, p: Tensor, duration: int, batch: int, seed: int, split: str,
              partial: Partial) -> Tensor:
    """Spike counts (N, n) of ``p`` (N, n_in) presented ``batch`` at a time (the attached
    plasticity); the batches ``partial`` holds are taken from it, the others kept there."""
    done = partial.batches.setdefault(split, {})
    out = []
    for c, start in enumerate(range(0, len(p), batch)):
        if c not in done:
            done[c] = batch_counts(liquid, p[start:start + batch], duration, seed, split, c)
            partial.save_batch(split, c, done[c])
        out.append(done[c])
    return _counts(out, liquid.n, duration)


def _initialise(config: RunConfig, model: nn.Module, p_train: Tensor, partial: Partial) -> int:
    """Phase 1: the liquid rule in persistent mode over ``init_images`` random training images
    (from the state ``partial`` holds, kept there every :data:`INIT_SAVE_EVERY` images)."""
    opts = effective_rule_options(config)
    rule = rules_mod.get(config.rule, **{**opts, "mode": "persistent", "decay": 1.0})
    n_img, duration = int(rule.options()["init_images"]), int(rule.options()["init_duration"])
    if n_img == 0 or len(p_train) == 0:
        return 0
    g = torch.Generator().manual_seed(_derive(config.seed, "init-order"))
    order = torch.cat([torch.randperm(len(p_train), generator=g) for _ in range(math.ceil(n_img / len(p_train)))])
    liquid = model.liquid
    start = 0
    if partial.init is not None:  # the weights are all that carries over between images
        start = partial.init[0]
        with torch.no_grad():
            liquid.weight.copy_(partial.init[1].to(liquid.weight.device))
    learner = rule.attach(model)
    try:
        for i in range(start, n_img):
            idx = int(order[i])
            liquid.input_seed = _derive(config.seed, "init", i)
            liquid.simulate(p_train[idx:idx + 1], duration=duration, write_back=True)
            if (i + 1) % liquid_resume.INIT_SAVE_EVERY == 0 or i + 1 == n_img:
                partial.save_init(i + 1, liquid.weight)
    finally:
        learner.detach()
    return n_img


def _generate(config: RunConfig, plastic: rules_mod.Rule | None, model: nn.Module, p_train: Tensor,
              p_test: Tensor, partial: Partial) -> dict[str, Any]:
    """Phases 1 and 2 and the measurements: what the cache holds (continuing from ``partial``'s
    progress and keeping it there, see :mod:`beyondbp.training.liquid_resume`)."""
    liquid, opts = model.liquid, model.opts
    started = time.perf_counter()
    n_init = _initialise(config, model, p_train, partial) if plastic is not None else 0
    splits = {"train": p_train, "test": p_test}
    done = partial.usable_batches(liquid.weight)  # those from this W_INI
    batches = sum(math.ceil(len(p) / opts.feature_batch) for p in splits.values())
    workers = feature_workers(config.feature_workers, batches, (len(p_train) + len(p_test)) * opts.duration)
    left = batches - sum(len(found) for found in done.values())
    counts: dict[str, Tensor] = {}
    if workers > 1:  # phase 2 in worker processes, each from W_INI (see liquid_pool)
        rule = (config.rule, effective_rule_options(config)) if plastic is not None else None
        if left:
            with FeaturePool(model, rule, min(workers, left)) as pool:
                parts = pool.counts(splits, opts.duration, opts.feature_batch, config.seed, done, partial.save_batch)
        else:
            parts = {split: [done[split][c] for c in sorted(done.get(split, {}))] for split in splits}
        counts = {split: _counts(out, liquid.n, opts.duration) for split, out in parts.items()}
    learner = plastic.attach(model) if plastic is not None else None  # transient plasticity from W_INI
    try:
        if workers == 1:
            counts = {split: _simulate(liquid, p, opts.duration, opts.feature_batch, config.seed, split, partial)
                      for split, p in splits.items()}
        m = min(MEASURE_SAMPLES, len(p_test))
        measurements: dict[str, float] = {}
        if m:
            liquid.input_seed = _derive(config.seed, "measure")
            out = liquid.simulate(p_test[:m], duration=opts.duration, record=True, write_back=False)
            measurements = raster_measurements(liquid, out)
            measurements["rate"] = float(out["counts"].float().mean()) / opts.duration
            measurements["silent"] = measurements["silent_fraction"]
    finally:
        if learner is not None:
            learner.detach()
    return {
        "format": FEATURE_FORMAT, "counts_train": counts["train"], "counts_test": counts["test"],
        "weight": liquid.weight.detach().cpu().clone(), "measurements": measurements, "init_images": n_init,
        "seconds": partial.elapsed + time.perf_counter() - started, "workers": workers,
    }


def read_entry(path: str | os.PathLike) -> dict[str, Any] | None:
    """The cache entry stored at ``path`` (the dict :func:`feature_stage` writes, layout
    :data:`FEATURE_FORMAT`), or None when the file is absent, unreadable or of another layout."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable entry counts as absent
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FEATURE_FORMAT else None


def fitting_entry(path: Path, model: nn.Module, n_train: int, n_test: int) -> dict[str, Any] | None:
    """The cache entry at ``path`` if it fits ``model`` and the split sizes, else None."""
    entry = read_entry(path)
    if entry is None:
        return None
    try:
        n = model.liquid.n
        ok = (tuple(entry["counts_train"].shape) == (n_train, n) and tuple(entry["counts_test"].shape) == (n_test, n)
              and tuple(entry["weight"].shape) == tuple(model.liquid.weight.shape))
    except (KeyError, AttributeError, TypeError):
        return None
    return entry if ok else None


def feature_kinds() -> tuple[str, ...]:
    """The readout feature kinds, the values of model ``lsm``'s option ``features`` (read from
    its declaration, so the two cannot drift)."""
    return tuple(get_args(models_mod.options_class("lsm").model_fields["features"].annotation))


def readout_features(counts: Tensor, kind: str, scale: float | None = None) -> tuple[Tensor, float]:
    """The readout's features from raw spike ``counts`` (images, neurons) for model option
    ``features=kind`` (see :func:`feature_kinds`): the counts as float, each image's counts
    divided by their sum (``"l1"``), and those divided by ``scale`` (``"authors"``; None: their
    largest value here, as for the training features). Returns (features, the scale used; 1.0
    for the kinds without one)."""
    f = counts.float()
    if kind == "counts":
        return f, 1.0
    f = f / f.sum(1, keepdim=True).clamp_min(1e-12)
    if kind == "authors":
        scale = float(f.max().clamp_min(1e-12)) if scale is None else scale
        return f / scale, scale
    return f, 1.0


@dataclass
class FeaturePlace:
    """Where a run's features live and the firing probabilities they come from."""

    p_train: Tensor
    p_test: Tensor
    rate_max: float
    key: str
    samples: str
    path: Path


def locate(config: RunConfig, plastic: rules_mod.Rule | None, ds: data_mod.Dataset, model: nn.Module) -> FeaturePlace:
    """The input firing probabilities of the run's images and its cache entry's key and path."""
    x_train = _intensities(ds, ds.x_train, config.data)
    x_test = _intensities(ds, ds.x_test, config.data)
    r_train = x_train / x_train.sum(1, keepdim=True).clamp_min(1e-12)
    r_test = x_test / x_test.sum(1, keepdim=True).clamp_min(1e-12)
    rate_max = model.opts.rate_max
    if rate_max is None:
        rate_max = max(float(r.max()) if r.numel() else 0.0 for r in (r_train, r_test)) or 1.0
    p_train, p_test = (r_train / rate_max).clamp(0, 1), (r_test / rate_max).clamp(0, 1)
    key, samples = _key(config, plastic, ds.x_train, ds.x_test)
    return FeaturePlace(p_train, p_test, float(rate_max), key, samples, cache_root(config) / f"{key}.pt")


def stimuli_record(config: RunConfig, ds: data_mod.Dataset, model: nn.Module, place: FeaturePlace) -> dict[str, Any]:
    """What a new entry records of its stimuli besides the features (read by
    :mod:`beyondbp.training.liquid_features`; the run loop ignores it)."""
    opts = model.opts
    stimuli = {
        "data": config.data, "data_options": config.identity()["data_options"], "samples": place.samples,
        "test_samples": samples_digest(ds.x_test),
        "n_train": len(place.p_train), "n_test": len(place.p_test), "seed": config.seed,
        "rate_max": place.rate_max, "duration": int(opts.duration), "feature_batch": int(opts.feature_batch),
    }
    return {"labels_train": ds.y_train.detach().cpu().clone(), "labels_test": ds.y_test.detach().cpu().clone(),
            "stimuli": plain(stimuli)}


#: The progress folder of the generation this process ran last, while it is there (kept_progress).
_KEPT: dict[str, Path | None] = {"folder": None}


def kept_progress() -> Path | None:
    """The partial-progress folder of the last feature generation this process started, if it
    is still there (the generation was stopped): what a rerun continues from."""
    folder = _KEPT["folder"]
    return folder if folder is not None and folder.is_dir() else None


def partial_progress(config: RunConfig, plastic: rules_mod.Rule | None, model: nn.Module,
                     place: FeaturePlace) -> Partial:
    """The progress folder of ``place``'s entry, ``<key>.partial`` beside it, read
    (:mod:`beyondbp.training.liquid_resume`)."""
    n_img = int(plastic.options()["init_images"]) if plastic is not None and len(place.p_train) else 0
    identity = {"key": place.key, "n_train": len(place.p_train), "n_test": len(place.p_test),
                "neurons": int(model.liquid.n), "synapses": int(model.liquid.weight.numel()), "init_images": n_img,
                "feature_batch": int(model.opts.feature_batch), "duration": int(model.opts.duration)}
    partial = Partial(place.path.with_suffix(".partial"), identity)
    partial.load()
    return partial


def feature_stage(config: RunConfig, ds: data_mod.Dataset, model: nn.Module, device: torch.device, *,
                  generate: bool = True, progress: Callable[[str, dict[str, Any]], Any] | None = None) -> FeatureStage:
    """Check a liquid run's settings and, with ``generate``, run (or load) the liquid phases and
    return the features (see the module docstring). Bad settings raise :class:`ConfigError`
    before anything is simulated or written. A generation that continues the partial progress
    of a stopped one calls ``progress("liquid_resumed", info)`` first (``info``: the
    ``init_images_done`` of ``init_images``, ``batches_done`` of ``batches``, ``folder``)."""
    _check_data(config, ds)
    if config.init_from is not None:
        raise ConfigError(
            "init_from does not apply to model 'lsm' (its liquid is set by its own initialisation phase and its "
            "features cached); leave it out."
        )
    plastic, readout_rule = liquid_rules(config)
    readout_rule.check_model(model.readout)
    if not generate:
        return FeatureStage(ds, model.readout, readout_rule)
    place = locate(config, plastic, ds, model)
    p_train, p_test, rate_max, key, path = place.p_train, place.p_test, place.rate_max, place.key, place.path
    entry = fitting_entry(path, model, len(p_train), len(p_test))
    cached = entry is not None
    resumed = None
    if entry is None:
        partial = partial_progress(config, plastic, model, place)
        batches = sum(math.ceil(len(p) / model.opts.feature_batch) for p in (p_train, p_test))
        resumed = partial.summary(batches)
        if resumed is not None and progress is not None:
            progress("liquid_resumed", {**resumed, "folder": str(partial.folder)})
        saved_seed = model.liquid.input_seed
        _KEPT["folder"] = partial.folder
        try:
            entry = _generate(config, plastic, model, p_train, p_test, partial)
        finally:
            model.liquid.input_seed = saved_seed
        entry.update(stimuli_record(config, ds, model, place))
        try:
            files.atomic_write_bytes(path, lambda fh: torch.save(entry, fh))
        except OSError as exc:
            raise ConfigError(f"cannot write the liquid's features to {str(path)!r} ({exc.strerror or exc}); "
                              "give a writable feature_cache directory.") from None
        partial.remove()
    with torch.no_grad():
        model.liquid.weight.copy_(entry["weight"].to(model.liquid.weight.device))  # W_INI
    f_train, scale = readout_features(entry["counts_train"], model.opts.features)
    f_test, _ = readout_features(entry["counts_test"], model.opts.features, scale)
    measurements = {k: float(v) for k, v in entry["measurements"].items()}
    record = {
        "cache": str(path.absolute()), "cached": cached, "key": key, "rule": config.rule if plastic is not None else "fixed",
        "init_images": int(entry["init_images"]), "duration_ms": int(model.opts.duration),
        "feature_seconds": float(entry["seconds"]), "feature_workers": int(entry.get("workers", 1)),
        "rate_max": float(rate_max), "feature_scale": scale,
        "measurements": measurements, "resumed": resumed,
    }
    features = replace(
        ds, x_train=f_train, x_test=f_test, input_shape=(model.liquid.n,),
        description=f"{ds.description} → spike counts of a {model.liquid.n}-neuron liquid ({record['rule']})",
        meta={**ds.meta, "liquid": record, "model_input_shape": list(ds.input_shape)},
    )
    return FeatureStage(features, model.readout, readout_rule, record)

