"""The files of a representation analysis (``beyondbp analyze``): per measure and layer a
heatmap of the network × network distances, a grid of all measures per layer, a classical-MDS
embedding per layer (:func:`beyondbp.analysis.identification.mds`), ``representations.md`` and
``representations.json``.

The writer (:func:`write_outputs`) renders everything in memory first, then writes the files into
a temporary folder beside ``out`` and moves it into place (:mod:`beyondbp.files`): all or
nothing. Figures are drawn on matplotlib's Agg canvas directly, so the caller's pyplot state and
backend are never touched; their tick labels are :func:`beyondbp.reporting.ticks.tidy_axes`'s.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import files
from ..analysis.identification import Identification, IdentificationScore, as_distance_matrix, label_codes, mds
from ..errors import ConfigError
from ..jsonable import finite_number, plain
from .ticks import tidy_axes

__all__ = ["OUTPUT_JSON", "OUTPUT_MD", "check_output", "read_outputs", "render_outputs", "write_outputs"]

OUTPUT_JSON = "representations.json"
OUTPUT_MD = "representations.md"
_MARKER = "beyondbp_representations"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"


def _file_names(items: Sequence[str]) -> dict[str, str]:
    """A distinct file-name-safe form of each name."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for item in items:
        base = _safe_name(item)
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        out[item] = name
    return out


def _arrays_to_lists(value: Any) -> Any:
    if isinstance(value, (Identification, IdentificationScore)):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "detach") and hasattr(value, "tolist") and getattr(value, "dim", lambda: 0)() > 0:
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {k: _arrays_to_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_arrays_to_lists(v) for v in value]
    return value


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _validate(result: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise ConfigError(f"the result must be a mapping, got {type(result).__name__}")
    for key in ("networks", "layers", "measures", "distances"):
        if key not in result:
            raise ConfigError(f"the result has no {key!r} entry; it needs networks, layers, measures and distances")
    networks = list(result["networks"])
    if len(networks) < 2:
        raise ConfigError(f"the result needs at least two networks, got {len(networks)}")
    for k, net in enumerate(networks):
        if not isinstance(net, Mapping) or "rule" not in net:
            raise ConfigError(f"network {k} of the result has no 'rule'; each network needs id, rule, seed and label")
    layers = [str(x) for x in result["layers"]]
    n = len(networks)
    distances: dict[str, dict[str, np.ndarray]] = {}
    for measure, per_layer in dict(result["distances"]).items():
        if not isinstance(per_layer, Mapping):
            raise ConfigError(f"distances of {measure!r} must map layer names to matrices")
        distances[str(measure)] = {}
        for layer, D in per_layer.items():
            M = as_distance_matrix(D)
            if M.shape[0] != n:
                raise ConfigError(
                    f"the {measure!r} distances of layer {layer!r} are {M.shape[0]} × {M.shape[0]} but there are {n} networks"
                )
            distances[str(measure)][str(layer)] = M
    return {"networks": networks, "layers": layers, "distances": distances}


def _figure(width: float, height: float, dpi: int = 110) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    tidy_axes(fig)  # plain tick labels (the colour bars'): no offset, no "×10^0"
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.12)
    fig.clear()
    return buf.getvalue()


_LABEL_CHARS = 28  # a rule/group name on a figure is cut to this many characters ("…" marks the cut)


def _short_label(text: Any) -> str:
    """A group's name as a figure shows it: at most :data:`_LABEL_CHARS` characters, so that
    long ``--group-by`` names cannot widen a figure without bound (the tables keep them whole)."""
    text = str(text)
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def _rule_colours(rules: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(rules) <= 10 else "tab20"]
    return {rule: cmap(i % cmap.N) for i, rule in enumerate(rules)}


_MARKERS = "osD^vP*Xhp<>"


