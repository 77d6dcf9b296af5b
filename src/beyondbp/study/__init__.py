"""Studies: a grid of runs from one TOML spec, executed locally or on Ray, kept in a run store,
fitted and reported (see :mod:`beyondbp.study.spec`)."""
