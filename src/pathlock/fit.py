"""Sampling, convergence checks, DataTree assembly, and saving and loading fits.

This module turns a spec and data into a :class:`Fit`: it builds the model
through the :class:`~pathlock.build.Built` contract, samples it with nutpie
(numba backend) or PyMC's NUTS, adds the observed and constant data and the
pointwise log-likelihood to the DataTree, warns about divergences and R-hat,
and round-trips the whole result through one netCDF file.  Posterior
analysis lives in :mod:`pathlock.analysis`; ``Fit``'s methods delegate there.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pytensor
import xarray as xr
from numpy.typing import NDArray
from pytensor.compile.mode import Mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import equal_computations
from pytensor.graph.replace import vectorize_graph

from pathlock import dims
from pathlock.build import Adaptation, Backend, Built, ModelSpec, SamplerName, spec_class
from pathlock.errors import PathlockError, ResultFileError
from pathlock.hmm import ForwardBackwardResult, _forward_backward, _standardise

__all__ = ["Fit", "fit", "load_fit", "FILE_FORMAT_VERSION", "ConvergenceWarning"]

#: Version of the on-disk layout written by :meth:`Fit.save`; bump on breaking changes.
#: 2: the decoupling model samples the realised mean step and a sheared loading
#: fraction, so format-1 posteriors lack its free variables.
#: 3: the last column of a bridged path's ``constraint_raw`` is the innovations' mean,
#: so a format-2 ``constraint_raw`` maps to another path.
#: 4: the ratchet's whitened steps are bent with a floor (``decoupling._bend``), so a
#: format-3 ``constraint_raw`` maps to another path.
FILE_FORMAT_VERSION = 4

#: The samplers ``fit`` runs, and nutpie's mass-matrix adaptations it passes on.
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
ADAPTATIONS: tuple[str, ...] = get_args(Adaptation)
#: What nutpie compiles the model with.
BACKENDS: tuple[str, ...] = get_args(Backend)


class ConvergenceWarning(UserWarning):
    """Divergences or R-hat above the threshold in a fit."""


@dataclass(frozen=True)
class RegimeInputs:
    """Per-draw numeric inputs of the regime kernel, sample dims flattened first.

    Attributes
    ----------
    log_init : ndarray (sample, unit or 1, regime)
    log_trans : ndarray (sample, unit or 1, time or 1, regime, regime)
    log_emit : ndarray (sample, unit, time, regime)
    extras : dict of ndarray (sample, ...)
    n_chains, n_draws : int
        Shape of the sample dims before flattening (``sample = chain * n_draws + draw``).
    """

    log_init: NDArray[np.float64]
    log_trans: NDArray[np.float64]
    log_emit: NDArray[np.float64]
    extras: Mapping[str, NDArray[np.float64]]
    n_chains: int
    n_draws: int

    def kernel_arrays(
        self,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Fold sample and unit axes into the kernel's unit axis: (S*U, ...)."""
        s, u, t, k = self.log_emit.shape
        li = np.broadcast_to(self.log_init, (s, u, k)).reshape(s * u, k)
        lt = self.log_trans
        lt = np.broadcast_to(lt, (s, u, *lt.shape[2:])).reshape((s * u, *lt.shape[2:]))
        return li, lt, self.log_emit.reshape(s * u, t, k)


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted model: the DataTree, the spec, the data and the built model.

    Attributes
    ----------
    idata : xarray.DataTree
        Groups ``posterior``, ``sample_stats``, ``observed_data``,
        ``constant_data`` and ``log_likelihood`` (variable ``y`` with dims
        (chain, draw, unit, time): ``log p(y_t | y_1..t-1)``).
    spec : ModelSpec
        The specification that was fitted.
    data : data object
        The validated data.
    built : Built
        The model and the symbolic regime inputs (rebuilt on load).
    """

    idata: xr.DataTree
    spec: ModelSpec
    data: Any
    built: Built
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # -- kernel inputs -------------------------------------------------
    @property
    def regime_names(self) -> list[str]:
        """The regime labels, in the model's order (tracking first)."""
        return [str(r) for r in self.built.model.coords[dims.REGIME]]

    def regime_inputs(self) -> RegimeInputs:
        """Evaluate the kernel's inputs (and ``Built.extras``) at every posterior draw.

        Deterministics the posterior holds (the decoupling model's latent
        ``constraint`` path and loading fractions ``feedback_w``, say) are
        taken as sampled, not recomputed from the free variables: the
        recomputation depends on the data the model was built for (the path's
        centring and the loading's shear, :func:`scored_on`) and on the
        version's parameterisation (:func:`load_fit`).

        Returns
        -------
        RegimeInputs
            NumPy arrays with the flattened (chain, draw) sample axis first.
        """
        if "regime_inputs" not in self._cache:
            post = self.idata.posterior
            given = [v.name for v in self.built.model.deterministics if v.name in post]
            self._cache["regime_inputs"] = _evaluate_per_draw(self.built, self.idata, given=given)
        return self._cache["regime_inputs"]

    def forward_backward(self) -> ForwardBackwardResult:
        """Forward-backward at every draw; arrays have (chain * draw * unit) leading.

        Returns
        -------
        ForwardBackwardResult
            Reshape with ``(n_chains, n_draws, n_units, ...)`` to restore sample dims.
        """
        if "forward_backward" not in self._cache:
            ri = self.regime_inputs()
            li, lt, le = _standardise(*ri.kernel_arrays(), validate=False)
            logc, filt, smooth, pair = _forward_backward(li, lt, le)
            self._cache["forward_backward"] = ForwardBackwardResult(
                logc.sum(axis=1), logc, filt, smooth, pair
            )
        return self._cache["forward_backward"]

    # -- analysis (pathlock.analysis) -----------------------------------
    def regime_probabilities(
        self, kind: Literal["smoothed", "filtered"] = "smoothed", *, average: bool = False
    ) -> xr.DataArray:
        """Regime probabilities; see :func:`pathlock.analysis.regime_probabilities`."""
        from pathlock import analysis

        return analysis.regime_probabilities(self, kind=kind, average=average)

    def regime_paths(self, n: int = 1, seed: int | None = None) -> xr.DataArray:
        """FFBS regime paths; see :func:`pathlock.analysis.regime_paths`."""
        from pathlock import analysis

        return analysis.regime_paths(self, n=n, seed=seed)

    def decoupling_time(self, **kwargs: Any) -> Any:
        """Decoupling time posterior; see :func:`pathlock.analysis.decoupling_time`."""
        from pathlock import analysis

        return analysis.decoupling_time(self, **kwargs)

    def hidden_constraint(self, **kwargs: Any) -> Any:
        """Feedback gap over time; see :func:`pathlock.analysis.hidden_constraint`."""
        from pathlock import analysis

        return analysis.hidden_constraint(self, **kwargs)

    def early_warning(self, threshold: float = 0.8, **kwargs: Any) -> Any:
        """Filtered decoupling alarm; see :func:`pathlock.analysis.early_warning`."""
        from pathlock import analysis

        return analysis.early_warning(self, threshold=threshold, **kwargs)

    def summary(self, **kwargs: Any) -> Any:
        """Parameter table; see :func:`pathlock.analysis.summary`."""
        from pathlock import analysis

        return analysis.summary(self, **kwargs)

    # -- persistence ---------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the fit, its spec, data and package version to one netCDF file.

        Parameters
        ----------
        path : path-like
            Target file (``.nc``).
        overwrite : bool
            Replace an existing file; otherwise an existing file is an error.

        Returns
        -------
        Path
            The written file.  The write goes to a temporary file first and is
            renamed into place, so an interrupted save leaves no partial file.
        """
        from pathlock import __version__

        target = Path(path)
        if target.exists() and not overwrite:
            raise ResultFileError(f"{target} exists; pass overwrite=True to replace it")
        tree = self.idata.copy()
        tree.attrs = dict(tree.attrs)
        tree.attrs.update(
            pathlock_version=__version__,
            pathlock_file_format=FILE_FORMAT_VERSION,
            pathlock_family=self.spec.family,
            pathlock_spec=self.spec.to_toml(),
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".nc.part", dir=target.parent)
        os.close(fd)
        try:
            tree.to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Load a fit written by :meth:`Fit.save`.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    Fit
        With the spec and data restored and the model rebuilt.

    Raises
    ------
    ResultFileError
        The file is missing, is not a pathlock fit, or was written by an
        incompatible file-format version.
    """
    from pathlock import __version__

    p = Path(path)
    if not p.exists():
        raise ResultFileError(f"no fit file at {p}")
    try:
        tree = xr.open_datatree(p, engine="h5netcdf").load()
    except Exception as exc:
        raise ResultFileError(f"{p} is not a readable netCDF fit file: {exc}") from exc
    attrs = tree.attrs
    if "pathlock_file_format" not in attrs:
        raise ResultFileError(f"{p} was not written by pathlock (no 'pathlock_file_format' attr)")
    found = int(attrs["pathlock_file_format"])
    if found != FILE_FORMAT_VERSION:
        raise ResultFileError(
            f"{p} uses file format {found} (written by pathlock {attrs.get('pathlock_version')}); "
            f"this pathlock {__version__} reads format {FILE_FORMAT_VERSION}. Refit, or load it "
            f"with pathlock {attrs.get('pathlock_version')}."
        )
    from pathlock import _register_families

    _register_families()
    cls = spec_class(str(attrs["pathlock_family"]))
    spec = cls.from_toml_string(str(attrs["pathlock_spec"]))
    data_ds = _data_dataset(tree)
    data = spec.data_from_dataset(data_ds)
    built = spec.build(data)
    return Fit(idata=tree, spec=spec, data=data, built=built)