def _order(networks: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
    """Network order (by rule in order of first appearance, then seed), the rules, and each
    rule's [start, end) block in that order."""
    _, rules = label_codes([str(net["rule"]) for net in networks])
    rank = {r: i for i, r in enumerate(rules)}
    order = sorted(range(len(networks)), key=lambda i: (rank[str(networks[i]["rule"])], _sort_key(networks[i].get("seed")), i))
    blocks, start = [], 0
    for r in rules:
        size = sum(1 for net in networks if str(net["rule"]) == r)
        blocks.append((start, start + size))
        start += size
    return np.array(order), rules, blocks


def _heatmap(ax: Any, M: np.ndarray, rules: Sequence[str], blocks: Sequence[tuple[int, int]], *,
             xticks: bool, yticks: bool, fontsize: float) -> Any:
    """Draw one ordered distance matrix; the diagonal (ignored) is shown in light grey."""
    from matplotlib import colormaps

    n = M.shape[0]
    off = ~np.eye(n, dtype=bool)
    shown = np.ma.masked_array(M, mask=~off)
    lo, hi = float(M[off].min()), float(M[off].max())
    if hi <= lo:
        hi = lo + 1e-12
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="equal")
    for start, _ in blocks[1:]:
        ax.axhline(start - 0.5, color="white", lw=1.2)
        ax.axvline(start - 0.5, color="white", lw=1.2)
    centres = [(a + b - 1) / 2 for a, b in blocks]
    ax.set_xticks(centres if xticks else [])
    ax.set_yticks(centres if yticks else [])
    if xticks:
        ax.set_xticklabels([_short_label(r) for r in rules], rotation=45, ha="right", rotation_mode="anchor",
                           fontsize=fontsize)
    if yticks:
        ax.set_yticklabels([_short_label(r) for r in rules], fontsize=fontsize)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return im


def _layer_text(layer: str) -> str:
    return layer if "layer" in layer.lower() else f"layer {layer}"


def _heatmap_figure(M: np.ndarray, order: np.ndarray, rules: Sequence[str], blocks: Sequence[tuple[int, int]],
                    measure: str, layer: str, measures: Mapping[str, Any], symmetric: bool) -> bytes:
    fig = _figure(7.2, 6.2)
    ax = fig.add_axes([0.2, 0.2, 0.6, 0.7])
    im = _heatmap(ax, M[np.ix_(order, order)], rules, blocks, xticks=True, yticks=True, fontsize=10)
    cax = fig.add_axes([0.82, 0.2, 0.03, 0.7])
    bar = fig.colorbar(im, cax=cax)
    bar.set_label(f"{measure} distance", fontsize=11)
    bar.ax.tick_params(labelsize=9)
    ax.set_title(f"{measure}, {_layer_text(layer)}", fontsize=13)
    if not symmetric:
        ax.set_ylabel("reference (recorded) network", fontsize=10)
        ax.set_xlabel("candidate network", fontsize=10)
    info = measures.get(measure) or {}
    desc = info.get("description") if isinstance(info, Mapping) else None
    note = f"{desc}. " if desc else ""
    fig.text(0.5, 0.015, note + "Networks ordered by rule, then seed; diagonal grey.", ha="center", fontsize=8.5,
             color="#444", wrap=True)
    return _png(fig)


def _suptitle(fig: Any, text: str, width: float, height: float, top_in: float) -> None:
    """A figure title that fits: on two lines (title, then what and where) when one is too wide,
    placed in the ``top_in`` inches above the panels; a title still too wide for the figure is
    cut ("…"), so that a long one cannot widen the PNG."""
    chars = max(int(width / 0.13), 20)
    if len(text) > chars and ": " in text:
        text = text.replace(": ", "\n", 1)
    text = "\n".join(line if len(line) <= chars else line[: chars - 1] + "…" for line in text.split("\n"))
    fig.suptitle(text, fontsize=16, y=1 - 0.12 / height, va="top")


def _title_room(text: str, width: float) -> float:
    return 1.25 if len(text) * 0.13 > width else 0.8


def _grid_shape(k: int) -> tuple[int, int]:
    cols = min(4, k) if k > 4 else k
    cols = max(cols, 1)
    return math.ceil(k / cols), cols


