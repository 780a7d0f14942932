"""The JAX backend: pathlock's Ops under PyTensor's JAX linker, and ``fit(backend="jax")``.

Every model is compared with PyTensor's Python linker (``FAST_COMPILE``: the
Ops' ``perform``, which runs the numba kernels), at the model's initial point
and at a random point near it. Tolerance 1e-9 relative: the two sum the same
float64 terms in another order (the JAX forward recursion runs in log space,
the numba kernel in scaled probabilities).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytensor
import pytest

jax = pytest.importorskip("jax")

from pathlock import hmm  # noqa: E402
from pathlock.compiled import compile_nutpie_jax, frozen, register_jax  # noqa: E402
from pathlock.data import from_dataframe  # noqa: E402
from pathlock.errors import PathlockError  # noqa: E402
from pathlock.fit import fit  # noqa: E402
from pathlock.msreg import MarkovSwitching  # noqa: E402
from pathlock.processes import PROCESSES, linear_recurrence  # noqa: E402
from pathlock.simulate import simulate  # noqa: E402
from pathlock.spec import ConstraintSpec, RegimeSpec, SeriesSpec, Spec, UnitSpec  # noqa: E402

RTOL = 1e-9


def _spec(process="ratchet", n_regimes=2, structure="absorbing", **kwargs) -> Spec:
    names = ("tracking", "decoupled", "locked")[:n_regimes]
    constraint = kwargs.pop("constraint", {})
    return Spec(
        indicators=kwargs.pop("indicators", (SeriesSpec("indicator", "indicator"),)),
        feedback=kwargs.pop("feedback", (SeriesSpec("feedback", "feedback"),)),
        constraint=ConstraintSpec(process=process, **constraint),
        regimes=RegimeSpec(names=names, structure=structure),
        **kwargs,
    )


def _model(spec, n_steps=30, n_units=1, seed=5):
    df, _ = simulate(spec, None, n_steps=n_steps, n_units=n_units, seed=seed)
    unit = "unit" if n_units > 1 else None
    data = from_dataframe(df, time=spec.data.time, unit=unit)
    return spec.build(spec.prepare_data(data)).model


def _assert_same_density(model, seed=0):
    """logp and its gradient under JAX equal the Python linker's, at two points."""
    register_jax()
    fixed = frozen(model)
    values = fixed.value_vars
    logp = fixed.logp()
    outputs = [logp, *pytensor.grad(logp, values)]
    start = model.initial_point()
    rng = np.random.default_rng(seed)
    moved = {k: v + 0.1 * rng.standard_normal(np.shape(v)) for k, v in start.items()}
    by_mode = {}
    for mode in ("JAX", "FAST_COMPILE"):
        fn = pytensor.function(values, outputs, mode=mode)
        by_mode[mode] = [fn(*[point[v.name] for v in values]) for point in (start, moved)]
    for got, want in zip(by_mode["JAX"], by_mode["FAST_COMPILE"], strict=True):
        assert np.isfinite(want[0])
        for name, g, w in zip(["logp", *(v.name for v in values)], got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), w, rtol=RTOL, atol=1e-9, err_msg=name)


# Every process pathlock defines, with 2 and 3 regimes, absorbing and not.
COMBOS = list(itertools.product(PROCESSES, (2, 3), ("absorbing", "sticky")))


@pytest.mark.parametrize(("process", "n_regimes", "structure"), COMBOS)
def test_every_process_and_regime_structure_has_the_same_density_under_jax(
    process, n_regimes, structure
):
    _assert_same_density(_model(_spec(process, n_regimes, structure)))


@pytest.mark.parametrize(
    "parameterization", ["data_centered", "centered", "noncentered", "partial"]
)
def test_every_parameterization_has_the_same_density_under_jax(parameterization):
    spec = _spec(constraint={"parameterization": parameterization})
    _assert_same_density(_model(spec))


