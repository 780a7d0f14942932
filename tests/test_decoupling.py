"""The decoupling model: every process x regime structure builds, evaluates and samples;
parameters are recovered from simulated data; ``loglike`` agrees with the model."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from pathlock import dims
from pathlock.compiled import compile_nutpie
from pathlock.data import from_dataframe
from pathlock.decoupling import build, loglike
from pathlock.errors import SpecError
from pathlock.processes import PROCESSES
from pathlock.simulate import simulate
from pathlock.spec import ConstraintSpec, RegimeSpec, SeriesSpec, Spec


def _innovation(built):
    """The innovations of the built model's latent path, found in its graph by name."""
    from pytensor.graph.traversal import ancestors

    return next(
        v for v in ancestors([built.extras["constraint"]]) if v.name == "constraint_innovation_path"
    )


def _spec(process: str, n_regimes: int, structure: str, **constraint) -> Spec:
    names = ("tracking", "decoupled", "locked")[:n_regimes]
    return Spec(
        indicators=(SeriesSpec("indicator", "indicator"),),
        feedback=(SeriesSpec("feedback", "feedback"),),
        constraint=ConstraintSpec(process=process, **constraint),
        regimes=RegimeSpec(names=names, structure=structure),
    )


def _data(spec: Spec, n_steps: int, seed: int, **params):
    df, truth = simulate(spec, params or None, n_steps=n_steps, seed=seed)
    return from_dataframe(df, time=spec.data.time), truth


# Every process pathlock defines, with 2 and 3 regimes, absorbing and not.
COMBOS = list(itertools.product(PROCESSES, (2, 3), ("absorbing", "sticky")))


def test_the_combinations_cover_the_four_processes_the_issue_names():
    # COMBOS follows the registry; this keeps a dropped process from shrinking it.
    assert {c[0] for c in COMBOS} >= {"ratchet", "hysteresis", "random_walk", "ar1"}
    assert len(COMBOS) == 4 * len(PROCESSES)


@pytest.mark.parametrize(("process", "n_regimes", "structure"), COMBOS)
def test_builds_with_finite_logp_and_gradient(process, n_regimes, structure):
    spec = _spec(process, n_regimes, structure)
    data, _ = _data(spec, 20, seed=3)
    built = build(spec, data)
    model = built.model
    point = model.initial_point()
    logp = model.compile_logp(mode="FAST_COMPILE")(point)
    grad = model.compile_dlogp(mode="FAST_COMPILE")(point)
    assert np.isfinite(logp)
    assert np.all(np.isfinite(grad))
    assert model.named_vars_to_dims["constraint"] == (dims.UNIT, dims.TIME)
    assert list(model.coords[dims.REGIME]) == list(spec.regime_names)
    assert built.log_emit.type.ndim == 3


@pytest.mark.slow
@pytest.mark.parametrize(("process", "n_regimes", "structure"), COMBOS)
def test_samples_briefly(process, n_regimes, structure):
    """A few NUTS draws run and give finite paths (ratchet paths stay monotone)."""
    import nutpie

    spec = _spec(process, n_regimes, structure)
    data, _ = _data(spec, 20, seed=3)
    compiled = compile_nutpie(build(spec, data).model)
    tree = nutpie.sample(compiled, draws=10, tune=20, chains=1, seed=1, progress_bar=False)
    c = tree.posterior["constraint"]
    assert c.sizes[dims.TIME] == 20
    assert np.all(np.isfinite(c.values))
    if process == "ratchet":
        assert np.all(np.diff(c.values, axis=-1) > 0)


PARAMETERIZATIONS = ["auto", "whitened", "data_centered", "centered", "noncentered", "partial"]


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_parameterizations_give_the_same_density_of_the_path(parameterization):
    """All parameterisations describe the same model: at the same natural-scale
    parameters and path, the likelihood part (loglike) is identical."""
    spec = _spec("ratchet", 2, "absorbing", parameterization=parameterization)
    data, truth = _data(spec, 25, seed=4)
    params = {
        "constraint_mu": -2.5,
        "constraint_sigma": 0.5,
        "indicator_sigma": [0.25],
        "feedback_a": [[0.0, 1.0]],
        "feedback_b": [1.0],
        "feedback_w": [0.2],
        "feedback_sigma": [0.3],
        "hazard_intercept": -6.0,
        "hazard_slope": 1.0,
        "constraint_init": truth.constraint[:, 0],
        "constraint": truth.constraint,
    }
    value = loglike(spec, data, params)
    reference = loglike(dataclasses.replace(spec, constraint=ConstraintSpec()), data, params)
    assert np.isfinite(value)
    assert value == pytest.approx(reference, rel=1e-10)