def _grid_figure(distances: Mapping[str, Mapping[str, np.ndarray]], measure_names: Sequence[str], layer: str,
                 order: np.ndarray, rules: Sequence[str], blocks: Sequence[tuple[int, int]], title: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    k = len(measure_names)
    rows, cols = _grid_shape(k)
    text = f"{title}: distances between networks, {_layer_text(layer)}"
    left, right, bottom = 1.15, 0.7, 1.05
    width = max(3.6 * cols + left + right, 6.5)
    top = _title_room(text, width)
    height = 3.45 * rows + top + bottom
    fig = _figure(width, height)
    gs = fig.add_gridspec(rows, cols, left=left / width, right=1 - right / width, bottom=bottom / height,
                          top=1 - top / height, wspace=0.3, hspace=0.22)
    for p, name in enumerate(measure_names):
        r, c = divmod(p, cols)
        ax = fig.add_subplot(gs[r, c])
        below = p + cols < k
        M = distances[name][layer][np.ix_(order, order)]
        im = _heatmap(ax, M, rules, blocks, xticks=not below, yticks=(c == 0), fontsize=11)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.locator = MaxNLocator(4)
        bar.update_ticks()
        bar.ax.tick_params(labelsize=10)
        ax.set_title(name, fontsize=14)
    _suptitle(fig, text, width, height, top)
    return _png(fig)


def _mds_figure(distances: Mapping[str, Mapping[str, np.ndarray]], measure_names: Sequence[str], layer: str,
                networks: Sequence[Mapping[str, Any]], rules: Sequence[str], title: str) -> bytes:
    k = len(measure_names)
    rows, cols = _grid_shape(k)
    spare = rows * cols > k  # an empty panel holds the legend; otherwise it goes on the right
    text = f"{title}: classical MDS of the networks, {_layer_text(layer)}"
    legend_in = 0.2 if spare else 2.0
    width = max(3.3 * cols + 0.2 + legend_in, 6.5)
    top = _title_room(text, width)
    height = 3.25 * rows + top + 0.15
    right = 1 - legend_in / width
    fig = _figure(width, height)
    gs = fig.add_gridspec(rows, cols, left=0.1 / width, right=right, bottom=0.15 / height, top=1 - top / height,
                          wspace=0.08, hspace=0.2)
    colours = _rule_colours(rules)
    net_rules = np.array([str(net["rule"]) for net in networks])
    handles, names = [], []
    for p, name in enumerate(measure_names):
        r, c = divmod(p, cols)
        ax = fig.add_subplot(gs[r, c])
        X = mds(distances[name][layer], 2)
        for i, rule in enumerate(rules):
            sel = net_rules == rule
            marker = _MARKERS[i % len(_MARKERS)]
            ax.scatter(X[sel, 0], X[sel, 1], s=110 if marker == "*" else 60, color=colours[rule], marker=marker,
                       edgecolors="black", linewidths=0.5, label=_short_label(rule), zorder=3)
        ax.set_aspect("equal", adjustable="datalim")
        ax.margins(0.08)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=14)
        for side in ax.spines.values():
            side.set_color("#999")
        if p == 0:
            handles, names = ax.get_legend_handles_labels()
    if spare:
        r, c = divmod(k, cols)
        lax = fig.add_subplot(gs[r, c:])
        lax.axis("off")
        lax.legend(handles, names, loc="center", fontsize=13, title="rule", title_fontsize=13, frameon=False,
                   ncol=2 if len(rules) > 6 and cols - c > 1 else 1, markerscale=1.3)
    else:
        fig.legend(handles, names, loc="center left", bbox_to_anchor=(right + 0.01, 0.5), fontsize=13, title="rule",
                   title_fontsize=13, frameon=False, markerscale=1.3)
    _suptitle(fig, text, width, height, top)
    return _png(fig)


def _fmt(value: Any, digits: int = 2) -> str:
    v = finite_number(value)
    return "—" if v is None else f"{v:.{digits}f}"


def _fmt_g(value: Any) -> str:
    v = finite_number(value)
    if v is None:
        return "—"
    return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def _with_interval(entry: IdentificationScore) -> str:
    return f"{_fmt(entry.accuracy)} [{_fmt(entry.interval[0])}, {_fmt(entry.interval[1])}]"


