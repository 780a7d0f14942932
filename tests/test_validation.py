"""CI-sized runs of the validation scripts (the full runs are in ``validation/``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"validation_{name}", ROOT / "validation" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules.
    sys.modules[f"validation_{name}"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sbc_small_run(compilations):
    """Three SBC simulations end to end: every scalar gets a rank per simulation,
    within [0, n_draws], and every statistic is a probability.  (Calibration
    itself needs the full 100-simulation run; three cannot test uniformity.)
    The decoupling model is compiled once for all three: every data-dependent
    value of its graph is data, so the compiled model is reused."""
    sbc = _load("sbc")
    res = sbc.run_sbc(3, 40, draws=60, tune=100, chains=1, thin_to=19, bins=4, seed=5)
    assert len(compilations) == 1
    assert res.n_draws == 19
    assert res.divergent_draws.shape == (3,)
    assert np.all(res.divergent_draws >= 0)
    for name in sbc.SCALARS:
        r = res.ranks[name]
        assert r.shape == (3,)
        assert np.all((r >= 0) & (r <= res.n_draws))
        assert 0.0 <= res.chi2_p[name] <= 1.0
        assert 0.0 <= res.ks_p[name] <= 1.0


def test_sbc_counts_divergent_fits_and_names_the_largest():
    """The summary line's counts: fits with any divergent draw, and the largest counts."""
    sbc = _load("sbc")
    draws = np.array([0, 3, 0, 415, 1, 0], dtype=np.int64)
    res = sbc.SBCResult({}, 99, draws, {}, {}, {}, 0.0)
    assert res.divergent_fits == 3
    assert sbc._largest(draws, 2) == [(3, 415), (1, 3)]
    assert sbc._largest(draws, 5) == [(3, 415), (1, 3), (4, 1)]
    assert sbc._largest(np.zeros(4, dtype=np.int64), 3) == []


def test_sbc_rank_statistics_separate_uniform_from_biased_ranks():
    """The uniformity statistics accept uniform ranks and reject a sampler whose
    posterior sits above the truth.  Seeded; 400 ranks among 99 draws: uniform
    ranks give p well above 0.01 (their p-values are uniform, so a 1 % miss is
    the test's seeded false-alarm rate), ranks squeezed into the lower half give
    p < 1e-10 for both tests and a mean rank near 0.25."""
    sbc = _load("sbc")
    rng = np.random.default_rng(11)
    uniform = rng.integers(0, 100, size=400)
    chi2_p, ks_p, mean_rank = sbc.rank_statistics(uniform, 99, 10, rng)
    assert chi2_p > 0.01 and ks_p > 0.01
    assert abs(mean_rank - 0.5) < 0.05
    biased = rng.integers(0, 50, size=400)
    chi2_p, ks_p, mean_rank = sbc.rank_statistics(biased, 99, 10, rng)
    assert chi2_p < 1e-10 and ks_p < 1e-10
    assert abs(mean_rank - 0.25) < 0.05


def _study_result(kind: str, seed: int, **fields) -> dict:
    """One dataset's record as ``run_task`` returns it: a dataset that never
    decoupled and a clean fit, unless ``fields`` say otherwise."""
    record = {
        "kind": kind,
        "seed": seed,
        "tau": 120,
        "median": 120,
        "hdi": [120, 120],
        "p_decoupled_end": 0.0,
        "divergences": 0,
        "seconds": 1.0,
    }
    return record | fields


