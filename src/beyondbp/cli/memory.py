"""``beyondbp memory``: recall quality of associative memories against N stored and query noise.

    beyondbp memory hopfield,modern-hopfield --stored 10,100,1000 --noise 0,0.1,0.2,0.3 --out DIR
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .common import DebugOpt, OutOverwriteOpt, _check_out, _console, app, parse_assignment, set_once

jsonable = lazy("beyondbp.jsonable")

#: the pattern kind a memory needs, when it needs one
_NEEDS_KIND = {"hopfield": "sign", "sparse-code": "binary"}


def _numbers(text: str, flag: str, integer: bool) -> list[Any]:
    """``"10,100"`` -> numbers, or one sentence naming the flag."""
    out: list[Any] = []
    for item in text.split(","):
        try:
            value = int(item) if integer else float(item)
        except ValueError:
            kind = "whole numbers" if integer else "numbers"
            raise ConfigError(f"{flag} must be comma-separated {kind}, got {text!r}") from None
        out.append(value)
    return out


def _memory_options(items: list[str] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """``--opt MEMORY:KEY=VALUE`` for that memory, ``--opt KEY=VALUE`` for every listed one."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in items or []:
        key, value = parse_assignment(item, "--opt")
        name, sep, option = key.partition(":")
        if sep and name not in out:
            raise ConfigError(f"--opt {item!r} names memory {name!r}, which is not among the memories asked for")
        for target in ([name] if sep else names):
            set_once(out[target], option if sep else key, value, "--opt", f"memory {target!r}")
    return out


