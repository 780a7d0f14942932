"""pathlock: Bayesian hidden-state models of irreversible social dynamics.

The public API: specs (:class:`Spec`, :class:`MarkovSwitching`), data
(:func:`load_csv`, :func:`from_dataframe`), fitting (:func:`fit`,
:func:`build_model`, :func:`loglike`, :func:`load_fit`), simulation
(:func:`simulate`), comparison (:func:`compare`) and intervention timing
(:func:`compare_timings`).  Submodules are imported on first use so that
``import pathlock`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pathlock")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from pathlock import dims
from pathlock.errors import (
    DataError,
    InterventionError,
    KernelInputError,
    PathlockError,
    ResultFileError,
    SpecError,
)

_LAZY = {
    "hmm": ("pathlock.hmm", None),
    "analysis": ("pathlock.analysis", None),
    "interventions": ("pathlock.interventions", None),
    "datasets": ("pathlock.datasets", None),
    "Built": ("pathlock.build", "Built"),
    "build_model": ("pathlock.build", "build_model"),
    "loglike": ("pathlock.build", "loglike"),
    "Fit": ("pathlock.fit", "Fit"),
    "fit": ("pathlock.fit", "fit"),
    "load_fit": ("pathlock.fit", "load_fit"),
    "Spec": ("pathlock.spec", "Spec"),
    "load_csv": ("pathlock.data", "load_csv"),
    "from_dataframe": ("pathlock.data", "from_dataframe"),
    "simulate": ("pathlock.simulate", "simulate"),
    "MarkovSwitching": ("pathlock.msreg", "MarkovSwitching"),
    "compare": ("pathlock.analysis", "compare"),
    "compare_timings": ("pathlock.interventions", "compare_timings"),
}

__all__ = [
    "__version__",
    "dims",
    "DataError",
    "InterventionError",
    "KernelInputError",
    "PathlockError",
    "ResultFileError",
    "SpecError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pathlock' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _register_families() -> None:
    # Saved fits name their family; importing the spec modules registers them.
    for module_name in ("pathlock.spec", "pathlock.msreg"):
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # pragma: no cover - partial source trees
            if exc.name != module_name:
                raise
