"""The decoupling Spec: TOML round trips, bundled model files, defaults, every error path."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from pathlock import dims
from pathlock.build import spec_class
from pathlock.errors import SpecError
from pathlock.simulate import simulate
from pathlock.spec import (
    DEFAULT_PRIORS,
    PARAMETERS,
    POOLABLE,
    SCHEMA_VERSION,
    Fixed,
    Prior,
    RegimeSpec,
    SeriesSpec,
    Spec,
    default_adaptation,
    default_target_accept,
    prior_table,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(
    p for p in (ROOT / "models").glob("*.toml") if 'family = "decoupling"' in p.read_text()
)
BAD_SPECS = sorted((Path(__file__).parent / "data" / "bad_specs").glob("*.toml"))

MINIMAL = """
schema_version = 1
family = "decoupling"
[[indicators]]
column = "debt"
[[feedback]]
column = "satisfaction"
"""

FULL = """
schema_version = 1
family = "decoupling"
name = "full"
description = "every section, with non-default values"

[constraint]
process = "hysteresis"
exposures = ["rent", "jobs"]
parameterization = "centered"

[regimes]
names = ["tracking", "drifting", "locked"]
structure = "sticky"
hazard_on_constraint = false
covariates = ["media"]
initial = "free"
ordered_loadings = false
feedback_intercepts = false
feedback_noise = true

[regimes.loading]
locked = 0.0
drifting = { dist = "Beta", alpha = 2, beta = 2 }

[[indicators]]
name = "arrears"
column = "arrears_col"
family = "student_t"

[[indicators]]
name = "evictions"
column = "evictions"
family = "negative_binomial"

[[feedback]]
name = "approval"
column = "approval"
family = "poisson"

[[feedback]]
name = "mood"
column = "mood"

[priors]
constraint_mu = { dist = "Normal", mu = -1, sigma = 0.5 }
constraint_width = 0.5
hazard_intercept = { dist = "Normal", mu = [[0, -2, -4], [-2, 0, -2], [-4, -2, 0]], sigma = 1 }
hazard_eta = { dist = "Normal", mu = 0, sigma = 0.25 }
feedback_a_unit_sigma = { dist = "HalfNormal", sigma = 0.1 }

[units]
pooling = "hierarchical"
hierarchical = ["constraint_mu", "feedback_a", "indicator_nu"]

[sampler]
draws = 500
tune = 1500
chains = 2
target_accept = 0.95
sampler = "pymc"
backend = "jax"

