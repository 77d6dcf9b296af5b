"""``beyondbp adapt``: test-time adaptation on Fashion-MNIST-C.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .common import (
    _NO_RESUME,
    DataDirOpt,
    DebugOpt,
    OverwriteOpt,
    ThreadsOpt,
    _check_checkpoint,
    _check_out,
    _check_path_text,
    _console,
    _count,
    _on_interrupt,
    app,
)
from .settings import file_flag, torch_threads

# imported on first use, so that --help and usage errors answer without importing torch
data_mod = lazy("beyondbp.data")
jsonable = lazy("beyondbp.jsonable")

# -- adapt: three jobs, three subcommands ----------------------------------------------------------
adapt_app = typer.Typer(
    name="adapt",
    help="Test-time adaptation on Fashion-MNIST-C: train a source model (source), measure source / norm / "
    "TENT / NHL error per corruption and severity (run), draw the corruption gallery (gallery).",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(adapt_app, name="adapt")

SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the corruptions (and of the source model's weights and order).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]


def _adapt_counts(batch_size: int, n_test: int | None, n_train: int | None, epochs: int) -> None:
    """adapt's count flags, bounded as a run's counts are."""
    from ..training.config import check_count

    check_count(batch_size, "--batch-size")
    check_count(epochs, "--epochs")
    for value, flag in ((n_test, "--n-test"), (n_train, "--n-train")):
        if value is not None:
            check_count(value, flag)


def _adapt_sizes(n: int | None, available: int, flag: str = "--n-test",
                 split: str = "test") -> None:
    """``--n-test`` / ``--n-train`` within the data set (a test batch larger than the test images
    is all of them, as a training batch larger than the split is the whole split in ``train``)."""
    if n is not None and n > available:
        raise ConfigError(f"invalid {flag} {n}: it must be at most {available}, the {split} images of fashion-mnist")


def _with_threads(threads: int) -> Any:
    """Run the body with ``--threads`` torch threads, restoring torch's setting after."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def scope() -> Any:
        n = torch_threads(threads)
        previous = torch.get_num_threads()
        if n is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    return scope()


def _bar(quiet: bool, description: str) -> tuple[Any, Any]:
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=_console(stderr=True), disable=quiet, transient=True)
    return bar, bar.add_task(description, total=None)


