"""``beyondbp analyze``: what each rule's networks learned (representational similarity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from .common import _NO_RESUME, DebugOpt, OutOverwriteOpt, _check_path_text, _console, _on_interrupt, app
from .study import StoreOpt


# -- analyze ------------------------------------------------------------------------------------
def _group_by_axes(text: str) -> list[str]:
    """``--group-by rule,lr`` -> ["rule", "lr"]; an empty list or item is refused."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ConfigError(f"malformed --group-by {text!r}: give comma-separated axes, e.g. rule or rule,lr")
    return items


@app.command()
def analyze(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Trained networks: a study spec (.toml) run with keep_models = true, a folder of "
        "checkpoints, or checkpoint files.", show_default=False)] = None,
    store: StoreOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Output folder (default: <first source>-representations beside it).")] = None,
    stimuli: Annotated[int, typer.Option("--stimuli", help="Probe stimuli drawn from the test split.")] = 1000,
    measures: Annotated[Optional[str], typer.Option("--measures", help="Comma-separated measures (default: all; see --list-measures).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Noisy passes per stimulus for the stochastic metric.")] = 10,
    noise: Annotated[str, typer.Option("--noise", help="Noise of the stochastic responses: input (Gaussian on the input) or dropout (the model's "
        "own).")] = "input",
    noise_level: Annotated[float, typer.Option("--noise-level", help="Input noise, in standard deviations of the probe set.")] = 0.1,
    snr_batches: Annotated[int, typer.Option("--snr-batches", help="Training minibatches for the gradient SNR (0: skip it).")] = 8,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples (over seeds) for identification intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe draw, the noise and the bootstrap.")] = 0,
    list_measures: Annotated[bool, typer.Option("--list-measures", help="List the measures and exit.")] = False,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="What identification tells apart: comma-separated axes (rule, a study axis "
        "or a run setting such as lr); default: rule. Networks differing elsewhere are pooled.")] = None,
    overwrite: OutOverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Compare trained networks' hidden representations (CKA, RSA, shape metrics, stochastic
    shape metric, encoding models), test whether each measure identifies the rule that trained a
    network, and measure gradient SNR: writes representations.md / .json and heatmap and MDS
    PNGs."""
    from ..analysis.representations import MEASURES
    from ..reporting.similarity import check_output, write_outputs
    from ..study.similarity import analyze_networks, find_networks

    console = _console()
    if list_measures:
        for name, m in MEASURES.items():
            console.print(f"{name:22s} {m.description}", soft_wrap=True)
        return
    if not sources:
        raise ConfigError("name at least one source of trained networks: a study spec (.toml) run with "
                          "keep_models = true, a folder of checkpoints, or checkpoint files")
    _check_path_text(store, "--store")
    _check_path_text(out, "--out")
    if isinstance(bootstrap, bool) or bootstrap < 1 or bootstrap > 100_000:
        raise ConfigError(f"invalid --bootstrap {bootstrap}: it must be a whole number from 1 to 100000")
    names = None if measures is None else [m.strip() for m in measures.split(",") if m.strip()]
    if names is not None:
        unknown = [m for m in names if m not in MEASURES]
        if unknown or not names:
            raise ConfigError(f"unknown measure {unknown[0]!r} in --measures; measures are: {', '.join(MEASURES)}"
                              if unknown else "--measures is empty; name at least one measure")
    first = Path(sources[0])
    folder = Path(out) if out is not None else first.with_name((first.stem if first.suffix else first.name) + "-representations")
    check_output(folder, overwrite)
    _on_interrupt(_NO_RESUME)
    axes = None if group_by is None else _group_by_axes(group_by)
    networks = find_networks(sources, store, group_by=axes)
    title = f"Representations of {len(networks)} networks ({', '.join(sorted({n.label for n in networks}))})"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), disable=quiet, transient=True) as bar:
        task = bar.add_task("networks", total=len(networks))
        state = {"measures": None}

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "network":
                bar.update(task, completed=info["index"], description=f"network {info['label']} seed {info['seed']}")
            elif event == "measure":
                if state["measures"] is None:
                    bar.update(task, completed=len(networks))
                    state["measures"] = bar.add_task("measures", total=None)
                bar.update(state["measures"], advance=1, description=f"{info['measure']} {info['layer']}")

        result = analyze_networks(networks, stimuli=stimuli, repeats=repeats, noise=noise, noise_level=noise_level,
                                  measures=names, snr_batches=snr_batches, bootstrap=bootstrap, seed=seed,
                                  title=title, progress=progress, group_by=axes)
    written = write_outputs(result, folder, overwrite=overwrite)
    table = Table(title="identification accuracy (nearest neighbour / reference), chance in brackets")
    for col in ("measure", *result["layers"]):
        table.add_column(col)
    for m, per_layer in result["identification"].items():
        cells = []
        for layer in result["layers"]:
            r = per_layer[layer]
            cells.append(f"{r.nn.accuracy:.2f} ({r.nn.chance:.2f}) / "
                         f"{r.reference.accuracy:.2f} ({r.reference.chance:.2f})")
        table.add_row(m, *cells)
    console.print(table)
    md = next((p for p in written if Path(p).name == "representations.md"), None)
    console.print(f"written: {md if md is not None else folder}")