@pytest.mark.parametrize("process", ["ratchet", "random_walk", "hysteresis"])
def test_whitened_path_is_an_exact_change_of_variables(process):
    """``whitened`` samples ``raw``, a map of the non-centred ``eps`` (linear, then bent).

    At a random point, its log density must equal the non-centred model's at
    the same ``eps`` plus ``log |d eps / d raw|`` (the Jacobian taken by
    automatic differentiation of the map, not the closed form the builder
    uses).  For log increments ``mu`` is derived from the free realised mean
    step and the path, so the Jacobian is that of ``(raw, m) -> (eps, mu)``
    in full.  Tolerance 1e-8: both sides are float64 sums of ~50 terms.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.gradient import jacobian

    base = _spec(process, 2, "absorbing")
    data, _ = _data(base, 12, seed=6)
    white = build(
        dataclasses.replace(base, constraint=ConstraintSpec(process, (), "whitened")), data
    )
    plain = build(
        dataclasses.replace(base, constraint=ConstraintSpec(process, (), "noncentered")), data
    )
    rng = np.random.default_rng(0)
    point = {
        k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in white.model.initial_point().items()
    }
    m = white.model
    realised = "constraint_log_realised_step" in m.named_vars
    assert realised == (process != "random_walk")
    raw = m.rvs_to_values[m["constraint_raw"]]
    mu, sigma = m.replace_rvs_by_values([m["constraint_mu"], m["constraint_sigma"]])
    (innov,) = m.replace_rvs_by_values([_innovation(white)])
    eps = (innov - mu) / sigma
    inputs = list(m.value_vars)
    if realised:
        free = m.rvs_to_values[m["constraint_log_realised_step"]]
        outputs = pt.concatenate([eps.ravel(), pt.atleast_1d(mu)])
        jac = pt.concatenate(
            [
                jacobian(outputs, raw).reshape((outputs.size, raw.size)),
                jacobian(outputs, free)[:, None],
            ],
            axis=1,
        )
    else:
        jac = jacobian(eps.ravel(), raw).reshape((eps.size, raw.size))
    fn = pytensor.function(
        inputs, [eps, mu, sigma, pt.log(pt.abs(pt.linalg.det(jac)))], on_unused_input="ignore"
    )
    eps_value, mu_value, sigma_value, log_det = fn(**{v.name: point[v.name] for v in inputs})
    other = {
        k: v
        for k, v in point.items()
        if k not in ("constraint_raw", "constraint_log_realised_step")
    }
    other["constraint_eps"] = eps_value
    if realised:
        other["constraint_log_mean_step"] = mu_value + 0.5 * sigma_value**2
    logp_white = m.compile_logp()(point)
    logp_plain = plain.model.compile_logp()(other)
    assert logp_white == pytest.approx(logp_plain + log_det, abs=1e-8)


def test_hierarchical_realised_step_is_an_exact_change_of_variables():
    """The panel model (hierarchical ``mu``, two exposures, two units), whitened.

    NUTS samples each unit's realised mean step ``m_u`` and ``raw``; ``mu_u``
    follows from them and is centred on the population mean. The non-centred
    model samples ``z_u = (mu_u - mu_pop) / s`` and ``eps``. At a random point
    the two log densities must differ by ``log |d (eps, mu) / d (raw, m)|``
    (automatic differentiation of the map) minus ``n_units log s`` (from
    ``z`` to ``mu``). Tolerance 1e-8, as above.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.gradient import jacobian

    spec = Spec.from_toml(MODELS / "panel.toml")
    assert "constraint_mu" in spec.hierarchical_parameters
    df, _ = simulate(spec, None, n_steps=10, n_units=2, seed=3)
    data = from_dataframe(df, time=spec.data.time, unit=spec.data.unit)

    def variant(mode):
        constraint = dataclasses.replace(spec.constraint, parameterization=mode)
        return build(dataclasses.replace(spec, constraint=constraint), data)

    white, plain = variant("whitened"), variant("noncentered")
    m = white.model
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in m.initial_point().items()}
    raw = m.rvs_to_values[m["constraint_raw"]]
    free = m.rvs_to_values[m["constraint_log_realised_step"]]
    names = ["constraint_mu", "constraint_sigma", "constraint_mu_pop", "constraint_mu_unit_sigma"]
    mu, sigma, pop, scale = m.replace_rvs_by_values([m[n] for n in names])
    (innov,) = m.replace_rvs_by_values([_innovation(white)])
    beta = m.replace_rvs_by_values([m["constraint_beta"]])[0]
    exposures = m["exposures"][:, 1:]
    eps = (innov - mu[:, None] - (exposures * beta).sum(axis=-1)) / sigma
    outputs = pt.concatenate([eps.ravel(), mu])
    jac = pt.concatenate(
        [
            jacobian(outputs, raw).reshape((outputs.size, raw.size)),
            jacobian(outputs, free).reshape((outputs.size, free.size)),
        ],
        axis=1,
    )
    inputs = list(m.value_vars)
    fn = pytensor.function(
        inputs,
        [eps, mu, sigma, pop, scale, pt.log(pt.abs(pt.linalg.det(jac)))],
        on_unused_input="ignore",
        mode="FAST_COMPILE",
    )
    eps_v, mu_v, sigma_v, pop_v, scale_v, log_det = fn(**{v.name: point[v.name] for v in inputs})
    other = {
        k: v
        for k, v in point.items()
        if k not in ("constraint_raw", "constraint_log_realised_step", "constraint_mu_pop")
    }
    other["constraint_eps"] = eps_v
    other["constraint_log_mean_step_pop"] = pop_v + 0.5 * sigma_v**2
    other["constraint_mu_unit_z"] = (mu_v - pop_v) / scale_v
    assert set(other) == {v.name for v in plain.model.value_vars}
    logp_white = m.compile_logp(mode="FAST_COMPILE")(point)
    logp_plain = plain.model.compile_logp(mode="FAST_COMPILE")(other)
    assert logp_white == pytest.approx(logp_plain + log_det - mu_v.size * np.log(scale_v), abs=1e-8)


