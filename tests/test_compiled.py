"""pathlock.compiled: nutpie's callbacks, cached on disk, computing what nutpie's do."""

from __future__ import annotations

import ctypes

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from pathlock.compiled import compile_nutpie

_P = ctypes.POINTER(ctypes.c_double)


def _model(y, bound=None):
    """Two data arrays (one of them 2-d), a transformed and an untransformed
    parameter, a deterministic; with ``bound``, a check that raises above it."""
    with pm.Model(coords={"obs": np.arange(len(y))}) as model:
        data = pm.Data("y", y, dims="obs")
        scale = pm.Data("scale", np.ones((2, len(y))))
        mu = pm.Normal("mu", 0.0, 5.0)
        sigma = pm.HalfNormal("sigma", 2.0)
        pm.Deterministic("shifted", mu + data, dims="obs")
        pm.Normal("obs_y", mu, sigma * scale[0], observed=data, dims="obs")
        if bound is not None:
            check = pytensor.raise_op.Assert("mu above the bound")(mu, pt.lt(mu, bound))
            pm.Potential("check", 1e-9 * check**2)
    return model


def _logp(compiled, x):
    n = compiled.n_dim
    x = np.ascontiguousarray(x, dtype=float)
    grad, logp = np.zeros(n), np.zeros(1)
    code = compiled.compiled_logp_func.ctypes(
        n,
        x.ctypes.data_as(_P),
        grad.ctypes.data_as(_P),
        logp.ctypes.data_as(_P),
        compiled.user_data.ctypes.data_as(ctypes.c_void_p),
    )
    return code, logp[0], grad


def _expand(compiled, x):
    x = np.ascontiguousarray(x, dtype=float)
    out = np.zeros(compiled.n_expanded)
    code = compiled.compiled_expand_func.ctypes(
        compiled.n_dim,
        compiled.n_expanded,
        x.ctypes.data_as(_P),
        out.ctypes.data_as(_P),
        compiled.user_data.ctypes.data_as(ctypes.c_void_p),
    )
    return code, out


@pytest.fixture(scope="module")
def y():
    return np.random.default_rng(5).normal(1.0, 0.5, size=40)