@app.command()
def memory(
    memories: Annotated[str, typer.Argument(help="Comma-separated memories: hopfield, modern-hopfield, key-value-hebbian, "
        "key-value-delta, sparse-code, or all.")],
    stored: Annotated[str, typer.Option("--stored", help="Comma-separated numbers of items stored N.")] = "10,30,100,300,1000",
    noise: Annotated[str, typer.Option("--noise", help="Comma-separated fractions of query pixels corrupted.")] = "0,0.1,0.2,0.3",
    mode: Annotated[str, typer.Option("--mode", help="Query noise: flip or mask.")] = "flip",
    kind: Annotated[str, typer.Option("--kind", help="Patterns: auto (±1 for all but sparse-code, 0/1 for it), sign, binary or real.")] = "auto",
    data: Annotated[str, typer.Option("--data", help="fashion-mnist (thresholded at 0.5 unless --kind real) or random.")] = "fashion-mnist",
    dim: Annotated[int, typer.Option("--dim", help="Pattern length of --data random.")] = 784,
    queries: Annotated[int, typer.Option("--queries", help="Stored items queried per (N, noise).")] = 200,
    key_code: Annotated[str, typer.Option("--keys", help="Key-value memories: given, random (random sparse codes) or learned "
        "(the sparse-code memory's codes).")] = "given",
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="Memory option KEY=VALUE or MEMORY:KEY=VALUE, e.g. "
        "modern-hopfield:beta=0.1 (repeatable).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Directory of Fashion-MNIST's files.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pattern choice, the noise and the memories.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default results/memory-<data>).")] = None,
    overwrite: OutOverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Store N patterns in each memory, recall them from noisy queries, print exact match, MSE
    and the class of the recalled item; write results.json, table.md and recall-MEMORY.png."""
    from ..memory import make, measure, names, random_patterns

    chosen = names() if memories.strip() == "all" else [m.strip() for m in memories.split(",")]
    unknown = [m for m in chosen if m not in names()]
    if unknown or len(set(chosen)) != len(chosen):
        what = f"unknown memory {unknown[0]!r}" if unknown else f"a memory named twice in {memories!r}"
        raise ConfigError(f"{what}: choose among {', '.join(names())} (comma-separated, each once) or all")
    ns = _numbers(stored, "--stored", integer=True)
    levels = _numbers(noise, "--noise", integer=False)
    if any(n < 1 for n in ns):
        raise ConfigError(f"--stored must be whole numbers of at least 1, got {stored!r}")
    if any(not 0 <= level <= 1 for level in levels):
        raise ConfigError(f"--noise must be fractions of pixels in [0, 1], got {noise!r}")
    if mode not in measure.NOISE_MODES:
        raise ConfigError(f"--mode must be flip or mask, got {mode!r}")
    if kind != "auto" and kind not in measure.KINDS:
        raise ConfigError(f"--kind must be auto, {', '.join(measure.KINDS)}, got {kind!r}")
    if data not in ("fashion-mnist", "random"):
        raise ConfigError(f"--data must be fashion-mnist or random, got {data!r}")
    if key_code not in measure.KEY_CODES:
        raise ConfigError(f"--keys must be one of {', '.join(measure.KEY_CODES)}, got {key_code!r}")
    for value, flag in ((dim, "--dim"), (queries, "--queries")):
        if value < 1:
            raise ConfigError(f"{flag} must be a whole number of at least 1, got {value}")
    if data == "fashion-mnist" and max(ns) > 60000:
        raise ConfigError(f"--stored must be at most 60000 (the Fashion-MNIST training images), got {max(ns)}")
    if seed < 0:
        raise ConfigError(f"invalid --seed {seed}: it must be a whole number of at least 0")
    options = _memory_options(opt, chosen)
    kinds = {}
    for name in chosen:
        kinds[name] = measure.DEFAULT_KIND[name] if kind == "auto" else kind
        need = _NEEDS_KIND.get(name)
        if need and kinds[name] != need:
            raise ConfigError(f"memory {name} stores {need} patterns only; use --kind {need} or auto")
        if key_code != "given" and not name.startswith("key-value"):
            raise ConfigError(f"--keys {key_code} applies to the key-value memories only, not {name}")
        make(name, 4, **options[name])  # options refused here, before any data is loaded
    target = out if out is not None else Path("results") / f"memory-{data}"
    _check_out(target, overwrite)
    rows: list[dict[str, Any]] = []
    for name in chosen:
        if data == "random":
            pats = random_patterns(max(ns), dim, seed=seed, sparsity=0.5 if kinds[name] == "binary" else None)
            labels = None
        else:
            pats, labels = measure.fashion_mnist_patterns(max(ns), kinds[name], seed=seed, data_dir=data_dir)
        rows += measure.recall_quality(name, pats, labels, stored=ns, noise=levels, mode=mode, kind=kinds[name],
                                       queries=queries, key_code=key_code, seed=seed, options=options[name])
    written = _write(target, rows, chosen, data, overwrite)
    _show(rows, written)


def _write(target: Path, rows: list[dict[str, Any]], chosen: list[str], data: str, overwrite: bool) -> list[Path]:
    from ..reporting.memory import markdown_table, plot_recall

    title = f"Recall quality on {data}"
    contents: dict[str, Any] = {
        "results.json": json.dumps(jsonable.plain(rows), indent=1),
        "table.md": markdown_table(rows, title),
    }
    for name in chosen:
        sel = [r for r in rows if r["memory"] == name]
        contents[f"recall-{name}.png"] = lambda path, sel=sel, name=name: plot_recall(sel, path, f"{name}: {title}")
    return files.write_directory(target, contents, overwrite=overwrite)


def _show(rows: list[dict[str, Any]], written: list[Path]) -> None:
    console = _console()
    table = Table(title="recall quality")
    for col in ("memory", "N", "noise", "exact", "MSE", "item", "class"):
        table.add_column(col, justify="left" if col == "memory" else "right")
    for r in rows:
        table.add_row(r["memory"], str(r["stored"]), f"{r['noise']:.2f}", f"{r['exact']:.3f}", f"{r['mse']:.4f}",
                      f"{r['item']:.3f}", "—" if r["class"] is None else f"{r['class']:.3f}")
    console.print(table)
    console.print(f"written: {', '.join(str(p) for p in written)}")
