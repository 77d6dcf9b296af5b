"""What did each rule learn? Trained networks' hidden representations, compared pairwise, and
whether a similarity measure can tell the rules apart (``beyondbp analyze``).

Sources of trained networks (:func:`find_networks`):

* a study spec (``.toml``) whose ``[execution]`` has ``keep_models = true``: every ``done`` run
  whose model is saved in ``<store dir>/<store stem>.models/<run id>.pt``;
* a folder of beyondbp checkpoints (``*.pt``), or checkpoint files.

A network's *class* (what identification tries to recover) is its rule label — the spec's
current label, or the checkpoint's rule name — unless :func:`group_networks` is given other
axes (``beyondbp analyze --group-by rule,lr``): then it is the network's values on those axes
(a study axis, or any run setting such as ``lr``; ``seed`` is not allowed, since seeds are what
the bootstrap resamples). Networks that differ in settings outside the grouping are pooled in
one class. Every class needs at least two networks, and there must be at least two classes;
a grouping that leaves less is refused before any network is loaded. A network's *group*
(the bootstrap's unit) is its seed.

Probe set: ``stimuli`` samples of the networks' common test split, drawn without replacement
by a ``torch.Generator`` seeded with ``seed`` (every network sees the same stimuli in the same
order). Networks trained on different data (name, options or sizes) are refused: their probe
sets would differ.

Responses (:func:`layer_responses`): for each hidden layer, the network's activity on the
probe set, flattened to ``(stimuli, features)``. A hidden layer is each call of an activation
module (ReLU, tanh, sigmoid, GELU, leaky ReLU) in the model's forward pass in eval mode, in call
order — for the ``mlp`` model ``act1, act2, ...`` (the logits are not a hidden layer) — unless
the rule has its own view of its layers (:meth:`Learner.hidden_responses`: Forward-Forward's
layers on normalised input with the neutral label). All networks must have the same number of
hidden layers; layer ``k`` is compared with layer ``k``.

Noisy responses, for the stochastic shape metric: ``repeats`` passes per stimulus with either
``noise="input"`` — Gaussian noise of standard deviation ``noise_level`` × (the probe set's
overall standard deviation) added to the input, the same noise draws for every network — or
``noise="dropout"`` — the model's own dropout kept on (train mode for ``nn.Dropout`` modules
only; refused for a model without dropout). Deterministic measures use the noiseless responses.

Then, per measure of :data:`beyondbp.analysis.representations.MEASURES` and per layer, the
network × network distance matrix and the identification statistics of
:func:`beyondbp.analysis.identification.identify` (nearest neighbour, reference
identification as in Han, Poggio and Cheung 2023, bootstrap intervals over seeds); the
stochastic metric (α = 1) is set against its deterministic counterpart on the same noisy
responses' means and the same stimuli (``stochastic_mean``, α = 2) as in Duong et al. 2023. The
gradient signal-to-noise ratio of every network's rule against
backprop's (:func:`beyondbp.analysis.gradients.gradient_snr`) is measured on ``snr_batches``
training minibatches of the network's own batch size.

Measuring changes nothing: networks are rebuilt from their checkpoints in this process, nothing
is written but the output folder, and the global random state (torch, numpy, ``random``) is as
it was when :func:`analyze_networks` returns.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..errors import CheckpointError, ConfigError
from ..training import RunConfig
from ..training.loop import load_dataset, prepare

__all__ = ["Network", "analyze_networks", "check_groups", "find_networks", "group_networks", "layer_responses", "load_network"]

#: Activation module types whose outputs are a model's hidden layers.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU)

NOISES = ("input", "dropout")

#: The stochastic metric and its deterministic counterpart, compared in the output: the same
#: Gaussian moments of the same noisy responses on the same stimuli, α = 1 (means and
#: covariances) against α = 2 (means only), as Duong et al. compare them.
STOCHASTIC_PAIRS = (("stochastic", "stochastic_mean"),)

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class Network:
    """One trained network: ``id`` (the run id, or the checkpoint's file stem), ``label`` (its
    class: the rule label, or its values on the axes of :func:`group_networks`), ``seed``, its
    run ``config``, the ``checkpoint`` it is loaded from and its study ``axes`` (``rule``: its
    rule label)."""

    id: str
    label: str
    seed: int
    config: RunConfig
    checkpoint: Path
    axes: dict[str, Any] = field(default_factory=dict)


# -- finding networks --------------------------------------------------------------------------
def _config_from(meta: dict[str, Any], path: Path) -> RunConfig:
    values = meta.get("config")
    if not isinstance(values, dict):
        raise ConfigError(f"checkpoint {str(path)!r} holds no run config (it was not written by a beyondbp run)")
    try:
        return RunConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {str(path)!r} holds a run config this beyondbp refuses ({exc})") from None


def _from_checkpoint(path: Path) -> Network:
    try:
        payload = ckpt.read(path)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    config = _config_from(payload["meta"], path)
    return Network(id=path.stem, label=config.rule, seed=config.seed, config=config, checkpoint=path,
                   axes={"rule": config.rule})


def _from_spec(path: Path, store: Path | None) -> list[Network]:
    from .inspection import study_records
    from .runner import model_dir
    from .spec import default_store_path, load_spec

    spec = load_spec(path)
    store_path = store if store is not None else default_store_path(spec.path)
    if not Path(store_path).exists():
        raise ConfigError(f"study {spec.name!r} has no run store at {str(store_path)!r}; run `beyondbp study run {path}` first")
    records = study_records(spec, store_path)
    done = [r for r in records if r["status"] == "done"]
    models = model_dir(store_path)
    found = [r for r in done if (models / f"{r['id']}.pt").is_file()]
    if not found:
        raise ConfigError(
            f"study {spec.name!r} has {len(done)} finished run{'s' if len(done) != 1 else ''} but no saved model; set keep_models = true in its "
            "[execution] table and run it into a new store (`beyondbp study run SPEC --store NEW.db`)"
        )
    if len(found) < len(spec.runs()):
        missing = len(spec.runs()) - len(found)
        raise ConfigError(
            f"{missing} of the {len(spec.runs())} runs of study {spec.name!r} {'has' if missing == 1 else 'have'} no saved model (not run, failed, "
            f"diverged, or run without keep_models); finish {'it' if missing == 1 else 'them'} with `beyondbp study run`, or analyse checkpoint "
            f"files from {str(models)!r} directly"
        )
    out = []
    for r in found:
        config = RunConfig(**r["config"])
        out.append(Network(id=r["id"], label=r["label"], seed=config.seed, config=config,
                           checkpoint=models / f"{r['id']}.pt", axes={**r["axes"], "rule": r["label"]}))
    return out


def _group_value(net: Network, axis: str) -> Any:
    if axis in net.axes:
        return net.axes[axis]
    return getattr(net.config, axis)


def _group_text(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def group_networks(networks: Sequence[Network], group_by: Sequence[str] | None = None) -> list[Network]:
    """The networks with their ``label`` (their class) set from their values on ``group_by``
    (default ``["rule"]``: the rule label); each axis is ``rule``, a study axis or a run setting.
    Refuses (``ConfigError``, one sentence) an unknown axis, ``seed`` or an axis named twice;
    :func:`check_groups` (run by :func:`analyze_networks` before any network is loaded) refuses a grouping
    that leaves too few networks per group."""
    axes = list(group_by) if group_by else ["rule"]
    known = {"rule"} | {a for net in networks for a in net.axes} | set(RunConfig.model_fields)
    for axis in axes:
        if axis == "seed":
            raise ConfigError("networks cannot be grouped by seed: seeds are what the identification bootstrap resamples; "
                              "group by rule or other axes")
        if axis not in known:
            study_axes = sorted({a for net in networks for a in net.axes} - {"rule", "seed"})
            raise ConfigError(f"unknown grouping axis {axis!r}; group by rule"
                              + (f", a study axis ({', '.join(study_axes)})" if study_axes else "")
                              + " or a run setting (lr, batch_size, ...)")
        if axes.count(axis) > 1:
            raise ConfigError(f"grouping axis {axis!r} is named twice; name each once")
    out = []
    for net in networks:
        if axes == ["rule"]:
            label = str(net.axes.get("rule", net.config.rule))
        else:
            parts = []
            for axis in axes:
                value = _group_value(net, axis)
                parts.append(str(value) if axis == "rule" else f"{axis}={_group_text(value)}")
            label = ", ".join(parts)
        out.append(Network(id=net.id, label=label, seed=net.seed, config=net.config, checkpoint=net.checkpoint,
                           axes=dict(net.axes)))
    return out


def check_groups(networks: Sequence[Network], group_by: Sequence[str] | None = None) -> None:
    """Refuse (``ConfigError``, one sentence) a grouping of ``networks`` (their labels, by
    ``group_by``) that identification cannot use: a group with fewer than two networks or two
    seeds (the bootstrap resamples seeds), or a single group."""
    by = ", ".join(group_by) if group_by else "rule"
    members: dict[str, list[Network]] = {}
    for net in networks:
        members.setdefault(net.label, []).append(net)
    for label, nets in members.items():
        seeds = {n.seed for n in nets}
        if len(nets) < 2 or len(seeds) < 2:
            raise ConfigError(
                f"identification needs at least two seeds in every group, but grouping the {len(networks)} networks by "
                f"{by} leaves {label!r} with {len(nets)} network(s) from {len(seeds)} seed(s); train more seeds, "
                "group by fewer axes (--group-by), or leave it out"
            )
    if len(members) < 2:
        raise ConfigError(f"grouping the {len(networks)} networks by {by} puts them all in one group ({next(iter(members))!r}); "
                          "identification needs at least 2 groups, so group by an axis that differs between them")


def find_networks(sources: Sequence[str | Path], store: str | Path | None = None,
                  group_by: Sequence[str] | None = None) -> list[Network]:
    """The trained networks named by ``sources`` (see the module docstring), classed by
    :func:`group_networks` (``group_by``; default: the rule label); ``store`` replaces a spec's
    default run store."""
    if not sources:
        raise ConfigError("name at least one source of trained networks: a study spec, a folder of checkpoints or checkpoint files")
    specs = [Path(s) for s in sources if Path(s).suffix == ".toml"]
    if store is not None and len(specs) != 1:
        raise ConfigError("--store names the run store of one study spec; give exactly one .toml source with it")
    networks: list[Network] = []
    for source in map(Path, sources):
        if source.suffix == ".toml":
            networks.extend(_from_spec(source, None if store is None else Path(store)))
        elif source.is_dir():
            files = sorted(p for p in source.glob("*.pt") if p.is_file())
            if not files:
                raise ConfigError(f"folder {str(source)!r} holds no checkpoint (*.pt) files")
            networks.extend(_from_checkpoint(p) for p in files)
        elif source.is_file():
            networks.append(_from_checkpoint(source))
        else:
            raise ConfigError(f"{str(source)!r} does not exist; give a study spec (.toml), a folder of checkpoints or checkpoint files")
    seen: dict[str, Path] = {}
    for net in networks:
        if net.id in seen:
            raise ConfigError(f"network {net.id!r} is named twice ({str(seen[net.id])!r} and {str(net.checkpoint)!r})")
        seen[net.id] = net.checkpoint
    return group_networks(networks, group_by)


# -- loading and responses ---------------------------------------------------------------------
@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave torch's, numpy's and ``random``'s global state exactly as found."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _probe_key(config: RunConfig) -> tuple[Any, ...]:
    return (config.data, repr(sorted(config.data_options.items())), config.n_train, config.n_test)


def load_network(net: Network, dataset: Any) -> Any:
    """The network's learner (its model in eval mode on the CPU) with the checkpoint's weights
    and rule state. Seeds the global RNG while building: call it inside :func:`preserved_rng`."""
    config = net.config.model_copy(update={"device": "cpu", "checkpoint": None, "state": None, "init_from": None})
    try:
        setup = prepare(config, dataset)
        ckpt.load(ckpt.read(net.checkpoint), setup.model, setup.learner)
    except (CheckpointError, ConfigError) as exc:
        raise ConfigError(f"network {net.id!r} cannot be rebuilt from {str(net.checkpoint)!r}: {exc}") from None
    setup.model.eval()
    return setup.learner


def _activation_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    outputs: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for m in model.modules() if isinstance(m, ACTIVATION_TYPES)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def layer_responses(learner: Any, x: Tensor, dropout: bool = False) -> list[Tensor]:
    """The hidden layers' responses to ``x`` (see the module docstring), each ``(N, features)``,
    float64. The model runs in eval mode (``dropout=True``: its dropout modules in train mode),
    without gradients; its modes are restored afterwards."""
    model = learner.model
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        if dropout:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        with torch.no_grad():
            own = learner.hidden_responses(x)
            outs = own if own is not None else _activation_outputs(model, x)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return [o.reshape(o.shape[0], -1).double() for o in outs]


def _check_noise(noise: str, noise_level: float, repeats: int) -> None:
    if noise not in NOISES:
        raise ConfigError(f"unknown noise {noise!r}; use one of {', '.join(NOISES)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ConfigError(f"repeats must be a whole number of at least 2 (noisy passes per stimulus), got {repeats!r}")
    if noise == "input" and not (isinstance(noise_level, (int, float)) and np.isfinite(noise_level) and noise_level > 0):
        raise ConfigError(f"noise_level must be a finite number greater than 0 (input noise in probe standard deviations), got {noise_level!r}")


def _noisy(learner: Any, x: Tensor, noise: str, repeats: int, draws: list[Tensor] | None, seed: int) -> list[np.ndarray]:
    """``(repeats, N, features)`` per layer: input noise ``draws`` added to ``x``, or the
    model's dropout on (the same masks for every network of one shape: the generator is seeded)."""
    if noise == "dropout":
        if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in learner.model.modules()):
            raise ConfigError("noise 'dropout' needs models with dropout (e.g. model option dropout=0.1); use noise 'input'")
        torch.manual_seed(seed)  # the caller holds preserved_rng
        passes = [layer_responses(learner, x, dropout=True) for _ in range(repeats)]
    else:
        passes = [layer_responses(learner, x + d) for d in draws or []]
    return [np.stack([p[k].numpy() for p in passes]) for k in range(len(passes[0]))]