@adapt_app.command("source")
def adapt_source(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Where to write the source model.", parser=file_flag("--checkpoint"))],
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs over the 60k clean training images.")] = 3,
    channels: Annotated[str, typer.Option("--channels", help="Channels of the three conv blocks.")] = "32,64,64",
    n_train: Annotated[Optional[int], typer.Option("--n-train", help="Use only the first N training images (default: all 60000).")] = None,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --checkpoint file.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the BatchNorm CNN source model on clean Fashion-MNIST and write it to --checkpoint."""
    from .. import adapt as adapt_mod
    from ..adapt.source import error_rate

    if n_train is not None and n_train < 2:
        raise ConfigError(f"invalid --n-train {n_train}: it must be at least 2")
    if epochs < 1:
        raise ConfigError(f"invalid --epochs {epochs}: it must be at least 1")
    _adapt_counts(2, None, n_train, epochs)
    try:
        channel_list = [int(c) for c in channels.split(",")]
    except ValueError:
        channel_list = []
    if len(channel_list) != 3 or min(channel_list) < 1:
        raise ConfigError(f"invalid --channels {channels!r}: give three positive whole numbers, e.g. 32,64,64")
    torch_threads(threads)
    _check_checkpoint(checkpoint, overwrite)
    _on_interrupt(_NO_RESUME)
    with _with_threads(threads):
        ds = data_mod.load("fashion-mnist", data_dir=data_dir, normalize=False)
        _adapt_sizes(n_train, len(ds.x_train), "--n-train", "training")
        bar, task = _bar(quiet, "training the source model")
        with bar:
            xt, yt = (ds.x_train, ds.y_train) if n_train is None else (ds.x_train[:n_train], ds.y_train[:n_train])
            model = adapt_mod.train_source(
                xt, yt, channels=channel_list, epochs=epochs, seed=seed,
                progress=lambda step, steps, loss: bar.update(task, completed=step, total=steps))
        clean = error_rate(model, ds.x_test, ds.y_test)
    adapt_mod.save_source(checkpoint, model, meta={"epochs": epochs, "seed": seed, "clean_test_error": clean,
                                                   "data": "fashion-mnist", "n_train": len(xt)})
    _console().print(f"source model: clean test error {100 * clean:.2f}% · checkpoint: {checkpoint}")


@adapt_app.command("gallery")
def adapt_gallery(
    png: Annotated[Path, typer.Argument(help="The PNG to write: one test image under every corruption and severity.")],
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing PNG.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a corruption x severity grid of one test image to a PNG."""
    from ..reporting import adapt as adapt_report

    _check_path_text(png, "the gallery PNG")
    files.check_writable(png, "the gallery PNG")
    if png.exists() and not overwrite:
        raise ConfigError(f"file {str(png)!r} already exists; pass --overwrite to replace it")
    ds = data_mod.load("fashion-mnist", data_dir=data_dir, normalize=False)
    image = ds.x_test[0]
    files.atomic_write_bytes(png, lambda fh: adapt_report.gallery(
        image, fh, seed=seed, title=f"Fashion-MNIST-C, test image 0, seed {seed}"))
    _console().print(f"wrote {png}")


@adapt_app.command("run")
def adapt_run(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The source model (written by `beyondbp adapt source`).")],
    out: Annotated[Path, typer.Option("--out", help="Write results.json, table.md and errors.png here.")],
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: source, norm, tent, nhl (or all).")] = "all",
    corruptions: Annotated[str, typer.Option("--corruptions", help="Comma-separated corruption names, or all.")] = "all",
    severity: Annotated[str, typer.Option("--severity", help="Severities 1..5: one, a comma-separated list, or all.")] = "5",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Test batch size (TENT's recipe: 128).")] = 128,
    episodic: Annotated[bool, typer.Option("--episodic", help="Reset to the source model before every batch.")] = False,
    n_test: Annotated[Optional[int], typer.Option("--n-test", help="Use only the first N test images (default: all 10000).")] = None,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Measure source / norm / TENT / NHL top-1 error per corruption and severity."""
    import datetime

    from .. import adapt as adapt_mod
    from ..reporting import adapt as adapt_report

    method_names = adapt_mod.parse_methods(methods)
    corruption_names = adapt_mod.parse_corruptions(corruptions)
    severities = adapt_mod.parse_severities(severity)
    if isinstance(batch_size, bool) or batch_size < 2:
        raise ConfigError(f"invalid --batch-size {batch_size}: it must be at least 2 (BatchNorm statistics of one sample are degenerate)")
    if n_test is not None and n_test < 2:
        raise ConfigError(f"invalid --n-test {n_test}: it must be at least 2")
    _adapt_counts(batch_size, n_test, None, 1)
    torch_threads(threads)
    _check_path_text(checkpoint, "--checkpoint")
    _check_out(out, overwrite)
    _on_interrupt(_NO_RESUME)
    with _with_threads(threads):
        ds = data_mod.load("fashion-mnist", data_dir=data_dir, normalize=False)
        model, meta = adapt_mod.load_source(checkpoint)
        x, y = ds.x_test, ds.y_test
        _adapt_sizes(n_test, len(x))
        if n_test is not None:
            x, y = x[:n_test], y[:n_test]
        bar, task = _bar(quiet, "adapting")
        with bar:
            result = adapt_mod.benchmark(
                model, x, y, method_names, corruption_names, severities, batch_size=batch_size, episodic=episodic,
                seed=seed, progress=lambda what, done, total: bar.update(task, description=what, completed=done, total=total))
    console = _console()
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["command"] = "beyondbp " + " ".join(sys.argv[1:]) if sys.argv[1:3] == ["adapt", "run"] else "beyondbp adapt run"
    result["source"] = {"checkpoint": str(checkpoint), **meta}
    title = (f"Fashion-MNIST-C: test-time adaptation ({'episodic' if episodic else 'online'}, "
             f"batch {result['batch_size']}, {len(x)} images)")
    table_md = f"# {title}\n\n{result['date']} · `{result['command']}`\n\n" + adapt_report.markdown_table(result)
    out = Path(out)
    files.write_directory(out, {
        "results.json": json.dumps(jsonable.plain(result), indent=2) + "\n",
        "table.md": table_md,
        "errors.png": lambda path: files.atomic_write_bytes(path, lambda fh: adapt_report.plot_errors(result, fh, title=title)),
    }, overwrite=overwrite)
    for s in severities:
        table = Table(title=f"severity {s}: mean top-1 error over {_count(len(corruption_names), 'corruption')}")
        for col in ("method", "mean error", "ms / batch"):
            table.add_column(col, justify="right")
        for m in method_names:
            table.add_row(m, f"{100 * result['mean'][m][s]:.2f}%", f"{1000 * result['seconds_per_batch'][m]:.1f}")
        console.print(table)
    console.print(f"wrote {out / 'results.json'} · {out / 'table.md'} · {out / 'errors.png'}")