def _assert_same_up_to_rounding(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Equal to 1e-12 of the largest entry.

    Not bit for bit: ``compile_nutpie`` compiles without numba's fast-math
    flags (``pathlock.compiled.sampler_flags``) and nutpie's own compile with
    PyTensor's default, which reassociates and contracts floating-point
    operations (5e-16 relative in the canonical model's log density). A
    wrong layout, offset or data array moves these values by far more than
    1e-12.
    """
    theirs = np.asarray(theirs)
    scale = max(float(np.max(np.abs(theirs), initial=0.0)), 1.0)
    np.testing.assert_allclose(ours, theirs, rtol=0.0, atol=1e-12 * scale)


def test_same_density_trace_and_starts_as_nutpie(y):
    """Log density, gradient, expanded draw and jittered starts equal nutpie's own
    compile, at several points; the layout nutpie reads them with is the same."""
    import nutpie

    model = _model(y)
    ours = compile_nutpie(model, jitter_rvs=set(model.free_RVs))
    theirs = nutpie.compile_pymc_model(model, backend="numba", jitter_rvs=set(model.free_RVs))
    assert (ours.n_dim, ours.n_expanded) == (theirs.n_dim, theirs.n_expanded)
    assert ours.shapes == theirs.shapes
    assert ours.dims == theirs.dims
    assert ours.shape_info[0] == theirs.shape_info[0]
    for x in np.random.default_rng(1).normal(size=(5, ours.n_dim)):
        code, logp, grad = _logp(ours, x)
        code_t, logp_t, grad_t = _logp(theirs, x)
        assert code == code_t == 0
        _assert_same_up_to_rounding(logp, logp_t)
        _assert_same_up_to_rounding(grad, grad_t)
        code, out = _expand(ours, x)
        code_t, out_t = _expand(theirs, x)
        assert code == code_t == 0
        _assert_same_up_to_rounding(out, out_t)
    for seed in (0, 7):
        start, start_t = ours.initial_point_func(seed), theirs.initial_point_func(seed)
        _assert_same_up_to_rounding(start, start_t)


def test_second_compile_loads_the_callbacks_from_disk(y):
    """The same graph compiled again loads both callbacks from the disk cache."""
    compile_nutpie(_model(y))
    again = compile_nutpie(_model(y))
    assert again.compiled_logp_func.cache_hits == 1
    assert again.compiled_expand_func.cache_hits == 1


_COLD_OR_CACHED = r"""
import ctypes, hashlib, json
import numpy as np
import pymc as pm
from pathlock.compiled import compile_nutpie

y = np.random.default_rng(5).normal(1.0, 0.5, size=40)
with pm.Model(coords={"obs": np.arange(len(y))}) as plain:
    data = pm.Data("y", y, dims="obs")
    mu = pm.Normal("mu", 0.0, 5.0)
    sigma = pm.HalfNormal("sigma", 2.0)
    pm.Normal("obs_y", mu, sigma, observed=data, dims="obs")
with pm.Model(coords={"obs": np.arange(len(y))}) as latent:
    data = pm.Data("y", y, dims="obs")
    mu = pm.Normal("mu", 0.0, 5.0)
    sigma = pm.HalfNormal("sigma", 2.0)
    level = pm.Normal("level", mu, 1.0, dims="obs")
    pm.Deterministic("growth", pm.math.exp(level).cumsum(), dims="obs")
    pm.Normal("obs_y", level, sigma, observed=data, dims="obs")
P = ctypes.POINTER(ctypes.c_double)
hits, digest = [], hashlib.sha256()
for compiled in (compile_nutpie(plain), compile_nutpie(latent, run_time_dims={"obs"})):
    user = compiled.user_data.ctypes.data_as(ctypes.c_void_p)
    n = compiled.n_dim
    hits.append(compiled.compiled_logp_func.cache_hits)
    for x in np.random.default_rng(1).normal(size=(10, n)):
        x = np.ascontiguousarray(x)
        grad, logp, out = np.zeros(n), np.zeros(1), np.zeros(compiled.n_expanded)
        compiled.compiled_logp_func.ctypes(
            n, x.ctypes.data_as(P), grad.ctypes.data_as(P), logp.ctypes.data_as(P), user
        )
        compiled.compiled_expand_func.ctypes(
            n, compiled.n_expanded, x.ctypes.data_as(P), out.ctypes.data_as(P), user
        )
        digest.update(logp.tobytes() + grad.tobytes() + out.tobytes())
print(json.dumps([hits, digest.hexdigest()]))
"""


def test_a_cold_compile_computes_what_the_cache_loads(tmp_path):
    """The process that compiles a graph cold and a later one that loads it from
    the disk cache compute the same log density, gradient and trace, bit for
    bit, so the first fit of a spec on a machine draws what later fits draw.
    With PyTensor's default fast-math flags the first of these models differs
    in the last bits (so does the canonical decoupling model), which NUTS
    amplifies into other draws."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", _COLD_OR_CACHED], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    (cold_hits, cold), (cached_hits, cached) = runs
    assert (cold_hits, cached_hits) == ([0, 0], [1, 1])
    assert cold == cached


def _latent_model(y):
    """A latent level per observation: a free variable shaped by the ``obs`` dim."""
    with pm.Model(coords={"obs": np.arange(len(y))}) as model:
        data = pm.Data("y", y, dims="obs")
        mu = pm.Normal("mu", 0.0, 5.0)
        sigma = pm.HalfNormal("sigma", 2.0)
        level = pm.Normal("level", mu, 1.0, dims="obs")
        pm.Deterministic("resid", data - level, dims="obs")
        pm.Normal("obs_y", level, sigma, observed=data, dims="obs")
    return model


def _key(compiled):
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    return CACHED_SRC_FUNCTIONS.get(compiled.logp_func.vm.jit_fn.py_func)


def test_another_length_loads_the_callbacks_from_disk(y):
    """With ``obs`` a run-time dim, the flat point's length is not compiled in: a
    model whose data are shorter has the same graph key, loads both callbacks
    from disk and computes its own density, gradient and trace, in nutpie's
    layout; a point of the wrong length is refused. Without it the layout is
    nutpie's static one and each length is its own graph."""
    long = compile_nutpie(_latent_model(y), run_time_dims={"obs"})
    short_y = y[:25] - 0.5
    model = _latent_model(short_y)
    short = compile_nutpie(model, run_time_dims={"obs"})
    assert _key(short) == _key(long) is not None
    assert short.compiled_logp_func.cache_hits == 1
    assert short.compiled_expand_func.cache_hits == 1
    static = compile_nutpie(_latent_model(short_y))
    assert _key(static) not in (None, _key(short))
    assert static.shape_info == short.shape_info
    assert (short.n_dim, short.n_expanded) == (2 + 25, 2 + 25 + 1 + 25)
    x = np.random.default_rng(3).normal(size=short.n_dim)
    point = {"mu": x[0], "sigma_log__": x[1], "level": x[2:]}
    code, logp, grad = _logp(short, x)
    assert code == 0
    np.testing.assert_allclose(logp, model.compile_logp()(point), rtol=1e-12)
    np.testing.assert_allclose(grad, model.compile_dlogp()(point), rtol=1e-12)
    code_s, logp_s, grad_s = _logp(static, x)
    assert code_s == 0
    np.testing.assert_allclose([logp_s, *grad_s], [logp, *grad], rtol=1e-12)
    code, out = _expand(short, x)
    assert code == 0
    np.testing.assert_allclose(out[-25:], short_y - x[2:], rtol=1e-12)
    n, grad_, logp_ = 3, np.zeros(3), np.zeros(1)
    code = short.compiled_logp_func.ctypes(
        n,
        np.zeros(n).ctypes.data_as(_P),
        grad_.ctypes.data_as(_P),
        logp_.ctypes.data_as(_P),
        short.user_data.ctypes.data_as(ctypes.c_void_p),
    )
    assert code != 0


def test_cached_callbacks_read_the_data_they_are_given(y):
    """A callback loaded from the cache reads the data of its own model (and data
    swapped in with ``with_data``), not the data it was first compiled with."""
    first = compile_nutpie(_model(y))
    other = y[::-1] + 3.0
    loaded = compile_nutpie(_model(other))
    assert loaded.compiled_logp_func.cache_hits == 1
    swapped = first.with_data(y=other)
    x = np.array([0.3, -0.2])
    expected = _model(other).compile_logp()({"mu": 0.3, "sigma_log__": -0.2})
    for compiled in (loaded, swapped):
        code, logp, _ = _logp(compiled, x)
        assert code == 0
        np.testing.assert_allclose(logp, expected, rtol=1e-12)
        _, out = _expand(compiled, x)
        np.testing.assert_allclose(out[-len(y) :], 0.3 + other, rtol=1e-12)
    _, logp_first, _ = _logp(first, x)
    assert abs(logp_first - expected) > 1.0


def test_the_wrappers_call_the_graph_past_pytensors_caching_shim(y):
    """PyTensor caches a graph's numba function behind ``def f(*args)``; the
    wrappers call the function inside it, with the graph's own arguments (the
    shim cost 9 s of a cold compile of the canonical model). Where a PyTensor
    release no longer keeps the graph in the shim's ``jitable_func``, the
    wrappers would silently go back through the shim: this fails instead."""
    import inspect

    from pathlock.compiled import _graph_function

    compiled = compile_nutpie(_model(y))
    for fn in (compiled.logp_func, compiled.expand_func):
        shim = fn.vm.jit_fn
        graph = _graph_function(shim)
        assert graph is not shim
        kinds = {p.kind for p in inspect.signature(shim.py_func).parameters.values()}
        assert kinds == {inspect.Parameter.VAR_POSITIONAL}
        params = inspect.signature(graph.py_func).parameters.values()
        assert len(params) == len(fn.maker.fgraph.inputs)
        assert inspect.Parameter.VAR_POSITIONAL not in {p.kind for p in params}
    with pytensor.config.change_flags(numba__cache=False):
        uncached = compile_nutpie(_model(y))
    assert _graph_function(uncached.logp_func.vm.jit_fn) is uncached.logp_func.vm.jit_fn


def test_an_error_in_the_graph_is_reported_as_nutpie_reports_it(y):
    """An exception inside the graph returns nuts-rs's error code (1), as nutpie's
    own callback does, from a compiled and from a cache-loaded callback."""
    import nutpie

    theirs = nutpie.compile_pymc_model(_model(y, bound=2.0), backend="numba")
    for ours in (compile_nutpie(_model(y, bound=2.0)), compile_nutpie(_model(y, bound=2.0))):
        for x, expected in (([0.5, 0.0], 0), ([3.0, 0.0], 1)):
            assert _logp(ours, x)[0] == _logp(theirs, x)[0] == expected


def test_without_pytensor_cache_keys_nutpie_compiles(y):
    """With PyTensor's numba cache off there is no key to store the callbacks
    under: they are nutpie's own, compiled once (no second graph build), and
    compute what the cached ones do."""
    import pathlock.compiled as pc

    calls = []
    real = pc._make_functions

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with pytensor.config.change_flags(numba__cache=False):
        pc._make_functions = counting
        try:
            compiled = compile_nutpie(_model(y))
        finally:
            pc._make_functions = real
    assert len(calls) == 1
    assert compiled.compiled_logp_func.__wrapped__.__name__ == "logp_numba"
    assert compiled.compiled_expand_func.__wrapped__.__name__ == "expand_numba"
    cached = compile_nutpie(_model(y))
    for x in ([0.5, 0.0], [-1.0, 0.7]):
        code, logp, grad = _logp(compiled, x)
        _, logp_cached, grad_cached = _logp(cached, x)
        # Same graph, compiled twice: equal to rounding.
        assert code == 0
        np.testing.assert_allclose([logp, *grad], [logp_cached, *grad_cached], rtol=1e-12)
        np.testing.assert_allclose(_expand(compiled, x)[1], _expand(cached, x)[1], rtol=1e-12)
