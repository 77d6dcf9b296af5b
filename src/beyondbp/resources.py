"""Memory counted before it is allocated.

Work whose size the user chooses (a model's widths, a continual sequence's number of tasks, the
tokens to sample) is sized here before anything is built: :func:`check_fits` compares an
estimate of the bytes it would hold with the machine's physical memory
(``os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")``) and refuses, with one sentence
saying how much it needs and how much the machine has, what cannot fit — instead of growing until
the kernel's out-of-memory killer ends it (or, on a shared machine, someone else's job).

The estimates count the large arrays only (the lower bound of what the work needs), so a refusal
is never wrong; work that passes may still need more than the estimate.
"""

from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["check_fits", "physical_memory", "show_bytes"]


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def show_bytes(n: int | float) -> str:
    """``n`` bytes for a message, in MiB below 1 GiB, else in GiB."""
    if n < 2**30:
        return f"{n / 2**20:,.1f} MiB"
    gib = n / 2**30
    return f"{gib:,.1f} GiB" if gib < 1e6 else f"{gib:.3g} GiB"


def check_fits(needed: int | float, what: str, advice: str) -> None:
    """Raise :class:`ConfigError` when ``needed`` bytes exceed this machine's physical memory:
    "<what> would need <N> of memory, more than this machine's <M>; <advice>."."""
    available = physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} would need {show_bytes(needed)} of memory, more than this machine's "
            f"{show_bytes(available)}; {advice}"
        )
