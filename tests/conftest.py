"""Shared fixtures: one seeded random generator for every test."""

from __future__ import annotations

import numpy as np
import pytest

SEED = 20261127


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so every test is reproducible on its own."""
    return np.random.default_rng(SEED)
