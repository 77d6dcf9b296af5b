"""Liquids (model ``lsm``) compared by the representation measures beyondbp ships, on their
cached test-set features (beyondbp.training.liquid_features.load_features).

Every ``--liquid LABEL=SOURCE`` names one liquid: SOURCE is a run's output folder (or its
results.json; ``SOURCE#i`` picks run i of a compare output), or a feature cache file
``<feature_cache>/<key>.pt`` written since 2026-12-07 (older cache files hold no labels: give
their run's output folder). The liquids must have seen the same test images: the same number,
the same labels and the same images (fingerprint); anything else is refused (exit 2). Whether
they also received the same input spike trains (same run seed, ``rate_max``, ``duration``,
``feature_batch``: input spikes follow the run's seed, not the liquid's structure seed) is said
under the table.

On ``--stimuli`` evenly spaced test images (default 2000; all when fewer), with each liquid's
features as its readout sees them (``--features``, default ``authors``: spike counts ÷ the
image's total ÷ the training maximum; ``counts`` for the raw counts), every pair of liquids and
each liquid against two references, the raw pixels (the input) and the one-hot labels:

* linear CKA with the unbiased HSIC estimator (1 = same representation up to rotation and
  isotropic scale);
* RSA: Spearman correlation of the correlation-distance RDMs;
* the angular Procrustes shape distance (alpha 1, radians; 0 = same shape, pi/2 the largest).

Against the one-hot labels CKA and RSA measure class structure without training a readout (no
dedicated class-structure measure is shipped). Nothing is written: the cache files are only read.

    python bench/lsm_representations.py --liquid nalsm-s0=/work/s6/nalsm/seed0 \\
        --liquid fixed-w1.0=/work/s7/fixed_w1.0 --liquid stdp=/work/s7/stdp_red
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import torch

from beyondbp import data as data_mod
from beyondbp.analysis.representations import distance_matrix
from beyondbp.errors import BeyondBPError, ConfigError
from beyondbp.training import RunConfig, load_dataset
from beyondbp.training.liquid import samples_digest
from beyondbp.training.liquid_features import LiquidFeatures, load_features

#: (column title, measure name, distance -> value)
MEASURES = (
    ("CKA (unbiased)", "cka_unbiased", lambda d: 1.0 - d),
    ("RSA (Spearman)", "rsa_spearman", lambda d: 1.0 - d),
    ("Procrustes angle (rad)", "procrustes", lambda d: d),
)
PIXELS, LABELS = "pixels (input)", "labels (one-hot)"
#: Stimulus-record fields that fix the input spike trains besides the images.
SPIKE_FIELDS = ("seed", "rate_max", "duration", "feature_batch")


def parse_liquid(text: str) -> tuple[str, str, int | None]:
    """``LABEL=SOURCE[#RUN]`` -> (label, source, run)."""
    label, sep, source = text.partition("=")
    if not sep or not label.strip() or not source.strip():
        raise ConfigError(f"--liquid {text!r} is not LABEL=SOURCE (a run's output folder, results.json or cache file).")
    run = None
    head, hash_, tail = source.rpartition("#")
    if hash_ and tail.isdigit():
        source, run = head, int(tail)
    return label.strip(), source.strip(), run


def check_same_stimuli(liquids: list[tuple[str, LiquidFeatures]]) -> str:
    """Refuse liquids that did not see the same test images; say whether their input spikes match."""
    if len(liquids) < 1:
        raise ConfigError("give at least one --liquid LABEL=SOURCE.")
    labels = [label for label, _ in liquids]
    for label in labels:
        if labels.count(label) > 1 or label in (PIXELS, LABELS):
            raise ConfigError(f"liquid label {label!r} is given twice or names a reference; give each liquid its own label.")
    for label, lf in liquids:
        if lf.labels_test is None or lf.stimuli is None:
            raise ConfigError(f"liquid {label!r}: its cache file {lf.record['path']!r} holds no labels (written before "
                              "2026-12-07); give its run's output folder (results.json) instead.")
    first, ref = liquids[0]
    for label, lf in liquids[1:]:
        if lf.counts_test.shape[0] != ref.counts_test.shape[0]:
            raise ConfigError(f"liquid {label!r} has {lf.counts_test.shape[0]} test images and {first!r} has "
                              f"{ref.counts_test.shape[0]}; compare liquids fed the same test images (same data, n_test).")
        if not torch.equal(lf.labels_test.long(), ref.labels_test.long()):
            raise ConfigError(f"liquid {label!r} has other test labels than {first!r}; compare liquids fed the same "
                              "test images (same data, n_test).")
        if lf.stimuli.get("test_samples") != ref.stimuli.get("test_samples"):
            raise ConfigError(f"liquid {label!r} saw other test images than {first!r} (their fingerprints differ); "
                              "compare liquids fed the same test images (same data and data options, n_test).")
    differ = [f for f in SPIKE_FIELDS if len({repr(lf.stimuli.get(f)) for _, lf in liquids}) > 1]
    if not differ:
        return "same test images and identical input spike trains (same run seed, rate_max, duration, feature_batch)"
    return (f"same test images; input spike trains drawn differently ({', '.join(differ)} differ), "
            "so part of any difference is input noise")


def subset(n: int, stimuli: int) -> np.ndarray:
    """``stimuli`` evenly spaced indices of ``n`` (all when fewer)."""
    if stimuli >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, stimuli).round().astype(np.int64))


