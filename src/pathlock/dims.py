"""The dims contract: the only place where pathlock spells dimension names.

Coords always carry the user's labels (dates, unit ids, regime names); positions
live only inside kernels.  Sample dims are ``("chain", "draw")``; scenario
outputs add ``scenario``.
"""

from __future__ import annotations

__all__ = [
    "CHAIN",
    "DRAW",
    "SAMPLE_DIMS",
    "UNIT",
    "TIME",
    "STEP",
    "REGIME",
    "REGIME_FROM",
    "REGIME_TO",
    "INDICATOR",
    "SIGNAL",
    "EXPOSURE",
    "SCENARIO",
    "PATH",
    "LAG",
    "EXOG",
    "EXOG_TVTP",
]

CHAIN = "chain"
DRAW = "draw"
SAMPLE_DIMS: tuple[str, str] = (CHAIN, DRAW)
UNIT = "unit"
TIME = "time"
#: The time labels after the first: one per increment of a latent path.
STEP = "step"
REGIME = "regime"
REGIME_FROM = "regime_from"
REGIME_TO = "regime_to"
INDICATOR = "indicator"
SIGNAL = "signal"
EXPOSURE = "exposure"
SCENARIO = "scenario"
PATH = "path"
LAG = "lag"
EXOG = "exog"
EXOG_TVTP = "exog_tvtp"