def test_panels_count_feedback_and_exposures_have_the_same_density_under_jax():
    """Three units pooled hierarchically (unit-varying transitions), a Poisson and
    a Student-t series, and missing values: the Ops' broadcast unit axes."""
    spec = _spec(
        feedback=(
            SeriesSpec("feedback", "feedback"),
            SeriesSpec("complaints", "complaints", family="poisson"),
        ),
        indicators=(SeriesSpec("indicator", "indicator", family="student_t"),),
        units=UnitSpec(pooling="hierarchical"),
    )
    df, _ = simulate(spec, None, n_steps=25, n_units=3, seed=2)
    df.loc[df.index[3], "indicator"] = np.nan
    df.loc[df.index[10], "complaints"] = np.nan
    data = from_dataframe(df, time=spec.data.time, unit="unit")
    _assert_same_density(spec.build(spec.prepare_data(data)).model)


def test_markov_switching_regression_has_the_same_density_under_jax():
    """An AR(1) switching regression with time-varying transitions."""
    import pandas as pd

    spec = MarkovSwitching(order=1, endog="y", exog_tvtp=("z",))
    rng = np.random.default_rng(3)
    y = np.r_[rng.normal(0, 1, 40), rng.normal(3, 0.5, 40)]
    data = spec.prepare_data(pd.DataFrame({"y": y, "z": rng.normal(size=80)}))
    _assert_same_density(spec.build(data).model)


def test_forward_backward_op_under_jax_matches_the_kernel_with_broadcasts():
    """All four outputs (log-likelihood and the three gradients) for shared and
    per-unit initial and transition probabilities, time-constant and
    time-varying transitions, and an absorbing regime (log 0 entries)."""
    import pytensor.tensor as pt

    register_jax()
    rng = np.random.default_rng(1)
    u, t, k = 3, 20, 3
    emit = rng.normal(size=(u, t, k))
    trans = np.log(rng.dirichlet(np.ones(k), size=(u, t, k)))
    trans[..., 2, :2] = -np.inf  # regime 2 absorbs
    init = np.log(rng.dirichlet(np.ones(k), size=u))
    for li, lt in (
        (init[:1], trans[:1, :1]),
        (init, trans),
        (init[:1], trans[:, :1]),
    ):
        inputs = [pt.as_tensor(x) for x in (li, lt, emit)]
        for axis0, x in zip((0, 0), inputs[:2], strict=True):
            if x.type.shape[axis0] == 1:
                inputs[inputs.index(x)] = pt.specify_broadcastable(x, axis0)
        outputs = hmm.forward_backward_op(*inputs)
        got = pytensor.function([], outputs, mode="JAX")()
        want = pytensor.function([], outputs, mode="FAST_COMPILE")()
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), w, rtol=RTOL, atol=1e-12)


def test_linear_recurrence_under_jax_matches_numba():
    import pytensor.tensor as pt

    register_jax()
    rng = np.random.default_rng(2)
    b = rng.normal(size=(2, 15))
    for a in (rng.normal(size=(2, 15)), rng.normal(size=(1, 15)), np.ones((1, 1))):
        x = linear_recurrence(pt.as_tensor(a), pt.as_tensor(b))
        grad = pytensor.grad((x**2).sum(), x.owner.inputs)
        got = pytensor.function([], [x, *grad], mode="JAX")()
        want = pytensor.function([], [x, *grad], mode="FAST_COMPILE")()
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), w, rtol=RTOL, atol=1e-12)


def test_compiled_jax_model_starts_where_the_numba_one_does():
    """The flat initial point and the log density nutpie's JAX model evaluates
    there are the model's own (its data starts, which PyMC cannot freeze)."""
    model = _model(_spec(), n_steps=40)
    compiled = compile_nutpie_jax(model, jitter_rvs=set())
    x = compiled._make_initial_points(1)
    logp, grad = compiled._make_logp_func()(x, **compiled._shared_data)
    want = model.compile_logp(mode="FAST_COMPILE")(model.initial_point())
    np.testing.assert_allclose(logp, want, rtol=RTOL)
    assert grad.shape == x.shape and np.all(np.isfinite(grad))
    # The model itself keeps its symbolic initial values.
    assert any(v is not None for v in model.rvs_to_initial_values.values())