def test_sheared_loading_is_an_exact_change_of_variables(monkeypatch):
    """``zeta = logit(w) + h(b)`` is a shear: unit Jacobian, ``w``'s prior kept.

    The canonical model samples ``feedback_w_decoupled_sheared``; with the
    shear switched off it samples ``logit(w)`` (PyMC's log-odds transform).
    At random points the two log densities must agree (1e-9) when ``zeta =
    logit(w) + h(b)``, and ``w`` must come out the same.  The feedback here
    decouples early, so the late slope is well below the tracking one and
    ``h`` is far from constant.
    """
    from pathlock import decoupling

    spec = Spec.from_toml(MODELS / "decoupling.toml")
    df, _ = simulate(spec, {"feedback_w": [0.3]}, n_steps=80, seed=2)
    data = from_dataframe(df, time=spec.data.time)
    sheared = build(spec, data).model
    late = float(sheared["pilot_feedback_late_slope"].get_value())
    width = float(sheared["pilot_feedback_shear_width"].get_value())
    b0 = float(sheared["pilot_feedback_b"].get_value()[0])
    assert abs(late) < 0.6 * abs(b0)
    monkeypatch.setattr(decoupling, "_loading_shear", lambda *args: None)
    plain = build(spec, data).model
    assert "feedback_w_decoupled_sheared" not in plain.named_vars
    f_sheared = sheared.compile_logp(mode="FAST_COMPILE")
    f_plain = plain.compile_logp(mode="FAST_COMPILE")
    w_sheared, w_plain = (
        m.compile_fn(
            m.replace_rvs_by_values([m["feedback_w"]]),
            inputs=m.value_vars,
            on_unused_input="ignore",
            mode="FAST_COMPILE",
        )
        for m in (sheared, plain)
    )
    rng = np.random.default_rng(4)
    for _ in range(4):
        point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in plain.initial_point().items()}
        b = float(point["feedback_b"][0])
        other = {k: v for k, v in point.items() if k != "feedback_w_decoupled_logodds__"}
        h = 0.5 * np.log((b - late) ** 2 + width**2)
        other["feedback_w_decoupled_sheared"] = point["feedback_w_decoupled_logodds__"] + h
        assert f_sheared(other) == pytest.approx(f_plain(point), abs=1e-9)
        np.testing.assert_allclose(w_sheared(other), w_plain(point), rtol=1e-12)


@pytest.mark.parametrize("sigma", [0.1, 0.6, 1.5, 4.0])
def test_bend_is_a_smooth_bijection_whose_step_slope_is_bounded(sigma):
    """The whitened coordinate ``y`` is bent into ``eps`` (decoupling._bend).

    Checked on a grid from -300 to 1e6:

    - ``eps`` strictly increases, and ``_unbend`` inverts it (relative error
      1e-10; the closed form loses a few digits only where ``expm1`` does);
    - the returned log-derivative matches central differences (tolerance
      1e-6, the differences' own error at a relative step 1e-5) and the numpy and
      PyTensor versions agree to 1e-12;
    - the relative step ``h = exp(sigma * eps)`` has slope in ``y`` at most
      ``sigma`` everywhere and at least ``0.95 sigma`` from the median up:
      the near-constant slope that keeps rough moves of ``y`` out of the
      realised path's ramp (the previous map had slope ``sigma * h`` below
      the median and fails the second bound for sigma >= 0.6);
    - far below the floor ``c``, ``eps`` is linear in ``y`` with slope
      ``1 / c``, and far above it ``h = 1 + sigma * y``.
    """
    import pytensor
    import pytensor.tensor as pt

    from pathlock.decoupling import _STEP_FLOOR, _bend, _unbend

    y = pt.dvector("y")
    eps, log_d = _bend(y, sigma)
    fn = pytensor.function([y], [eps, log_d])
    grid = np.concatenate([np.linspace(-300.0, 30.0, 33001), np.geomspace(31.0, 1e6, 300)])
    e, ld = fn(grid)
    e_np, ld_np = _bend(grid, sigma, np)
    np.testing.assert_allclose(e_np, e, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ld_np, ld, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(e) > 0)
    assert np.all(np.isfinite(ld))
    np.testing.assert_allclose(_unbend(e, sigma), grid, rtol=1e-10, atol=1e-10)
    h = 1e-5 * np.maximum(1.0, np.abs(grid))
    numeric = (fn(grid + h)[0] - fn(grid - h)[0]) / (2 * h)
    np.testing.assert_allclose(np.exp(ld), numeric, rtol=1e-6, atol=1e-9)
    step_slope = sigma * np.exp(sigma * e + ld)
    assert step_slope.max() <= sigma * (1.0 + 1e-12)
    assert step_slope[grid >= 0.0].min() >= 0.95 * sigma
    c = _STEP_FLOOR
    low = (1.0 + sigma * grid) / c < -40.0
    np.testing.assert_allclose(e[low], (np.log(c) + (1.0 + sigma * grid[low]) / c) / sigma)
    high = (1.0 + sigma * grid) / c > 40.0
    np.testing.assert_allclose(np.exp(sigma * e[high]), 1.0 + sigma * grid[high], rtol=1e-12)


