"""The contract every registered credit-assignment rule honours (one suite, all rules).

The checks live in the library, :mod:`beyondbp.testing` (what is checked, and what a rule class
declares to tell the checks what applies to it, is documented there), so that a rule written
outside the package runs the same ones (``beyondbp.testing.check_rule``). Here they run as one
test per registered rule and check (ids like ``fa-learns_digits[mlp]``), so a rule registered
later is checked automatically.
"""

from __future__ import annotations

from beyondbp.testing import parametrize_with_rules


@parametrize_with_rules()
def test_rule_contract(rule, check):
    check(rule)
