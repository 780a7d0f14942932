"""Shared pieces of the geometry diagnoses (``diagnose_*.py``).

The sampler's flat unconstrained coordinates, their names, and the Hessian of
minus the log density by central differences of the compiled gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray


def coordinate_names(model: Any) -> list[str]:
    """The variable each flat coordinate belongs to, in nutpie's and PyMC's order."""
    point = model.initial_point()
    names: list[str] = []
    for var in model.value_vars:
        names += [var.name] * int(np.prod(point[var.name].shape))
    return names


def coordinate_labels(model: Any) -> list[str]:
    """``name`` for scalars, ``name[i]`` for the i-th flat entry of an array."""
    names = coordinate_names(model)
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    labels, seen = [], dict.fromkeys(counts, 0)
    for n in names:
        labels.append(n if counts[n] == 1 else f"{n}[{seen[n]}]")
        seen[n] += 1
    return labels


def logp_dlogp(model: Any, draw: NDArray[np.float64], logp: float) -> Callable[..., Any]:
    """The model's compiled flat log density and gradient, checked against a draw.

    nutpie's flat vector must be PyMC's: the log densities agree at ``draw``.
    """
    fn = model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
    fn.set_extra_values({})
    assert np.isclose(fn(draw)[0], logp, rtol=1e-9)
    return fn


def hessian(fn: Callable[..., Any], x: NDArray[np.float64], h: float = 1e-5) -> NDArray[np.float64]:
    """Minus the Hessian of the log density at ``x``, symmetrised."""
    out = np.empty((x.size, x.size))
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        out[:, i] = (fn(x + e)[1] - fn(x - e)[1]) / (2 * h)
    return -0.5 * (out + out.T)
