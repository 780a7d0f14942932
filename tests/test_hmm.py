"""Proof that the regime kernel in :mod:`pathlock.hmm` is right.

Oracles: brute-force enumeration of every regime path on tiny problems, finite
differences for the gradient, statsmodels' ``MarkovRegression`` for the
econometric convention, and the samplers that must run the Op (PyMC's own NUTS
and nutpie's numba backend).
"""

from __future__ import annotations

import itertools
import warnings
from typing import NamedTuple

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import stats
from scipy.special import logsumexp

from pathlock.errors import KernelInputError
from pathlock.hmm import (
    forward_backward,
    hmm_loglike,
    marginal_loglike,
    sample_paths,
    viterbi,
)

# Brute force and the kernel do the same sums in a different order; in float64
# on problems this small the difference is ~1e-14, so 1e-10 leaves room only
# for rounding, not for a wrong formula.
EXACT = 1e-10


# --------------------------------------------------------------------------
# problems and the brute-force oracle
# --------------------------------------------------------------------------


class Problem(NamedTuple):
    log_init: np.ndarray  # (U, K)
    log_trans: np.ndarray  # (U, T, K, K)
    log_emit: np.ndarray  # (U, T, K)


def _normalise(logits: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return logits - logsumexp(logits, axis=-1, keepdims=True)


def make_problem(
    rng: np.random.Generator,
    n_units: int,
    n_steps: int,
    k: int,
    *,
    absorbing: bool = False,
    missing: bool = False,
) -> Problem:
    """Random time- and unit-varying problem.

    ``absorbing`` makes the last regime absorbing (its row is a hard zero except
    the diagonal), forbids the jump 0 -> 2 when K = 3, and starts no unit in the
    absorbing regime.  ``missing`` blanks the first step and a stretch of two
    steps (all-zero log-emission rows).
    """
    log_init = _normalise(rng.normal(size=(n_units, k)))
    logits = 1.5 * rng.normal(size=(n_units, n_steps, k, k))
    if absorbing:
        logits[..., k - 1, :] = -np.inf
        logits[..., k - 1, k - 1] = 0.0
        if k == 3:
            logits[..., 0, 2] = -np.inf
        init_logits = rng.normal(size=(n_units, k))
        init_logits[:, k - 1] = -np.inf
        log_init = _normalise(init_logits)
    log_trans = _normalise(logits)
    log_emit = 2.0 * rng.normal(size=(n_units, n_steps, k)) - 1.0
    if missing:
        log_emit[:, 0] = 0.0
        if n_steps >= 5:
            log_emit[:, 2:4] = 0.0
    return Problem(log_init, log_trans, log_emit)


class Exact(NamedTuple):
    paths: np.ndarray  # (K**T, T)
    log_joint: np.ndarray  # (K**T,)
    log_likelihood: float
    predictive: np.ndarray  # (T,)
    filtered: np.ndarray  # (T, K)
    smoothed: np.ndarray  # (T, K)
    pairwise: np.ndarray  # (T - 1, K, K)


def _log_joint(li: np.ndarray, lt: np.ndarray, le: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_steps, k = le.shape
    paths = np.array(list(itertools.product(range(k), repeat=n_steps)))
    lj = li[paths[:, 0]] + le[0, paths[:, 0]]
    for t in range(1, n_steps):
        lj = lj + lt[t, paths[:, t - 1], paths[:, t]] + le[t, paths[:, t]]
    return paths, lj


def _marginals(paths: np.ndarray, post: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_steps = paths.shape[1]
    smoothed = np.zeros((n_steps, k))
    pairwise = np.zeros((max(n_steps - 1, 0), k, k))
    for t in range(n_steps):
        np.add.at(smoothed[t], paths[:, t], post)
    for t in range(1, n_steps):
        np.add.at(pairwise[t - 1], (paths[:, t - 1], paths[:, t]), post)
    return smoothed, pairwise


def brute_force(li: np.ndarray, lt: np.ndarray, le: np.ndarray) -> Exact:
    """Everything the kernel returns for one unit, by enumerating all K**T paths."""
    n_steps, k = le.shape
    paths, lj = _log_joint(li, lt, le)
    loglik = float(logsumexp(lj))
    smoothed, pairwise = _marginals(paths, np.exp(lj - loglik), k)
    # Filtered and predictive quantities from the prefix problems y_0..t.
    prefix_ll = np.empty(n_steps)
    filtered = np.empty((n_steps, k))
    for t in range(n_steps):
        p_paths, p_lj = _log_joint(li, lt[: t + 1], le[: t + 1])
        prefix_ll[t] = logsumexp(p_lj)
        filtered[t] = _marginals(p_paths, np.exp(p_lj - prefix_ll[t]), k)[0][t]
    predictive = np.diff(prefix_ll, prepend=0.0)
    return Exact(paths, lj, loglik, predictive, filtered, smoothed, pairwise)


CASES = {
    "plain": {},
    "absorbing": {"absorbing": True},
    "missing": {"missing": True},
    "absorbing+missing": {"absorbing": True, "missing": True},
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> dict[str, bool]:
    return CASES[request.param]


# --------------------------------------------------------------------------
# exact agreement with enumeration
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("n_steps", [1, 2, 4, 6])
def test_forward_backward_matches_enumeration(rng, case, k, n_steps):
    prob = make_problem(rng, 3, n_steps, k, **case)
    res = forward_backward(*prob)
    assert res.pairwise.shape == (3, n_steps - 1, k, k)
    for u in range(3):
        ex = brute_force(prob.log_init[u], prob.log_trans[u], prob.log_emit[u])
        np.testing.assert_allclose(res.log_likelihood[u], ex.log_likelihood, rtol=0, atol=EXACT)
        np.testing.assert_allclose(res.predictive_log_density[u], ex.predictive, rtol=0, atol=EXACT)
        np.testing.assert_allclose(res.filtered[u], ex.filtered, rtol=0, atol=EXACT)
        np.testing.assert_allclose(res.smoothed[u], ex.smoothed, rtol=0, atol=EXACT)
        np.testing.assert_allclose(res.pairwise[u], ex.pairwise, rtol=0, atol=EXACT)
    np.testing.assert_allclose(marginal_loglike(*prob), res.log_likelihood, rtol=0, atol=EXACT)


def test_absorbing_regime_is_never_left(rng):
    prob = make_problem(rng, 3, 6, 3, absorbing=True, missing=True)
    res = forward_backward(*prob)
    assert np.isfinite(res.log_likelihood).all()
    # Hard zeros in the transitions are hard zeros in the pairwise marginals.
    forbidden = np.isneginf(prob.log_trans[:, 1:])
    assert np.all(res.pairwise[forbidden] == 0.0)
    # Once absorbed, always absorbed: P(S_t = 2) is non-decreasing in t.
    assert np.all(np.diff(res.smoothed[..., 2], axis=1) >= -EXACT)


@pytest.mark.parametrize("k", [2, 3])
def test_viterbi_is_the_brute_force_argmax(rng, case, k):
    prob = make_problem(rng, 4, 6, k, **case)
    best = viterbi(*prob)
    for u in range(4):
        ex = brute_force(prob.log_init[u], prob.log_trans[u], prob.log_emit[u])
        np.testing.assert_array_equal(best[u], ex.paths[np.argmax(ex.log_joint)])


def test_broadcast_forms_agree_with_expanded(rng):
    n_units, n_steps, k = 3, 5, 3
    prob = make_problem(rng, n_units, n_steps, k, missing=True)
    shared_init = prob.log_init[0]
    shared_trans = prob.log_trans[0, 1]
    per_time = prob.log_trans[0]
    expand = np.broadcast_to
    forms = [
        # (compact inputs, expanded inputs)
        (
            (shared_init, shared_trans, prob.log_emit),
            (
                expand(shared_init, (n_units, k)),
                expand(shared_trans, (n_units, n_steps, k, k)),
                prob.log_emit,
            ),
        ),
        (
            (prob.log_init, per_time, prob.log_emit),
            (prob.log_init, expand(per_time, (n_units, n_steps, k, k)), prob.log_emit),
        ),
        (
            (prob.log_init, per_time[None], prob.log_emit),
            (prob.log_init, expand(per_time, (n_units, n_steps, k, k)), prob.log_emit),
        ),
        (
            (prob.log_init, prob.log_trans[:, 1:2], prob.log_emit),
            (
                prob.log_init,
                expand(prob.log_trans[:, 1:2], (n_units, n_steps, k, k)),
                prob.log_emit,
            ),
        ),
        (
            (shared_init, per_time, prob.log_emit[1]),
            (shared_init[None], per_time[None], prob.log_emit[1:2]),
        ),
    ]
    for compact, expanded in forms:
        a, b = forward_backward(*compact), forward_backward(*expanded)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(viterbi(*compact), viterbi(*expanded))
        np.testing.assert_array_equal(
            sample_paths(*compact, rng=3, n_samples=5), sample_paths(*expanded, rng=3, n_samples=5)
        )


# --------------------------------------------------------------------------
# forward filtering, backward sampling
# --------------------------------------------------------------------------


def _path_counts(draws: np.ndarray, k: int) -> np.ndarray:
    n_steps = draws.shape[-1]
    codes = draws @ (k ** np.arange(n_steps - 1, -1, -1))
    return np.bincount(codes, minlength=k**n_steps)


def _chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson chi-square p-value, pooling cells expected below 5 into one cell."""
    expected = counts.sum() * probs
    small = expected < 5.0
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep]).pvalue)


def test_sample_paths_frequencies_match_exact_posterior(rng):
    # 3 units x 81 paths, 20000 draws each.  Each unit's chi-square test is run
    # at alpha = 0.001 (family-wise <= 0.003); the seed is fixed, so the outcome
    # is deterministic and a real bias of a few per cent in any frequent path
    # would be rejected (see the power check below).
    n_units, n_steps, k, n_draws = 3, 4, 3, 20_000
    alpha = 1e-3
    prob = make_problem(rng, n_units, n_steps, k, absorbing=True, missing=True)
    draws = sample_paths(*prob, rng=rng, n_samples=n_draws)
    assert draws.shape == (n_draws, n_units, n_steps)
    for u in range(n_units):
        ex = brute_force(prob.log_init[u], prob.log_trans[u], prob.log_emit[u])
        post = np.exp(ex.log_joint - ex.log_likelihood)
        counts = _path_counts(draws[:, u], k)
        assert counts[post == 0.0].sum() == 0, "FFBS drew a path of probability zero"
        assert _chi_square_pvalue(counts, post) > alpha
        # Power: the same draws are decisively rejected against the posterior of
        # another unit, so the test above can fail.
        other = brute_force(
            prob.log_init[(u + 1) % n_units],
            prob.log_trans[(u + 1) % n_units],
            prob.log_emit[(u + 1) % n_units],
        )
        other_post = np.exp(other.log_joint - other.log_likelihood)
        if np.all(counts[other_post == 0.0] == 0):
            assert _chi_square_pvalue(counts, other_post) < 1e-6


def test_sample_paths_reproducible_from_seed(rng):
    prob = make_problem(rng, 2, 6, 3, absorbing=True)
    a = sample_paths(*prob, rng=42, n_samples=50)
    b = sample_paths(*prob, rng=np.random.default_rng(42), n_samples=50)
    c = sample_paths(*prob, rng=43, n_samples=50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    single = sample_paths(*prob, rng=42)
    assert single.shape == (2, 6)
    np.testing.assert_array_equal(single, a[0])


# --------------------------------------------------------------------------
# the PyTensor Op: value and analytic gradient
# --------------------------------------------------------------------------

MODES = ["NUMBA", "FAST_COMPILE"]


def _compiled_loglike_and_grad(mode: str, weights: np.ndarray):
    """Compile ``sum(w * loglik)`` and its gradient w.r.t. all three inputs."""
    li = pt.matrix("li")
    lt = pt.tensor4("lt")
    le = pt.tensor3("le")
    value = (hmm_loglike(li, lt, le) * weights).sum()
    grads = pytensor.grad(value, [li, lt, le])
    return pytensor.function([li, lt, le], [value, *grads], mode=mode)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_op_gradient_is_smoothed_and_pairwise(rng, case, mode, k):
    # K = 2 runs the kernel's two-regime fast path, K = 3 the general one.
    n_units, n_steps = 3, 6
    prob = make_problem(rng, n_units, n_steps, k, **case)
    weights = rng.uniform(0.5, 2.0, size=n_units)
    fn = _compiled_loglike_and_grad(mode, weights)
    value, g_init, g_trans, g_emit = fn(*prob)
    res = forward_backward(*prob)
    np.testing.assert_allclose(value, weights @ res.log_likelihood, rtol=0, atol=EXACT)
    w = weights[:, None, None]
    np.testing.assert_allclose(g_emit, w * res.smoothed, rtol=0, atol=EXACT)
    np.testing.assert_allclose(g_init, weights[:, None] * res.smoothed[:, 0], rtol=0, atol=EXACT)
    np.testing.assert_allclose(g_trans[:, 1:], w[..., None] * res.pairwise, rtol=0, atol=EXACT)
    np.testing.assert_array_equal(g_trans[:, 0], 0.0)
    for g in (g_init, g_trans, g_emit):
        assert np.isfinite(g).all()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_op_gradient_matches_finite_differences(rng, case, mode, k):
    # Central differences with h = 1e-5 have truncation error ~h^2 |f'''| ~ 1e-10
    # and rounding error ~1e-16 |f| / h ~ 1e-10 here, so 1e-7 is a safe bound
    # that still catches any wrong term (gradients are O(0.1 - 1)).
    n_units, n_steps = 2, 5
    prob = make_problem(rng, n_units, n_steps, k, **case)
    weights = rng.uniform(0.5, 2.0, size=n_units)
    fn = _compiled_loglike_and_grad(mode, weights)
    _, *analytic = fn(*prob)
    h = 1e-5
    for which, (arr, grad) in enumerate(zip(prob, analytic, strict=True)):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            if not np.isfinite(arr[idx]):
                continue
            args = [a.copy() for a in prob]
            args[which][idx] += h
            up = fn(*args)[0]
            args[which][idx] -= 2 * h
            down = fn(*args)[0]
            numeric[idx] = (up - down) / (2 * h)
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-7)


def test_op_broadcast_forms_value_and_gradient(rng):
    # A broadcast input's gradient is the expanded input's gradient summed over
    # the broadcast axes.
    n_units, n_steps, k = 3, 5, 2
    prob = make_problem(rng, n_units, n_steps, k, missing=True)
    full = _compiled_loglike_and_grad("NUMBA", np.ones(n_units))
    shared_trans = prob.log_trans[0, 1]
    per_time = prob.log_trans[0]
    forms = [
        (prob.log_init[0], shared_trans),
        (prob.log_init[0], per_time),
        (prob.log_init[:1], shared_trans[None, None]),
        (prob.log_init[:1], per_time[None]),
    ]
    le = pt.tensor3("le")
    for init, trans in forms:
        # A unit axis of length 1 must be statically 1 to broadcast, as in PyTensor.
        li = pt.tensor("li", shape=(1, None) if init.ndim == 2 else (None,))
        lt = pt.tensor(
            "lt", shape=(1, None, None, None) if trans.ndim == 4 else (None,) * trans.ndim
        )
        value = hmm_loglike(li, lt, le).sum()
        fn = pytensor.function([li, lt, le], [value, *pytensor.grad(value, [li, lt, le])])
        out = fn(init, trans, prob.log_emit)
        exp_init = np.broadcast_to(init.reshape(-1, k), (n_units, k)).copy()
        trans4 = trans.reshape((1, -1, k, k))
        exp_trans = np.broadcast_to(trans4, (n_units, n_steps, k, k)).copy()
        ref = full(exp_init, exp_trans, prob.log_emit)
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[1], ref[1].sum(axis=0).reshape(init.shape), atol=1e-12)
        time_axes = (1,) if trans4.shape[1] == 1 else ()
        g_trans = ref[2].sum(axis=(0, *time_axes)).reshape(trans.shape)
        np.testing.assert_allclose(out[2], g_trans, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[3], ref[3], rtol=0, atol=1e-12)


def test_op_runtime_broadcast_must_be_static(rng):
    prob = make_problem(rng, 3, 4, 2)
    li, lt, le = pt.matrix("li"), pt.tensor4("lt"), pt.tensor3("le")
    for mode in MODES:
        fn = pytensor.function([li, lt, le], hmm_loglike(li, lt, le), mode=mode)
        with pytest.raises(KernelInputError, match="log_init"):
            fn(prob.log_init[:1], prob.log_trans, prob.log_emit)
        with pytest.raises(KernelInputError, match="log_trans"):
            fn(prob.log_init, prob.log_trans[:, :2], prob.log_emit)
        with pytest.raises(KernelInputError, match="log_trans"):
            fn(prob.log_init, prob.log_trans[:2], prob.log_emit)


def test_gradient_through_log_softmax_of_logits(rng):
    # verify_grad compares a random projection of the gradient with finite
    # differences (its float64 tolerance is 1e-4 relative / absolute).  Masked
    # logits (an absorbing regime and a forbidden jump, -inf after the mask)
    # must give finite gradients: zero for masked entries, which the finite
    # differences confirm since moving them changes nothing.
    n_units, n_steps, k = 2, 6, 3
    mask = np.ones((k, k), dtype=bool)
    mask[k - 1, : k - 1] = False
    mask[0, 2] = False
    log_emit = 2.0 * rng.normal(size=(n_units, n_steps, k))
    log_emit[:, 2:4] = 0.0

    def loglike(init_logits, trans_logits):
        log_init = pt.special.log_softmax(init_logits, axis=-1)
        masked = pt.where(mask, trans_logits, -np.inf)
        log_trans = pt.special.log_softmax(masked, axis=-1)
        return hmm_loglike(log_init, log_trans, log_emit)

    init_logits = rng.normal(size=k)
    for trans_shape in [(k, k), (n_steps, k, k), (n_units, n_steps, k, k)]:
        trans_logits = rng.normal(size=trans_shape)
        # FAST_COMPILE runs the Op's perform (the same numba kernel) without
        # compiling each graph with numba; the numba graph is checked above.
        pytensor.gradient.verify_grad(
            loglike, [init_logits, trans_logits], rng=rng, mode="FAST_COMPILE"
        )
        ti = pt.tensor("ti", shape=(None,) * len(trans_shape))
        ii = pt.vector("ii")
        grads = pytensor.grad(loglike(ii, ti).sum(), [ii, ti])
        g_init, g_trans = pytensor.function([ii, ti], grads, mode="FAST_COMPILE")(
            init_logits, trans_logits
        )
        assert np.isfinite(g_init).all() and np.isfinite(g_trans).all()
        assert np.all(g_trans[..., ~mask] == 0.0)


def test_verify_grad_time_varying_and_broadcast(rng):
    prob = make_problem(rng, 2, 5, 3, missing=True)
    for args in [
        (prob.log_init, prob.log_trans, prob.log_emit),
        (prob.log_init[0], prob.log_trans[0, 1], prob.log_emit),
        (prob.log_init[0], prob.log_trans[0], prob.log_emit),
    ]:
        pytensor.gradient.verify_grad(hmm_loglike, list(args), rng=rng, mode="FAST_COMPILE")


# --------------------------------------------------------------------------
# inside PyMC models: PyMC's NUTS and nutpie's numba backend
# --------------------------------------------------------------------------


def _simulate_switching(rng: np.random.Generator, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    trans = np.array([[0.95, 0.05], [0.1, 0.9]])
    states = np.empty(n_steps, dtype=int)
    states[0] = 0
    for t in range(1, n_steps):
        states[t] = rng.choice(2, p=trans[states[t - 1]])
    y = np.array([-1.0, 1.5])[states] + 0.7 * rng.normal(size=n_steps)
    return y, states


def _switching_model(y: np.ndarray):
    import pymc as pm

    with pm.Model() as model:
        mu0 = pm.Normal("mu0", 0.0, 3.0)
        delta = pm.HalfNormal("delta", 3.0)
        sigma = pm.HalfNormal("sigma", 2.0)
        p_stay = pm.Beta("p_stay", 8.0, 2.0, shape=2)
        mu = pt.stack([mu0, mu0 + delta])
        log_emit = pm.logp(pm.Normal.dist(mu, sigma), y[:, None])
        log_trans = pt.stack(
            [
                pt.stack([pt.log(p_stay[0]), pt.log1p(-p_stay[0])]),
                pt.stack([pt.log1p(-p_stay[1]), pt.log(p_stay[1])]),
            ]
        )
        log_init = np.log([0.5, 0.5])
        pm.Potential("loglike", hmm_loglike(log_init, log_trans, log_emit).sum())
    return model


def test_op_in_pymc_model_logp_and_pymc_sampler(rng):
    import pymc as pm

    y, _ = _simulate_switching(rng, 80)
    model = _switching_model(y)
    point = model.initial_point()
    (potential_graph,) = model.replace_rvs_by_values(model.potentials)
    potential = model.compile_fn(
        potential_graph, inputs=model.value_vars, on_unused_input="ignore"
    )(point)
    mu0 = float(point["mu0"])
    delta, sigma = float(np.exp(point["delta_log__"])), float(np.exp(point["sigma_log__"]))
    p = 1.0 / (1.0 + np.exp(-point["p_stay_logodds__"]))
    log_emit = stats.norm.logpdf(y[:, None], [mu0, mu0 + delta], sigma)
    log_trans = np.log([[p[0], 1 - p[0]], [1 - p[1], p[1]]])
    expected = marginal_loglike(np.log([0.5, 0.5]), log_trans, log_emit)[0]
    np.testing.assert_allclose(potential, expected, rtol=1e-12)

    dt = pm.sample(
        draws=30,
        tune=30,
        chains=1,
        nuts_sampler="pymc",
        random_seed=1,
        progressbar=False,
        compute_convergence_checks=False,
        model=model,
    )
    post = dt.posterior
    assert post["mu0"].shape == (1, 30)
    assert np.isfinite(post["sigma"].values).all()


def test_op_under_nutpie_numba_without_object_mode(rng):
    import nutpie

    y, _ = _simulate_switching(rng, 80)
    model = _switching_model(y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*", category=UserWarning)
        compiled = nutpie.compile_pymc_model(model, backend="numba")
        dt = nutpie.sample(compiled, draws=30, tune=30, chains=1, seed=1, progress_bar=False)
    assert dt.posterior["mu0"].shape == (1, 30)
    assert np.isfinite(dt.posterior["sigma"].values).all()
    # The numba logp equals PyMC's at the same point.
    point = model.initial_point()
    x = np.concatenate([np.ravel(point[v.name]) for v in model.value_vars])
    logp_fn = model.compile_logp()
    value = compiled.logp_func(x)[0] if isinstance(compiled.logp_func(x), (list, tuple)) else None
    if value is not None:
        np.testing.assert_allclose(value, logp_fn(point), rtol=1e-10)


@pytest.mark.parametrize("k", [2, 3])
def test_impossible_observation_gives_zero_likelihood_and_finite_gradient(rng, k):
    prob = make_problem(rng, 3, 5, k, absorbing=True)
    log_emit = prob.log_emit.copy()
    log_emit[1, 2] = -np.inf  # unit 1: no regime can produce y_2
    log_emit[2, 3, : k - 1] = -np.inf  # unit 2: only the absorbing regime can
    res = forward_backward(prob.log_init, prob.log_trans, log_emit)
    assert res.log_likelihood[1] == -np.inf
    assert np.isfinite(res.log_likelihood[[0, 2]]).all()
    ex = brute_force(prob.log_init[2], prob.log_trans[2], log_emit[2])
    np.testing.assert_allclose(res.log_likelihood[2], ex.log_likelihood, rtol=0, atol=EXACT)
    np.testing.assert_allclose(res.smoothed[2], ex.smoothed, rtol=0, atol=EXACT)
    fn = _compiled_loglike_and_grad("NUMBA", np.ones(3))
    value, *grads = fn(prob.log_init, prob.log_trans, log_emit)
    assert value == -np.inf
    assert all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(grads[2][2], ex.smoothed, rtol=0, atol=EXACT)


# --------------------------------------------------------------------------
# against statsmodels' MarkovRegression
# --------------------------------------------------------------------------


def _statsmodels_inputs(model, params: np.ndarray, y: np.ndarray, means, variances):
    """Translate a statsmodels model at ``params`` into kernel inputs.

    statsmodels' ``regime_transition[i, j, t] = P(S_t = i | S_(t-1) = j)`` is
    the transpose of ours.  Its initial probabilities are for a period before
    the first observation: its filter runs at order ``r`` = the number of lag
    axes of the conditional log-likelihoods (1 for ``MarkovRegression``, which
    carries a lag axis even at ``order=0``) and applies ``A_0`` ``r + 1`` times
    before the first observation, so ``P(S_0) = A_0^(r + 1) init``.
    """
    sm_trans = model.regime_transition_matrix(params)  # (K, K, T or 1)
    log_trans = np.log(np.moveaxis(sm_trans, -1, 0).transpose(0, 2, 1))
    n_lags = model._conditional_loglikelihoods(params).ndim - 2
    init = np.linalg.matrix_power(sm_trans[..., 0], n_lags + 1) @ model.initial_probabilities(
        params
    )
    log_emit = stats.norm.logpdf(y[:, None], means, np.sqrt(variances))
    return np.log(init), log_trans, log_emit


@pytest.mark.parametrize("variant", ["steady_state", "known_initial", "tvtp"])
def test_against_statsmodels_markov_regression(rng, variant):
    # Same conventions, same parameters: both are exact filters, so the only
    # difference is rounding (statsmodels works in log space throughout): 1e-8.
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    n_steps = 300
    y, states = _simulate_switching(rng, n_steps)
    y = y + (states == 1) * 0.8 * rng.normal(size=n_steps)  # switching variance too
    means, variances = np.array([-0.9, 1.4]), np.array([0.5, 1.2])
    if variant == "tvtp":
        exog_tvtp = np.column_stack([np.ones(n_steps), rng.normal(size=n_steps)])
        model = MarkovRegression(y, k_regimes=2, switching_variance=True, exog_tvtp=exog_tvtp)
        params = np.array([2.5, -2.0, 0.8, -0.6, *means, *variances])
    else:
        model = MarkovRegression(y, k_regimes=2, switching_variance=True)
        params = np.array([0.93, 0.12, *means, *variances])
        if variant == "known_initial":
            model.initialize_known(np.array([0.8, 0.2]))
    log_init, log_trans, log_emit = _statsmodels_inputs(model, params, y, means, variances)
    if variant != "tvtp":
        assert log_trans.shape == (1, 2, 2)
        log_trans = log_trans[0]
    res = forward_backward(log_init, log_trans, log_emit)
    np.testing.assert_allclose(res.log_likelihood[0], model.loglike(params), rtol=0, atol=1e-8)
    sm = model.smooth(params)
    np.testing.assert_allclose(res.smoothed[0], sm.smoothed_marginal_probabilities, atol=1e-8)
    np.testing.assert_allclose(res.filtered[0], sm.filtered_marginal_probabilities, atol=1e-8)


# --------------------------------------------------------------------------
# numerical stability
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_long_series_and_huge_log_densities(rng, k):
    n_steps = 100_000
    log_emit = -1e6 * rng.uniform(size=(1, n_steps, k)) ** 4
    log_emit[0, 5000:6000] = 0.0
    logits = rng.normal(size=(1, n_steps, k, k))
    logits[..., k - 1, : k - 1] = -np.inf
    log_trans = _normalise(logits)
    log_init = np.log(np.full(k, 1.0 / k))
    res = forward_backward(log_init, log_trans, log_emit)
    assert np.isfinite(res.log_likelihood).all()
    assert np.isfinite(res.predictive_log_density).all()
    for name in ("filtered", "smoothed"):
        marg = getattr(res, name)
        assert np.isfinite(marg).all() and (marg >= 0).all()
        np.testing.assert_allclose(marg.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.pairwise.sum(axis=(-2, -1)), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.predictive_log_density.sum(), res.log_likelihood[0], rtol=1e-12)
    # Adding c_t to every regime's log-density at t shifts the log-likelihood by
    # sum(c_t) and changes no marginal: checks the scaling, not only finiteness.
    shift = -1e6 * rng.uniform(size=(1, n_steps, 1))
    shifted = forward_backward(log_init, log_trans, log_emit + shift)
    np.testing.assert_allclose(shifted.log_likelihood - res.log_likelihood, shift.sum(), rtol=1e-12)
    np.testing.assert_allclose(shifted.smoothed, res.smoothed, rtol=0, atol=1e-10)
    # The Op's gradient stays finite at this scale.
    li, lt, le = pt.vector("li"), pt.tensor4("lt"), pt.tensor3("le")
    value = hmm_loglike(li, lt, le).sum()
    grads = pytensor.grad(value, [li, lt, le])
    out = pytensor.function([li, lt, le], [value, *grads])(log_init, log_trans, log_emit)
    assert all(np.isfinite(o).all() for o in out)
    np.testing.assert_allclose(out[3], res.smoothed, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

K, T, U = 2, 4, 3
GOOD_INIT = np.log(np.full((U, K), 0.5))
GOOD_TRANS = np.log(np.full((U, T, K, K), 0.5))
GOOD_EMIT = np.zeros((U, T, K))


def _with(arr: np.ndarray, idx, value) -> np.ndarray:
    out = arr.copy()
    out[idx] = value
    return out


BAD_INPUTS = {
    "emit_1d": ((GOOD_INIT, GOOD_TRANS, np.zeros(T)), "log_emit"),
    "one_regime": (
        (GOOD_INIT[..., :1] * 0, GOOD_TRANS[..., :1, :1] * 0, GOOD_EMIT[..., :1]),
        "log_emit",
    ),
    "init_wrong_k": ((np.log(np.full(3, 1 / 3)), GOOD_TRANS, GOOD_EMIT), "log_init"),
    "init_wrong_units": ((GOOD_INIT[:2], GOOD_TRANS, GOOD_EMIT), "log_init"),
    "trans_wrong_k": ((GOOD_INIT, np.log(np.full((3, 3), 1 / 3)), GOOD_EMIT), "log_trans"),
    "trans_wrong_time": ((GOOD_INIT, GOOD_TRANS[:, :3], GOOD_EMIT), "log_trans"),
    "trans_wrong_units": ((GOOD_INIT, GOOD_TRANS[:2], GOOD_EMIT), "log_trans"),
    "trans_rows": ((GOOD_INIT, np.log([[0.5, 0.4], [0.5, 0.5]]), GOOD_EMIT), "log_trans"),
    "init_not_normalised": ((np.log([0.5, 0.6]), GOOD_TRANS, GOOD_EMIT), "log_init"),
    "nan_emit": ((GOOD_INIT, GOOD_TRANS, _with(GOOD_EMIT, (1, 2, 0), np.nan)), "log_emit"),
    "nan_trans": ((GOOD_INIT, _with(GOOD_TRANS, (0, 0, 1, 1), np.nan), GOOD_EMIT), "log_trans"),
    "nan_init": ((_with(GOOD_INIT, (2, 1), np.nan), GOOD_TRANS, GOOD_EMIT), "log_init"),
    "posinf_emit": ((GOOD_INIT, GOOD_TRANS, _with(GOOD_EMIT, (0, 0, 0), np.inf)), "log_emit"),
}


@pytest.mark.parametrize("func", [forward_backward, marginal_loglike, viterbi, sample_paths])
@pytest.mark.parametrize("bad", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_names_the_argument(func, bad):
    args, name = BAD_INPUTS[bad]
    with pytest.raises(KernelInputError, match=name):
        func(*args)


def test_good_inputs_of_bad_input_table_pass():
    # The table above differs from this call in one thing only.
    forward_backward(GOOD_INIT, GOOD_TRANS, GOOD_EMIT)


def test_op_rejects_mismatched_regime_counts(rng):
    prob = make_problem(rng, 2, 4, 3)
    li, lt, le = pt.matrix("li"), pt.tensor4("lt"), pt.tensor3("le")
    fn = pytensor.function([li, lt, le], hmm_loglike(li, lt, le))
    with pytest.raises(KernelInputError, match="log_init"):
        fn(prob.log_init[:, :2], prob.log_trans, prob.log_emit)
    with pytest.raises(KernelInputError, match="log_trans"):
        fn(prob.log_init, prob.log_trans[..., :2, :2], prob.log_emit)