@pytest.mark.parametrize("process", ["ratchet", "random_walk"])
def test_whitened_path_starts_on_the_data(process):
    """At the model's initial point the whitened path follows the first indicator.

    T = 400 with a tenth of the indicator missing: the path's RMSE against the
    observed indicator must be below 1.5 x the true noise (0.25). Only
    ``constraint_raw`` and the indicator noise are set from the data: the
    other values are the model's own starts. Moving those at fixed
    ``constraint_raw`` must keep the path near the data (the centring on the
    conditional mean, see ``build``).
    """
    spec = _spec(process, 2, "absorbing")
    df, truth = simulate(spec, None, n_steps=400, seed=3)
    df.loc[df.index[::10], "indicator"] = np.nan
    data = from_dataframe(df, time=spec.data.time)
    built = build(spec, data)
    m = built.model
    point = m.initial_point()
    path = m.compile_fn(
        m.replace_rvs_by_values([built.extras["constraint"]]),
        inputs=m.value_vars,
        on_unused_input="ignore",
    )
    y = df["indicator"].to_numpy(float)
    seen = ~np.isnan(y)

    def rmse(p):
        return float(np.sqrt(np.mean((path(p)[0][0][seen] - y[seen]) ** 2)))

    noise = float(np.ravel(truth.params["indicator_sigma"])[0])
    assert rmse(point) < 1.5 * noise
    # Centred on the linearised conditional mean, the path stays on the data when the
    # other parameters move at fixed raw. A random walk is linear, so the centring is exact
    # up to the missing values and the moves can be large (RMSE <= 0.31 measured; whitened
    # but uncentred: up to 161 for the drift + 0.7). The ratchet's log-increment map is
    # not linear; with its total growth held by the free realised mean step, doubling or
    # halving sigma keeps the RMSE <= 0.51 (with the log mean step free instead: 1.66 for
    # the doubling, above the bound).
    if process == "random_walk":
        bound = 1.5
        moves = [
            ("constraint_sigma_log__", np.log(2.0)),
            ("constraint_sigma_log__", -np.log(2.0)),
            ("indicator_sigma_log__", np.log(3.0)),
            ("indicator_sigma_log__", -np.log(3.0)),
            ("constraint_mu", 0.7),
            ("constraint_init", 0.5),
        ]
    else:
        bound = 2.5
        moves = [
            ("constraint_sigma_log__", np.log(2.0)),
            ("constraint_sigma_log__", -np.log(2.0)),
            ("indicator_sigma_log__", np.log(3.0)),
            ("indicator_sigma_log__", -np.log(3.0)),
            ("constraint_init", 0.5),
        ]
        # The realised mean step is the path's growth, exactly, wherever raw is.
        rng = np.random.default_rng(1)
        for _ in range(3):
            moved = dict(point, constraint_raw=point["constraint_raw"] + rng.normal(size=(1, 399)))
            c = path(moved)[0][0]
            realised = np.log(np.mean(np.diff(c)))
            assert realised == pytest.approx(
                float(point["constraint_log_realised_step"]), abs=1e-10
            )
    # The indicator noise starts at the data's own level (about the truth), so tripling
    # it asks for the conditional mean at a noise of 0.75, which is smoother and sits
    # further from the data (random walk: RMSE 0.49): the bound scales with the larger
    # of the true and the moved noise.
    for name, shift in moves:
        moved = dict(point, **{name: point[name] + shift})
        assumed = float(np.exp(np.ravel(moved["indicator_sigma_log__"])[0]))
        assert rmse(moved) < bound * max(noise, assumed), (name, shift, rmse(moved))


