"""Exceptions raised by pathlock; every user-facing error derives from :class:`PathlockError`."""

from __future__ import annotations

__all__ = [
    "PathlockError",
    "KernelInputError",
    "SpecError",
    "DataError",
    "InterventionError",
    "ResultFileError",
]


class PathlockError(ValueError):
    """Base class of pathlock's errors; a ``ValueError`` so generic handlers still work."""


class KernelInputError(PathlockError):
    """Arrays handed to a regime kernel have the wrong shape or content."""


class SpecError(PathlockError):
    """A model specification is invalid (unknown key, wrong type, bad value)."""


class DataError(PathlockError):
    """Observed data do not match what the model needs."""


class InterventionError(PathlockError):
    """An intervention, policy or scenario is invalid for this fit."""


class ResultFileError(PathlockError):
    """A saved fit cannot be read (missing, corrupt, or from an incompatible version)."""
