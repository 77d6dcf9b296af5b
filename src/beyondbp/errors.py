"""The one exception family of beyondbp.

Every error the library raises on purpose is a :class:`BeyondBPError`. The command line turns
them into a one-line message and exit status 2; tracebacks are shown only with ``--debug``.
Messages are single sentences that say what was wrong and what is allowed.
"""

from __future__ import annotations


class BeyondBPError(Exception):
    """Base class of every error beyondbp raises on purpose."""


class ConfigError(BeyondBPError, ValueError):
    """A bad option value: unknown name, number out of range, incompatible choices."""


class ConfigErrors(ConfigError):
    """Several independent configuration mistakes found at once (e.g. in a study spec):
    ``problems`` holds one sentence each; the message is them joined by newlines. The command
    line prints each as its own ``error:`` line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [str(p) for p in problems]
        super().__init__("\n".join(self.problems))

    def __reduce__(self):  # pickles (process pools, Ray) with its list, not the joined text
        return (type(self), (self.problems,))


class UnsupportedModuleError(BeyondBPError, TypeError):
    """A rule was attached to a model containing a layer type it cannot train."""


class DataError(BeyondBPError):
    """A data set is missing, corrupt, or cannot be used as asked."""


class CheckpointError(BeyondBPError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""