def test_data_starts_are_the_same_in_every_chain():
    """Starts computed from the data (the feedback's line, the sheared loading,
    the initial level) are not jittered; the whitened path and the hazard
    intercepts are, as nutpie does.

    Jittered by uniform(-1, 1), one of them cost up to 3000 nats of log density
    at T = 300, and chains started there settled where the feedback never
    tracks (benchmarks/README.md); here, at T = 120, such a jitter must still
    cost more than 50 nats somewhere, or the starts no longer matter and the
    test has lost its point.
    """
    from pymc.initial_point import make_initial_point_fn

    spec = _spec("ratchet", 2, "absorbing")
    df, _ = simulate(spec, None, n_steps=120, seed=3)
    built = build(spec, from_dataframe(df, time=spec.data.time))
    m = built.model
    jitter = {rv for rv in m.free_RVs if rv.name not in built.unjittered}
    fn = make_initial_point_fn(model=m, jitter_rvs=jitter, return_transformed=True)
    starts = [fn(seed) for seed in (1, 2, 3)]
    fixed = (
        "feedback_a",
        "feedback_sigma_log__",
        "feedback_b",
        "feedback_w_decoupled_sheared",
        "constraint_init",
    )
    for name in fixed:
        for other in starts[1:]:
            np.testing.assert_array_equal(other[name], starts[0][name], err_msg=name)
    for name in ("constraint_raw", "hazard_intercept"):
        assert np.ptp([np.ravel(s[name])[0] for s in starts]) > 0.05, name
    np.testing.assert_allclose(
        starts[0]["feedback_a"], m["pilot_feedback_a"].get_value(), rtol=1e-12
    )
    logp = m.compile_logp()
    plain = m.initial_point()
    # Each data start jittered alone, as nutpie would, 20 draws each.
    rng = np.random.default_rng(0)
    costs = []
    for name in fixed:
        for _ in range(20):
            moved = dict(plain)
            moved[name] = plain[name] + rng.uniform(-1, 1, np.shape(plain[name]))
            costs.append(logp(plain) - logp(moved))
    assert max(costs) > 50.0


def test_one_compiled_graph_serves_every_length():
    """The series length is read at run time: the canonical model compiled for
    T = 40 has the same PyTensor graph key as for T = 57, whose callbacks then
    load from disk, and each computes its own model's log density (checked
    against PyMC's at a jittered start, to 1e-9 relative)."""
    from pymc.initial_point import make_initial_point_fn
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    spec = Spec.from_toml(Path(__file__).parents[1] / "models" / "decoupling.toml")
    keys = []
    for n_steps in (40, 57):
        df, _ = simulate(spec, None, n_steps=n_steps, seed=2)
        built = build(spec, from_dataframe(df, time=spec.data.time))
        m = built.model
        compiled = compile_nutpie(m, run_time_dims=built.run_time_dims)
        keys.append(CACHED_SRC_FUNCTIONS.get(compiled.logp_func.vm.jit_fn.py_func))
        point = make_initial_point_fn(model=m, jitter_rvs=set(m.free_RVs))(4)
        x = np.concatenate(
            [np.ravel(point[name]) for name in compiled.shape_info[0][: len(m.free_RVs)]]
        )
        logp, _ = compiled.logp_func(x)
        np.testing.assert_allclose(logp, m.compile_logp()(point), rtol=1e-9)
    assert keys[0] == keys[1] is not None
    assert compiled.compiled_logp_func.cache_hits == 1
    assert compiled.compiled_expand_func.cache_hits == 1


def test_bridged_path_moves_mu_by_its_last_raw_column():
    """With the realised step, ``constraint_raw``'s last column is the innovations' mean.

    The path's end is pinned by the realised mean step and its shape depends
    on ``eps - mean(eps)`` alone, so the last column ``v`` (``mean(eps) =
    v / sqrt(n)``, ``_bridge_eps``) must leave the path unchanged and move
    ``mu`` by exactly ``-sigma * dv / sqrt(n)``. T = 400, tolerance 1e-9
    (float64 sums of 400 terms). Whitened as levels, the last column was
    mostly the last step: ``mu`` moved by 0.0012 for ``dv = 2``, not 0.025.
    """
    spec = _spec("ratchet", 2, "absorbing")
    df, truth = simulate(spec, None, n_steps=400, seed=3)
    data = from_dataframe(df, time=spec.data.time)
    built = build(spec, data)
    m = built.model
    point = m.initial_point()
    outs = [built.extras["constraint"], m["constraint_mu"], m["constraint_sigma"]]
    fn = m.compile_fn(m.replace_rvs_by_values(outs), inputs=m.value_vars, on_unused_input="ignore")
    y = df["indicator"].to_numpy(float)
    noise = float(np.ravel(truth.params["indicator_sigma"])[0])
    c0, mu0, sigma = fn(point)
    assert np.sqrt(np.mean((c0[0] - y) ** 2)) < 1.5 * noise
    n = y.size - 1
    for shift in (-2.0, 2.0):
        raw = point["constraint_raw"].copy()
        raw[:, -1] += shift
        c, mu, _ = fn(dict(point, constraint_raw=raw))
        np.testing.assert_allclose(c, c0, rtol=0, atol=1e-9)
        assert float(mu - mu0) == pytest.approx(-float(sigma) * shift / np.sqrt(n), abs=1e-9)


def test_fixed_initial_level_builds_without_its_starting_value():
    """A fixed ``constraint_init`` is a constant: the whitened path is built
    around it, and no unused ``pilot_constraint_init`` lands in constant_data."""
    spec = _spec("ratchet", 2, "absorbing")
    data, _ = _data(spec, 30, seed=5)
    assert "pilot_constraint_init" in build(spec, data).model.named_vars
    fixed = build(spec.with_priors(constraint_init=0.0), data).model
    assert "pilot_constraint_init" not in fixed.named_vars
    assert "constraint_init" not in {v.name for v in fixed.free_RVs}
    point = fixed.initial_point()
    assert np.isfinite(fixed.compile_logp(mode="FAST_COMPILE")(point))
    assert np.all(np.isfinite(fixed.compile_dlogp(mode="FAST_COMPILE")(point)))


