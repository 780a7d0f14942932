"""nutpie models whose compiled callbacks are kept in PyTensor's on-disk numba cache.

``nutpie.compile_pymc_model`` wraps PyTensor's log-density function (and the
function that expands a draw into the trace) in a numba ``cfunc`` with the C
signature nuts-rs calls. PyTensor caches its own function on disk, but numba
links the cached function's LLVM IR into the wrapper and optimises and
generates machine code for the whole module again, and the wrapper itself is
never cached (its shared-data keys are random per compile). For the canonical
model at T = 1000 that is about 17 s of every compile, cache warm or not
(benchmarks/README.md, "A disk cache for nutpie's callbacks").

:func:`compile_nutpie` builds the same :class:`nutpie.compile_pymc.CompiledPyMCModel`
with wrappers that numba can cache: their source is fixed, their shared-data
keys are deterministic, and they are registered under a key that hashes
PyTensor's own cache key of the wrapped graph together with everything else
the machine code depends on (the layout of the shared-data record, the
wrapper source, the numba, nutpie and PyTensor versions). A later compile of the same
graph loads the wrappers' machine code instead of compiling them. Because
they have their own key, the wrappers call the graph's function directly,
past the shim PyTensor puts around it to cache it (:func:`_graph_function`),
which a cold compile would otherwise type, optimise and write out as one
more library.

The functions themselves are built as nutpie builds them (:func:`_make_functions`)
except that the lengths of the dims a caller names (``run_time_dims``: the
decoupling model's time axis) are read at run time, so a graph whose own
shapes are symbolic in them has one key, and one set of cached callbacks,
for every length of the series.

Both graphs are compiled without numba's fast-math flags (:func:`sampler_flags`),
so that a process that compiles them cold computes what a process that
loads them from the disk cache computes, bit for bit.

Where PyTensor has no cache key for a graph (``numba__cache`` off, or an Op
without one) that graph gets nutpie's own callback, compiled as nutpie compiles it.

:func:`compile_nutpie_jax` compiles for nutpie's JAX backend instead: no disk
cache, a compile of seconds, slower sampling (``pathlock.fit``'s ``backend``).
The wrappers' bodies follow nutpie's (``_make_c_logp_func``, ``_make_c_expand_func``)
with the same return codes; their C signatures are taken from nutpie.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from pathlock.errors import PathlockError

#: Bumped whenever the wrappers' source or calling convention changes.
_WRAPPER_VERSION = "2"

# nuts-rs's return codes (nutpie.compile_pymc._make_c_logp_func): 0 ok, 1 an
# exception in the graph, 3 a non-finite gradient, 4 a non-finite log density.
_LOGP_SRC = """
def pathlock_logp(dim, x_, out_, logp_, user_data_):
    try:
        x = carray(x_, (dim,))
        out = carray(out_, (dim,))
        logp = carray(logp_, ())
        logp_val, grad = extract(x, user_data_)
        if grad.shape[0] != dim:
            return -1
        logp[()] = logp_val
        finite = True
        for i in range(dim):
            out[i] = grad[i]
            if not isfinite(grad[i]):
                finite = False
        if not finite:
            return 3
        if not isfinite(logp_val):
            return 4
    except Exception:  # noqa: BLE001
        return 1
    return 0
"""

_EXPAND_SRC = """
def pathlock_expand(dim, expanded, x_, out_, user_data_):
    try:
        x = carray(x_, (dim,))
        out = carray(out_, (expanded,))
        (values,) = extract(x, user_data_)
        if values.shape[0] != expanded:
            return -1
        for i in range(expanded):
            out[i] = values[i]
    except Exception:  # noqa: BLE001
        return -2
    return 0
