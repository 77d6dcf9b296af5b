"""Measurements of a spiking liquid: branching factor, firing rates per population, silent
fraction. They live in :mod:`beyondbp.spiking.criticality` (a leaf, so that the run layer can
record them per run); this module keeps the analysis-side name."""

from __future__ import annotations

from ..spiking.criticality import branching_factor, liquid_measurements, raster_measurements

__all__ = ["branching_factor", "liquid_measurements", "raster_measurements"]