def test_loglike_names_missing_parameters():
    spec = _spec("ratchet", 2, "absorbing")
    data, truth = _data(spec, 20, seed=5)
    with pytest.raises(SpecError, match=r"constraint_sigma|feedback"):
        loglike(spec, data, {"constraint": truth.constraint})


MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("model_file", ["decoupling.toml", "panel.toml"])
def test_a_fixed_parameter_is_the_free_one_at_that_value(model_file):
    """Any parameter the model uses can be fixed by a value in the spec (a number
    or an array of the parameter's shape, shared by all units when the parameter
    is pooled hierarchically); the model's likelihood is then the free model's at
    that value.  The values differ along every axis, so a fixed value laid out on
    the wrong axes (as a per-unit one, say) changes the likelihood; a value of
    another shape is a SpecError naming the parameter."""
    spec = Spec.from_toml(MODELS / model_file)
    n_units = 1 if spec.data.unit is None else 2
    df, truth = simulate(spec, None, n_steps=25, n_units=n_units, seed=3)
    data = from_dataframe(df, time=spec.data.time, unit=spec.data.unit)
    params = {k: np.asarray(v, dtype=float) for k, v in truth.params.items()}
    params["constraint"] = truth.constraint
    names = [n for n in params if spec.uses(n) and n not in ("indicator_nu", "indicator_lambda")]
    assert {"feedback_a", "feedback_b", "hazard_intercept", "constraint_sigma"} <= set(names)
    # The simulator's values of pooled parameters are the population's, shared by the units.
    assert not set(spec.hierarchical_parameters) - set(names)
    for name in names:
        value = params[name][1:] if name == "feedback_w" else params[name]
        value = value + 0.01 * np.arange(value.size).reshape(value.shape)
        free = dict(params, **{name: value})
        fixed = {k: v for k, v in params.items() if k != name}
        expected = loglike(spec, data, free)
        got = loglike(spec.with_priors(**{name: value.tolist()}), data, fixed)
        assert got == pytest.approx(expected, rel=1e-10), name
    with pytest.raises(SpecError, match=r"priors.feedback_a is fixed at a value of shape \(3,\)"):
        build(spec.with_priors(feedback_a=[0.1, 0.2, 0.3]), data)
    with pytest.raises(SpecError, match=r"one value per non-tracking regime, \['decoupled'\]"):
        spec.with_priors(feedback_w=[0.1, 0.2]).loading("decoupled")


@pytest.mark.slow
def test_parameter_recovery_ratchet_t150():
    """Ratchet, T = 150, one indicator, one feedback, decoupling at a known time.

    Tolerance: the true value must lie in the central 90 % posterior interval
    (one seeded data set, so a 10 % miss rate per quantity is expected in
    principle; the seed is fixed, so the test is deterministic).  Every check is
    evaluated; those in ``KNOWN_OPEN`` (none at present) end the test as an
    expected failure, any other failing check fails it.
    """
    from pathlock.fit import fit
    from pathlock.hmm import forward_backward

    spec = _spec("ratchet", 2, "absorbing")
    # The hazard is identified from a single transition, so its intercept and slope
    # are pinned only along a ridge and the posterior follows the prior along it:
    # the truth is taken where the default priors (intercept N(-3, 1.5), slope
    # N(0, 1)) put mass (z = -1.3 and 0.5), not at the simulator's defaults
    # (-6, 1.0: z = -2 and 1), which no 90 % interval can be expected to reach.
    true_slope = 0.5
    data, truth = _data(spec, 150, seed=11, hazard_intercept=-5.0, hazard_slope=true_slope)
    assert truth.decoupled[0]
    result = fit(spec, data, draws=500, tune=1000, chains=4, seed=2)
    post = result.idata.posterior

    def covers(values, true):
        lo, hi = np.quantile(np.ravel(values), [0.05, 0.95])
        return bool(lo <= true <= hi)

    # Decoupling time: first passage of the smoothed probability of leaving tracking
    # above one half, per draw, via the regime kernel on the posterior draws.
    inputs = result.regime_inputs()
    smoothed = forward_backward(*inputs.kernel_arrays()).smoothed[:, :, 1]
    tau = np.argmax(smoothed > 0.5, axis=1)
    share = smoothed.mean(axis=1).reshape(inputs.n_chains, -1).mean(axis=1)
    checks = {
        "no divergences": int(result.idata.sample_stats["diverging"].sum()) == 0,
        "loading fraction covered": covers(post["feedback_w"].sel(regime="decoupled"), 0.2),
        "hazard slope covered": covers(
            post["hazard_slope"].sel(regime_from="tracking", regime_to="decoupled"), true_slope
        ),
        "increment scale covered": covers(post["constraint_sigma"], 0.5),
        "decoupling time covered": covers(tau, truth.decoupling_time[0]),
        # Chains agree on the regime labels: per-chain mean decoupled share is similar.
        "chains agree on labels": bool(np.ptp(share) < 0.05),
    }
    failed = [name for name, ok in checks.items() if not ok]
    unexpected = [name for name in failed if name not in KNOWN_OPEN]
    assert not unexpected, f"recovery checks failed: {unexpected}"
    if failed:
        pytest.xfail(f"known open problems (issue 3): {failed}")


