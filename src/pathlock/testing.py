"""Helpers for tests and benchmarks: posterior-shaped draws without sampling.

Analysis code (regime inputs, forward-backward, the vectorised per-draw
evaluation) needs a DataTree whose ``posterior`` holds valid values of every
free variable of a model; it does not need a posterior.  Sampling one would
cost a numba compilation; :func:`jittered_posterior` costs none.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from pathlock import dims
from pathlock.build import Built

__all__ = ["jittered_posterior"]


def jittered_posterior(
    built: Built, n_chains: int, n_draws: int, *, seed: int, scale: float = 0.3
) -> xr.DataTree:
    """The model's initial point jittered on the unconstrained scale, as a posterior group.

    Parameters
    ----------
    built : Built
    n_chains, n_draws : int
    seed : int
    scale : float
        Standard deviation of the normal jitter of every unconstrained value.

    Returns
    -------
    DataTree
        With one group, ``posterior``: every free variable of ``built.model``
        on its natural (constrained) scale, dims ``(chain, draw, ...)``; so the
        model's constraints and transforms hold for every draw.
    """
    model = built.model
    rng = np.random.default_rng(seed)
    to_rvs = model.compile_fn(
        model.replace_rvs_by_values(model.free_RVs),
        inputs=model.value_vars,
        on_unused_input="ignore",
        point_fn=False,
        mode="FAST_COMPILE",
    )
    start = model.initial_point()
    draws = [
        to_rvs(
            *(
                start[v.name] + scale * rng.normal(size=np.shape(start[v.name]))
                for v in model.value_vars
            )
        )
        for _ in range(n_chains * n_draws)
    ]
    post = {}
    for i, rv in enumerate(model.free_RVs):
        v = np.stack([d[i] for d in draws]).reshape((n_chains, n_draws, *np.shape(draws[0][i])))
        post[rv.name] = ((*dims.SAMPLE_DIMS, *(f"{rv.name}_dim_{j}" for j in range(v.ndim - 2))), v)
    return xr.DataTree.from_dict({"posterior": xr.DataTree(xr.Dataset(post))})
