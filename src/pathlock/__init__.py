"""pathlock: Bayesian hidden-state models of irreversible social dynamics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pathlock")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from pathlock import dims, hmm
from pathlock.errors import (
    DataError,
    InterventionError,
    KernelInputError,
    PathlockError,
    ResultFileError,
    SpecError,
)

__all__ = [
    "__version__",
    "dims",
    "hmm",
    "DataError",
    "InterventionError",
    "KernelInputError",
    "PathlockError",
    "ResultFileError",
    "SpecError",
]
