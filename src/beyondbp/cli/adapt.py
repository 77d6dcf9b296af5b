"""``beyondbp adapt``: test-time adaptation on Fashion-MNIST-C.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError

# imported on first use, so that --help and usage errors answer without importing torch
data_mod = lazy("beyondbp.data")
jsonable = lazy("beyondbp.jsonable")
models_mod = lazy("beyondbp.models")
options_mod = lazy("beyondbp.options")
report = lazy("beyondbp.reporting.runs")
rules_mod = lazy("beyondbp.rules")

from .settings import torch_threads
from .common import DataDirOpt, DebugOpt, OverwriteOpt, ThreadsOpt, _NO_RESUME, _check_checkpoint, _check_out, _check_path_text, _console, _on_interrupt, app

# -- adapt --------------------------------------------------------------------------------------
def _adapt_mode(train_source: bool, gallery: Optional[Path], checkpoint: Optional[Path], out: Optional[Path]) -> str:
    """Which of adapt's three jobs the flags ask for, refusing mixtures (one sentence)."""
    if train_source and gallery is not None:
        raise ConfigError("--train-source and --gallery are separate jobs; give one of them")
    if train_source:
        if checkpoint is None:
            raise ConfigError("--train-source needs --checkpoint PATH, the file to write the source model to")
        if out is not None:
            raise ConfigError("--train-source writes only --checkpoint; --out belongs to an adaptation run")
        return "train"
    if gallery is not None:
        if out is not None or checkpoint is not None:
            raise ConfigError("--gallery writes only the gallery PNG; leave out --out and --checkpoint")
        return "gallery"
    if checkpoint is None or out is None:
        raise ConfigError("an adaptation run needs --checkpoint (a source model from --train-source) and --out DIR")
    return "adapt"


def _adapt_write_png(path: Path, overwrite: bool, draw: Any) -> None:
    _check_path_text(path, "--gallery")
    files.check_writable(path, "--gallery")
    if path.exists() and not overwrite:
        raise ConfigError(f"file {str(path)!r} already exists; pass --overwrite to replace it")
    files.atomic_write_bytes(path, draw)


def _adapt_counts(batch_size: int, n_test: int | None, n_train: int | None, epochs: int) -> None:
    """adapt's count flags, bounded as a run's counts are."""
    from ..training.config import check_count

    check_count(batch_size, "--batch-size")
    check_count(epochs, "--epochs")
    for value, flag in ((n_test, "--n-test"), (n_train, "--n-train")):
        if value is not None:
            check_count(value, flag)


def _adapt_sizes(n: int | None, available: int, batch_size: int | None, flag: str = "--n-test",
                 split: str = "test") -> None:
    """``--n-test`` / ``--n-train`` within the data set, and a test batch no larger than its test
    split (a batch larger than ``--n-test`` is all of those images)."""
    if n is not None and n > available:
        raise ConfigError(f"invalid {flag} {n}: it must be at most {available}, the {split} images of fashion-mnist")
    if batch_size is not None and batch_size > available:
        raise ConfigError(f"invalid --batch-size {batch_size}: it must be at most {available}, the test images of "
                          "fashion-mnist")


