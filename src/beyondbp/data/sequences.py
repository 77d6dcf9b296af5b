"""Sequence data sets for recurrent models: long-horizon memory tasks, generated locally.

Every sample is a sequence ``(T, channels)`` (batch first: a set's ``x`` is ``(N, T, channels)``).
Nothing is downloaded; every generated set is a pure function of its options (a seeded
``torch.Generator``, unrelated to the global RNG, which is left untouched).

``adding`` — the adding problem (Hochreiter & Schmidhuber 1997, as in Le et al. 2015 and in the
    wave-RNN authors' ``adding/utils.py``). Two channels: a value drawn from U(0, 1) at every step
    and a marker that is 1 at exactly two steps, one drawn uniformly from the first half
    ``[0, T//2)`` and one from the second half ``[T//2, T)``. The target is the sum of the two
    marked values, a float (a *regression* set: ``y`` is float32 and ``num_classes`` = 1 output;
    the loss is the mean squared error, see :func:`beyondbp.rules.base.default_loss`). Predicting
    the mean, 1, gives MSE ≈ 1/6 ≈ 0.167; the task counts as solved at a training-batch MSE ≤ 0.05.
``copy`` — the copy (memory) task in the wave-RNN authors' layout (``copy/utils.py``): a sequence
    of ``T + mem_len`` steps, one-hot over 10 symbols. The first ``mem_len`` steps hold symbols
    drawn uniformly from 1…8, then blanks (0), with the cue 9 at step ``T - 1`` (that is
    ``-(mem_len + 1)`` from the end), then ``mem_len`` blanks during which the network must
    output the remembered symbols in order. Targets: one class per step (``y`` is
    ``(N, T + mem_len)``), 0 everywhere but the last ``mem_len`` steps, which hold the symbols;
    the loss is the cross-entropy over every step (the authors' objective; their figures name
    it "MSE" and divide it once more by the batch size). A model must emit one output per step
    (``outputs="all"`` on the recurrent models). Always outputting blanks and guessing the
    symbols scores ``mem_len·ln 8 / (T + mem_len)`` (0.52 at ``T`` = 30).
``sfmnist`` / ``psfmnist`` — sequential and permuted-sequential Fashion-MNIST: each image read
    pixel by pixel in raster order, ``(N, size², 1)``; ``size=14`` averages 2×2 blocks first
    (196 steps, for CPUs). ``psfmnist`` applies one fixed permutation of the pixel positions,
    drawn from ``perm_seed``, to every training and test image. Pixels are scaled to [0, 1] and
    standardised with the training images' mean and std (``normalize``).
``fmnist-adding`` — a Fashion-MNIST analogue of SHD-Adding (Spieler et al. 2024): two images
    shown one after the other as ``size²``-channel Poisson (Bernoulli per bin) spike rasters of
    ``bins`` time bins each, ``(N, 2·bins, size²)`` of 0/1; a pixel of intensity p ∈ [0, 1]
    spikes in a bin with probability ``rate·p``. The label is the sum of the two images'
    labels, 19 classes (0…18). Pairs are drawn from the training images for the training split
    and from the test images for the test split. ``bins`` plays the role of the paper's bin size:
    more bins, a longer sequence, the same information.

Sizes are checked before anything is allocated: a set whose tensors would not fit this machine's
memory is refused with one sentence.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

import torch

from beyondbp.data.dataset import Dataset
from beyondbp.errors import ConfigError
from beyondbp.options import Options, opt, parse
from beyondbp.resources import physical_memory, show_bytes

__all__ = [
    "AddingOptions",
    "CopyOptions",
    "FmnistAddingOptions",
    "PermutedSeqFmnistOptions",
    "SeqFmnistOptions",
    "adding_batch",
    "copy_batch",
    "load_adding",
    "load_copy",
    "load_fmnist_adding",
    "load_psfmnist",
    "load_sfmnist",
    "pixel_permutation",
]

#: Pixel-sequence sizes: the full 28×28 images or 2×2-averaged 14×14 ones.
Size = Literal[28, 14]


def _generator(seed: int, salt: str) -> torch.Generator:
    """A generator for (set, split) whose stream does not depend on the global RNG."""
    digest = hashlib.sha256(f"beyondbp:data:{salt}:{int(seed)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _check_fits(name: str, n_floats: int) -> None:
    """Refuse, before allocating, a set whose float32 tensors exceed this machine's memory."""
    needed = 4 * int(n_floats)
    available = physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"data set {name!r} with these options would need {show_bytes(needed)} for its samples, more than "
            f"this machine's {show_bytes(available)} of memory; choose a shorter sequence or fewer samples."
        )