def _data_dataset(tree: xr.DataTree) -> xr.Dataset:
    parts = [tree[g].to_dataset() for g in ("observed_data", "constant_data") if g in tree]
    ds = xr.merge(parts, compat="override", join="outer") if parts else xr.Dataset()
    ds.attrs = dict(tree["observed_data"].attrs) if "observed_data" in tree else {}
    return ds


def fit(
    spec: ModelSpec,
    data: Any,
    *,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    sampler: SamplerName | None = None,
    target_accept: float | None = None,
    adaptation: str | None = None,
    backend: str | None = None,
    cores: int | None = None,
    progress: bool = False,
    check: bool = True,
) -> Fit:
    """Fit ``spec`` to ``data`` by NUTS with the regimes marginalised.

    Parameters
    ----------
    spec : Spec or MarkovSwitching
    data : data object, DataFrame or path
        Anything ``spec.prepare_data`` accepts.
    draws, tune, chains : int, optional
        Defaults from the spec's sampler options, else 1000, 1000, 4.
    seed : int, optional
        Seed for the sampler; the same seed gives the same draws on the same
        machine and versions, whether the fit compiles the model cold or
        loads it from PyTensor's disk cache (both samplers' graphs are
        compiled without fast-math, :func:`pathlock.compiled.sampler_flags`).
    sampler : {"nutpie", "pymc"}, optional
        nutpie with its numba backend (default) or PyMC's NUTS.
    target_accept : float, optional
        Target acceptance rate. Default: the spec's ``target_accept_for(data)``
        where the family has one (the decoupling model's ``[sampler]`` value,
        else chosen by series length, :func:`pathlock.spec.default_target_accept`),
        else the spec's ``[sampler]`` value, else the sampler's 0.8.
    adaptation : {"draw_diag", "diag", "low_rank"}, optional
        nutpie's mass-matrix adaptation. Default: the spec's
        ``adaptation_for(data)`` where the family has one (the decoupling
        model's ``[sampler]`` value, else chosen by series length,
        :func:`pathlock.spec.default_adaptation`), else the spec's
        ``[sampler]`` value, else ``"diag"``. ``"draw_diag"`` estimates the
        diagonal from the draws' variances alone, ``"diag"`` (nutpie's
        default) from the draws and the gradients, ``"low_rank"`` also learns
        the few most correlated directions.
    backend : {"numba", "jax"}, optional
        What nutpie compiles the model with (ignored by ``"pymc"``). Default:
        the spec's ``[sampler]`` value, else ``"numba"``. ``"numba"`` samples
        fastest, but the first fit of a spec on a machine compiles it for
        about a minute (about 5 s in every later process, from PyTensor's
        disk cache; :mod:`pathlock.compiled`). ``"jax"`` compiles in about
        2 s every time and samples more slowly. For the canonical model
        (4 x 1000 + 1000, 2 cores) the first fit with empty caches took
        97 s with numba and 49 s with jax at T = 1000, 81 s and 50 s at
        T = 200; a later fit took 27-34 s with numba and 44 s with jax at
        T = 1000, 11-19 s and 38 s at T = 200 (benchmarks/README.md,
        "Synchronous JAX dispatch"). So jax suits processes that start with
        cold caches (fresh containers, CI, new workers); it needs jax
        (``pip install 'pathlock[jax]'``) and turns JAX's asynchronous CPU
        dispatch off (:func:`pathlock.compiled.compile_nutpie_jax`). The
        two draw different samples for the same seed.
    cores : int, optional
        Chains run in parallel on this many threads (default: as many as
        cores with numba; one per chain with jax, whose evaluations are
        Python calls: with 4 threads on 2 cores a T = 1000 evaluation took
        138-169 us of wall time, with 2 threads 157-170 us).
    progress : bool
        Show a progress bar.
    check : bool
        Warn (:class:`ConvergenceWarning`) about divergences and R-hat > 1.01,
        naming the worst parameters.

    Returns
    -------
    Fit

    Raises
    ------
    PathlockError
        Bad arguments, raised before anything is compiled.
    """
    opts = _sampler_options(spec)
    draws = int(draws if draws is not None else opts.get("draws", 1000))
    tune = int(tune if tune is not None else opts.get("tune", 1000))
    chains = int(chains if chains is not None else opts.get("chains", 4))
    sampler = sampler if sampler is not None else opts.get("sampler", "nutpie")
    if sampler not in SAMPLERS:
        raise PathlockError(f"sampler must be one of {list(SAMPLERS)}; found {sampler!r}")
    for name, value, low in (("draws", draws, 1), ("tune", tune, 0), ("chains", chains, 1)):
        if value < low:
            raise PathlockError(f"{name} must be at least {low}; found {value}")
    if sampler == "nutpie" and tune < 1:
        raise PathlockError("tune must be at least 1 with the nutpie sampler; found 0")
    if adaptation is not None and adaptation not in ADAPTATIONS:
        raise PathlockError(f"adaptation must be one of {list(ADAPTATIONS)}; found {adaptation!r}")
    if backend is None:
        backend = opts.get("backend", "numba")
        if backend not in BACKENDS:
            raise PathlockError(
                f"sampler.backend must be one of {list(BACKENDS)}; found {backend!r}"
            )
    elif backend not in BACKENDS:
        raise PathlockError(f"backend must be one of {list(BACKENDS)}; found {backend!r}")

    prepared = spec.prepare_data(data)
    if adaptation is None:
        # As for target_accept: the decoupling model chooses by its path and series length.
        chooser = getattr(spec, "adaptation_for", None)
        adaptation = chooser(prepared) if chooser is not None else opts.get("adaptation", "diag")
        if adaptation not in ADAPTATIONS:
            raise PathlockError(
                f"sampler.adaptation must be one of {list(ADAPTATIONS)}; found {adaptation!r}"
            )
    if target_accept is None:
        # A family may choose the rate from the data (the decoupling model does,
        # by series length); otherwise the spec's [sampler] value, if any.
        chooser = getattr(spec, "target_accept_for", None)
        target_accept = chooser(prepared) if chooser is not None else opts.get("target_accept")
    if target_accept is not None and not 0 < float(target_accept) < 1:
        raise PathlockError(f"target_accept must lie in (0, 1); found {target_accept}")
    built = spec.build(prepared)
    if sampler == "nutpie":
        compiled = _compile_nutpie(built, spec, lambda: spec.build(prepared), backend)
        if backend == "jax" and cores is None:
            cores = chains
        tree = _sample_nutpie(
            built, compiled, draws, tune, chains, seed, target_accept, cores, progress, adaptation
        )
    else:
        tree = _sample_pymc(built, draws, tune, chains, seed, target_accept, cores, progress)

    tree = _assemble(tree, prepared)
    # What the draws depend on beyond the spec and the data: the backends, for
    # one, draw different samples for the same seed.
    tree["sample_stats"].attrs["pathlock_sampling"] = json.dumps(
        {
            "sampler": sampler,
            "backend": backend if sampler == "nutpie" else None,
            "draws": draws,
            "tune": tune,
            "chains": chains,
            "seed": seed,
            "target_accept": None if target_accept is None else float(target_accept),
            "adaptation": adaptation if sampler == "nutpie" else None,
        }
    )
    result = Fit(idata=tree, spec=spec, data=prepared, built=built)
    fb = result.forward_backward()
    n_chains, n_draws = tree.posterior.sizes[dims.CHAIN], tree.posterior.sizes[dims.DRAW]
    pld = fb.predictive_log_density  # (chain * draw * unit, time)
    ll = pld.reshape(n_chains, n_draws, -1, pld.shape[-1])
    coords = {
        dims.CHAIN: tree.posterior[dims.CHAIN].values,
        dims.DRAW: tree.posterior[dims.DRAW].values,
        dims.UNIT: np.asarray(built.model.coords[dims.UNIT]),
        dims.TIME: _time_coord(built),
    }
    tree["log_likelihood"] = xr.DataTree(
        xr.Dataset({"y": ((dims.CHAIN, dims.DRAW, dims.UNIT, dims.TIME), ll)}, coords=coords)
    )
    if check:
        check_convergence(tree)
    return result