# Checks allowed to fail as known-open problems (issue 3). "No divergences" was one
# until the realised mean step and the loading shear (benchmarks/README.md): before
# them this data set (seed 11, fit seed 2) had 0 or 1 divergent draws from run to run,
# since then 0 in each of three runs. Its neighbours with an early switch and no
# calibration period (data seeds 13-15: the feedback decouples at t = 5-26) still
# diverge at times, in the tail where feedback_b falls to the decoupled slope.
KNOWN_OPEN: frozenset[str] = frozenset()


@pytest.mark.slow
def test_refit_draws_are_scored_on_the_paths_the_refit_sampled():
    """Leave-future-out scores a refit's draws on the full data with the refit's own paths.

    The whitened path is centred on the data its model was built for, so the
    refit's coordinates mapped through the full data's model give other paths,
    pulled towards observations the refit never saw.  Before the cutoff both
    data sets are the same, so the refit's draws must score exactly as in its
    own log-likelihood (1e-8: rounding only); the scored paths must be the
    sampled ones.  Missing values in both series (as after the mask) keep one
    compiled model for both fits.
    """
    from pathlock import analysis
    from pathlock.fit import fit, scored_on

    spec = _spec("ratchet", 2, "absorbing")
    df, _ = simulate(spec, None, n_steps=24, seed=5)
    df.loc[[3, 20], "indicator"] = np.nan
    df.loc[[7, 22], "feedback"] = np.nan
    data = from_dataframe(df, time=spec.data.time)
    kw = {"draws": 20, "tune": 30, "chains": 1, "check": False}
    full = fit(spec, data, seed=1, **kw)
    cutoff = 15
    refit = fit(spec, analysis._mask_after(full, cutoff), seed=2, **kw)
    scored = scored_on(full, refit)
    np.testing.assert_array_equal(
        scored.regime_inputs().extras["constraint"].reshape(20, 1, 24),
        refit.idata.posterior["constraint"].values.reshape(20, 1, 24),
    )
    ll = analysis._refit_predictive(full, refit).values.reshape(20, 24)
    own = refit.idata["log_likelihood"]["y"].sum(dims.UNIT).values.reshape(20, 24)
    np.testing.assert_allclose(ll[:, :cutoff], own[:, :cutoff], rtol=0, atol=1e-8)
    assert np.isfinite(ll[:, cutoff:]).all()


# Bursty ratchet steps measured precisely: most steps far below the indicator noise,
# a few jumps of ten to thirty times the mean step (benchmarks/README.md, "Bursty steps").
BURSTY = {"constraint_sigma": 1.5, "constraint_mu": -3.5, "indicator_sigma": 0.1}


