"""User-facing errors.

A `DistillError` is a mistake in the user's input or configuration. Entry points print its message on one
line and exit with status 2 instead of showing a traceback; the message always names the file, row, column or
config key at fault and says how to fix it.
"""

from __future__ import annotations


class DistillError(Exception):
    """An error the user can fix (bad input file, bad config value)."""


class DataError(DistillError):
    """A dataset file is missing or malformed."""


class ConfigError(DistillError):
    """A config value is invalid."""


class StageNotReadyError(DistillError):
    """A stage needs the output of an earlier stage that has not been run."""