def _md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(result: Mapping[str, Any], checked: Mapping[str, Any], measure_names: Sequence[str],
              figures: Mapping[str, str], title: str) -> str:
    networks, layers = checked["networks"], checked["layers"]
    measures = result.get("measures") or {}
    rules = label_codes([str(net["rule"]) for net in networks])[1]
    seeds = sorted({net.get("seed") for net in networks}, key=_sort_key)
    ident: Mapping[str, Mapping[str, Identification]] = result.get("identification") or {}
    n_boot = None
    for per_layer in ident.values():
        for entry in per_layer.values():
            n_boot = entry.n_boot or n_boot
    parts = [f"# {title}"]
    parts.append(
        f"{len(networks)} networks ({len(rules)} rule{'s' if len(rules) != 1 else ''}: {', '.join(rules)}; "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}), "
        f"{len(layers)} layer{'s' if len(layers) != 1 else ''} ({', '.join(layers)}), "
        f"{len(measure_names)} measure{'s' if len(measure_names) != 1 else ''}. Every measure is a distance "
        "(0 = the same representation)."
    )
    if ident:
        parts.append("## Identification")
        parts.append(
            "Nearest neighbour: is the closest other network (leave one out) trained by the same rule? "
            "Reference identification (Han, Poggio & Cheung 2023): each network in turn is the \"recording\"; "
            "every rule is scored by its networks' mean distance to it, and the recording is identified when "
            "its own rule scores best. Intervals are 95 % percentile bootstrap intervals over seeds"
            + (f" ({n_boot} replicates)" if n_boot else "")
            + ": the recordings are resampled by seed while the candidates stay all the networks, so an "
            "interval says how much the accuracy depends on which seeds' networks are the recordings, not how "
            "it would vary with a fresh set of networks."
        )
        entries = [(name, layer, ident[name][layer]) for name in measure_names for layer in layers
                   if layer in ident.get(name, {})]
        entries += [(name, layer, entry) for name in ident if name not in measure_names for layer, entry in ident[name].items()]
        rows = [[name, layer, _with_interval(e.nn), _fmt(e.nn.chance), _with_interval(e.reference), _fmt(e.reference.chance)]
                for name, layer, e in entries]
        parts.append(_table(["measure", "layer", "nearest-neighbour accuracy [95 % interval]", "chance",
                             "reference identification (mean score) [95 % interval]", "chance"], rows))
    svd = result.get("stochastic_vs_deterministic") or []
    if svd:
        parts.append("## Stochastic vs deterministic shape distance")
        parts.append(
            "The same identification accuracies for the stochastic shape distance (Duong et al. 2023) and its "
            "deterministic counterpart on the same networks and layers."
        )
        rows = []
        for entry in svd:
            (ns, nd), (rs, rd) = entry["nn"], entry["reference"]
            rows.append([entry["layer"], entry["stochastic"], entry["deterministic"],
                         _with_interval(ns), _with_interval(nd), _with_interval(rs), _with_interval(rd)])
        parts.append(_table(["layer", "stochastic", "deterministic", "nearest neighbour: stochastic",
                             "nearest neighbour: deterministic", "reference: stochastic", "reference: deterministic"],
                            rows))
    snr = result.get("gradient_snr")
    if isinstance(snr, Mapping) and snr:
        rule_of = {str(net.get("id")): str(net["rule"]) for net in networks}
        parts.append("## Gradient signal-to-noise")
        parts.append(
            "Per layer, ‖mean g‖² / mean ‖g − mean g‖² over minibatches at the same model state, for the rule's "
            "update and for backprop's gradient on the same batches; ratio = rule / backprop."
        )
        rows = []
        for key, entry in snr.items():
            if not isinstance(entry, Mapping):
                continue
            for layer, v in (entry.get("layers") or {}).items():
                v = v if isinstance(v, Mapping) else {}
                rows.append([key, rule_of.get(str(key), str(key) if str(key) in rules else "—"), layer,
                             _fmt_g(v.get("rule")), _fmt_g(v.get("backprop")),
                             _fmt_g(v.get("ratio")), entry.get("batches", "—"), entry.get("batch_size", "—")])
        parts.append(_table(["network", "rule", "layer", "rule SNR", "backprop SNR", "ratio", "batches",
                             "batch size"], rows))
    grids = [(layer, figures.get(f"grid:{layer}")) for layer in layers]
    if any(f for _, f in grids):
        parts.append("## Distance matrices")
        parts.append("Networks ordered by rule, then seed; thin white lines separate rules; the diagonal is grey. "
                     "Each panel has its own colour scale.")
        for layer, f in grids:
            if f:
                parts.append(f"![distances between networks, {_layer_text(layer)}]({f})")
        links = []
        for name in measure_names:
            cells = [f"[{layer}]({figures[f'heat:{name}:{layer}']})" for layer in layers if f"heat:{name}:{layer}" in figures]
            if cells:
                links.append(f"- {name}: " + ", ".join(cells))
        if links:
            parts.append("One measure per figure:\n\n" + "\n".join(links))
    mds_figs = [(layer, figures.get(f"mds:{layer}")) for layer in layers]
    if any(f for _, f in mds_figs):
        parts.append("## MDS embeddings")
        parts.append("Classical MDS of each measure's (symmetrised) distances; one colour and marker per rule.")
        for layer, f in mds_figs:
            if f:
                parts.append(f"![classical MDS of the networks, {_layer_text(layer)}]({f})")
    if measures:
        parts.append("## Measures")
        parts.append("\n".join(f"- `{name}`: {(info or {}).get('description', '')}" if isinstance(info, Mapping)
                               else f"- `{name}`" for name, info in measures.items()))
    parts.append("## Networks")
    parts.append(_table(["id", "rule", "seed", "label"],
                        [[networks[i].get("id", "—"), networks[i]["rule"], networks[i].get("seed", "—"), networks[i].get("label", "—")]
                         for i in _order(networks)[0]]))
    settings = result.get("settings")
    if isinstance(settings, Mapping) and settings:
        parts.append("## Settings")
        parts.append("\n".join(f"- {k}: {json.dumps(plain(_arrays_to_lists(v)))}" for k, v in settings.items()))
    return "\n\n".join(parts) + "\n"


