"""Plasticity equations as pure functions, shared by the rules that train with them and by
the families that reuse them outside a rule (e.g. test-time adaptation's Hebbian layer).

:mod:`beyondbp.plasticity.softhebb`: SoftHebb's soft winner-take-all and Hebbian update.
"""
