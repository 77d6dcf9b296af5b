"""Plasticity found by evolution (issue 27): Miconi's plastic recurrent network and the
evolution-strategies loop over its innate weights and plasticity coefficients.

- :mod:`beyondbp.evolution.tasks`: the two-stimulus task family, DMS and DNMS withheld.
- :mod:`beyondbp.evolution.plastic_rnn`: the network and one lifetime of a population.
- :mod:`beyondbp.evolution.es`: antithetic ES with Adam; the non-plastic control.
"""
