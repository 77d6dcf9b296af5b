"""Small vision data sets: MNIST, Fashion-MNIST (IDX files), MNIST-1D (generated), digits.

Nothing here downloads anything.

* ``mnist`` / ``fashion-mnist`` are read from the four standard IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``; each plain or gzip-compressed with a ``.gz`` suffix; the
  ``train-images.idx3-ubyte`` spelling is accepted too). Fashion-MNIST defaults to
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``); MNIST has no
  default location and needs ``data_dir``. Images become float32 ``(N, 1, 28, 28)`` in
  ``[0, 1]``; with ``normalize=True`` (the default) they are then standardised with the single
  pixel mean and standard deviation of the *training* images (28x28, before any padding), the
  same statistics applied to the test images. ``pad_to_32=True`` adds a 2-pixel border of
  background (raw value 0, i.e. ``-mean/std`` after normalisation, as torchvision's
  ``Pad(2) -> ToTensor -> Normalize`` would give) so images are 32x32, the input size of the
  classic LeNet-5 protocol.
* ``mnist1d`` is generated locally with the ``mnist1d`` package's own generator
  (``mnist1d.data.make_dataset`` with ``get_dataset_args()`` defaults: 5000 samples, 80/20
  split -> 4000 train / 1000 test, length 40, seed 42). The generator seeds and draws from
  numpy's *global* RNG; beyondbp saves and restores that state so loading the data does not
  disturb the caller's random streams. Results are cached in-process and, unless
  ``cache=False``, on disk as ``.npz`` under ``$BEYONDBP_CACHE`` (default
  ``~/.cache/beyondbp``), keyed by a hash of the generator arguments and package version; an
  unreadable cache file is regenerated and overwritten. The package standardises the whole set
  (train and test together) to mean 0 / std 1; beyondbp keeps that as is.
* ``digits`` is scikit-learn's bundled 8x8 digits (1797 samples, no download), pixels divided
  by 16 into ``[0, 1]``, shaped ``(N, 1, 8, 8)``. The split is fixed and stratified: a
  permutation from ``numpy.random.default_rng(0)`` orders the samples, and each class gives its
  share (largest-remainder rounding) of the 360 test samples from the front of that order; the
  other 1437 are the training set. Both splits keep the permuted order, so ``subset`` takes a
  class-mixed prefix.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import random
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from beyondbp.data.dataset import Dataset, PathOption
from beyondbp.errors import ConfigError, DataError
from beyondbp.options import NoOptions, Options, opt, parse

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "IDX_FILES",
    "DigitsOptions",
    "IdxOptions",
    "Mnist1dOptions",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "load_digits",
]

log = logging.getLogger(__name__)

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

#: Split -> (images file, labels file), without a ``.gz`` suffix.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# IDX element type codes (third byte of the magic number).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_HINTS = {
    "fashion-mnist": (
        "install the Debian package with `apt-get install dataset-fashion-mnist` (it puts the files in "
        f"{FASHION_MNIST_DEFAULT_DIR}) or pass --data-dir pointing at a folder holding the four "
        "Fashion-MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz)"
    ),
    "mnist": (
        "pass --data-dir (data_dir=...) pointing at a folder holding the four MNIST IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, plain or .gz)"
    ),
}
_GENERIC_HINT = "check that the file is a complete, uncorrupted IDX file"


# --------------------------------------------------------------------------- IDX parsing
def _read_bytes(path: Path, hint: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path} ({exc.strerror or exc}); {hint}.") from exc
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a damaged or truncated gzip file ({exc}); {hint}.") from exc
    return raw


def read_idx(path: str | os.PathLike, expected_magic: int | None = None, *, hint: str = _GENERIC_HINT) -> np.ndarray:
    """Parse one IDX file (plain or gzip) into a numpy array.

    The IDX header is a big-endian 32-bit magic number ``0x0000TTDD`` (``TT`` the element type,
    ``0x08`` = unsigned byte; ``DD`` the number of dimensions), then one big-endian 32-bit size
    per dimension, then the data in C order. ``expected_magic`` (e.g. ``0x00000803`` for image
    files, ``0x00000801`` for label files) is checked when given. The data must be exactly as
    long as the header declares. Any problem raises :class:`DataError` naming the file and
    ending with ``hint`` (how to get a good copy).
    """
    path = Path(path)
    raw = _read_bytes(path, hint)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: it holds {len(raw)} bytes, fewer than an IDX header; {hint}.")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path} has magic number 0x{magic:08x} but an IDX "
            f"{'image' if expected_magic == IDX_IMAGES_MAGIC else 'label' if expected_magic == IDX_LABELS_MAGIC else ''}"
            f" file must start with 0x{expected_magic:08x}; {hint}."
        )
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} has magic number 0x{magic:08x}, which is not a valid IDX header; {hint}.")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated inside its IDX header ({len(raw)} of {header_len} bytes); {hint}.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got < expected:
        raise DataError(
            f"{path} is truncated: its header declares shape {shape} ({expected} data bytes) but only "
            f"{got} bytes follow; {hint}."
        )
    if got > expected:
        raise DataError(
            f"{path} has {got - expected} bytes beyond the {expected} its header (shape {shape}) declares, "
            f"so the header counts are wrong; {hint}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int, expected_magic: int, hint: str) -> np.ndarray:
    array = read_idx(path, expected_magic, hint=hint)
    array.flags.writeable = False
    return array


def _find_idx(directory: Path, stem: str, hint: str) -> Path:
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = directory / candidate
        if path.is_file():
            return path
    raise DataError(f"No file {stem} (or {stem}.gz) in {directory}; {hint}.")


def _load_idx_split(directory: Path, split: str, hint: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = IDX_FILES[split]
    arrays = []
    paths = []
    for stem, magic in ((images_stem, IDX_IMAGES_MAGIC), (labels_stem, IDX_LABELS_MAGIC)):
        path = _find_idx(directory, stem, hint)
        try:
            stat = path.stat()
        except OSError as exc:  # pragma: no cover - race with deletion
            raise DataError(f"Cannot read {path} ({exc.strerror or exc}); {hint}.") from exc
        arrays.append(_read_idx_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, magic, hint))
        paths.append(path)
    images, labels = arrays
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]} holds images of shape {images.shape[1:]}, but 28x28 images are required; {hint}.")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds {labels.shape[0]} labels; "
            f"the counts must match, so {hint}."
        )
    if images.shape[0] == 0:
        raise DataError(f"{paths[0]} holds no images; {hint}.")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(
            f"{paths[1]} holds label {int(labels.max())}, outside the allowed range 0..{num_classes - 1}; {hint}."
        )
    return images, labels


def _resolve_dir(data_dir: str | os.PathLike | None, default: str | None, hint: str, title: str) -> Path:
    if data_dir is None:
        if default is None:
            raise DataError(f"{title} has no default location on this machine; {hint}.")
        directory = Path(default)
    else:
        directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"The {title} data directory {directory} does not exist; {hint}.")
    return directory


class IdxOptions(Options):
    """Options of ``mnist`` and ``fashion-mnist``."""

    normalize: bool = opt(True, "standardise the pixels with the training images' mean and std")
    pad_to_32: bool = opt(False, "add a 2-pixel background border so images are 32x32 (LeNet-5 input)")


def _load_idx_dataset(
    name: str,
    title: str,
    data_dir: str | os.PathLike | None,
    default_dir: str | None,
    opts: dict[str, Any],
) -> Dataset:
    o = parse(IdxOptions, opts, f"data set {name!r}")
    normalize, pad_to_32 = o.normalize, o.pad_to_32
    hint = _HINTS[name]
    directory = _resolve_dir(data_dir, default_dir, hint, title)
    raw = {split: _load_idx_split(directory, split, hint, 10) for split in ("train", "test")}

    xs: dict[str, torch.Tensor] = {}
    ys: dict[str, torch.Tensor] = {}
    for split, (images, labels) in raw.items():
        x = torch.from_numpy(images.astype(np.float32)).div_(255.0).unsqueeze(1)
        xs[split] = x
        ys[split] = torch.from_numpy(labels.astype(np.int64))

    meta: dict[str, Any] = {"source": str(directory), "normalize": normalize, "pad_to_32": pad_to_32}
    mean = std = None
    if normalize:
        mean = float(xs["train"].double().mean())
        std = float(xs["train"].double().std(correction=0))
        meta.update(mean=mean, std=std)
    if pad_to_32:
        xs = {split: torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.0) for split, x in xs.items()}
    if normalize:
        for x in xs.values():
            x.sub_(mean).div_(std)

    side = 32 if pad_to_32 else 28
    prep = ["pixels scaled to [0,1]"]
    if pad_to_32:
        prep.append("zero-padded to 32x32")
    if normalize:
        prep.append(f"standardised with train mean {mean:.4f} / std {std:.4f}")
    description = (
        f"{title}: {side}x{side} grayscale images, 10 classes, {xs['train'].shape[0]} train / "
        f"{xs['test'].shape[0]} test, {', '.join(prep)}, read from {directory}"
    )
    return Dataset(
        name=name,
        x_train=xs["train"],
        y_train=ys["train"],
        x_test=xs["test"],
        y_test=ys["test"],
        input_shape=(1, side, side),
        num_classes=10,
        description=description,
        meta=meta,
    )


def load_fashion_mnist(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """Fashion-MNIST from IDX files: 60000 train / 10000 test, ``(N, 1, 28, 28)``, 10 classes.

    ``data_dir`` defaults to ``/usr/share/datasets/fashion-mnist``. Options: :class:`IdxOptions`
    (``normalize`` standardises with the training set's pixel mean/std; ``pad_to_32`` pads to
    ``(N, 1, 32, 32)``).
    """
    return _load_idx_dataset("fashion-mnist", "Fashion-MNIST", data_dir, FASHION_MNIST_DEFAULT_DIR, opts)


def load_mnist(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """MNIST from the four IDX files in ``data_dir`` (required): ``(N, 1, 28, 28)``, 10 classes.

    Options as for :func:`load_fashion_mnist` (:class:`IdxOptions`).
    """
    return _load_idx_dataset("mnist", "MNIST", data_dir, None, opts)


# --------------------------------------------------------------------------- MNIST-1D
_MNIST1D_CACHE_FORMAT = 1
_MNIST1D_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BEYONDBP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "beyondbp"


def _mnist1d_version() -> str:
    try:
        from importlib.metadata import version

        return version("mnist1d")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def _mnist1d_expected_sizes(args: dict[str, Any]) -> tuple[int, int]:
    total = (args["num_samples"] // 10) * 10
    n_train = int(total * args["train_split"])
    return n_train, total - n_train


def _generate_mnist1d(overrides: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run the package generator with its defaults updated by ``overrides``; returns (arrays, args)."""
    try:  # imported lazily: mnist1d pulls in matplotlib and scipy.interpolate (~0.6 s)
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise DataError("The mnist1d package is not installed; install it with `pip install mnist1d`.") from exc
    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only used by the package's downloader, which beyondbp never calls
    args.update(overrides)
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        generated = make_dataset(SimpleNamespace(**args))  # never get_dataset: that one may download
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x_train": np.ascontiguousarray(generated["x"], dtype=np.float32),
        "y_train": np.ascontiguousarray(generated["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(generated["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(generated["y_test"], dtype=np.int64),
    }
    return arrays, args


def _read_mnist1d_cache(
    path: Path, overrides: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached (arrays, args), or None when the file is absent, unreadable or does not fit."""
    if not path.is_file():
        return None
    n_train, n_test = _mnist1d_expected_sizes(overrides)
    length = overrides["final_seq_length"]
    expected = {
        "x_train": ((n_train, length), np.float32),
        "y_train": ((n_train,), np.int64),
        "x_test": ((n_test, length), np.float32),
        "y_test": ((n_test,), np.int64),
    }
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in _MNIST1D_KEYS}
            args = json.loads(str(archive["args_json"]))
        if not isinstance(args, dict) or any(args.get(k) != v for k, v in overrides.items()):
            raise ValueError("stored generator arguments do not match")
        for key, (shape, dtype) in expected.items():
            if arrays[key].shape != shape or arrays[key].dtype != dtype:
                raise ValueError(f"{key} has shape {arrays[key].shape} and dtype {arrays[key].dtype}")
    except Exception as exc:  # corrupt zip, truncated member, missing key, bad JSON, ...: regenerate
        log.warning("Ignoring unusable MNIST-1D cache file %s (%s); regenerating it.", path, exc)
        return None
    return arrays, args


def _write_mnist1d_cache(path: Path, arrays: dict[str, np.ndarray], args: dict[str, Any]) -> None:
    from beyondbp.files import atomic_write_bytes

    try:  # atomic: readers never see a half-written file
        atomic_write_bytes(path, lambda handle: np.savez(handle, args_json=np.array(json.dumps(args, sort_keys=True)), **arrays))
    except OSError as exc:
        log.info("Could not write MNIST-1D cache file %s (%s); continuing without it.", path, exc)


def _mnist1d_cache_path(cache_root: str, overrides: dict[str, Any]) -> Path:
    # The generator's output is fully determined by the overridden arguments plus the package
    # version (which fixes every other default), so that is what the key hashes.
    key = json.dumps(
        {"overrides": overrides, "mnist1d": _mnist1d_version(), "format": _MNIST1D_CACHE_FORMAT}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_root) / "mnist1d" / f"mnist1d-{digest}.npz"


def _mnist1d_arrays_uncached(
    override_items: tuple, cache_root: str | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    overrides = dict(override_items)
    found = None
    path = None
    if cache_root is not None:
        path = _mnist1d_cache_path(cache_root, overrides)
        found = _read_mnist1d_cache(path, overrides)
    if found is None:
        found = _generate_mnist1d(overrides)
        if path is not None:
            _write_mnist1d_cache(path, *found)
    arrays, args = found
    for array in arrays.values():
        array.flags.writeable = False
    return arrays, args


_mnist1d_arrays_cached = functools.lru_cache(maxsize=8)(_mnist1d_arrays_uncached)


class Mnist1dOptions(Options):
    """Options of ``mnist1d`` (the first five are passed to the package's generator)."""

    num_samples: int = opt(5000, "samples generated in all, rounded down to a multiple of 10", ge=20)
    train_split: float = opt(0.8, "fraction of the samples in the training split", gt=0, lt=1)
    length: int = opt(40, "length of each 1-D signal (the generator's final_seq_length)", ge=2)
    seed: int = opt(42, "seed of the generator", ge=0, lt=2**32)
    shuffle_seq: bool = opt(False, "shuffle the positions within each signal (the generator's shuffle_seq)")
    cache: bool = opt(True, "reuse generated data from memory and from the on-disk cache", execution=True)
    cache_dir: PathOption | None = opt(
        None,
        "directory of the on-disk cache; None: $BEYONDBP_CACHE or ~/.cache/beyondbp",
        accepts="a directory path (a non-blank string) or null (None)",
        execution=True,
    )


def load_mnist1d(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """MNIST-1D generated locally: by default 4000 train / 1000 test, ``(N, 40)`` float32, 10 classes.

    Options: :class:`Mnist1dOptions`. ``num_samples`` (rounded down to a multiple of 10: the generator makes the same number per
    class), ``train_split``, ``length`` (the package's ``final_seq_length``), ``seed`` and
    ``shuffle_seq`` are passed to ``mnist1d.data.make_dataset``; every other generator argument
    keeps the package default (``mnist1d.data.get_dataset_args()``). ``cache=False`` skips both
    the in-process and the on-disk cache (and always regenerates); ``cache_dir`` overrides
    ``$BEYONDBP_CACHE`` / ``~/.cache/beyondbp``. ``data_dir`` is accepted for a uniform
    interface and ignored.
    """
    del data_dir  # generated, not read
    o = parse(Mnist1dOptions, opts, "data set 'mnist1d'")
    num_samples, train_split, length, seed = o.num_samples, o.train_split, o.length, o.seed
    overrides = {
        "num_samples": num_samples,
        "train_split": float(train_split),
        "final_seq_length": length,
        "seed": seed,
        "shuffle_seq": o.shuffle_seq,
    }
    n_train, n_test = _mnist1d_expected_sizes(overrides)
    if n_train < 1 or n_test < 1:
        raise ConfigError(
            f"num_samples={num_samples} with train_split={train_split} leaves an empty split; "
            "raise num_samples or move train_split away from 0 and 1."
        )
    override_items = tuple(sorted(overrides.items()))
    if o.cache:
        arrays, args = _mnist1d_arrays_cached(override_items, str(_cache_root(o.cache_dir)))
    else:
        arrays, args = _mnist1d_arrays_uncached(override_items, None)

    tensors = {key: torch.from_numpy(np.array(arrays[key])) for key in _MNIST1D_KEYS}  # np.array copies
    version = _mnist1d_version()
    return Dataset(
        name="mnist1d",
        x_train=tensors["x_train"],
        y_train=tensors["y_train"],
        x_test=tensors["x_test"],
        y_test=tensors["y_test"],
        input_shape=(length,),
        num_classes=10,
        description=(
            f"MNIST-1D: 1-D signals of length {length}, 10 classes, {n_train} train / {n_test} test, "
            f"generated locally by mnist1d {version} with seed {seed}, standardised by the generator"
        ),
        meta={"generator_args": dict(args), "mnist1d_version": version},
    )


# --------------------------------------------------------------------------- digits
DIGITS_NUM_TEST = 360


def _stratified_split(labels: np.ndarray, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * num_test / len(labels)
    take = np.floor(quotas).astype(int)
    remainder = num_test - int(take.sum())
    take[np.argsort(-(quotas - take), kind="stable")[:remainder]] += 1
    in_test = np.zeros(len(labels), dtype=bool)
    for cls, n in zip(classes, take):
        members = order[labels[order] == cls]
        in_test[members[:n]] = True
    return order[~in_test[order]], order[in_test[order]]


class DigitsOptions(NoOptions):
    """``digits`` takes no options (its split is fixed)."""


def load_digits(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """scikit-learn's bundled 8x8 digits: 1437 train / 360 test, ``(N, 1, 8, 8)`` in ``[0, 1]``.

    The split is fixed (stratified by class, permutation seed 0; see the module docstring).
    It takes no options (:class:`DigitsOptions`). ``data_dir`` is accepted for a uniform
    interface and ignored.
    """
    del data_dir
    parse(DigitsOptions, opts, "data set 'digits'")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = _stratified_split(labels, DIGITS_NUM_TEST, seed=0)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    return Dataset(
        name="digits",
        x_train=x[train_idx].contiguous(),
        y_train=y[train_idx].contiguous(),
        x_test=x[test_idx].contiguous(),
        y_test=y[test_idx].contiguous(),
        input_shape=(1, 8, 8),
        num_classes=10,
        description=(
            f"digits (scikit-learn): 8x8 grayscale handwritten digits, 10 classes, {len(train_idx)} train / "
            f"{len(test_idx)} test (fixed stratified split, seed 0), pixels divided by 16 into [0,1]"
        ),
        meta={"split_seed": 0, "num_test": DIGITS_NUM_TEST},
    )