def _snr_batches(dataset: Any, batch_size: int, n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(dataset.x_train))
    return [(dataset.x_train[idx], dataset.y_train[idx])
            for idx in (torch.randperm(len(dataset.x_train), generator=g)[:size] for _ in range(n))]


def _measure_options(name: str, names: Sequence[str]) -> dict[str, Any]:
    """``stochastic_mean`` on the stimuli ``stochastic`` uses, so that the pair differs only in α."""
    from ..analysis import representations as reps

    if name == "stochastic_mean":
        return {"max_stimuli": reps.MEASURES["stochastic"].defaults.get("max_stimuli")}
    return {}


def _snr_by_label(snr: dict[str, Any], nets: Sequence[Network]) -> dict[str, Any]:
    """Per class and layer, the median over its networks (seeds) of the rule's SNR, backprop's
    SNR and their ratio (medians: an SNR can be inf when a layer's update has no noise)."""
    out: dict[str, Any] = {}
    for label in sorted({n.label for n in nets}):
        rows = [snr[n.id] for n in nets if n.label == label and n.id in snr]
        if not rows:
            continue
        layers: dict[str, Any] = {}
        for layer in rows[0]["layers"]:
            values = [r["layers"][layer] for r in rows if layer in r["layers"]]
            layers[layer] = {k: float(np.median([v[k] for v in values])) for k in ("rule", "backprop", "ratio")}
        out[label] = {"layers": layers, "batches": rows[0]["batches"], "batch_size": rows[0]["batch_size"],
                      "networks": len(rows), "summary": "median over seeds"}
    return out


