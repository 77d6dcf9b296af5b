"""Every rendering of results: tables, figures, pages and the files that hold them.

The library computes and returns results; this package turns them into Markdown, PNG, HTML,
JSON and CSV. It is the top floor: only the command line (:mod:`beyondbp.cli`) imports it,
and it imports no CLI.

* :mod:`.runs` — the comparison table of runs, learning curves, ``results.json``;
* :mod:`.study` — a study's report (``report.html``, ``report.md``, ``report.json``, figures);
* :mod:`.similarity` — the files of ``beyondbp analyze`` (distance heatmaps, MDS, identification);
* :mod:`.adapt` — the test-time adaptation table, error plot and corruption gallery;
* :mod:`.continual` — the continual-learning table and accuracy matrices;
* :mod:`.evolution` — the success-per-generation figure of ``beyondbp evolve``.
"""