def _time_coord(built: Built) -> Any:
    return np.asarray(built.model.coords[dims.TIME])


def _sampler_options(spec: Any) -> dict[str, Any]:
    opts = getattr(spec, "sampler", None)
    if opts is None:
        return {}
    if isinstance(opts, Mapping):
        return dict(opts)
    if hasattr(opts, "__dataclass_fields__"):
        return {
            k: getattr(opts, k) for k in opts.__dataclass_fields__ if getattr(opts, k) is not None
        }
    return {}


#: nutpie models compiled from data-shared builds, least recently used first.
_COMPILED: OrderedDict[tuple[Any, ...], tuple[Built, Any]] = OrderedDict()
#: How many compiled models :func:`_compile_nutpie` keeps.
COMPILED_CACHE_SIZE = 8


def _compile(built: Built, backend: str = "numba") -> Any:
    from pathlock.compiled import compile_nutpie, compile_nutpie_jax

    model = built.model
    jitter = {rv for rv in model.free_RVs if rv.name not in built.unjittered}
    if backend == "jax":
        return compile_nutpie_jax(model, jitter_rvs=jitter)
    with warnings.catch_warnings():
        # An object-mode fallback would be silently 100x slower: make it loud.
        warnings.filterwarnings("error", message="Numba will use object mode")
        return compile_nutpie(model, jitter_rvs=jitter, run_time_dims=built.run_time_dims)