# --------------------------------------------------------------------------- adding
def adding_batch(n: int, T: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` adding-problem samples of length ``T``: inputs ``(n, T, 2)`` (value, marker) and
    float targets ``(n,)`` (the sum of the two marked values). See the module docstring."""
    if T < 2:
        raise ConfigError(f"the adding task needs T >= 2 (one marker in each half), got T={T}.")
    values = torch.rand(n, T, generator=generator)
    half = T // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, T, (n,), generator=generator)
    markers = torch.zeros(n, T)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack((values, markers), dim=-1)
    y = (values * markers).sum(dim=1)
    return x, y


class AddingOptions(Options):
    """Options of ``adding``."""

    T: int = opt(200, "sequence length (one marked value in each half)", ge=2)
    n_train: int = opt(10000, "training samples generated", ge=1)
    n_test: int = opt(1000, "test samples generated", ge=1)
    seed: int = opt(0, "seed of the generator", ge=0, lt=2**32)


def load_adding(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """The adding problem (a regression set; see the module docstring). ``data_dir`` is ignored."""
    del data_dir
    o = parse(AddingOptions, opts, "data set 'adding'")
    _check_fits("adding", (o.n_train + o.n_test) * (2 * o.T + 1))
    x_train, y_train = adding_batch(o.n_train, o.T, _generator(o.seed, "adding:train"))
    x_test, y_test = adding_batch(o.n_test, o.T, _generator(o.seed, "adding:test"))
    return Dataset(
        name="adding", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        input_shape=(o.T, 2), num_classes=1,
        description=(
            f"adding problem: sequences of length {o.T} (value, marker), target = sum of the two marked values "
            f"(regression, MSE), {o.n_train} train / {o.n_test} test, generated with seed {o.seed}"
        ),
        meta={"task": "regression", "T": o.T, "seed": o.seed, "solved_mse": 0.05},
    )


# --------------------------------------------------------------------------- copy
def copy_batch(n: int, T: int, mem_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` copy-task samples: one-hot inputs ``(n, T + mem_len, 10)`` and per-step class
    targets ``(n, T + mem_len)`` (see the module docstring for the layout)."""
    if T <= mem_len:
        raise ConfigError(f"the copy task needs T > mem_len (the cue comes after the symbols), got T={T}, mem_len={mem_len}.")
    length = T + mem_len
    symbols = torch.randint(1, 9, (n, mem_len), generator=generator)
    tokens = torch.zeros(n, length, dtype=torch.int64)
    tokens[:, :mem_len] = symbols
    tokens[:, -(mem_len + 1)] = 9
    y = torch.zeros(n, length, dtype=torch.int64)
    y[:, -mem_len:] = symbols
    x = torch.nn.functional.one_hot(tokens, 10).to(torch.float32)
    return x, y


class CopyOptions(Options):
    """Options of ``copy``."""

    T: int = opt(30, "steps before the recall phase: symbols, blanks and the cue (sequence length T + mem_len)", ge=2)
    mem_len: int = opt(10, "number of symbols to remember and recall", ge=1)
    n_train: int = opt(10000, "training samples generated", ge=1)
    n_test: int = opt(1000, "test samples generated", ge=1)
    seed: int = opt(0, "seed of the generator", ge=0, lt=2**32)


def load_copy(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """The copy task (per-step classification; see the module docstring). ``data_dir`` is ignored."""
    del data_dir
    o = parse(CopyOptions, opts, "data set 'copy'")
    if o.T <= o.mem_len:
        raise ConfigError(f"data set 'copy' needs T > mem_len (the cue comes after the symbols), got T={o.T}, mem_len={o.mem_len}.")
    length = o.T + o.mem_len
    _check_fits("copy", (o.n_train + o.n_test) * length * 13)
    x_train, y_train = copy_batch(o.n_train, o.T, o.mem_len, _generator(o.seed, "copy:train"))
    x_test, y_test = copy_batch(o.n_test, o.T, o.mem_len, _generator(o.seed, "copy:test"))
    return Dataset(
        name="copy", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        input_shape=(length, 10), num_classes=10,
        description=(
            f"copy task: {o.mem_len} symbols (1-8) to recall after a cue at step {o.T - 1}, sequences of {length} "
            f"one-hot steps, a class target per step, {o.n_train} train / {o.n_test} test, generated with seed {o.seed}"
        ),
        meta={"task": "sequence", "T": o.T, "mem_len": o.mem_len, "seed": o.seed},
    )


# --------------------------------------------------------------------------- Fashion-MNIST sequences
def _fashion_images(data_dir: str | os.PathLike | None, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Raw Fashion-MNIST pixels in [0, 1], ``(N, size, size)``, and labels, per split."""
    from beyondbp.data.vision import load_fashion_mnist

    ds = load_fashion_mnist(data_dir=data_dir, normalize=False)
    out = {}
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if size == 14:
            x = torch.nn.functional.avg_pool2d(x, 2)
        out[split] = (x[:, 0], y)
    return out


def pixel_permutation(size: int, perm_seed: int) -> torch.Tensor:
    """The fixed permutation of ``size²`` pixel positions used by ``psfmnist`` with ``perm_seed``."""
    return torch.randperm(size * size, generator=_generator(perm_seed, f"psfmnist:{size}"))


class SeqFmnistOptions(Options):
    """Options of ``sfmnist``."""

    size: Size = opt(28, "image side: 28 (784 steps) or 14 (2x2-averaged, 196 steps)")
    normalize: bool = opt(True, "standardise the pixels with the training images' mean and std")


class PermutedSeqFmnistOptions(SeqFmnistOptions):
    """Options of ``psfmnist``."""

    perm_seed: int = opt(0, "seed of the fixed pixel permutation", ge=0, lt=2**32)


def _pixel_sequences(name: str, data_dir: Any, o: SeqFmnistOptions, perm: torch.Tensor | None) -> Dataset:
    images = _fashion_images(data_dir, o.size)
    steps = o.size * o.size
    xs = {split: x.reshape(x.shape[0], steps) for split, (x, _) in images.items()}
    meta: dict[str, Any] = {"task": "classification", "size": o.size, "normalize": o.normalize}
    if o.normalize:
        mean, std = float(xs["train"].double().mean()), float(xs["train"].double().std(correction=0))
        xs = {split: (x - mean) / std for split, x in xs.items()}
        meta.update(mean=mean, std=std)
    if perm is not None:
        xs = {split: x[:, perm] for split, x in xs.items()}
        meta["perm_seed"] = getattr(o, "perm_seed", None)
    order = "a fixed permutation of the pixels" if perm is not None else "raster order"
    return Dataset(
        name=name,
        x_train=xs["train"].unsqueeze(-1).contiguous(), y_train=images["train"][1],
        x_test=xs["test"].unsqueeze(-1).contiguous(), y_test=images["test"][1],
        input_shape=(steps, 1), num_classes=10,
        description=(
            f"sequential Fashion-MNIST: {o.size}x{o.size} images read one pixel per step in {order} "
            f"({steps} steps), 10 classes{', standardised' if o.normalize else ''}"
        ),
        meta=meta,
    )


def load_sfmnist(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """Sequential Fashion-MNIST, ``(N, size², 1)`` (see the module docstring)."""
    o = parse(SeqFmnistOptions, opts, "data set 'sfmnist'")
    return _pixel_sequences("sfmnist", data_dir, o, None)


def load_psfmnist(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """Permuted-sequential Fashion-MNIST, ``(N, size², 1)`` (see the module docstring)."""
    o = parse(PermutedSeqFmnistOptions, opts, "data set 'psfmnist'")
    return _pixel_sequences("psfmnist", data_dir, o, pixel_permutation(o.size, o.perm_seed))


# --------------------------------------------------------------------------- Fashion-MNIST-Adding
class FmnistAddingOptions(Options):
    """Options of ``fmnist-adding``."""

    bins: int = opt(4, "time bins per image (the sequence has 2*bins steps)", ge=1)
    rate: float = opt(1.0, "spike probability per bin of a pixel of intensity 1", gt=0, le=1)
    size: Size = opt(28, "image side: 28 (784 channels) or 14 (2x2-averaged, 196 channels)")
    n_train: int = opt(6000, "training pairs drawn from the training images", ge=1)
    n_test: int = opt(1000, "test pairs drawn from the test images", ge=1)
    seed: int = opt(0, "seed of the pairing and of the spikes", ge=0, lt=2**32)


def _rasters(images: torch.Tensor, labels: torch.Tensor, n: int, bins: int, rate: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    count, channels = images.shape[0], images[0].numel()
    first = torch.randint(0, count, (n,), generator=generator)
    second = torch.randint(0, count, (n,), generator=generator)
    probs = images.reshape(count, channels).mul(rate)
    x = torch.empty(n, 2 * bins, channels)
    chunk = 512
    for start in range(0, n, chunk):  # drawn in chunks: no second tensor of x's size
        stop = min(n, start + chunk)
        for k, idx in enumerate((first[start:stop], second[start:stop])):
            p = probs[idx].unsqueeze(1).expand(-1, bins, -1)
            x[start:stop, k * bins:(k + 1) * bins] = (torch.rand(p.shape, generator=generator) < p).to(torch.float32)
    return x, labels[first] + labels[second]


def load_fmnist_adding(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """Fashion-MNIST-Adding: two images as Poisson spike rasters in sequence, label = sum of
    labels (19 classes), ``(N, 2·bins, size²)`` (see the module docstring)."""
    o = parse(FmnistAddingOptions, opts, "data set 'fmnist-adding'")
    _check_fits("fmnist-adding", (o.n_train + o.n_test) * 2 * o.bins * o.size * o.size)
    images = _fashion_images(data_dir, o.size)
    splits = {}
    for split, n in (("train", o.n_train), ("test", o.n_test)):
        x, y = images[split]
        splits[split] = _rasters(x, y, n, o.bins, o.rate, _generator(o.seed, f"fmnist-adding:{split}"))
    channels = o.size * o.size
    return Dataset(
        name="fmnist-adding",
        x_train=splits["train"][0], y_train=splits["train"][1],
        x_test=splits["test"][0], y_test=splits["test"][1],
        input_shape=(2 * o.bins, channels), num_classes=19,
        description=(
            f"Fashion-MNIST-Adding: two {o.size}x{o.size} images as {channels}-channel Bernoulli spike rasters of "
            f"{o.bins} bins each (spike probability {o.rate}·pixel), label = sum of the two labels (19 classes), "
            f"{o.n_train} train / {o.n_test} test pairs, seed {o.seed}"
        ),
        meta={"task": "classification", "bins": o.bins, "rate": o.rate, "size": o.size, "seed": o.seed},
    )