def test_fit_with_the_jax_backend_gives_the_numba_layout_and_fits_new_data():
    """Same groups, variables and dims as a numba fit; a second data set of the
    same shapes (numba would reuse its compiled model) samples its own data:
    its posterior path follows its own constraint."""
    spec = _spec()
    df1, _ = simulate(spec, None, n_steps=40, seed=11)
    df2, truth2 = simulate(spec, None, n_steps=40, seed=12)
    kwargs = {"draws": 60, "tune": 60, "chains": 2, "seed": 3, "check": False}
    jax_fit = fit(spec, df1, backend="jax", **kwargs)
    numba_fit = fit(spec, df1, **kwargs)
    for group in ("posterior", "sample_stats", "observed_data", "log_likelihood"):
        a, b = jax_fit.idata[group].to_dataset(), numba_fit.idata[group].to_dataset()
        assert set(a.data_vars) == set(b.data_vars), group
        for name in b.data_vars:
            assert a[name].dims == b[name].dims, name
    assert int(jax_fit.idata.sample_stats.diverging.sum()) <= 2
    for result, backend in ((jax_fit, "jax"), (numba_fit, "numba")):
        settings = json.loads(result.idata.sample_stats.attrs["pathlock_sampling"])
        assert settings["backend"] == backend
    second = fit(spec, df2, backend="jax", **kwargs)
    path = second.idata.posterior["constraint"].mean(("chain", "draw")).values.ravel()
    assert np.corrcoef(path, truth2.constraint.ravel())[0, 1] > 0.9


def test_the_spec_chooses_the_backend_and_fit_overrides_it(monkeypatch):
    """``[sampler] backend`` reaches the compile; the argument wins over it."""
    import dataclasses
    import sys

    seen = []

    def spy(built, backend="numba"):
        seen.append(backend)
        raise RuntimeError("stop before sampling")

    # pathlock.fit is also the function's name: take the module itself.
    monkeypatch.setattr(sys.modules["pathlock.fit"], "_compile", spy)
    spec = _spec()
    spec = dataclasses.replace(spec, sampler=dataclasses.replace(spec.sampler, backend="jax"))
    assert Spec.from_toml_string(spec.to_toml()).sampler.backend == "jax"
    df, _ = simulate(spec, None, n_steps=20, seed=1)
    for kwargs in ({}, {"backend": "numba"}):
        with pytest.raises(RuntimeError, match="stop before sampling"):
            fit(spec, df, **kwargs)
    assert seen == ["jax", "numba"]


def test_backend_errors_name_the_argument_and_the_choices(monkeypatch):
    import sys

    spec = _spec()
    df, _ = simulate(spec, None, n_steps=20, seed=1)
    allowed = r"backend must be one of \['numba', 'jax'\]; found 'xla'"
    with pytest.raises(PathlockError, match=allowed):
        fit(spec, df, backend="xla")
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(PathlockError, match=r"pip install 'pathlock\[jax\]'"):
        compile_nutpie_jax(_model(spec, n_steps=20))


_DISPATCH_CHILD = """
import jax
from jax._src.xla_bridge import _CPU_ENABLE_ASYNC_DISPATCH as flag
from pathlock.compiled import _prefer_synchronous_cpu_dispatch
if {initialise}:
    jax.numpy.ones(1)
_prefer_synchronous_cpu_dispatch(jax)
print(flag.value)
"""


@pytest.mark.parametrize(
    ("initialise", "env", "expected"),
    [
        (False, None, "False"),  # pathlock's choice: the sampler waits on every call
        (True, None, "True"),  # a client already exists; the flag would not reach it
        (False, "1", "True"),  # the user chose in the environment
    ],
)
def test_jax_dispatch_is_synchronous_unless_jax_or_the_user_decided(initialise, env, expected):
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "JAX_CPU_ENABLE_ASYNC_DISPATCH"}
    if env is not None:
        environ["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = env
    code = _DISPATCH_CHILD.format(initialise=initialise)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == expected