def _compile_nutpie(
    built: Built, spec: Any, rebuild: Callable[[], Built], backend: str = "numba"
) -> Any:
    """The compiled nutpie model for ``built``, reusing one compiled for the same graph.

    Compiling the decoupling model with numba takes about 100 s the first time
    a spec is seen (about 6 s at any length once its callbacks are in the
    disk cache, :mod:`pathlock.compiled`); sampling it at T = 60 takes a few
    seconds.  Where every data-dependent value of the graph is a ``pm.Data``
    (``built.data_shared``), a model compiled earlier for the
    same spec and data shapes samples the new data once they are swapped in,
    which is what simulation studies, SBC and refits of the same model need.
    A hit is confirmed by comparing the two graphs node by node with the data
    and the free variables as matching inputs, so a cached model never
    samples a different one.  The cache holds its own build of the model:
    swapping data into it cannot touch the ``built`` of an earlier ``Fit``.
    """
    model = built.model
    if backend == "jax" or not built.data_shared:
        # JAX compiles in seconds: not worth keeping.
        return _compile(built, backend)
    values = {v.name: v.get_value() for v in model.data_vars}
    key = (
        getattr(spec, "to_toml", lambda: repr(spec))(),
        tuple(sorted((n, a.shape, a.dtype.str) for n, a in values.items())),
    )
    hit = _COMPILED.get(key)
    if hit is not None and _same_graph(hit[0].model, model):
        _COMPILED.move_to_end(key)
        own, compiled = hit
        # The initial-point function reads the cached model's data (data-dependent
        # initial values), the compiled log-density nutpie's copy of it.
        for var in own.model.data_vars:
            var.set_value(values[var.name])
        used = {var.name for var in compiled.shared_var_keys}
        return compiled.with_data(**{n: v for n, v in values.items() if n in used})
    own = rebuild()
    compiled = _compile(own, backend)
    _COMPILED[key] = (own, compiled)
    while len(_COMPILED) > COMPILED_CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return compiled


