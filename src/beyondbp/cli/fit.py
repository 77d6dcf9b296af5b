"""``beyondbp study fit``: scaling-law fits of points from a CSV file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .._lazy import lazy
from ..errors import ConfigError, DataError
from .common import DebugOpt, _console
from .study import study_app

# imported on first use, so that --help and usage errors answer without importing torch
jsonable = lazy("beyondbp.jsonable")
report = lazy("beyondbp.reporting.runs")


def _check_utf8(path: Path) -> None:
    """Refuse (one sentence, with the line) a file that is not UTF-8 text."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"CSV file {str(path)!r}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None


def _read_csv_columns(path: Path, columns: dict[str, str]) -> dict[str, list[float]]:
    """The named columns of a CSV file with a header row, as floats; ``columns`` maps each
    column name to the flag that named it (for the messages)."""
    import csv

    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist or is not a file")
    _check_utf8(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for name, flag in columns.items():
            if name not in header:
                raise ConfigError(
                    f"{flag} {name!r} is not a column of {str(path)!r}; its columns are: {', '.join(header) or '(none)'}"
                )
        out: dict[str, list[float]] = {name: [] for name in columns}
        for row_number, row in enumerate(reader, start=2):
            for name, flag in columns.items():
                text = (row.get(name) or "").strip()
                try:
                    value = float(text)
                except ValueError:
                    raise DataError(
                        f"column {name!r} ({flag}) of {str(path)!r} holds {text!r} on line {row_number}, which is not a number"
                    ) from None
                if not (value > 0 and value != float("inf")):
                    raise DataError(
                        f"column {name!r} ({flag}) of {str(path)!r} holds {text!r} on line {row_number}; "
                        "values must be finite positive numbers"
                    )
                out[name].append(value)
    return out


def _fit_table(title: str, fit: Any, intervals: Any, names: list[str]) -> Table:
    level = f"{100 * intervals.level:g} % interval" if intervals is not None else "interval"
    table = Table(title=title)
    table.add_column("parameter")
    table.add_column("estimate", justify="right")
    table.add_column(f"{level} (low)", justify="right")
    table.add_column(f"{level} (high)", justify="right")
    labels = {"alpha": "α", "beta": "β"}
    for name in names:
        low = "-" if intervals is None else f"{intervals.low[name]:.4g}"
        high = "-" if intervals is None else f"{intervals.high[name]:.4g}"
        outside = intervals is not None and intervals.outside(name)  # a percentile interval need not hold it
        table.add_row(labels.get(name, name), f"{getattr(fit, name):.4g}" + ("†" if outside else ""), low, high)
    if intervals is not None and any(intervals.outside(name) for name in names):
        table.caption = "† the fit to all points lies outside its own bootstrap interval (biased or poorly pinned down)"
    return table


def _refuse_degenerate(fit: Any) -> None:
    """A fit whose data do not pin down the law is refused, as the study report refuses it."""
    from ..analysis import scaling

    why = scaling.degenerate(fit)
    if why is not None:
        raise DataError(f"the fit is degenerate: {why}")


@study_app.command("fit")
def study_fit(
    file: Annotated[Path, typer.Argument(help="CSV file with a header row, one point per line.")],
    params: Annotated[Optional[str], typer.Option("--params", help="Column of model sizes N (parameters).")] = None,
    tokens: Annotated[Optional[str], typer.Option("--tokens", help="Column of training tokens D (default: FLOPs / (6 N) when --flops is "
        "given).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="Column of losses.")] = "loss",
    flops: Annotated[Optional[str], typer.Option("--flops", help="Column of training FLOPs C; alone (no --params), fits the frontier L(C) = E + A "
        "C^-α.")] = None,
    exclude_top: Annotated[int, typer.Option("--exclude-top", help="Drop the K highest-loss points before fitting.")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the intervals (0: none).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap's generator.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fit and intervals as JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Fit L(N, D) = E + A/N^α + B/D^β (Chinchilla's approach 3) to a CSV file's points, or the
    compute frontier L(C) = E + A·C^(-α) when only --flops and --loss are given."""
    from ..analysis import scaling

    if exclude_top < 0:
        raise ConfigError(f"invalid --exclude-top {exclude_top}: it must be a whole number of at least 0")
    if bootstrap < 0 or bootstrap > scaling.MAX_RESAMPLES:
        raise ConfigError(f"invalid --bootstrap {bootstrap}: it must be a whole number from 0 (no intervals) to {scaling.MAX_RESAMPLES}")
    notes: list[str] = []
    if params is None:
        if tokens is not None:
            raise ConfigError("--tokens needs --params: the law L(N, D) takes both model size and tokens")
        if flops is None:
            raise ConfigError("give --params with --tokens (or --flops) to fit L(N, D), or --flops alone to fit the frontier L(C)")
        cols = _read_csv_columns(file, {flops: "--flops", loss: "--loss"})
        c_all, l_all = cols[flops], cols[loss]
        c_front, l_front = scaling.efficient_frontier(c_all, l_all)
        notes.append(f"frontier: the {len(c_front)} points of {len(c_all)} whose loss is the lowest at or below their compute")
        fit = scaling.fit_frontier(c_front, l_front, exclude_top=exclude_top)
        _refuse_degenerate(fit)
        intervals = None
        if bootstrap:
            intervals = scaling.bootstrap_frontier(
                c_front, l_front, n_resamples=bootstrap, seed=seed, exclude_top=exclude_top, fit=fit
            )
        names, title = ["E", "A", "alpha"], "L(C) = E + A · C^(-α)"
    else:
        wanted = {params: "--params", loss: "--loss"}
        if tokens is not None:
            wanted[tokens] = "--tokens"
        elif flops is not None:
            wanted[flops] = "--flops"
        else:
            raise ConfigError("--params needs --tokens, or --flops to derive tokens as FLOPs / (6 × params)")
        cols = _read_csv_columns(file, wanted)
        n_vals = cols[params]
        if tokens is not None:
            d_vals = cols[tokens]
        else:
            d_vals = [c / (6.0 * n) for c, n in zip(cols[flops], n_vals)]
            notes.append(f"tokens derived as D = FLOPs / (6 N) from columns {flops!r} and {params!r}")
        fit = scaling.fit_loss_law(n_vals, d_vals, cols[loss], exclude_top=exclude_top)
        _refuse_degenerate(fit)
        intervals = None
        if bootstrap:
            intervals = scaling.bootstrap(
                n_vals, d_vals, cols[loss], n_resamples=bootstrap, seed=seed, exclude_top=exclude_top, fit=fit
            )
        names, title = ["E", "A", "B", "alpha", "beta"], "L(N, D) = E + A / N^α + B / D^β"
    if as_json:
        payload = intervals.to_dict() if intervals is not None else {"fit": fit.to_dict(), "intervals": None}
        payload["notes"] = notes
        typer.echo(json.dumps(jsonable.plain(payload), indent=2))
        return
    console = _console()
    for note in notes:
        console.print(note)
    console.print(_fit_table(title, fit, intervals, names))
    detail = (
        f"{fit.n_points} points ({fit.excluded} highest-loss excluded) · {fit.n_starts} starts · "
        f"Huber δ = {fit.delta:g} · objective {fit.objective:.6g}"
    )
    if intervals is not None:
        detail += f" · {intervals.n_resamples} bootstrap resamples (seed {seed})"
    console.print(detail)
