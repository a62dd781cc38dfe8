"""The project's own error type, so callers and the CLI can tell user mistakes from bugs."""

from __future__ import annotations


class CmlgraphError(Exception):
    """A problem with the user's input, data or environment, with a message that names the fix.

    The CLI prints the message on one line and exits non-zero without a traceback.
    """


class ConfigError(CmlgraphError, ValueError):
    """A bad config key, value or CLI flag."""


class DataError(CmlgraphError):
    """A dataset that is missing, corrupted, partial or unusable for the requested few-shot setting."""


class NumericalError(CmlgraphError):
    """A NaN or inf loss or gradient during training.

    Attributes:
        step: The meta-step (1-based) that failed, when one did (``None``: the run as a whole, e.g. every
            meta-batch skipped). Losses are read back in batches, so the run may have gone on past it.
    """

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class ResourceError(CmlgraphError, MemoryError):
    """A run that cannot fit the device's memory (estimated before it starts, instead of being killed)."""
