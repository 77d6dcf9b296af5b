"""Test-time adaptation: Fashion-MNIST-C, a BatchNorm source model, and source / norm / TENT / NHL.

>>> from beyondbp import adapt, data
>>> ds = data.load("fashion-mnist", normalize=False)
>>> model = adapt.train_source(ds.x_train, ds.y_train, epochs=2, seed=0)
>>> xc = adapt.corrupt(ds.x_test, "gaussian_noise", 5, seed=0)
>>> adapt.stream_error(adapt.make("tent", model), xc, ds.y_test, batch_size=128)["error"]

* :mod:`beyondbp.adapt.corruptions` — the ten corruptions, severities 1–5, seeded.
* :mod:`beyondbp.adapt.source` — the BatchNorm CNN, its training loop and checkpoint.
* :mod:`beyondbp.adapt.methods` — the adapters (equations, defaults, papers) and the streaming
  evaluation.
* :mod:`beyondbp.adapt.benchmark` — the benchmark over methods × corruptions × severities
  (:mod:`beyondbp.reporting.adapt` renders its table, error plot and the corruption gallery).

The command line: ``beyondbp adapt`` (see :mod:`beyondbp.cli`). A leaf of the library: it uses
``models``' conventions, ``data``, ``rules.softhebb`` and ``checkpoint``; nothing imports it but
the CLI.
"""

from .benchmark import benchmark
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt, parse_corruptions, parse_severities
from .methods import METHODS, NHL, Adapter, Norm, Source, Tent, describe_options, entropy, make, parse_methods, split_batches, stream_error
from .source import BNCNN, load_source, save_source, train_source

__all__ = [
    "BNCNN", "CORRUPTIONS", "METHODS", "NHL", "SEVERITIES", "Adapter", "Norm", "Source", "Tent", "benchmark",
    "corrupt", "describe_options", "entropy", "load_source", "make", "parse_corruptions", "parse_methods", "parse_severities",
    "save_source", "split_batches", "stream_error", "train_source",
]