"""


def compile_nutpie(
    model: Any, *, jitter_rvs: Iterable[Any] | None = None, run_time_dims: Iterable[str] = ()
) -> Any:
    """Compile ``model`` for nutpie's numba backend, caching its callbacks on disk.

    Parameters
    ----------
    model
        The ``pm.Model`` to sample.
    jitter_rvs
        Free variables whose start gets nutpie's uniform(-1, 1) jitter in the
        unconstrained space (``nutpie.compile_pymc_model``'s ``jitter_rvs``).
    run_time_dims
        Dims whose lengths (shared variables of ``model``) the compiled graph
        reads at run time, so that one compiled graph, and one set of cached
        callbacks, serves every length of them. Free variables shaped by them
        are read from a flat point of run-time length, at offsets computed in
        the graph. With none (the default) the layout and the graph are
        nutpie's.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        What ``nutpie.compile_pymc_model(model, backend="numba",
        jitter_rvs=jitter_rvs)`` returns, with the same log density, trace,
        initial points and layout of the flat point. Compiled under
        :func:`sampler_flags` (no fast-math), so the log density and gradient
        are nutpie's up to rounding, and the same in every process.
    """
    with sampler_flags():
        return _compile_nutpie(model, jitter_rvs, frozenset(run_time_dims))


def compile_nutpie_jax(model: Any, *, jitter_rvs: Iterable[Any] | None = None) -> Any:
    """Compile ``model`` for nutpie's JAX backend: seconds to compile, slower to sample.

    A cold numba compile of the decoupling model takes about a minute the
    first time a machine sees a spec (:func:`compile_nutpie` caches it on
    disk for every later process); JAX compiles the same log density and
    gradient in 1-3 s, every time. Each evaluation then costs more than
    numba's (135 against 65 us at T = 200, 229-243 against 185 us at
    T = 1000: XLA's fixed cost per call is the larger), and nutpie calls it
    from Python (benchmarks/README.md, "A JAX backend for the first fit").
    The model's dims are frozen into the compiled function (:func:`frozen`).

    If JAX has not created its CPU client yet, this turns its asynchronous
    CPU dispatch off for the process (``jax_cpu_enable_async_dispatch``),
    which cut a fit at T = 1000 from 53-61 s to 44-53 s; set
    ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` in the environment to keep your own.

    Parameters
    ----------
    model
        The ``pm.Model`` to sample. It is not modified.
    jitter_rvs
        Free variables whose start gets nutpie's uniform(-1, 1) jitter in the
        unconstrained space, as for :func:`compile_nutpie`.

    Returns
    -------
    nutpie.compiled_pyfunc.PyFuncModel
        What ``nutpie.compile_pymc_model(model, backend="jax",
        gradient_backend="pytensor")`` returns (nutpie's layout, the
        gradient from PyTensor's graph, where pathlock's Ops carry their
        own), with the initial points of ``model`` itself (nutpie cannot
        freeze a model whose initial values are symbolic, as the decoupling
        model's data starts are) and its data bound into the callbacks
        (``with_data`` does not apply: compile again for new data).

    Raises
    ------
    PathlockError
        jax is not installed.
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise PathlockError(
            "backend 'jax' needs jax, which is not installed; "
            "install it with pip install 'pathlock[jax]' (or pip install jax)"
        ) from None
    from nutpie import compile_pymc as cp
    from nutpie.compiled_pyfunc import from_pyfunc

    _prefer_synchronous_cpu_dispatch(jax)
    register_jax()
    # The starts come from the model as it is, symbolic initial values and all;
    # the frozen copy has none, and its values have the same names.
    point_fn = _initial_point_fn(model, jitter_rvs)
    fixed = frozen(model)
    n_dim, _, logp_pt, expand_pt, initial_point_fn, shape_info, reparam = cp._make_functions(
        fixed,
        mode="JAX",
        compute_grad=True,
        join_expanded=False,
        pymc_initial_point_fn=point_fn,
    )
    # nutpie's own JAX model passes the data as keyword arguments at every call
    # and returns the log density and the gradient separately; bound once, and
    # as one array (one transfer), sampling took 19-22 s against 21-26 s
    # (T = 1000, 4 x 400 + 400, three alternating pairs).
    logp_graph, expand_graph = logp_pt.vm.jit_fn, expand_pt.vm.jit_fn
    logp_data = [jnp.asarray(v.get_value()) for v in logp_pt.get_shared()]
    expand_data = [jnp.asarray(v.get_value()) for v in expand_pt.get_shared()]

    @jax.jit
    def logp_and_grad(x: Any, *data: Any) -> Any:
        logp, grad = logp_graph(x, *data)
        return jnp.concatenate([jnp.reshape(logp, (1,)), grad])

    def make_logp_fn() -> Any:
        def logp_fn(x: Any, **_: Any) -> tuple[float, Any]:
            out = np.asarray(logp_and_grad(x, *logp_data))
            return float(out[0]), out[1:]

        return logp_fn

    names, _, shapes = shape_info

    def make_expand_fn(seed1: int, seed2: int, chain: int) -> Any:
        def expand_fn(x: Any, **_: Any) -> dict[str, Any]:
            values = expand_graph(x, *expand_data)
            return {
                name: np.asarray(value, dtype="float64", order="C").reshape(shape)
                for name, value, shape in zip(names, values, shapes, strict=True)
            }

        return expand_fn

    dims, coords = cp._prepare_dims_and_coords(fixed, shape_info, reparam)
    return from_pyfunc(
        n_dim,
        make_logp_fn,
        make_expand_fn,
        [np.dtype("float64")] * len(names),
        shapes,
        names,
        coords=coords,
        dims=dims,
        make_initial_point_fn=initial_point_fn,
        reparameterized_names=reparam,
    )


def _prefer_synchronous_cpu_dispatch(jax: Any) -> None:
    """Run JAX's CPU computations in the calling thread, unless the user chose.

    nutpie calls the log density from one thread per chain and waits for each
    result; JAX's default hands every call to another thread and back. At
    T = 1000 on 2 cores (4 x 300 + 300, four threads) a call took 138-169 us
    of wall time in the calling thread against 170-219 us dispatched
    (benchmarks/README.md, "Synchronous JAX dispatch"). The flag is read once,
    when JAX creates its CPU client, so it is set only if no backend exists
    yet, and never where ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` is in the
    environment.
    """
    import os

    if "JAX_CPU_ENABLE_ASYNC_DISPATCH" in os.environ:
        return
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # pragma: no cover - a jax without it
        return
    if not backends_are_initialized():
        jax.config.update("jax_cpu_enable_async_dispatch", False)


def register_jax() -> None:
    """Give pathlock's Ops to PyTensor's JAX backend, so its models compile to JAX.

    :class:`pathlock.hmm.ForwardBackwardOp` and
    :class:`pathlock.processes.LinearRecurrence` carry numba code only until
    this is called (importing pathlock does not import jax). After it, a
    built model (``spec.build(data).model``) compiles with ``mode="JAX"``,
    for :func:`compile_nutpie_jax` or for PyMC's JAX samplers
    (``pm.sample(nuts_sampler="numpyro")``) once its dims are frozen
    (:func:`frozen`). Calling it again does nothing.
    """
    from pathlock import hmm, processes

    hmm.register_jax()
    processes.register_jax()


def frozen(model: Any) -> Any:
    """A copy of ``model`` with its dims' lengths made constants, as JAX needs them.

    JAX traces constant shapes (``jnp.arange`` needs a constant length), and
    the decoupling model reads its series length from the time dims' shared
    lengths (:func:`compile_nutpie`'s ``run_time_dims``). This is
    ``pymc.model.transform.optimization.freeze_dims_and_data`` for the dims
    alone, for a model with symbolic initial values too: PyMC copies none,
    so they are set aside while the copy is made and put back. The copy has
    no initial values, the same value variables (by name) as ``model``, and
    its data as shared variables.
    """
    from pymc.model.transform.optimization import freeze_dims_and_data

    initial_values = dict(model.rvs_to_initial_values)
    try:
        model.rvs_to_initial_values.update(dict.fromkeys(initial_values))
        return freeze_dims_and_data(model, data=[])
    finally:
        model.rvs_to_initial_values.update(initial_values)


def sampler_flags() -> Any:
    """PyTensor's config for compiling a graph that a sampler calls: no fast-math.

    PyTensor compiles numba code with LLVM's fast-math flags by default
    (``numba__fastmath``: reassociation, contraction, approximate functions).
    With them, the same graph rounds differently in the process that compiles
    it cold, where numba optimises the node functions' IR together with the
    graph's, than in every later process, which loads each node's object code
    from the disk cache and calls it. NUTS trajectories amplify a difference
    in the last bit, so the first fit of a spec on a machine drew other
    samples for the same seed than every fit after it. Without fast-math the
    two are equal bit for bit (benchmarks/README.md, "Fast-math off: the first
    fit draws what later fits draw"), for about 2 % on every gradient of the
    canonical model. PyTensor keys its disk cache by the flag, so graphs
    compiled with it and without it do not mix.

    Returns
    -------
    context manager
        ``pytensor.config.change_flags(numba__fastmath=False)``.
    """
    import pytensor

    return pytensor.config.change_flags(numba__fastmath=False)


def _compile_nutpie(
    model: Any, jitter_rvs: Iterable[Any] | None, run_time_dims: frozenset[str]
) -> Any:
    import numba
    import nutpie
    import pytensor
    from nutpie import compile_pymc as cp
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    point_fn = _initial_point_fn(model, jitter_rvs)
    n_dim, n_expanded, logp_pt, expand_pt, initial_point_fn, shape_info, reparam = _make_functions(
        model, point_fn, run_time_dims
    )
    graph_keys = [CACHED_SRC_FUNCTIONS.get(f.vm.jit_fn.py_func) for f in (logp_pt, expand_pt)]

    # Keys in order of first use, named by position: the record's layout (and so
    # the machine code that reads it) is then a function of the graphs alone.
    shared_vars: list[Any] = []
    for var in [*logp_pt.get_shared(), *expand_pt.get_shared()]:
        if var not in shared_vars:
            shared_vars.append(var)
    shared_var_keys = {var: f"s{i}" for i, var in enumerate(shared_vars)}
    shared_data = {
        shared_var_keys[var]: np.array(var.get_value(), order="C", copy=True) for var in shared_vars
    }
    for value in shared_data.values():
        value.flags.writeable = False
    user_data = cp.make_user_data(shared_var_keys, shared_data)

    # PyTensor's graph key does not change with PyTensor's version; ours does.
    versions = (_WRAPPER_VERSION, numba.__version__, nutpie.__version__, pytensor.__version__)
    callbacks = []
    for fn_pt, graph_key, src, name in (
        (logp_pt, graph_keys[0], _LOGP_SRC, "pathlock_logp"),
        (expand_pt, graph_keys[1], _EXPAND_SRC, "pathlock_expand"),
    ):
        keys = [shared_var_keys[var] for var in fn_pt.get_shared()]
        # nutpie's own callback gives the C signature nuts-rs calls and, where
        # there is nothing to cache it under, the callback itself.
        if fn_pt is logp_pt:
            raw, signature = cp._make_c_logp_func(
                n_dim, fn_pt.vm.jit_fn, user_data, keys, shared_data
            )
        else:
            raw, signature = cp._make_c_expand_func(
                n_dim, n_expanded, fn_pt.vm.jit_fn, user_data, keys, shared_data
            )
        if graph_key is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Cannot cache compiled function")
                callbacks.append(numba.cfunc(signature)(raw))
            continue
        extract = _extraction_fn(fn_pt.vm.jit_fn, shared_data, keys, user_data.dtype)
        layout = [(k, shared_data[k].ndim, shared_data[k].dtype.str) for k in keys]
        key = hashlib.sha256(
            repr((versions, graph_key, src, user_data.dtype.descr, layout)).encode()
        ).hexdigest()
        callbacks.append(_cached_cfunc(src, name, signature, key, extract))

    dims, coords = cp._prepare_dims_and_coords(model, shape_info, reparam)
    return cp.CompiledPyMCModel(
        _n_dim=n_dim,
        dims=dims,
        _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
        compiled_logp_func=callbacks[0],
        compiled_expand_func=callbacks[1],
        initial_point_func=initial_point_fn,
        shared_data=shared_data,
        shared_var_keys=shared_var_keys,
        user_data=user_data,
        n_expanded=n_expanded,
        shape_info=shape_info,
        logp_func=logp_pt,
        expand_func=expand_pt,
        reparameterized_names=reparam,
    )


def _initial_point_fn(model: Any, jitter_rvs: Iterable[Any] | None) -> Any:
    """The initial-point function nutpie takes: support points, ``jitter_rvs`` jittered."""
    from nutpie import compile_pymc as cp
    from pymc.initial_point import make_initial_point_fn

    jitter = set(model.free_RVs) if jitter_rvs is None else set(jitter_rvs)
    return cp._wrap_with_lock(
        make_initial_point_fn(
            model=model,
            default_strategy="support_point",
            jitter_rvs=jitter,
            return_transformed=True,
        )
    )


def _graph_function(jit_fn: Any) -> Any:
    """The numba function of a compiled PyTensor graph, under PyTensor's caching shim.

    PyTensor's numba linker wraps the graph's function in a shim,
    ``def f(*args): return jitable_func(*args)``, so that numba caches the
    graph under PyTensor's key. The wrappers are cached under their own key, so
    they call the graph's function itself: the shim would be one more library
    that numba types (its ``*args`` tuple included), optimises and generates
    machine code for, with the whole graph linked in, and that it then writes
    to the disk cache. Calling past it, with :func:`_extraction_fn`, took 13 s
    off a cold compile of the canonical model (86.4 s to 73.5 s at T = 200;
    benchmarks/README.md, "Calling the graph past PyTensor's caching shim").
    Where there is no shim (no cache key, or a graph of more than 1000
    inputs) ``jit_fn`` is the graph's function.
    """
    shim = getattr(jit_fn, "py_func", None)
    graph = getattr(shim, "__globals__", {}).get("jitable_func")
    return graph if hasattr(graph, "py_func") else jit_fn


def _extraction_fn(jit_fn: Any, shared_data: dict, keys: list[str], record_dtype: Any) -> Any:
    """Read the shared arrays out of nutpie's user-data record and call the graph.

    What ``nutpie.compile_pymc.make_extraction_fn`` returns, written out for
    the graph's own arguments: one statement per array instead of nutpie's
    ``literal_unroll`` over a tuple of them and its ``*args`` call, which numba
    types more slowly (4 s of a cold compile of the canonical model). It reads
    the record nutpie's ``make_user_data`` lays out (a data pointer, a size and
    a shape per array) and is inlined into the wrapper.
    """
    import numba
    from nutpie.compile_pymc import address_as_void_pointer

    env = {
        "carray": numba.carray,
        "address_as_void_pointer": address_as_void_pointer,
        "record_dtype": record_dtype,
        "graph": _graph_function(jit_fn),
    }
    lines = [
        "def pathlock_extract(x, user_data_):",
        "    shared = carray(user_data_, (), record_dtype)['shared']",
    ]
    for i, key in enumerate(keys):
        env[f"dtype{i}"] = shared_data[key].dtype
        shape = "".join(f"int(shape{i}[{j}]), " for j in range(shared_data[key].ndim))
        lines += [
            f"    data{i} = address_as_void_pointer(shared['data']['{key}'][()])",
            f"    size{i} = int(shared['size']['{key}'][()])",
            f"    shape{i} = shared['shape']['{key}']",
            f"    a{i} = carray(data{i}, (size{i},), dtype{i}).reshape(({shape}))",
        ]
    lines.append(f"    return graph({', '.join(['x', *(f'a{i}' for i in range(len(keys)))])})")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<pathlock_extract>", "exec"), env, namespace)
    return numba.njit(inline="always")(namespace["pathlock_extract"])


def _cached_cfunc(src: str, name: str, signature: Any, key: str, extract: Any) -> Any:
    """A numba ``cfunc`` of ``src`` that PyTensor's cache locator stores under ``key``."""
    import numba
    from pytensor.link.numba.cache import compile_numba_function_src

    env = {
        # numba rebuilds a cached function's environment from its module's name.
        "__name__": __name__,
        "carray": numba.carray,
        "isfinite": np.isfinite,
        "extract": extract,
    }
    fn = compile_numba_function_src(src, name, global_env=env, cache_key=f"pathlock_{key}")
    with warnings.catch_warnings():
        # Data larger than numba freezes into the code makes a wrapper uncachable;
        # it is then compiled as nutpie would, which is correct, only slower.
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")
        cfunc = numba.cfunc(signature, cache=True)(fn)
        cfunc.address  # noqa: B018  # compile (or load) now, under the filter
    return cfunc


def _make_functions(model: Any, point_fn: Any, run_time_dims: frozenset[str]) -> tuple[Any, ...]:
    """What nutpie's ``_make_functions`` makes for numba, with ``run_time_dims`` left free.

    nutpie reads the free variables out of a flat vector of static length, at
    constant offsets and with constant shapes, so every node of the compiled
    graph has static shapes and PyTensor's cache key changes with the length
    of the series: a model already compiled for T = 1000 was compiled again,
    node by node, for T = 200. Here a variable shaped by ``run_time_dims`` is
    read at an offset and with a shape computed from their lengths (shared
    variables), and the vector then has no static length, so a graph whose
    own shapes are symbolic has one key for every length. Every other
    variable, and the vector where no variable is shaped by them, keeps
    nutpie's constants. The layout is nutpie's. Returns what nutpie's
    function returns, in the same order.
    """
    import pytensor.tensor as pt
    from nutpie import compile_pymc as cp
    from pymc.pytensorf import compile as compile_pymc
    from pytensor.graph import clone_replace, rewrite_graph

    shapes = cp._compute_shapes(model)
    rewrites = ["canonicalize", "stabilize"]
    if not model.check_bounds:
        rewrites.append("local_remove_check_parameter")

    free: list[tuple[Any, Any, tuple[int, ...], Any]] = []
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        shape = tuple(int(d) for d in shapes[value.name])
        free.append((rv, value, shape, _symbolic_shape(model, rv, shape, run_time_dims)))
    value_vars = [value for _, value, _, _ in free]
    names = [value.name for value in value_vars]
    static = [shape for _, _, shape, _ in free]
    n_dim = sum(int(np.prod(shape, dtype=int)) for shape in static)
    length = None if any(item[3] is not None for item in free) else n_dim
    joined = pt.TensorType("float64", shape=(length,))("_unconstrained_point")
    start: Any = 0
    replacements = {}
    slices = []
    count = 0
    for rv, value, shape, symbolic in free:
        size = int(np.prod(shape, dtype=int))
        if symbolic is None:
            stop = start + size
            part = joined[start:stop].reshape(shape)
        else:
            stop = start + pt.prod(symbolic)
            part = joined[start:stop].reshape(symbolic, ndim=len(shape))
        replacements[value] = part.astype(rv.dtype)
        start = stop
        slices.append(slice(count, count + size))
        count += size

    logp = rewrite_graph(model.logp(), include=rewrites)
    grads = pt.grad(logp, value_vars)
    grad = pt.concatenate([pt.as_tensor(g, allow_xtensor_conversion=True).ravel() for g in grads])

    (logp, grad) = clone_replace([logp, grad], replacements)
    with model:
        logp_fn = compile_pymc((joined,), (logp, grad), mode="NUMBA")

    reparameterized = [
        model.rvs_to_values[rv].name
        for rv in model.free_RVs
        if model.rvs_to_transforms.get(rv) is not None
    ]
    remaining = [v for v in model.unobserved_value_vars if v.name not in names]
    all_names, all_slices, all_shapes = list(names), list(slices), list(static)
    for var in remaining:
        shape = tuple(int(d) for d in shapes[var.name])
        size = int(np.prod(shape, dtype=int))
        all_names.append(var.name)
        all_shapes.append(shape)
        all_slices.append(slice(count, count + size))
        count += size
    expanded = pt.concatenate(
        [
            *[replacements[v].ravel() for v in value_vars],
            *[pt.as_tensor(v, allow_xtensor_conversion=True).ravel() for v in remaining],
        ]
    )
    with model:
        expand_fn = compile_pymc(
            (joined,), [expanded], givens=list(replacements.items()), mode="NUMBA"
        )
    initial_point_fn = cp._rv_dict_to_flat_array_wrapper(point_fn, names=names, shapes=static)
    return (
        n_dim,
        count,
        logp_fn,
        expand_fn,
        initial_point_fn,
        (all_names, all_slices, all_shapes),
        reparameterized,
    )


def _symbolic_shape(
    model: Any, rv: Any, shape: tuple[int, ...], run_time_dims: frozenset[str]
) -> Any | None:
    """The shape of ``rv``'s value variable in the lengths of ``run_time_dims``, or ``None``.

    ``None`` (use the constant ``shape``) where it does not depend on them, or
    depends on anything else that is not a constant.
    """
    import pytensor.tensor as pt
    from pytensor.graph import rewrite_graph
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import graph_inputs

    lengths = {model.dim_lengths[d] for d in run_time_dims if d in model.dim_lengths}
    if not shape or not lengths:
        return None
    transform = model.rvs_to_transforms.get(rv)
    moved = rv if transform is None else transform.forward(rv, *rv.owner.inputs)
    symbolic = rewrite_graph(pt.as_tensor(moved.shape), include=("ShapeOpt", "canonicalize"))
    inputs = [v for v in graph_inputs([symbolic]) if not isinstance(v, Constant)]
    if not inputs or any(v not in lengths for v in inputs):
        return None
    return symbolic