def _same_graph(a: Any, b: Any) -> bool:
    """Whether two models have the same log-density and trace, up to their data."""
    inputs = []
    for m in (a, b):
        # Dim lengths are shared variables too; equal shapes make them equal.
        lengths = [v for v in m.dim_lengths.values() if isinstance(v, SharedVariable)]
        data = sorted([*m.data_vars, *lengths], key=lambda v: v.name)
        free = [m.rvs_to_values[rv] for rv in m.free_RVs]
        inputs.append((data, free))
    (da, fa), (db, fb) = inputs
    if [v.name for v in da] != [v.name for v in db] or [v.name for v in fa] != [v.name for v in fb]:
        return False
    if any(
        np.shape(x.get_value()) != np.shape(y.get_value())
        or (x not in a.data_vars and not np.array_equal(x.get_value(), y.get_value()))
        for x, y in zip(da, db, strict=True)
    ):
        return False
    return equal_computations(
        [a.logp(), *a.unobserved_value_vars],
        [b.logp(), *b.unobserved_value_vars],
        in_xs=[*da, *fa],
        in_ys=[*db, *fb],
    )


def _sample_nutpie(
    built: Built,
    compiled: Any,
    draws: int,
    tune: int,
    chains: int,
    seed: int | None,
    target_accept: float | None,
    cores: int | None,
    progress: bool,
    adaptation: str = "diag",
) -> xr.DataTree:
    import nutpie

    kwargs: dict[str, Any] = {}
    if target_accept is not None:
        kwargs["target_accept"] = float(target_accept)
    if cores is not None:
        kwargs["cores"] = int(cores)
    tree = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        save_warmup=False,
        progress_bar=progress,
        adaptation=adaptation,
        **kwargs,
    )
    # A reused compiled model carries the labels of the data it was compiled for.
    coords = {k: np.asarray(v) for k, v in built.model.coords.items() if v is not None}
    for group in ("posterior", "sample_stats"):
        if group in tree:
            ds = tree[group].to_dataset()
            tree[group] = xr.DataTree(
                ds.assign_coords({k: coords[k] for k in ds.dims if k in coords})
            )
    return tree