# -- the analysis ------------------------------------------------------------------------------
def _check_networks(networks: Sequence[Network], group_by: Sequence[str] | None = None) -> None:
    if len(networks) < 2:
        raise ConfigError(f"comparing representations needs at least two networks, got {len(networks)}")
    first = networks[0]
    for net in networks[1:]:
        if _probe_key(net.config) != _probe_key(first.config):
            raise ConfigError(
                f"networks {first.id!r} and {net.id!r} were trained on different data ({first.config.data} "
                f"{dict(first.config.data_options)} vs {net.config.data} {dict(net.config.data_options)}); "
                "representations are compared on one probe set, so every network must share its data"
            )
    check_groups(networks, group_by)
    if first.config.data in ("shakespeare-char", "text"):
        raise ConfigError("analyze compares classifiers' hidden layers; language models are not supported")


def analyze_networks(
    networks: Sequence[Network],
    *,
    stimuli: int = 1000,
    repeats: int = 10,
    noise: str = "input",
    noise_level: float = 0.1,
    measures: Sequence[str] | None = None,
    snr_batches: int = 8,
    bootstrap: int = 1000,
    seed: int = 0,
    title: str = "Representations",
    progress: Progress | None = None,
    group_by: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every measure between every pair of ``networks`` per hidden layer, the identification
    statistics and gradient SNRs: the ``result`` dict that
    :func:`beyondbp.reporting.similarity.write_outputs` writes. The networks' classes are
    their ``label``s (set by :func:`group_networks`); ``group_by`` only records, in the
    result's settings, which axes those labels came from (default: rule)."""
    from ..analysis import identification as ident
    from ..analysis import representations as reps
    from ..analysis.gradients import gradient_snr

    emit = progress or (lambda event, info: None)
    names = list(measures) if measures is not None else list(reps.MEASURES)
    unknown = [m for m in names if m not in reps.MEASURES]
    if unknown or not names:
        raise ConfigError(f"unknown measure {unknown[0]!r}; measures are: {', '.join(reps.MEASURES)}" if unknown
                          else "name at least one measure")
    _check_noise(noise, noise_level, repeats)
    if isinstance(stimuli, bool) or not isinstance(stimuli, int) or stimuli < 10:
        raise ConfigError(f"stimuli must be a whole number of at least 10, got {stimuli!r}")
    if isinstance(snr_batches, bool) or not isinstance(snr_batches, int) or (snr_batches != 0 and snr_batches < 2):
        raise ConfigError(f"snr_batches must be 0 (no gradient SNR) or a whole number of at least 2, got {snr_batches!r}")
    _check_networks(networks, group_by)
    order = sorted(range(len(networks)), key=lambda i: (networks[i].label, networks[i].seed, networks[i].id))
    nets = [networks[i] for i in order]
    stochastic = any(reps.MEASURES[m].stochastic for m in names)

    with preserved_rng():
        dataset = load_dataset(nets[0].config.model_copy(update={"device": "cpu"}))
        n_test = len(dataset.x_test)
        if stimuli > n_test:
            raise ConfigError(f"stimuli ({stimuli}) is more than the {n_test} test samples of {dataset.name}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n_test, generator=g)[:stimuli]
        x = dataset.x_test[idx].float()
        draws = None
        if stochastic and noise == "input":
            sd = float(x.std())
            draws = [torch.randn(x.shape, generator=g) * (noise_level * sd) for _ in range(repeats)]
        det: list[list[np.ndarray]] = []
        noisy: list[list[np.ndarray]] = []
        snr: dict[str, Any] = {}
        for i, net in enumerate(nets):
            emit("network", {"index": i, "total": len(nets), "id": net.id, "label": net.label, "seed": net.seed})
            learner = load_network(net, dataset)
            layers = [r.numpy() for r in layer_responses(learner, x)]
            if det and len(layers) != len(det[0]):
                raise ConfigError(
                    f"network {net.id!r} has {len(layers)} hidden layers but {nets[0].id!r} has {len(det[0])}; "
                    "layer-wise comparison needs networks of equal depth"
                )
            if not layers:
                raise ConfigError(f"network {net.id!r} has no hidden layer (no activation in its forward pass)")
            bad = [k for k, r in enumerate(layers) if not np.isfinite(r).all()]
            if bad:
                raise ConfigError(
                    f"network {net.id!r} ({net.label}, seed {net.seed}) gives non-finite responses in hidden layer "
                    f"{bad[0] + 1} (a diverged run?); leave it out"
                )
            det.append(layers)
            if stochastic:
                noisy.append(_noisy(learner, x, noise, repeats, draws, seed))
            if snr_batches:
                batches = _snr_batches(dataset, net.config.batch_size, snr_batches, seed + 1)
                snr[net.id] = gradient_snr(learner, batches)
        layer_names = [f"layer{k + 1}" for k in range(len(det[0]))]
        labels = [n.label for n in nets]
        groups = [n.seed for n in nets]
        distances: dict[str, dict[str, Any]] = {}
        identification: dict[str, dict[str, ident.Identification]] = {}
        for m in names:
            distances[m], identification[m] = {}, {}
            for k, layer in enumerate(layer_names):
                emit("measure", {"measure": m, "layer": layer})
                inputs = [noisy[i][k] if reps.MEASURES[m].stochastic else det[i][k] for i in range(len(nets))]
                d = np.asarray(reps.distance_matrix(m, inputs, **_measure_options(m, names)), dtype=float)
                distances[m][layer] = d
                identification[m][layer] = ident.identify(d, labels, groups, n_boot=bootstrap, seed=seed)
    pairs = []
    for s_name, d_name in STOCHASTIC_PAIRS:
        if s_name in identification and d_name in identification:
            for layer in layer_names:
                s, d = identification[s_name][layer], identification[d_name][layer]
                pairs.append({"layer": layer, "stochastic": s_name, "deterministic": d_name,
                              "nn": (s.nn, d.nn), "reference": (s.reference, d.reference)})
    return {
        "title": title,
        "networks": [{"id": n.id, "rule": n.label, "seed": n.seed, "label": f"{n.label} s{n.seed}",
                      "checkpoint": str(n.checkpoint)} for n in nets],
        "layers": layer_names,
        "measures": {m: {"description": reps.MEASURES[m].description, "symmetric": reps.MEASURES[m].symmetric}
                     for m in names},
        "distances": distances,
        "identification": identification,
        "stochastic_vs_deterministic": pairs,
        "gradient_snr": _snr_by_label(snr, nets),
        "gradient_snr_networks": snr,
        "settings": {"stimuli": stimuli, "repeats": repeats, "noise": noise, "noise_level": noise_level,
                     "snr_batches": snr_batches, "bootstrap": bootstrap, "seed": seed, "data": nets[0].config.data,
                     "group_by": list(group_by) if group_by else ["rule"],
                     "data_options": dict(nets[0].config.data_options)},
    }
