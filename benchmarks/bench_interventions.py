"""Speed of compare_timings: 50 timings x 1000 draws x 100 steps in under 10 s on 2 cores.

The posterior is synthetic (1000 worlds scattered around one truth, built by
:func:`pathlock.interventions.simulate_worlds` with the model's own process,
transition and emission code), so the benchmark needs no sampling.  The world
is a ratchet with one exposure, two regimes (absorbing lock-in whose hazard
rises with the constraint) and one feedback signal; 60 observed steps and a
40-step horizon make 100 steps.  Besides the 50 fixed timings the comparison
holds the baseline, a feedback rule and a posterior trigger, so both the
feedback simulation and the forward filter on the simulated future run.

Run: ``.venv/bin/python benchmarks/bench_interventions.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pathlock import interventions as iv

TARGET_S = 10.0


def make_worlds(n_draws: int, n_obs: int, seed: int = 1) -> iv.Worlds:
    rng = np.random.default_rng(seed)
    shape = (n_draws, 1)
    params = {
        "mu": -1.2 + 0.1 * rng.standard_normal(shape),
        "sigma": np.full(shape, 0.3),
        "beta": 1.0 + 0.1 * rng.standard_normal((*shape, 1)),
    }
    k = 2
    intercept = np.broadcast_to(
        -6.0 + 0.3 * rng.standard_normal((n_draws, 1, 1, 1)), (n_draws, 1, k, k)
    )
    slope = np.broadcast_to(
        0.25 + 0.02 * rng.standard_normal((n_draws, 1, 1, 1)), (n_draws, 1, k, k)
    )
    transitions = iv.HazardTransitions("absorbing", intercept.copy(), slope.copy())
    feedback = iv.FeedbackModel(
        ("normal",),
        np.zeros((*shape, 1, k)),
        np.broadcast_to(np.array([1.0, 0.0]), (*shape, 1, k)).copy(),
        {"sigma": np.full((*shape, 1, k), 0.5)},
    )
    return iv.simulate_worlds(
        "ratchet",
        params,
        transitions,
        feedback,
        n_steps=n_obs,
        init=np.zeros(shape),
        seed=seed,
        n_chains=4,
        exposures=np.ones((1, n_obs, 1)),
        absorbing=(1,),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--timings", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_obs = args.steps * 3 // 5
    horizon = args.steps - n_obs

    t0 = time.perf_counter()
    worlds = make_worlds(args.draws, n_obs)
    setup = time.perf_counter() - t0
    times = np.linspace(0, args.steps - 1, args.timings).round().astype(int)
    scenarios = iv.timing_scenarios(iv.ReduceExposure(0.5), sorted(set(times.tolist())))
    scenarios += [
        iv.Scenario("feedback rule", iv.ReduceExposure(0.5), iv.FeedbackRule("signal0", 10.0)),
        iv.Scenario("posterior trigger", iv.ReduceExposure(0.5), iv.PosteriorTrigger(0.8)),
    ]
    # Warm-up: imports, numba kernels from cache, pytensor compilation of the emission.
    iv.compare_timings(worlds, scenarios[:2], horizon=horizon, seed=0, n_draws=8)

    runs = []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        res = iv.compare_timings(worlds, scenarios, horizon=horizon, seed=r)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    out = res.outcomes
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        ("scenarios (incl. baseline)", f"{out.sizes['scenario']}"),
        ("draws", f"{out.sizes['chain'] * out.sizes['draw']}"),
        ("time steps (data + horizon)", f"{out.sizes['time']} ({n_obs} + {horizon})"),
        ("cores available", f"{cores}"),
        ("synthetic posterior set-up [s]", f"{setup:.2f}"),
        ("compare_timings, best of runs [s]", f"{best:.2f}"),
        ("compare_timings, all runs [s]", ", ".join(f"{t:.2f}" for t in runs)),
        ("target [s]", f"{TARGET_S:.1f}"),
        ("verdict", "PASS" if best < TARGET_S else "FAIL"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'quantity':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 24}")
    for key, value in rows:
        print(f"{key:<{width}} | {value}")


if __name__ == "__main__":
    main()
