"""Shared fixtures: one seeded random generator for every test."""

from __future__ import annotations

import numpy as np
import pytest

SEED = 20261127


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so every test is reproducible on its own."""
    return np.random.default_rng(SEED)


@pytest.fixture
def compilations(monkeypatch):
    """An empty compiled-model cache, and the models ``pathlock.fit`` compiles during the test."""
    import importlib

    fit_module = importlib.import_module("pathlock.fit")
    monkeypatch.setattr(fit_module, "_COMPILED", type(fit_module._COMPILED)())
    compiled = []
    real = fit_module._compile
    monkeypatch.setattr(
        fit_module,
        "_compile",
        lambda built, *args: compiled.append(built) or real(built, *args),
    )
    return compiled