@pytest.mark.parametrize("process", ["ratchet", "random_walk", "hysteresis"])
def test_partial_path_is_an_exact_change_of_variables(process):
    """``partial`` samples ``raw``, with ``eps = sigma^-w (raw - w m)`` step by step.

    At a random point its log density must equal the non-centred model's at
    the same ``eps`` plus ``log |d eps / d raw|``, taken by automatic
    differentiation of the map.  The ratchet's data are bursty, so its
    weights ``w`` spread over (0, 1) (checked); a random walk's are one
    constant.  Tolerance 1e-8: both sides are float64 sums of ~60 terms.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.gradient import jacobian

    base = _spec(process, 2, "absorbing")
    params = BURSTY if process == "ratchet" else {}
    data, _ = _data(base, 30, seed=3, **params)

    def variant(mode):
        constraint = ConstraintSpec(process, (), mode)
        return build(dataclasses.replace(base, constraint=constraint), data)

    partial, plain = variant("partial"), variant("noncentered")
    m = partial.model
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in m.initial_point().items()}
    raw = m.rvs_to_values[m["constraint_raw"]]
    mu, sigma = m.replace_rvs_by_values([m["constraint_mu"], m["constraint_sigma"]])
    (innov,) = m.replace_rvs_by_values([_innovation(partial)])
    eps = (innov - mu) / sigma
    jac = jacobian(eps.ravel(), raw).reshape((eps.size, raw.size))
    fn = pytensor.function(
        list(m.value_vars),
        [eps, -pt.log(pt.abs(jac.diagonal())) / pt.log(sigma), pt.log(pt.abs(pt.linalg.det(jac)))],
        on_unused_input="ignore",
    )
    eps_value, weights, log_det = fn(**{v.name: point[v.name] for v in m.value_vars})
    if process == "ratchet":
        assert weights.min() < 0.1 and weights.max() > 0.9
    other = {k: v for k, v in point.items() if k != "constraint_raw"}
    other["constraint_eps"] = eps_value
    assert m.compile_logp()(point) == pytest.approx(
        plain.model.compile_logp()(other) + log_det, abs=1e-8
    )


def test_auto_resolves_a_bursty_ratchet_to_partial():
    """``auto``: ``partial`` (and low-rank adaptation) where the first indicator jumps.

    One bursty data set has jumps of 9 and 7 robust sds (threshold 4.30 at
    T = 120) and resolves ``partial``; a random walk on the same data stays
    ``whitened``; an explicit choice is kept.  Of 200 series from the default
    truth (steps of sd 0.05 against indicator noise 0.25), at most 2 may be
    taken for bursty: the threshold is the level the largest of 119 normal
    differences passes with probability 0.001, and the robust sd estimated
    from 119 differences makes the tail heavier (1 in 300 measured).
    """
    from pathlock.decoupling import indicator_jumps

    spec = _spec("ratchet", 2, "absorbing")
    bursty, _ = _data(spec, 120, seed=20291128, **BURSTY)
    assert indicator_jumps(spec, bursty)[0] >= 1
    assert spec.parameterization_for(bursty) == "partial"
    assert spec.adaptation_for(bursty) == "low_rank"
    walk = dataclasses.replace(spec, constraint=ConstraintSpec("random_walk"))
    assert walk.parameterization_for(bursty) == "whitened"
    fixed = dataclasses.replace(spec, constraint=ConstraintSpec("ratchet", (), "whitened"))
    assert fixed.parameterization_for(bursty) == "whitened"
    assert fixed.adaptation_for(bursty) == "diag"
    flagged = sum(
        spec.parameterization_for(_data(spec, 120, seed=seed)[0]) == "partial"
        for seed in range(200)
    )
    assert flagged <= 2


def test_bursty_ratchet_recovery_t120():
    """Bursty ratchet steps (sd 1.5 on the log scale, indicator noise 0.1), T = 120.

    ``auto`` resolves ``partial``.  Before it, the whitened path gave
    ``constraint_sigma`` a bulk ESS of 7-82 in 2000 draws on such data, and
    R-hat up to 1.67 with a chain stuck at 2.4.  With 4 x 500+500 draws:
    no divergent draw, R-hat of ``constraint_sigma`` below 1.02 (a bulk ESS
    of about 600 puts R-hat within about 0.005 of 1), and the central 90 %
    intervals cover the true ``constraint_sigma`` and loading fraction (one
    seeded data set, deterministic).
    """
    from arviz_stats.base import array_stats

    from pathlock.fit import fit

    spec = _spec("ratchet", 2, "absorbing")
    data, _ = _data(spec, 120, seed=20291128, **BURSTY)
    assert spec.parameterization_for(data) == "partial"
    result = fit(spec, data, draws=500, tune=500, chains=4, seed=20291128, check=False)
    post = result.idata.posterior
    sigma = post["constraint_sigma"].values
    assert int(result.idata.sample_stats["diverging"].sum()) == 0
    assert float(array_stats.rhat(sigma, chain_axis=0, draw_axis=1)) < 1.02
    lo, hi = np.quantile(sigma, [0.05, 0.95])
    assert lo <= 1.5 <= hi
    lo, hi = np.quantile(post["feedback_w"].sel(regime="decoupled").values, [0.05, 0.95])
    assert lo <= 0.2 <= hi


def test_lfo_refits_keep_the_full_fits_parameterization(monkeypatch):
    """Leave-future-out refits sample in the coordinates of the fit they stand in for.

    The data's one jump (t = 9 to 10) makes ``auto`` resolve ``partial``;
    masked from t = 5 on, the same data would resolve ``whitened``, whose
    free variables the full fit's model (which scores the refit's draws)
    does not have.  The first refit's spec must say ``partial``.
    """
    import sys

    from pathlock import analysis
    from pathlock.fit import fit

    spec = _spec("ratchet", 2, "absorbing")
    data, _ = _data(spec, 40, seed=3, **BURSTY)
    full = fit(spec, data, draws=20, tune=20, chains=1, seed=1, check=False)
    assert spec.parameterization_for(data) == "partial"
    assert spec.parameterization_for(analysis._mask_after(full, 5)) == "whitened"

    class Refit(Exception):
        pass

    def refit(spec, data, **kwargs):
        raise Refit(spec.constraint.parameterization)

    monkeypatch.setattr(sys.modules["pathlock.fit"], "fit", refit)
    with pytest.raises(Refit, match="partial"):
        analysis.lfo(full, min_observations=5)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_every_parameterization_has_the_shapes_nutpie_reads(parameterization):
    """nutpie reads each free variable's shape at the initial point by its name.

    ``centered`` once renamed its free innovations (to mark them for the tests),
    and nutpie's shape function then lacked an input: the parameterisation could
    not be fitted with the default sampler.  Every free variable must keep the
    name of its value variable, and the shapes must come out (cheap: no compile
    of the log density).
    """
    from nutpie.compile_pymc import _compute_shapes

    spec = _spec("ratchet", 2, "absorbing", parameterization=parameterization)
    data, _ = _data(spec, 25, seed=4)
    model = build(spec, data).model
    values = {v.name for v in model.value_vars}
    assert all(
        model.rvs_to_values[rv].name in values and rv.name in model.named_vars
        for rv in model.free_RVs
    )
    shapes = _compute_shapes(model)
    assert all(name in shapes for name in values)