def test_analysis_acceptance_table_applies_the_issue_targets():
    """The acceptance study's table (validation/analysis_acceptance.py) passes
    exactly the rows whose targets hold: 18 of 20 near, 16 of 20 covered,
    9 of 10 null fits below 0.2, 8 of 10 comparisons each way, and the model's
    median detection delay below the feedback rule's."""
    import argparse

    acc = _load("analysis_acceptance")
    args = argparse.Namespace(steps=120)

    def dec(i, median, hdi, model, rule, model_first=None, rule_first=None):
        return _study_result(
            "decoupling",
            i,
            tau=50,
            median=median,
            hdi=hdi,
            p_decoupled_end=1.0,
            model_after=model,
            rule_after=rule,
            model_detect=model if model_first is None else model_first,
            rule_detect=rule if rule_first is None else rule_first,
        )

    good = [dec(i, 51, [47, 55], 52, 60) for i in range(18)]
    off = [dec(18 + i, 60, [58, 62], 62, 61) for i in range(2)]
    null = [
        _study_result("null", 100 + i, p_decoupled_end=0.05 if i < 8 else 0.3) for i in range(10)
    ]
    rows = {name: ok for name, _, _, ok in acc.report(good + off + null, args)}
    assert rows["median within 3 steps of truth"]  # 18/20
    assert rows["90% HDI covers truth"]  # 18/20
    assert not rows["no decoupling: P(decoupled by end) < 0.2"]  # 8/10
    assert rows["model detects earlier in the median"]  # +2 against +10
    late = [dec(i, 51, [47, 55], 70, 55) for i in range(20)]
    rows = {name: ok for name, _, _, ok in acc.report(late, args)}
    assert not rows["model detects earlier in the median"]
    assert "no decoupling: P(decoupled by end) < 0.2" not in rows  # no null datasets run
    # The delay counts from the decoupling: a rule that fired before it (a
    # false alarm) and again 5 steps after is 5 steps late, not early.
    false_alarm = [dec(i, 51, [47, 55], 52, 55, rule_first=22) for i in range(20)]
    table = {name: (result, ok) for name, result, _, ok in acc.report(false_alarm, args)}
    assert table["model detects earlier in the median"] == ("+2.0 < +5.0", True)
    label = "early warning, 2-sd feedback rule: "
    assert table[label + "datasets alarmed before the decoupling"][0] == "20/20"
    assert table[label + "median delay to the first alarm"][0] == "-28.0"
    assert acc.first_alarm(np.array([0, 1, 0, 0, 1], bool), start=2) == 4
    assert acc.first_alarm(np.array([0, 1, 0, 0, 0], bool), start=2) == 5
    rw = [
        _study_result(
            "random_walk",
            200 + i,
            loo_best="random_walk" if i < 8 else "ratchet",
            loo_diff=-2.0,
            lfo_best="random_walk" if i < 7 else "ratchet",
            lfo_diff=-1.0,
            lfo_refits={"ratchet": 1, "random_walk": 0},
        )
        for i in range(10)
    ]
    rows = {name: ok for name, _, _, ok in acc.report(rw, args)}
    assert rows["LOO picks random_walk when it generated the data"]  # 8/10
    assert not rows["LFO picks random_walk when it generated the data"]  # 7/10
    lines = [acc._dataset_line(r) for r in good[:1] + null[:1] + rw[:1]]
    assert "lfo random_walk" in lines[2]
    assert "detect 52/60 after 52/60" in lines[0] and "p_end 0.05" in lines[1]


def test_comparison_truth_is_read_per_side():
    """``--compare-param`` sets the ratchet side's truth and ``--compare-rw-param`` the
    random walk's (their ``constraint_mu`` and ``constraint_sigma`` mean different
    things); a bad value names its flag."""
    import argparse

    acc = _load("analysis_acceptance")
    args = argparse.Namespace(
        compare_param=["indicator_sigma=0.1", "constraint_sigma = 1.5"],
        compare_rw_param=["indicator_sigma=0.1"],
    )
    assert acc.compare_truth(args) == {"indicator_sigma": 0.1, "constraint_sigma": 1.5}
    assert acc.compare_truth(args, "random_walk") == {"indicator_sigma": 0.1}
    assert acc.compare_truth(argparse.Namespace(compare_param=[], compare_rw_param=[])) is None
    bad = argparse.Namespace(compare_param=[], compare_rw_param=["indicator_sigma=low"])
    with pytest.raises(SystemExit, match="--compare-rw-param: expected NAME=NUMBER"):
        acc.compare_truth(bad, "random_walk")


def test_a_study_resumes_only_from_results_of_the_same_settings(tmp_path):
    """``--resume`` keeps the saved results whose task matches one of this run's,
    ignores the core count, and refuses a file holding results of other settings,
    naming the setting that differs, rather than mixing them into the table."""
    acc = _load("analysis_acceptance")
    task = {"kind": "random_walk", "seed": 7, "tau": 120, "lfo_min": 60, "cores": None}
    task |= {"params": {"indicator_sigma": 0.1}, "hazard": np.zeros((2, 2))}
    other = task | {"seed": 8}
    done = _study_result("random_walk", 7, task=acc.task_key(task))
    out = tmp_path / "r.json"
    acc.save_results([done], out)
    assert not (tmp_path / "r.json.partial").exists()
    kept = acc.resumed([task | {"cores": 1}, other], out)
    assert [r["seed"] for r in kept] == [7]
    with pytest.raises(SystemExit, match=r"lfo_min: found 60, expected 100"):
        acc.resumed([task | {"lfo_min": 100}], out)
    with pytest.raises(SystemExit, match="a dataset these settings do not run"):
        acc.resumed([other], out)
    acc.save_results([_study_result("random_walk", 7)], out)
    with pytest.raises(SystemExit, match="without its task"):
        acc.resumed([task], out)