def _sample_pymc(
    built: Built,
    draws: int,
    tune: int,
    chains: int,
    seed: int | None,
    target_accept: float | None,
    cores: int | None,
    progress: bool,
) -> xr.DataTree:
    import pymc as pm

    from pathlock.compiled import sampler_flags

    kwargs: dict[str, Any] = {}
    if target_accept is not None:
        kwargs["target_accept"] = float(target_accept)
    with sampler_flags():
        return pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores if cores is not None else min(chains, os.cpu_count() or 1),
            random_seed=seed,
            progressbar=progress,
            nuts_sampler="pymc",
            compute_convergence_checks=False,
            model=built.model,
            **kwargs,
        )


def _assemble(tree: xr.DataTree, data: Any) -> xr.DataTree:
    keep = {g: tree[g].to_dataset() for g in ("posterior", "sample_stats") if g in tree}
    if "diverging" not in keep["sample_stats"]:
        raise PathlockError("sampler returned no 'diverging' sample statistic")
    if hasattr(data, "split_datasets"):
        observed, constant = data.split_datasets()
    else:
        observed, constant = data.to_dataset(), xr.Dataset()
    keep["observed_data"] = observed
    keep["constant_data"] = constant
    out = xr.DataTree.from_dict({g: xr.DataTree(ds) for g, ds in keep.items()})
    out.attrs = dict(tree.attrs)
    return out


def check_convergence(
    tree: xr.DataTree, *, rhat_max: float = 1.01, n_worst: int = 5, lp_gap_sds: float = 3.0
) -> dict[str, Any]:
    """Warn about divergences, R-hat above ``rhat_max`` and chains far below the others.

    Parameters
    ----------
    tree : DataTree
        With ``posterior`` and ``sample_stats``.
    rhat_max : float
        R-hat threshold (rank-normalised split R-hat).
    n_worst : int
        How many parameters the warning names.
    lp_gap_sds : float
        A chain whose mean log density lies more than this many within-chain
        sds below the highest chain mean is named as sitting in a minor mode.
        Chains in one mode differ in mean by about sd / sqrt(ESS), far less;
        a chain stuck where the feedback never tracks (T = 400) was 135 below
        the others, about 9 sds (benchmarks/README.md).

    Returns
    -------
    dict
        ``{"divergences": int, "max_rhat": float, "worst": [(name, rhat), ...],
        "low_chains": [(chain, gap), ...]}``, the gaps in log density units.
    """
    import arviz as az

    n_div = int(tree["sample_stats"]["diverging"].sum())
    worst: list[tuple[str, float]] = []
    max_rhat = float("nan")
    if tree.posterior.sizes.get(dims.CHAIN, 1) > 1 and tree.posterior.sizes.get(dims.DRAW, 0) > 3:
        with warnings.catch_warnings():
            # Fixed or constant quantities give 0/0 inside R-hat; they are skipped below.
            warnings.simplefilter("ignore", RuntimeWarning)
            rhat = az.rhat(tree.posterior.to_dataset())
        for name, da in rhat.data_vars.items():
            values = np.asarray(da.values, dtype=float).ravel()
            if values.size == 0 or np.all(np.isnan(values)):
                continue
            idx = int(np.nanargmax(values))
            label = str(name)
            if da.ndim:
                pos = np.unravel_index(idx, da.shape)
                label += (
                    "["
                    + ", ".join(str(da[d].values[i]) for d, i in zip(da.dims, pos, strict=True))
                    + "]"
                )
            worst.append((label, float(values[idx])))
        worst.sort(key=lambda item: -item[1])
        max_rhat = worst[0][1] if worst else float("nan")
    low = _low_chains(tree, lp_gap_sds)
    messages = []
    if n_div:
        n_total = tree["sample_stats"]["diverging"].size
        messages.append(f"{n_div} of {n_total} draws diverged")
    bad = [(n, r) for n, r in worst if r > rhat_max]
    if bad:
        names = ", ".join(f"{n} ({r:.3f})" for n, r in bad[:n_worst])
        messages.append(f"R-hat above {rhat_max} for {len(bad)} parameters; worst: {names}")
    if low:
        gaps = ", ".join(f"chain {c} by {g:.0f}" for c, g in low)
        messages.append(
            f"mean log density below the best chain's by more than {lp_gap_sds:g} "
            f"within-chain sds: {gaps}; such a chain sits in a minor mode and its draws "
            "are not from the posterior's bulk (refit with another seed)"
        )
    if messages:
        warnings.warn(
            "; ".join(messages) + ". The posterior may be unreliable: run longer, raise "
            "target_accept, or revisit the priors.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return {
        "divergences": n_div,
        "max_rhat": max_rhat,
        "worst": worst[:n_worst],
        "low_chains": low,
    }


