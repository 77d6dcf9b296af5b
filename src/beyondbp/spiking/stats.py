"""Spike statistics of a model's spiking layers over a data set, measured without side effects."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .neurons import SpikingNeuron

__all__ = ["spike_statistics", "spiking_layers"]


def spiking_layers(model: nn.Module) -> dict[str, SpikingNeuron]:
    """The model's spiking neuron layers by module path, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}


def _batches(data: Any, batch_size: int) -> Iterable[Tensor]:
    if isinstance(data, Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def spike_statistics(model: nn.Module, data: Any, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Per spiking layer: ``rate``, the mean firing rate (spikes per neuron per time step, over all
    samples and steps), and ``silent``, the fraction of the layer's neurons that never spiked on
    any sample at any step. A neuron is one unit of the layer's output (for a convolutional layer,
    one channel at one position).

    ``data`` is a tensor of inputs (run in batches of ``batch_size``) or an iterable of input
    tensors or ``(inputs, targets)`` pairs (a DataLoader). The model runs in eval mode without
    gradients; afterwards every module's train/eval flag and the global torch RNG (which a rate
    encoder draws from) are as they were, and no hook is left behind. Returns ``{}`` for a model
    without spiking layers (without running it).
    """
    layers = spiking_layers(model)
    if not layers:
        return {}
    spikes: dict[str, float] = {name: 0.0 for name in layers}
    slots: dict[str, int] = {name: 0 for name in layers}
    fired: dict[str, Tensor | None] = {name: None for name in layers}

    def recorder(name: str, layer: SpikingNeuron):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            seq = output.detach().reshape(layer.time_steps, -1, *output.shape[1:])
            per_neuron = seq.reshape(-1, *output.shape[1:]).sum(0)  # spikes of each neuron
            spikes[name] += float(per_neuron.sum())
            slots[name] += seq.numel()
            any_spike = per_neuron > 0
            fired[name] = any_spike if fired[name] is None else fired[name] | any_spike

        return hook

    modes = [(m, m.training) for m in model.modules()]
    devices = sorted({t.device.index or 0 for t in [*model.parameters(), *model.buffers()] if t.is_cuda})
    handles = [layer.register_forward_hook(recorder(name, layer)) for name, layer in layers.items()]
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            for x in _batches(data, batch_size):
                model(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    out: dict[str, dict[str, float]] = {}
    for name in layers:
        mask = fired[name]
        if mask is None:  # no data
            out[name] = {"rate": float("nan"), "silent": float("nan")}
            continue
        out[name] = {"rate": spikes[name] / max(slots[name], 1), "silent": int((~mask).sum()) / mask.numel()}
    return out
