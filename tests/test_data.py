"""Tests of beyondbp.data: IDX parsing, the four named sets, loaders and subsets."""

from __future__ import annotations

import gzip
import random
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp import data
from beyondbp.data import Dataset, vision
from beyondbp.errors import BeyondBPError, ConfigError, DataError

FASHION_DIR = Path(vision.FASHION_MNIST_DEFAULT_DIR)


# --------------------------------------------------------------------------- helpers
def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file; ``magic`` defaults to the proper one."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    payload = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def make_idx_dir(directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = False, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in arrays.items():
        img_name, lbl_name = vision.IDX_FILES[split]
        write_idx(directory / img_name, images, gz=gz)
        write_idx(directory / lbl_name, labels, gz=gz)
    return arrays


@pytest.fixture
def no_network(monkeypatch):
    """Make every common way of reaching the network fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during a data load")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    try:
        import requests
    except ImportError:  # pragma: no cover
        pass
    else:
        for attr in ("get", "post", "request"):
            monkeypatch.setattr(requests, attr, refuse)
        monkeypatch.setattr(requests.Session, "request", refuse)


# --------------------------------------------------------------------------- registry
def test_names():
    assert data.names() == ["adding", "copy", "digits", "fashion-mnist", "fashion-mnist-shift", "fmnist-adding", "hierarchy", "matrix-completion",
                            "mnist", "mnist1d", "psfmnist", "sfmnist", "shakespeare-char", "text"]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        data.load("cifar10")
    message = str(info.value)
    assert "cifar10" in message
    for name in data.names():
        assert name in message


def test_unknown_option_is_config_error():
    with pytest.raises(ConfigError, match="bogus"):
        data.load("digits", bogus=1)
    with pytest.raises(ConfigError, match="normalize"):
        data.load("mnist1d", normalize=True)


def test_errors_share_the_family():
    assert issubclass(DataError, BeyondBPError) and issubclass(ConfigError, BeyondBPError)


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = data.load("mnist", data_dir=tmp_path, normalize=False)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    for split in ("train", "test"):
        images, labels = arrays[split]
        x = getattr(ds, f"x_{split}")
        y = getattr(ds, f"y_{split}")
        assert torch.allclose(x[:, 0], torch.from_numpy(images.astype(np.float32) / 255.0))
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


def test_read_idx_directly(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", array)
    out = vision.read_idx(path, vision.IDX_IMAGES_MAGIC)
    assert out.shape == (2, 3, 4) and np.array_equal(out, array)
    gz_path = write_idx(tmp_path / "b-idx3-ubyte", array, gz=True)
    assert np.array_equal(vision.read_idx(gz_path), array)


def test_dotted_file_names_are_accepted(tmp_path):
    arrays = make_idx_dir(tmp_path)
    for split in ("train", "test"):
        for stem in vision.IDX_FILES[split]:
            (tmp_path / stem).rename(tmp_path / stem.replace("-idx", ".idx"))
    ds = data.load("mnist", data_dir=tmp_path, normalize=False)
    assert torch.equal(ds.y_test, torch.from_numpy(arrays["test"][1].astype(np.int64)))


def test_normalize_uses_train_statistics(tmp_path):
    arrays = make_idx_dir(tmp_path)
    ds = data.load("mnist", data_dir=tmp_path)  # normalize=True is the default
    raw_train = arrays["train"][0].astype(np.float64) / 255.0
    mean, std = raw_train.mean(), raw_train.std()
    assert ds.meta["mean"] == pytest.approx(mean) and ds.meta["std"] == pytest.approx(std)
    assert abs(float(ds.x_train.mean())) < 1e-4
    assert float(ds.x_train.std(correction=0)) == pytest.approx(1.0, abs=1e-4)
    expected_test = (arrays["test"][0].astype(np.float64) / 255.0 - mean) / std
    assert np.allclose(ds.x_test[:, 0].numpy(), expected_test, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_pad_to_32(tmp_path, normalize):
    make_idx_dir(tmp_path)
    ds = data.load("mnist", data_dir=tmp_path, pad_to_32=True, normalize=normalize)
    assert ds.x_train.shape == (20, 1, 32, 32) and ds.input_shape == (1, 32, 32)
    background = -ds.meta["mean"] / ds.meta["std"] if normalize else 0.0
    border = torch.cat([ds.x_train[..., :2, :].flatten(), ds.x_train[..., -2:, :].flatten(),
                        ds.x_train[..., :, :2].flatten(), ds.x_train[..., :, -2:].flatten()])
    assert torch.allclose(border, torch.full_like(border, background), atol=1e-5)
    plain = data.load("mnist", data_dir=tmp_path, normalize=normalize)
    assert torch.allclose(ds.x_train[..., 2:30, 2:30], plain.x_train)


def test_bad_bool_option(tmp_path):
    make_idx_dir(tmp_path)
    with pytest.raises(ConfigError, match="normalize"):
        data.load("mnist", data_dir=tmp_path, normalize="yes")


def _corrupt(directory: Path, case: str) -> str:
    """Damage one file of a valid IDX directory; return the name the error must mention."""
    images = directory / "train-images-idx3-ubyte"
    labels = directory / "train-labels-idx1-ubyte"
    if case == "missing":
        images.unlink()
        return images.name
    if case == "bad_magic":
        raw = bytearray(images.read_bytes())
        raw[:4] = (0x00000801).to_bytes(4, "big")
        images.write_bytes(bytes(raw))
        return images.name
    if case == "not_idx":
        images.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 100)
        return images.name
    if case == "truncated_data":
        images.write_bytes(images.read_bytes()[:-7])
        return images.name
    if case == "truncated_header":
        images.write_bytes(images.read_bytes()[:10])
        return images.name
    if case == "tiny":
        labels.write_bytes(b"\x00\x00")
        return labels.name
    if case == "extra_bytes":
        labels.write_bytes(labels.read_bytes() + b"\x01\x02")
        return labels.name
    if case == "wrong_count_header":
        raw = bytearray(labels.read_bytes())
        raw[4:8] = (25).to_bytes(4, "big")  # header says 25 labels, 20 follow
        labels.write_bytes(bytes(raw))
        return labels.name
    if case == "count_mismatch":
        write_idx(labels, np.zeros(19, dtype=np.uint8))
        return labels.name
    if case == "label_range":
        write_idx(labels, np.full(20, 10, dtype=np.uint8))
        return labels.name
    if case == "wrong_image_size":
        write_idx(images, np.zeros((20, 27, 28), dtype=np.uint8))
        return images.name
    raise AssertionError(case)


CORRUPTIONS = [
    "missing", "bad_magic", "not_idx", "truncated_data", "truncated_header", "tiny",
    "extra_bytes", "wrong_count_header", "count_mismatch", "label_range", "wrong_image_size",
]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_idx_raises_data_error_naming_file(tmp_path, case):
    make_idx_dir(tmp_path)
    name = _corrupt(tmp_path, case)
    with pytest.raises(DataError) as info:
        data.load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert name in message
    assert "--data-dir" in message
    assert "\n" not in message


def test_count_mismatch_names_both_files(tmp_path):
    make_idx_dir(tmp_path)
    _corrupt(tmp_path, "count_mismatch")
    with pytest.raises(DataError) as info:
        data.load("mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value) and "train-labels-idx1-ubyte" in str(info.value)


def test_corrupt_gzip_raises_data_error(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        data.load("mnist", data_dir=tmp_path)


def test_fashion_missing_files_says_how_to_install(tmp_path):
    with pytest.raises(DataError) as info:
        data.load("fashion-mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


def test_missing_data_dir_is_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", data_dir=tmp_path / "nope")


def test_mnist_without_data_dir_is_data_error():
    with pytest.raises(DataError, match="--data-dir"):
        data.load("mnist")


def test_idx_loading_does_not_touch_network(tmp_path, no_network):
    make_idx_dir(tmp_path, gz=True)
    assert data.load("MNIST", data_dir=str(tmp_path)).num_train == 20  # name is case-insensitive


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_system_location(no_network):
    ds = data.load("fashion_mnist")  # underscore spelling accepted
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 1000))
    assert ds.meta["mean"] == pytest.approx(0.2860, abs=1e-3) and ds.meta["std"] == pytest.approx(0.3530, abs=1e-3)
    assert abs(float(ds.x_train.mean())) < 1e-3


# --------------------------------------------------------------------------- MNIST-1D
@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """A private cache directory, with the in-process cache emptied around the module."""
    vision._mnist1d_arrays_cached.cache_clear()
    yield tmp_path_factory.mktemp("bbp-cache")
    vision._mnist1d_arrays_cached.cache_clear()


@pytest.fixture(scope="module")
def mnist1d(mnist1d_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEYONDBP_CACHE", str(mnist1d_cache))
        mp.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
        mp.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
        return data.load("mnist1d")


def test_mnist1d_shapes(mnist1d):
    ds = mnist1d
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (40,) and ds.num_classes == 10
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    assert ds.meta["generator_args"]["seed"] == 42


def test_mnist1d_cache_file_written(mnist1d, mnist1d_cache):
    files = list((mnist1d_cache / "mnist1d").glob("*.npz"))
    assert len(files) == 1


def test_mnist1d_deterministic_and_offline(mnist1d, no_network, mnist1d_cache, monkeypatch):
    monkeypatch.setenv("BEYONDBP_CACHE", str(mnist1d_cache))
    fresh = data.load("mnist1d", cache=False)  # really runs the generator
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(fresh, key), getattr(mnist1d, key)), key


def test_mnist1d_leaves_global_rngs_alone(no_network):
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    data.load("mnist1d", num_samples=100, cache=False)
    assert (np.random.rand(), random.random()) == expected


def test_mnist1d_disk_cache_is_used(mnist1d, mnist1d_cache, monkeypatch):
    monkeypatch.setenv("BEYONDBP_CACHE", str(mnist1d_cache))
    vision._mnist1d_arrays_cached.cache_clear()

    def boom(overrides):
        raise AssertionError("generator ran although a cache file exists")

    monkeypatch.setattr(vision, "_generate_mnist1d", boom)
    again = data.load("mnist1d")
    assert torch.equal(again.x_train, mnist1d.x_train) and torch.equal(again.y_test, mnist1d.y_test)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_mnist1d_corrupt_cache_is_regenerated(mnist1d, no_network, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("BEYONDBP_CACHE", str(tmp_path))
    vision._mnist1d_arrays_cached.cache_clear()
    small = data.load("mnist1d", num_samples=200)
    (path,) = (tmp_path / "mnist1d").glob("*.npz")
    if damage == "garbage":
        path.write_bytes(b"this is not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:
        np.savez(path, x_train=np.zeros((3, 3), np.float32), y_train=np.zeros(3, np.int64),
                 x_test=np.zeros((3, 3), np.float32), y_test=np.zeros(3, np.int64),
                 args_json=np.array('{"num_samples": 200}'))
    vision._mnist1d_arrays_cached.cache_clear()
    regenerated = data.load("mnist1d", num_samples=200)
    assert torch.equal(regenerated.x_train, small.x_train)
    vision._mnist1d_arrays_cached.cache_clear()
    monkeypatch.setattr(vision, "_generate_mnist1d", lambda overrides: (_ for _ in ()).throw(AssertionError()))
    assert torch.equal(data.load("mnist1d", num_samples=200).x_test, small.x_test)  # the file was rewritten
    vision._mnist1d_arrays_cached.cache_clear()


def test_mnist1d_returns_independent_tensors(mnist1d, mnist1d_cache, monkeypatch):
    monkeypatch.setenv("BEYONDBP_CACHE", str(mnist1d_cache))
    first = data.load("mnist1d")
    reference = first.x_train[0].clone()
    first.x_train.zero_()
    assert torch.equal(data.load("mnist1d").x_train[0], reference)


def test_mnist1d_options(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("BEYONDBP_CACHE", str(tmp_path))
    ds = data.load("mnist1d", num_samples=200, length=20, seed=7)
    assert ds.x_train.shape == (160, 20) and ds.x_test.shape == (40, 20) and ds.input_shape == (20,)
    other = data.load("mnist1d", num_samples=200, length=20, seed=8)
    assert not torch.equal(ds.x_train, other.x_train)


@pytest.mark.parametrize(
    "opts",
    [{"num_samples": 5}, {"train_split": 1.0}, {"train_split": "0.5"}, {"length": 1}, {"seed": -1},
     {"seed": 1.5}, {"cache": "no"}, {"shuffle_seq": 1}],
)
def test_mnist1d_bad_options(opts):
    with pytest.raises(ConfigError):
        data.load("mnist1d", **opts)


# --------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_digits(digits):
    ds = digits
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    both = torch.cat([ds.x_train, ds.x_test])
    assert float(both.min()) == 0.0 and float(both.max()) == 1.0
    test_counts = torch.bincount(ds.y_test, minlength=10)
    assert int(test_counts.min()) >= 35 and int(test_counts.max()) <= 37  # stratified
    assert not torch.equal(ds.y_train[:20].sort().values, ds.y_train[:20])  # not sorted by class


def test_digits_split_is_fixed_and_disjoint(digits):
    again = data.load("digits", data_dir="/ignored")
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    from sklearn.datasets import load_digits

    flat = torch.from_numpy(load_digits().data.astype(np.float32) / 16.0)
    rows = {tuple(r.tolist()) for r in flat}
    train_rows = [tuple(r.tolist()) for r in digits.x_train.flatten(1)]
    test_rows = [tuple(r.tolist()) for r in digits.x_test.flatten(1)]
    assert set(train_rows) | set(test_rows) <= rows
    assert len(train_rows) + len(test_rows) == len(flat)


# --------------------------------------------------------------------------- Dataset
def _tiny(n_train: int = 10, n_test: int = 4) -> Dataset:
    return Dataset(
        name="tiny",
        x_train=torch.arange(n_train * 2, dtype=torch.float32).view(n_train, 2),
        y_train=torch.arange(n_train) % 3,
        x_test=torch.zeros(n_test, 2),
        y_test=torch.arange(n_test) % 3,
        input_shape=(2,),
        num_classes=3,
        description="tiny",
    )


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_train_loader_deterministic_under_seed(digits):
    a1, a2 = digits.train_loader(64, seed=3), digits.train_loader(64, seed=3)
    for _ in range(2):  # two epochs each
        for (xa, ya), (xb, yb) in zip(_batches(a1), _batches(a2), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b = digits.train_loader(64, seed=4)
    assert not torch.equal(next(iter(b))[1], next(iter(digits.train_loader(64, seed=3)))[1])


def test_train_loader_independent_of_global_rng(digits):
    torch.manual_seed(0)
    first = next(iter(digits.train_loader(32, seed=1)))[1]
    torch.manual_seed(999)
    assert torch.equal(next(iter(digits.train_loader(32, seed=1)))[1], first)


def test_loaders_order_and_drop_last():
    ds = _tiny()
    xs = torch.cat([x for x, _ in ds.train_loader(4, shuffle=False)])
    assert torch.equal(xs, ds.x_train)
    shuffled = torch.cat([y for _, y in ds.train_loader(4, seed=0)])
    assert sorted(shuffled.tolist()) == sorted(ds.y_train.tolist())
    assert [len(y) for _, y in ds.train_loader(4, drop_last=True)] == [4, 4]
    assert [len(y) for _, y in ds.train_loader(4)] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in ds.test_loader(3)]), ds.y_test)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_loader_bad_batch_size(bad):
    with pytest.raises(ConfigError, match="batch_size"):
        _tiny().train_loader(bad)
    with pytest.raises(ConfigError, match="batch_size"):
        _tiny().test_loader(bad)


def test_subset():
    ds = _tiny()
    sub = ds.subset(n_train=3, n_test=2)
    assert sub.num_train == 3 and sub.num_test == 2
    assert torch.equal(sub.x_train, ds.x_train[:3]) and torch.equal(sub.y_test, ds.y_test[:2])
    assert sub.input_shape == ds.input_shape and sub.num_classes == 3 and sub.name == "tiny"
    assert "subset" in sub.description
    assert ds.subset(n_test=1).num_train == 10
    with pytest.raises(ConfigError, match="n_train"):
        ds.subset(n_train=11)
    with pytest.raises(ConfigError, match="n_test"):
        ds.subset(n_test=0)


def test_dataset_is_frozen_and_validated():
    ds = _tiny()
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]
    assert "tiny" in repr(ds) and "train=10" in repr(ds)
    good = dict(name="t", x_train=torch.zeros(4, 2), y_train=torch.zeros(4, dtype=torch.int64),
                x_test=torch.zeros(2, 2), y_test=torch.zeros(2, dtype=torch.int64), input_shape=(2,), num_classes=2)
    Dataset(**good)
    for change in (
        {"y_train": torch.zeros(3, dtype=torch.int64)},  # count mismatch
        {"x_train": torch.zeros(4, 2, dtype=torch.float64)},  # dtype
        {"y_test": torch.zeros(2, dtype=torch.int32)},  # label dtype
        {"input_shape": (3,)},  # shape disagreement
        {"y_train": torch.tensor([0, 1, 2, 0])},  # label out of range
        {"num_classes": 0},
    ):
        with pytest.raises(DataError):
            Dataset(**{**good, **change})