def input_pixels(lf: LiquidFeatures) -> torch.Tensor:
    """The raw test images the liquid saw (flattened), checked against its fingerprint."""
    st = lf.stimuli
    config = lf.record.get("config")
    if config is not None:
        ds = load_dataset(RunConfig.from_dict(config))
    else:
        ds = data_mod.load(st["data"], None, **st["data_options"]).subset(None, st["n_test"])
    if samples_digest(ds.x_test) != st.get("test_samples"):
        raise ConfigError(f"the {st['data']!r} test images on this machine are not the ones in {lf.record['path']!r}; "
                          "compare with --no-pixels.")
    return ds.x_test.reshape(len(ds.x_test), -1).float()


def compare(liquids: list[tuple[str, LiquidFeatures]], stimuli: int = 2000, kind: str = "authors",
            pixels: torch.Tensor | None = None) -> dict[str, Any]:
    """Every measure of :data:`MEASURES` for every pair of liquids and each liquid against the
    references (``pixels``: the test images, (n_test, d), or None; the one-hot labels)."""
    if stimuli < 4:
        raise ConfigError(f"--stimuli must be at least 4 (unbiased CKA needs 4), not {stimuli}.")
    note = check_same_stimuli(liquids)
    idx = subset(liquids[0][1].counts_test.shape[0], stimuli)
    names = [label for label, _ in liquids]
    reps = [lf.features(kind)[1][idx].double().numpy() for _, lf in liquids]
    if pixels is not None:
        names.append(PIXELS)
        reps.append(pixels[idx].double().numpy())
    y = liquids[0][1].labels_test.long()[idx]
    names.append(LABELS)
    reps.append(torch.nn.functional.one_hot(y, int(y.max()) + 1).double().numpy())
    started = time.perf_counter()
    values = {title: np.vectorize(fn)(distance_matrix(m, reps, **({"max_stimuli": None} if m.startswith("rsa") else {})))
              for title, m, fn in MEASURES}
    n_liq = len(liquids)
    pairs = [(i, j) for i in range(n_liq) for j in range(i + 1, n_liq)]
    pairs += [(i, j) for j in range(n_liq, len(names)) for i in range(n_liq)]
    if pixels is not None:
        pairs.append((n_liq, n_liq + 1))
    rows = [{"a": names[i], "b": names[j], **{t: float(values[t][i, j]) for t in values}} for i, j in pairs]
    info = []
    for label, lf in liquids:
        c = lf.counts_test[idx].float()
        info.append({"liquid": label, "neurons": lf.neurons, "active": float((c.sum(0) > 0).float().mean()),
                     "spikes_per_image": float(c.sum(1).mean()), "measurements": lf.measurements,
                     "init_images": lf.record["init_images"], "path": lf.record["path"]})
    return {"rows": rows, "liquids": info, "note": note, "stimuli": len(idx), "features": kind,
            "seconds": time.perf_counter() - started}


def markdown(result: dict[str, Any]) -> str:
    titles = [t for t, _, _ in MEASURES]
    lines = [f"Test-set features ({result['features']}) on {result['stimuli']} evenly spaced test images; "
             f"{result['note']}.", "",
             "| liquid | neurons | active on the subset | spikes / image | branching factor | silent (20 images) |"
             " init images |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["liquids"]:
        m = r["measurements"]
        lines.append(f"| {r['liquid']} | {r['neurons']} | {r['active']:.1%} | {r['spikes_per_image']:.0f} | "
                     f"{m.get('branching_factor', float('nan')):.3f} | {m.get('silent_fraction', float('nan')):.1%} | "
                     f"{r['init_images']} |")
    lines += ["", "| A | B | " + " | ".join(titles) + " |", "|---|---|" + "---:|" * len(titles)]
    for r in result["rows"]:
        lines.append(f"| {r['a']} | {r['b']} | " + " | ".join(f"{r[t]:.3f}" for t in titles) + " |")
    lines += ["", f"(measures: {result['seconds']:.1f} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--liquid", action="append", default=[], metavar="LABEL=SOURCE",
                        help="a liquid: LABEL=run output folder | results.json[#RUN] | cache file (repeat)")
    parser.add_argument("--stimuli", type=int, default=2000, help="evenly spaced test images compared (default 2000)")
    parser.add_argument("--features", default="authors", choices=("authors", "l1", "counts"),
                        help="features as the readout sees them (authors, l1) or raw spike counts")
    parser.add_argument("--no-pixels", action="store_true", help="leave out the raw-pixel reference")
    args = parser.parse_args(argv)
    try:
        liquids = []
        for text in args.liquid:
            label, source, run = parse_liquid(text)
            liquids.append((label, load_features(source, run=run)))
        check_same_stimuli(liquids)
        pixels = None if args.no_pixels else input_pixels(liquids[0][1])
        result = compare(liquids, args.stimuli, args.features, pixels)
    except BeyondBPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
