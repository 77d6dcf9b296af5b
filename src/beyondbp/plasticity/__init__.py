"""Plasticity equations as pure functions, shared by the rules that train with them and by
the families that reuse them outside a rule (e.g. test-time adaptation's Hebbian layer).

:mod:`beyondbp.plasticity.softhebb`: SoftHebb's soft winner-take-all and Hebbian update.
:mod:`beyondbp.plasticity.node_perturbation`: node-perturbation plasticity with eligibility
traces (Miconi), used by :mod:`beyondbp.evolution`.
"""