def _low_chains(tree: xr.DataTree, n_sds: float) -> list[tuple[Any, float]]:
    """Chains whose mean log density is more than ``n_sds`` within-chain sds below the best."""
    stats = tree["sample_stats"]
    name = next((n for n in ("logp", "lp") if n in stats), None)
    if name is None or stats.sizes.get(dims.CHAIN, 1) < 2 or stats.sizes.get(dims.DRAW, 0) < 4:
        return []
    lp = stats[name]
    means = lp.mean(dims.DRAW)
    sd = float(np.sqrt(lp.var(dims.DRAW).mean()))
    if not np.isfinite(sd) or sd == 0:
        return []
    gaps = float(means.max()) - means
    return [
        (chain.item(), float(gap))
        for chain, gap in zip(means[dims.CHAIN], gaps.values, strict=True)
        if gap > n_sds * sd
    ]


#: Bytes that one chunk of draws may give the largest output of the regime
#: inputs (see :func:`_evaluate_per_draw`).
_CHUNK_BYTES = 32 * 2**20

#: Compilation of the vectorised graph: all of FAST_RUN's rewrites (they also
#: restore the static broadcast patterns that ``Blockwise`` nodes lose), run by
#: the Python linker, without fusion (a fused Elemwise has no NumPy ufunc there).
_BATCHED_MODE = Mode(linker="py", optimizer="fast_run").excluding("fusion")


def _evaluate_per_draw(
    built: Built,
    tree: xr.DataTree,
    *,
    vectorized: bool = True,
    chunk_draws: int | None = None,
    mode: str | Mode | None = None,
    given: Sequence[str] = (),
) -> RegimeInputs:
    """Evaluate the regime inputs and extras at every posterior draw.

    The free random variables of the model are replaced by inputs taking the
    posterior's (constrained) values, so deterministic structure and data are
    reused as built.  By default the graph is vectorised over draws with
    :func:`pytensor.graph.replace.vectorize_graph` (every free variable gains a
    leading sample axis), compiled once and called on chunks of draws.

    Parameters
    ----------
    built : Built
    tree : DataTree
        With a ``posterior`` group holding every free variable of ``built.model``.
    vectorized : bool
        ``False`` calls the unbatched graph once per draw (the reference the
        vectorised path is tested against).
    chunk_draws : int, optional
        Draws per call of the vectorised function; by default as many as keep
        the largest output of one chunk under :data:`_CHUNK_BYTES`.
    mode : str, optional
        PyTensor compilation mode; by default FAST_RUN's rewrites with the
        Python linker for the vectorised graph and ``"FAST_RUN"`` (numba) for
        the loop.
    given : sequence of str
        Deterministics of the model taken from ``tree``'s posterior like the
        free variables, not recomputed from them (:func:`scored_on`).

    Returns
    -------
    RegimeInputs

    Notes
    -----
    Chunking bounds the memory of the graph's intermediates, which are about
    as large as its outputs times the chunk; the outputs themselves are written
    into arrays allocated once for all draws.  32 MiB for the largest output
    is ~1000 draws of ``log_trans`` at T = 1000 with two regimes: at that size
    the per-call overhead is negligible, and in benchmarks/bench_analysis.py
    one call on all 4000 draws ran twice as slow as four calls of 1000
    (intermediates that no longer fit in cache).

    The vectorised graph is not compiled with numba: the data are constants
    of the graph, so every new data set misses numba's on-disk cache, and
    compiling the batched graph (its ``Blockwise`` nodes above all) took
    25-60 s for the decoupling model.  The Python linker runs each node as one
    NumPy call over a whole chunk, so its overhead is paid per chunk, not per
    draw; see benchmarks/README.md, "Analysis", for the trade-off.
    """
    model = built.model
    names = list(built.extras)
    outputs = [built.log_init, built.log_trans, built.log_emit, *(built.extras[n] for n in names)]
    rvs = [*model.free_RVs, *(model[name] for name in given)]
    post = tree.posterior
    n_chains, n_draws = post.sizes[dims.CHAIN], post.sizes[dims.DRAW]
    values = [
        np.asarray(post[rv.name].values).reshape((n_chains * n_draws, *post[rv.name].shape[2:]))
        for rv in rvs
    ]
    stacked = None
    if vectorized:
        stacked = _evaluate_batched(rvs, outputs, values, chunk_draws, mode or _BATCHED_MODE)
    if stacked is None:
        stacked = _evaluate_loop(rvs, outputs, values, mode or "FAST_RUN")
    li, lt, le = stacked[:3]
    li = li.reshape(li.shape[0], -1, li.shape[-1]) if li.ndim == 2 else li
    if lt.ndim == 3:
        lt = lt[:, None, None]
    elif lt.ndim == 4:
        lt = lt[:, None]
    if le.ndim == 3:
        le = le[:, None]
    return RegimeInputs(
        log_init=li,
        log_trans=lt,
        log_emit=le,
        extras=dict(zip(names, stacked[3:], strict=True)),
        n_chains=n_chains,
        n_draws=n_draws,
    )


