"""A liquid's feature generation continues where a stopped one was (training/liquid_resume.py):
the entry written after a stop in phase 1 or phase 2 (one or two feature workers) and a rerun
is bit-identical to that of a run never stopped; the progress folder goes when the entry is
complete; damaged or foreign progress is ignored with a warning; a rerun says it continues.
Tiny liquids (100 neurons, 60 ms) on the 8×8 digits."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from beyondbp.cli.progress import _resumed_line
from beyondbp.training import RunConfig, liquid, liquid_resume, run
from beyondbp.training.liquid_features import load_features

LIQUID = {"grid": [5, 5, 4], "duration": 60, "feature_batch": 8}
SAME = ("counts_train", "counts_test", "weight", "measurements", "init_images", "labels_train", "labels_test", "stimuli")


class Stop(Exception):
    """Stands for Ctrl-C, SIGTERM or a crash at a chosen point."""


def config(cache: Path, workers: int = 1, **kw) -> RunConfig:
    values = dict(rule="nalsm", model="lsm", data="digits", n_train=40, n_test=20, epochs=1, batch_size=16, lr=0.05,
                  feature_cache=str(cache), model_options=LIQUID, feature_workers=workers,
                  rule_options={"init_images": 6})
    values.update(kw)
    return RunConfig(**values)


def entry_of(cache: Path) -> dict:
    (path,) = cache.glob("*.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


def partial_of(cache: Path) -> Path:
    (folder,) = cache.glob("*.partial")
    return folder


def assert_same(a: dict, b: dict) -> None:
    for name in SAME:
        same = torch.equal(a[name], b[name]) if isinstance(a[name], torch.Tensor) else a[name] == b[name]
        assert same, name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The entry of a generation never stopped."""
    cache = tmp_path_factory.mktemp("reference")
    load_features(config(cache), generate=True)
    assert not list(cache.glob("*.partial"))  # removed once the entry is complete
    return entry_of(cache)


def stop_after(monkeypatch, method: str, calls: int) -> list:
    """Make ``Partial.<method>`` raise :class:`Stop` right after its ``calls``-th save."""
    original, seen = getattr(liquid_resume.Partial, method), []

    def saving_then_stopping(self, *args):
        original(self, *args)
        seen.append(args[:2])
        if len(seen) == calls:
            raise Stop

    monkeypatch.setattr(liquid_resume.Partial, method, saving_then_stopping)
    return seen


def test_a_run_stopped_in_phase_one_continues_to_the_same_entry(tmp_path, monkeypatch, reference):
    monkeypatch.setattr(liquid_resume, "INIT_SAVE_EVERY", 2)
    seen = stop_after(monkeypatch, "save_init", 2)
    with pytest.raises(Stop):
        load_features(config(tmp_path), generate=True)
    assert [s[0] for s in seen] == [2, 4]
    assert not list(tmp_path.glob("*.pt")) and (partial_of(tmp_path) / "init.pt").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(liquid_resume, "INIT_SAVE_EVERY", 2)
    events = []
    result = run(config(tmp_path), progress=lambda event, info: events.append((event, info)))
    resumed = [info for event, info in events if event == "liquid_resumed"]
    assert resumed and resumed[0]["init_images_done"] == 4 and resumed[0]["batches_done"] == 0
    assert result.data["liquid"]["resumed"]["init_images_done"] == 4
    line = _resumed_line(resumed[0])  # what `beyondbp train` prints
    assert "continuing a stopped generation (4 of 6 initialisation images, 0 of 8 feature batches done" in line
    assert_same(entry_of(tmp_path), reference)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_stopped_in_phase_two_continues_to_the_same_entry(tmp_path, monkeypatch, reference, workers):
    seen = stop_after(monkeypatch, "save_batch", 3)  # of 5 train + 3 test batches
    with pytest.raises(Stop):
        load_features(config(tmp_path, workers), generate=True)
    folder = partial_of(tmp_path)
    kept = sorted(p.name for p in folder.glob("*-*.pt"))
    assert len(kept) == 3 and (folder / "init.pt").is_file()  # W_INI
    monkeypatch.undo()
    partial = liquid.partial_progress(config(tmp_path, workers), *_place(config(tmp_path, workers)))
    assert partial.init[0] == 6 and sum(len(b) for b in partial.batches.values()) == 3
    calls = stop_after(monkeypatch, "save_batch", 99)  # counts what the rerun simulates
    assert run(config(tmp_path, workers)).data["liquid"]["resumed"]["batches_done"] == 3
    assert len(calls) == 8 - 3 and not set(seen) & set(calls)  # only the batches missing
    assert_same(entry_of(tmp_path), reference)
    assert not list(tmp_path.glob("*.partial"))


def _place(cfg: RunConfig):
    from beyondbp.training.liquid_features import _Run

    built = _Run(cfg)
    return built.plastic, built.model, built.place


def test_damaged_or_foreign_progress_is_ignored_with_a_warning(tmp_path, monkeypatch, reference):
    stop_after(monkeypatch, "save_batch", 2)
    with pytest.raises(Stop):
        load_features(config(tmp_path), generate=True)
    monkeypatch.undo()
    folder = partial_of(tmp_path)
    (folder / "train-0.pt").write_bytes(b"not a torch file")  # unreadable
    forged = torch.load(folder / "train-1.pt", weights_only=True)
    forged["counts"] = forged["counts"] + 1
    forged["w_ini"] = "0" * 64  # from another W_INI: never trusted
    torch.save(forged, folder / "train-1.pt")
    init = torch.load(folder / "init.pt", weights_only=True)
    init["weight"] = init["weight"][:-1]  # does not fit the liquid
    torch.save(init, folder / "init.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_features(config(tmp_path), generate=True)
    said = " ".join(str(w.message) for w in caught)
    assert "cannot read train-0.pt" in said and "train-1.pt came from another W_INI" in said
    assert "init.pt does not fit" in said
    assert_same(entry_of(tmp_path), reference)
    # another configuration's progress is another folder (keyed like the entry): never used
    other = tmp_path / "other"
    stop_after(monkeypatch, "save_batch", 1)
    with pytest.raises(Stop):
        load_features(config(other), generate=True)
    monkeypatch.undo()
    mine = partial_of(other)
    first = run(config(other, seed=1))
    assert first.data["liquid"]["resumed"] is None and mine.is_dir()  # left to its own configuration
    # and put under the other's name, its files say whose they are
    key = first.data["liquid"]["key"]
    (other / f"{key}.pt").unlink()
    shutil.copytree(mine, other / f"{key}.partial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run(config(other, seed=1))
    assert again.data["liquid"]["resumed"] is None
    assert "meta.pt belongs to other features" in " ".join(str(w.message) for w in caught)
    assert [h["test_loss"] for h in again.history] == [h["test_loss"] for h in first.history]
    assert not (other / f"{key}.partial").exists()
