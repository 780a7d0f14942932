"""Bundled datasets and model files, found both in an installed package and in a source tree.

The registry ``data/registry.toml`` names each CSV with its description, source,
licence and columns (and, for synthetic data, the exact command that made it
and the ground-truth file beside it).  Wheels carry ``data/`` and ``models/``
inside the package as ``pathlock/_data`` and ``pathlock/_models``; a source
checkout (editable install) reads them from the repository root.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from pathlock.errors import DataError

__all__ = [
    "DatasetInfo",
    "data_dir",
    "models_dir",
    "registry",
    "info",
    "load",
    "path",
    "model_path",
]


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry.

    Attributes
    ----------
    name, file, description, source, licence : str
    columns : dict of str to str
        Column name to its meaning.
    time, unit : str or None
        The time and unit columns, for :func:`pathlock.load_csv`.
    spec : str or None
        The model file in ``models/`` that fits it.
    truth : str or None
        Ground-truth file of a synthetic dataset.
    command : str or None
        The exact command that made a synthetic dataset.
    dates : bool
        Whether the time column holds dates (parsed on load).
    """

    name: str
    file: str
    description: str
    source: str
    licence: str
    columns: dict[str, str]
    time: str | None = None
    unit: str | None = None
    spec: str | None = None
    truth: str | None = None
    command: str | None = None
    dates: bool = False


def _bundled(sub: str) -> Path:
    # A source checkout wins over a packaged copy so that edits show at once.
    repo = Path(__file__).resolve().parents[2] / sub
    if (repo / _MARKER[sub]).exists():
        return repo
    packaged = Path(str(resources.files("pathlock"))) / f"_{sub}"
    if packaged.is_dir():
        return packaged
    raise DataError(
        f"pathlock's bundled '{sub}' folder was not found (looked for {repo} and the "
        f"package's _{sub}); reinstall pathlock"
    )


_MARKER = {"data": "registry.toml", "models": "decoupling.toml"}


def data_dir() -> Path:
    """Folder holding the bundled CSVs and ``registry.toml``."""
    return _bundled("data")


def models_dir() -> Path:
    """Folder holding the bundled model files (``*.toml``)."""
    return _bundled("models")


@cache
def registry() -> dict[str, DatasetInfo]:
    """All registered datasets by name."""
    raw = tomllib.loads((data_dir() / "registry.toml").read_text())
    out: dict[str, DatasetInfo] = {}
    for name, entry in raw.get("datasets", {}).items():
        out[name] = DatasetInfo(name=name, **entry)
    return out


def info(name: str) -> DatasetInfo:
    """Registry entry of ``name``; an unknown name lists the known ones."""
    reg = registry()
    if name not in reg:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(reg))}")
    return reg[name]


def path(name: str) -> Path:
    """Path of the CSV of dataset ``name``."""
    return data_dir() / info(name).file


def model_path(name: str) -> Path:
    """Path of the bundled model file ``name`` (with or without ``.toml``)."""
    stem = name.removesuffix(".toml")
    p = models_dir() / f"{stem}.toml"
    if not p.exists():
        known = sorted(f.stem for f in models_dir().glob("*.toml"))
        raise DataError(f"unknown model file {name!r}; bundled models: {', '.join(known)}")
    return p


def load(name: str, **kwargs: Any) -> pd.DataFrame:
    """Read dataset ``name`` as a DataFrame (``pandas.read_csv`` keyword arguments pass through).

    Parameters
    ----------
    name : str
        A registry name; see :func:`registry`.

    Returns
    -------
    DataFrame
        The raw table; parse it into model data with :func:`pathlock.from_dataframe`
        using the entry's ``time`` and ``unit`` columns.

    Examples
    --------
    >>> from pathlock import datasets
    >>> sorted(datasets.registry())  # doctest: +SKIP
    """
    entry = info(name)
    parse = [entry.time] if entry.dates and entry.time else None
    return pd.read_csv(data_dir() / entry.file, parse_dates=parse, **kwargs)


def load_truth(name: str) -> pd.DataFrame:
    """Ground truth of a synthetic dataset (constraint and regime paths)."""
    entry = info(name)
    if entry.truth is None:
        raise DataError(f"dataset {name!r} is real data and has no ground truth")
    return pd.read_csv(data_dir() / entry.truth)
