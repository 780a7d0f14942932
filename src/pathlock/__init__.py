"""pathlock: Bayesian hidden-state models of irreversible social dynamics.

The public API: specs (:class:`Spec`, :class:`MarkovSwitching`), data
(:func:`load_csv`, :func:`from_dataframe`), fitting (:func:`fit`,
:func:`build_model`, :func:`loglike`, :func:`load_fit`), simulation
(:func:`simulate`), comparison (:func:`compare`) and intervention timing
(:func:`compare_timings`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pathlock")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

# Submodules and functions share names (``pathlock.fit`` the module and
# ``pathlock.fit`` the function): bind the functions eagerly, after their
# modules are imported, so that no later import can rebind the names.
from pathlock import analysis, datasets, dims, hmm, interventions
from pathlock.analysis import compare
from pathlock.build import Built, build_model, load_spec, loglike
from pathlock.data import from_dataframe, load_csv
from pathlock.errors import (
    DataError,
    InterventionError,
    KernelInputError,
    PathlockError,
    ResultFileError,
    SpecError,
)
from pathlock.fit import Fit, fit, load_fit
from pathlock.interventions import compare_timings
from pathlock.msreg import MarkovSwitching
from pathlock.simulate import simulate
from pathlock.spec import Spec

__all__ = [
    "__version__",
    "analysis",
    "datasets",
    "dims",
    "hmm",
    "interventions",
    "Built",
    "DataError",
    "Fit",
    "InterventionError",
    "KernelInputError",
    "MarkovSwitching",
    "PathlockError",
    "ResultFileError",
    "Spec",
    "SpecError",
    "build_model",
    "compare",
    "compare_timings",
    "fit",
    "from_dataframe",
    "load_csv",
    "load_fit",
    "load_spec",
    "loglike",
    "simulate",
]


def _register_families() -> None:
    # Saved fits name their family; importing the spec modules registers them.
    for module_name in ("pathlock.spec", "pathlock.msreg"):
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # pragma: no cover - partial source trees
            if exc.name != module_name:
                raise