def render_outputs(result: Mapping[str, Any]) -> dict[str, bytes]:
    """Every file :func:`write_outputs` writes, name -> bytes, in memory."""
    checked = _validate(result)
    networks, layers, distances = checked["networks"], checked["layers"], checked["distances"]
    measures = result.get("measures") or {}
    if not isinstance(measures, Mapping):
        raise ConfigError("the result's 'measures' must map measure names to their description")
    measure_names = [m for m in measures if m in distances] + [m for m in distances if m not in measures]
    title = str(result.get("title") or "Representations")
    order, rules, blocks = _order(networks)
    layer_file = _file_names(layers)
    measure_file = _file_names(measure_names)
    out: dict[str, bytes] = {}
    figures: dict[str, str] = {}
    for layer in layers:
        present = [m for m in measure_names if layer in distances[m]]
        if not present:
            continue
        for name in present:
            info = measures.get(name)
            symmetric = bool(info.get("symmetric", True)) if isinstance(info, Mapping) else True
            fname = f"heatmap_{measure_file[name]}_{layer_file[layer]}.png"
            out[fname] = _heatmap_figure(distances[name][layer], order, rules, blocks, name, layer, measures, symmetric)
            figures[f"heat:{name}:{layer}"] = fname
        fname = f"heatmaps_{layer_file[layer]}.png"
        out[fname] = _grid_figure(distances, present, layer, order, rules, blocks, title)
        figures[f"grid:{layer}"] = fname
        fname = f"mds_{layer_file[layer]}.png"
        out[fname] = _mds_figure(distances, present, layer, networks, rules, title)
        figures[f"mds:{layer}"] = fname
    payload = plain({_MARKER: 1, **_arrays_to_lists(dict(result)), "figures": sorted(out)})
    out[OUTPUT_MD] = _markdown(result, checked, measure_names, figures, title).encode("utf-8")
    out[OUTPUT_JSON] = (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode("utf-8")
    return out


_KIND = "representations"  # the kind recorded in the folder's manifest (files.MANIFEST)


def _holds_output(directory: Path) -> bool:
    """Whether ``directory`` holds an output of :func:`write_outputs` (other files beside it
    allowed): its manifest or, from before manifests, its JSON's marker says so."""
    if files.manifest_names(directory, _KIND) is not None:
        return True
    try:
        return json.loads((directory / OUTPUT_JSON).read_text(encoding="utf-8")).get(_MARKER) == 1
    except (OSError, ValueError, AttributeError):
        return False


def check_output(out: str | Path, overwrite: bool = False) -> bool:
    """Refuse, before any work, an ``out`` that :func:`write_outputs` would refuse (see there);
    True when ``out`` holds a previous output that will be replaced."""
    out = Path(out)
    replace = files.check_output_directory(out, overwrite, "output directory", "representations output", _KIND)
    files.check_writable(out, "output directory", directory=True)
    return replace


def read_outputs(folder: str | Path) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """The result JSON and the figures (name -> PNG bytes) of a previous :func:`write_outputs`
    in ``folder``; None when ``folder`` holds none."""
    folder = Path(folder)
    if not folder.is_dir() or not _holds_output(folder):
        return None
    try:
        result = json.loads((folder / OUTPUT_JSON).read_text(encoding="utf-8"))
        figures = {name: (folder / name).read_bytes() for name in result.get("figures", [])
                   if isinstance(name, str) and name.endswith(".png") and (folder / name).is_file()}
    except (OSError, ValueError):
        return None
    return result, figures


def write_outputs(result: Mapping[str, Any], out: str | Path, overwrite: bool = False) -> list[Path]:
    """Write ``representations.json``, ``representations.md``, ``heatmap_<measure>_<layer>.png``,
    ``heatmaps_<layer>.png`` and ``mds_<layer>.png`` into ``out``, all or nothing, and return the
    paths written. A non-empty ``out`` is replaced only when it holds a previous output of this
    writer (and nothing else) or with ``overwrite=True``; anything else raises ``ConfigError``
    before any work is done."""
    out = Path(out)
    files.check_output_directory(out, overwrite, "output directory", "representations output", _KIND)
    files.check_writable(out, "output directory", directory=True)
    contents = render_outputs(result)
    files.write_directory(out, contents, overwrite=overwrite, kind=_KIND, holds="representations output")
    return [out / name for name in sorted(contents)]