def scored_on(full: Fit, refit: Fit) -> Fit:
    """A Fit of ``full``'s data at ``refit``'s posterior draws.

    The Deterministics held in the posterior (the decoupling model's latent
    ``constraint`` and its loading fractions ``feedback_w``) are taken as
    ``refit`` sampled them. Recomputed from its free variables in ``full``'s
    model they would not be the same: the decoupling model's path is a map of
    its whitened coordinates that is centred on the data it was built for
    (the first indicator and its missing values), so ``refit``'s coordinates
    under ``full``'s centring drew paths towards observations ``refit`` never
    saw; its loading fraction is sheared by a slope read off the data.

    Parameters
    ----------
    full : Fit
        The fit whose data (and model) score the draws.
    refit : Fit
        A fit of the same spec to other data of the same shape (leave-future-out).

    Returns
    -------
    Fit
    """
    # Fit.regime_inputs takes the latent paths from the posterior it is given.
    return Fit(idata=refit.idata, spec=full.spec, data=full.data, built=full.built)


def _evaluate_loop(
    rvs: list[Any], outputs: list[Any], values: list[NDArray[Any]], mode: str | Mode
) -> list[NDArray[Any]]:
    """One compiled function of the unbatched graph, called once per draw."""
    inputs = [rv.type(name=rv.name) for rv in rvs]
    replaced = pytensor.graph.replace.clone_replace(outputs, dict(zip(rvs, inputs, strict=True)))
    fn = pytensor.function(inputs, replaced, on_unused_input="ignore", mode=mode)
    results: list[list[NDArray[Any]]] = [[] for _ in outputs]
    for s in range(values[0].shape[0] if values else 1):
        out = fn(*(v[s] for v in values))
        for store, o in zip(results, out, strict=True):
            store.append(np.asarray(o))
    return [np.stack(r) for r in results]


def _evaluate_batched(
    rvs: list[Any],
    outputs: list[Any],
    values: list[NDArray[Any]],
    chunk_draws: int | None,
    mode: str | Mode,
) -> list[NDArray[Any]] | None:
    """The graph vectorised over a leading sample axis, called on chunks of draws.

    Returns None when some node of the graph has no vectorised form (an input
    that is not a tensor, such as a random generator), so the caller falls
    back to the per-draw loop for this model only.  Ops without a dedicated
    rule (custom Ops, Scan) are wrapped in ``Blockwise`` by PyTensor, which
    loops over the sample axis inside the node.
    """
    if not values:
        return None
    batched = [rv.type.clone(shape=(None, *rv.type.shape))(name=rv.name) for rv in rvs]
    try:
        vec = vectorize_graph(outputs, dict(zip(rvs, batched, strict=True)))
    except NotImplementedError:
        return None
    # Outputs that depend on no free variable keep their rank: evaluated once, broadcast.
    is_batched = [v.type.ndim == o.type.ndim + 1 for v, o in zip(vec, outputs, strict=True)]
    fn = pytensor.function(batched, vec, on_unused_input="ignore", mode=mode)
    n_samples = values[0].shape[0]
    first = [np.asarray(o) for o in fn(*(v[:1] for v in values))]
    if chunk_draws is None:
        per_draw = max((o.nbytes for o, b in zip(first, is_batched, strict=True) if b), default=1)
        chunk_draws = max(1, _CHUNK_BYTES // max(per_draw, 1))
    stacked = [
        np.empty((n_samples, *o.shape[1:]), o.dtype)
        if b
        else np.ascontiguousarray(np.broadcast_to(o, (n_samples, *o.shape)))
        for o, b in zip(first, is_batched, strict=True)
    ]
    for out, o, b in zip(stacked, first, is_batched, strict=True):
        if b:
            out[:1] = o
    for start in range(1, n_samples, chunk_draws):
        stop = min(start + chunk_draws, n_samples)
        chunk = fn(*(v[start:stop] for v in values))
        for out, o, b in zip(stacked, chunk, is_batched, strict=True):
            if b:
                out[start:stop] = o
    return stacked