@app.command("adapt")
def adapt_command(
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Source model: written by --train-source, only read by an adaptation run.")] = None,
    train_source: Annotated[bool, typer.Option("--train-source", help="Train the BatchNorm CNN source model on clean Fashion-MNIST and write it to --checkpoint.")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="--train-source: epochs over the 60k clean training images.")] = 3,
    channels: Annotated[str, typer.Option("--channels", help="--train-source: channels of the three conv blocks.")] = "32,64,64",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: source, norm, tent, nhl (or all).")] = "all",
    corruptions: Annotated[str, typer.Option("--corruptions", help="Comma-separated corruption names, or all.")] = "all",
    severity: Annotated[str, typer.Option("--severity", help="Severities 1..5: one, a comma-separated list, or all.")] = "5",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Test batch size (TENT's recipe: 128).")] = 128,
    episodic: Annotated[bool, typer.Option("--episodic", help="Reset to the source model before every batch.")] = False,
    n_test: Annotated[Optional[int], typer.Option("--n-test", help="Use only the first N test images (default: all 10000).")] = None,
    n_train: Annotated[Optional[int], typer.Option("--n-train", help="--train-source: use only the first N training images (default: all 60000).")] = None,
    gallery: Annotated[Optional[Path], typer.Option("--gallery", help="Write a corruption x severity grid of one test image to this PNG, then stop.")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruptions (and of --train-source's weights and order).")] = 0,
    threads: ThreadsOpt = 1,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write results.json, table.md and errors.png here.")] = None,
    overwrite: OverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Test-time adaptation on Fashion-MNIST-C: train a source model (--train-source), draw the
    corruption gallery (--gallery), or measure source / norm / TENT / NHL error per corruption
    and severity (--checkpoint + --out)."""
    import datetime
    import torch

    from .. import adapt as adapt_mod
    from ..reporting import adapt as adapt_report

    mode = _adapt_mode(train_source, gallery, checkpoint, out)
    method_names = adapt_mod.parse_methods(methods)
    corruption_names = adapt_mod.parse_corruptions(corruptions)
    severities = adapt_mod.parse_severities(severity)
    if isinstance(batch_size, bool) or batch_size < 2:
        raise ConfigError(f"invalid --batch-size {batch_size}: it must be at least 2 (BatchNorm statistics of one sample are degenerate)")
    if n_test is not None and n_test < 2:
        raise ConfigError(f"invalid --n-test {n_test}: it must be at least 2")
    if n_train is not None and n_train < 2:
        raise ConfigError(f"invalid --n-train {n_train}: it must be at least 2")
    if epochs < 1:
        raise ConfigError(f"invalid --epochs {epochs}: it must be at least 1")
    _adapt_counts(batch_size, n_test, n_train, epochs)
    try:
        channel_list = [int(c) for c in channels.split(",")]
    except ValueError:
        channel_list = []
    if len(channel_list) != 3 or min(channel_list) < 1:
        raise ConfigError(f"invalid --channels {channels!r}: give three positive whole numbers, e.g. 32,64,64")
    n_threads = torch_threads(threads)
    if mode == "train":
        _check_checkpoint(checkpoint, overwrite)
    elif mode == "adapt":
        _check_path_text(checkpoint, "--checkpoint")
        _check_out(out, overwrite)
    _on_interrupt(_NO_RESUME)
    console = _console()
    previous_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        ds = data_mod.load("fashion-mnist", data_dir=data_dir, normalize=False)
        if mode == "gallery":
            image = ds.x_test[0]
            _adapt_write_png(gallery, overwrite, lambda fh: adapt_report.gallery(
                image, fh, seed=seed, title=f"Fashion-MNIST-C, test image 0, seed {seed}"))
            console.print(f"wrote {gallery}")
            return
        if mode == "train":
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=_console(stderr=True), disable=quiet, transient=True) as bar:
                task = bar.add_task("training the source model", total=None)
                _adapt_sizes(n_train, len(ds.x_train), None, "--n-train", "training")
                xt, yt = (ds.x_train, ds.y_train) if n_train is None else (ds.x_train[:n_train], ds.y_train[:n_train])
                model = adapt_mod.train_source(
                    xt, yt, channels=channel_list, epochs=epochs, seed=seed,
                    progress=lambda step, steps, loss: bar.update(task, completed=step, total=steps))
            from ..adapt.source import error_rate
            clean = error_rate(model, ds.x_test, ds.y_test)
            adapt_mod.save_source(checkpoint, model, meta={"epochs": epochs, "seed": seed, "clean_test_error": clean,
                                                           "data": "fashion-mnist", "n_train": len(xt)})
            console.print(f"source model: clean test error {100 * clean:.2f}% · checkpoint: {checkpoint}")
            return
        model, meta = adapt_mod.load_source(checkpoint)
        x, y = ds.x_test, ds.y_test
        _adapt_sizes(n_test, len(x), batch_size)
        if n_test is not None:
            x, y = x[:n_test], y[:n_test]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_console(stderr=True), disable=quiet, transient=True) as bar:
            task = bar.add_task("adapting", total=None)
            result = adapt_mod.benchmark(
                model, x, y, method_names, corruption_names, severities, batch_size=batch_size, episodic=episodic,
                seed=seed, progress=lambda what, done, total: bar.update(task, description=what, completed=done, total=total))
    finally:
        torch.set_num_threads(previous_threads)
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["command"] = "beyondbp " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["adapt"] else "beyondbp adapt"
    result["source"] = {"checkpoint": str(checkpoint), **meta}
    title = (f"Fashion-MNIST-C: test-time adaptation ({'episodic' if episodic else 'online'}, "
             f"batch {batch_size}, {len(x)} images)")
    table_md = f"# {title}\n\n{result['date']} · `{result['command']}`\n\n" + adapt_report.markdown_table(result)
    out = Path(out)
    tmp = files.temporary_directory(out)
    try:
        text = json.dumps(jsonable.plain(result), indent=2) + "\n"
        files.atomic_write_bytes(tmp / "results.json", lambda fh: fh.write(text.encode("utf-8")))
        files.atomic_write_bytes(tmp / "table.md", lambda fh: fh.write(table_md.encode("utf-8")))
        files.atomic_write_bytes(tmp / "errors.png", lambda fh: adapt_report.plot_errors(result, fh, title=title))
        files.publish_directory(tmp, out, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for s in severities:
        table = Table(title=f"severity {s}: mean top-1 error over {len(corruption_names)} corruptions")
        for col in ("method", "mean error", "ms / batch"):
            table.add_column(col, justify="right")
        for m in method_names:
            table.add_row(m, f"{100 * result['mean'][m][s]:.2f}%", f"{1000 * result['seconds_per_batch'][m]:.1f}")
        console.print(table)
    console.print(f"wrote {out / 'results.json'} · {out / 'table.md'} · {out / 'errors.png'}")