[data]
time = "date"
unit = "country"
format = "wide"
freq = "MS"
sort = true
fill = "ffill"
"""


@pytest.fixture(scope="module")
def minimal() -> Spec:
    return Spec.from_toml_string(MINIMAL)


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", [MINIMAL, FULL], ids=["minimal", "full"])
def test_toml_round_trip(text: str) -> None:
    spec = Spec.from_toml_string(text)
    again = Spec.from_toml_string(spec.to_toml())
    assert again == spec
    assert again.to_toml() == spec.to_toml()


def test_full_spec_keeps_every_value() -> None:
    spec = Spec.from_toml_string(FULL)
    assert spec.constraint.process == "hysteresis"
    assert spec.constraint.exposures == ("rent", "jobs")
    assert spec.regime_names == ("tracking", "drifting", "locked")
    assert spec.loading("locked") == Fixed(0.0)
    assert spec.loading("drifting") == Prior("Beta", {"alpha": 2, "beta": 2})
    assert spec.loading("tracking") == Fixed(1.0)
    assert spec.indicator_names == ("arrears", "evictions")
    assert spec.signal_names == ("approval", "mood")
    assert spec.columns == ("arrears_col", "evictions", "approval", "mood", "rent", "jobs", "media")
    assert spec.count_columns.keys() == {"evictions", "approval"}
    assert spec.prior("constraint_width") == Fixed(0.5)
    assert spec.sampler.sampler == "pymc" and spec.sampler.chains == 2
    assert spec.data.freq == "MS" and spec.data.fill == "ffill"
    assert spec.hierarchical_parameters == ("constraint_mu", "feedback_a", "indicator_nu")


def test_dict_round_trip_and_toml_is_plain_toml() -> None:
    spec = Spec.from_toml_string(FULL)
    assert Spec.from_dict(spec.to_dict()) == spec
    doc = tomllib.loads(spec.to_toml())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["family"] == "decoupling"
    assert [s["name"] for s in doc["indicators"]] == ["arrears", "evictions"]


def test_python_construction_equals_toml(minimal: Spec) -> None:
    built = Spec(
        indicators=[SeriesSpec("debt", "debt")],
        feedback=[SeriesSpec("satisfaction", "satisfaction")],
    )
    assert built == minimal


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_bundled_models_parse_and_round_trip(path: Path, recwarn: pytest.WarningsRecorder) -> None:
    spec = Spec.from_toml(path)
    assert Spec.from_toml_string(spec.to_toml()) == spec
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], "unused priors"
    assert spec.parameters()


def test_bundled_models_cover_the_issue() -> None:
    specs = {p.stem: Spec.from_toml(p) for p in MODELS}
    assert {"decoupling", "reversible", "lockin3", "panel"} <= specs.keys()
    lock = specs["lockin3"]
    assert lock.n_regimes == 3 and lock.regimes.structure == "absorbing"
    assert specs["reversible"].constraint.process == "random_walk"
    assert specs["reversible"].regimes.structure == "free"
    assert specs["panel"].data.unit is not None
    assert specs["panel"].units.pooling == "hierarchical"


def test_family_is_registered() -> None:
    assert spec_class("decoupling") is Spec


# ---------------------------------------------------------------------- priors


def test_with_priors_overrides_by_name(minimal: Spec) -> None:
    spec = minimal.with_priors(
        constraint_mu={"dist": "Normal", "mu": 0, "sigma": 3},
        constraint_sigma=Prior("Exponential", {"lam": 2}),
        feedback_w=0.0,
    )
    assert spec.prior("constraint_mu") == Prior("Normal", {"mu": 0, "sigma": 3})
    assert spec.prior("constraint_sigma") == Prior("Exponential", {"lam": 2})
    assert spec.loading("decoupled") == Fixed(0.0)
    assert minimal.prior("constraint_mu") == DEFAULT_PRIORS["constraint_mu"]
    assert Spec.from_toml_string(spec.to_toml()) == spec


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"constraint_nope": 1.0}, "priors.constraint_nope"),
        ({"feedback_w": 1.0}, "priors.feedback_w"),
        ({"constraint_mu": {"dist": "Gaussian"}}, "priors.constraint_mu.dist"),
    ],
)
def test_with_priors_validates(minimal: Spec, override: dict, key: str) -> None:
    with pytest.raises(SpecError, match=re.escape(key)):
        minimal.with_priors(**override)


def test_every_default_prior_is_a_valid_pymc_distribution() -> None:
    spec = Spec.from_toml_string(MINIMAL)
    # Re-parsing each default through the validator catches typos in PARAMETERS.
    assert spec.with_priors(**DEFAULT_PRIORS).to_dict()["priors"].keys() == PARAMETERS.keys()


def test_parameter_table_is_consistent() -> None:
    allowed_dims = {
        dims.UNIT,
        dims.REGIME,
        dims.REGIME_FROM,
        dims.REGIME_TO,
        dims.INDICATOR,
        dims.SIGNAL,
        dims.EXPOSURE,
        dims.EXOG,
    }
    for name, p in PARAMETERS.items():
        assert p.name == name
        assert re.fullmatch(r"(constraint|regime|trans|hazard|indicator|feedback)_[a-z]+", name)
        assert set(p.dims) <= allowed_dims
    assert set(POOLABLE) <= PARAMETERS.keys()
    table = prior_table()
    assert all(f"`{name}`" in table for name in PARAMETERS)


def test_spec_dependent_defaults() -> None:
    base = Spec.from_toml_string(MINIMAL)
    three = dataclasses.replace(
        base,
        regimes=RegimeSpec(names=("a", "b", "c"), structure="sticky", hazard_on_constraint=False),
    )
    a = three.prior("trans_p").kwargs["a"]
    assert a == ((11.0, 1.0, 1.0), (1.0, 11.0, 1.0), (1.0, 1.0, 11.0))
    free = dataclasses.replace(base, regimes=RegimeSpec(structure="free"))
    assert free.prior("hazard_intercept").kwargs["mu"] == -1
    assert base.prior("hazard_intercept").kwargs["mu"] == -3
    rw = Spec.from_toml_string(MINIMAL + '[constraint]\nprocess = "random_walk"\n')
    assert rw.prior("constraint_mu") == Prior("Normal", {"mu": 0, "sigma": 0.5})


def test_parameters_follow_the_spec() -> None:
    base = Spec.from_toml_string(MINIMAL)
    names = set(base.parameters())
    assert {"constraint_init", "constraint_mu", "constraint_sigma", "feedback_w"} <= names
    assert {"hazard_intercept", "hazard_slope"} <= names
    assert not names & {"constraint_phi", "trans_p", "indicator_nu", "hazard_eta"}
    assert base.parameters()["feedback_a"].dims == (dims.SIGNAL, dims.REGIME)
    assert base.parameters()["feedback_sigma"].dims == (dims.SIGNAL,)

    full = Spec.from_toml_string(FULL)
    params = full.parameters()
    # covariates alone make transitions time-varying
    assert {"hazard_intercept", "hazard_eta", "regime_init", "constraint_rho"} <= params.keys()
    assert not {"hazard_slope", "trans_p", "trans_stickiness"} & params.keys()
    assert params["constraint_mu"].dims == (dims.UNIT,)
    assert params["feedback_a"].dims == (dims.UNIT, dims.SIGNAL)
    assert params["feedback_a_unit_sigma"].default == Prior("HalfNormal", {"sigma": 0.1})
    assert params["indicator_nu_unit_sigma"].default == Prior("HalfNormal", {"sigma": 0.5})


def test_prior_for_unused_parameter_warns() -> None:
    with pytest.warns(UserWarning, match="constraint_phi"):
        Spec.from_toml_string(MINIMAL + "[priors]\nconstraint_phi = 0.5\n")


def test_one_regime_is_an_always_tracking_model() -> None:
    spec = Spec.from_toml_string(MINIMAL + '[regimes]\nnames = ["tracking"]\n')
    assert spec.n_regimes == 1 and not spec.time_varying
    assert not {"feedback_w", "trans_p", "hazard_intercept"} & spec.parameters().keys()


def test_prior_create_builds_pymc_variables() -> None:
    import pymc as pm

    with pm.Model(coords={dims.SIGNAL: ["a", "b"]}) as model:
        x = Prior("Normal", {"mu": [0, 1], "sigma": 1}).create("feedback_b", dims=(dims.SIGNAL,))
    assert model.named_vars["feedback_b"] is x
    assert Fixed(0.25).create().eval() == 0.25


# ---------------------------------------------------------------------- error paths


def _expected_key(path: Path) -> str:
    match = re.search(r"^# expect: (\S+)", path.read_text(), flags=re.MULTILINE)
    assert match, f"{path.name} lacks an '# expect: <key>' line"
    return match.group(1)


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.stem for p in BAD_SPECS])
def test_bad_spec_names_the_key(path: Path) -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_toml(path)
    message = str(info.value)
    assert _expected_key(path) in message
    assert message.startswith(str(path))


def test_bad_spec_fixtures_cover_the_issue() -> None:
    stems = {p.stem for p in BAD_SPECS}
    required = {
        "unknown_top_key",
        "wrong_type_bool",
        "duplicate_regime",
        "loading_one",
        "loading_negative",
        "unknown_prior",
        "unknown_process",
        "unknown_observation_family",
        "unknown_structure",
        "schema_missing",
        "schema_newer",
        "no_indicators",
    }
    assert required <= stems


@pytest.mark.parametrize(
    ("stem", "allowed"),
    [
        ("unknown_process", "'ratchet', 'hysteresis', 'random_walk', 'ar1'"),
        ("unknown_structure", "'free', 'sticky', 'absorbing'"),
        ("unknown_observation_family", "'normal', 'student_t', 'poisson', 'negative_binomial'"),
        ("unknown_section_key", "allowed keys: process, exposures, parameterization"),
        ("unknown_prior", "constraint_mu, constraint_sigma"),
        ("duplicate_regime", "'locked' twice"),
        ("loading_one", "[0, 1)"),
        ("no_indicators", "cannot be told apart"),
        ("unknown_backend", "'numba', 'jax'"),
    ],
)
def test_errors_list_what_is_allowed(stem: str, allowed: str) -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_toml(Path(__file__).parent / "data" / "bad_specs" / f"{stem}.toml")
    assert allowed in str(info.value)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        Spec.from_toml(tmp_path / "nope.toml")


def test_python_construction_validates_too() -> None:
    with pytest.raises(SpecError, match=r"regimes\.names"):
        RegimeSpec(names=("tracking", "tracking"))
    with pytest.raises(SpecError, match="indicators"):
        Spec(indicators=[], feedback=[SeriesSpec("y", "y")])
    with pytest.raises(SpecError, match=r"regimes\.loading\.decoupled"):
        RegimeSpec(loading={"decoupled": 1.2})


def test_unset_target_accept_is_chosen_by_series_length() -> None:
    """Left out of the TOML, target_accept stays unset through a round trip, and
    the default rule gives 0.98 below 500 steps and 0.85 from 500 on."""
    spec = Spec.from_toml(ROOT / "models" / "decoupling.toml")
    assert spec.sampler.target_accept is None
    again = Spec.from_toml_string(spec.to_toml())
    assert again.sampler.target_accept is None
    assert "target_accept" not in spec.to_toml()
    assert (default_target_accept(60), default_target_accept(499)) == (0.98, 0.98)
    assert (default_target_accept(500), default_target_accept(1000)) == (0.85, 0.85)
    fixed = dataclasses.replace(spec, sampler=dataclasses.replace(spec.sampler, target_accept=0.8))
    assert Spec.from_toml_string(fixed.to_toml()).sampler.target_accept == 0.8
    short, long = (SimpleNamespace(n_steps=n) for n in (499, 500))
    assert (spec.target_accept_for(short), spec.target_accept_for(long)) == (0.98, 0.85)
    assert (fixed.target_accept_for(short), fixed.target_accept_for(long)) == (0.8, 0.8)


def test_unset_adaptation_is_chosen_by_series_length() -> None:
    """Left out of the TOML, the mass-matrix adaptation stays unset through a round
    trip and the default rule gives ``diag`` below 500 steps and ``draw_diag``
    from 500 on; every allowed value round-trips, another is refused with the
    allowed ones."""
    spec = Spec.from_toml(ROOT / "models" / "decoupling.toml")
    assert spec.sampler.adaptation is None
    assert "adaptation" not in spec.to_toml()
    assert Spec.from_toml_string(spec.to_toml()).sampler.adaptation is None
    assert (default_adaptation(60), default_adaptation(499)) == ("diag", "diag")
    assert (default_adaptation(500), default_adaptation(1000)) == ("draw_diag", "draw_diag")
    short, long = (simulate(spec, n_steps=n, seed=1)[0] for n in (499, 500))
    assert (spec.adaptation_for(short), spec.adaptation_for(long)) == ("diag", "draw_diag")
    for value in ("draw_diag", "diag", "low_rank"):
        fixed = dataclasses.replace(
            spec, sampler=dataclasses.replace(spec.sampler, adaptation=value)
        )
        assert Spec.from_toml_string(fixed.to_toml()).sampler.adaptation == value
        assert (fixed.adaptation_for(short), fixed.adaptation_for(long)) == (value, value)
    bad = fixed.to_toml().replace('adaptation = "low_rank"', 'adaptation = "dense"')
    with pytest.raises(SpecError, match=r"sampler\.adaptation.*draw_diag.*diag.*low_rank"):
        Spec.from_toml_string(bad)
