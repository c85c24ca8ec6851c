"""Defaults of the evolution strategies (``NESBase``) that do not depend on the search
distribution: the technique switches, the population and the evaluation budget.

The learning rates are in ``es_rates`` (the xNES values and the DX-NES schedule); the
specialisations override ``NESBase.DEFAULTS`` (xNES turns every switch off).
"""

from __future__ import annotations

import math

__all__ = ["SWITCHES", "default_popsize", "default_max_evals", "default_tolstagnation"]

#: Default of each technique switch: mirrored sampling, DX-NES distance-weighted utilities,
#: DX-NES movement-dependent rates and the rank-one evolution-path term (all on).
SWITCHES = {
    "mirrored": True,
    "distance_weights": True,
    "adaptive_rates": True,
    "rank_one": True,
}


def default_popsize(n: int, mirrored: bool) -> int:
    """``4 + floor(3 ln n)`` (xNES, CMA-ES), rounded up to even with mirrored sampling."""
    popsize = 4 + int(math.floor(3 * math.log(n)))
    if mirrored and popsize % 2:
        popsize += 1
    return popsize


def default_max_evals(popsize: int, n: int) -> int:
    """``popsize (100 + 150 (n + 3)^2 / sqrt(popsize))``: pycma's default iteration budget in
    evaluations."""
    lam = popsize
    return int(lam * (100 + 150 * (n + 3) ** 2 / math.sqrt(lam)))


def default_tolstagnation(n: int, popsize: int) -> int:
    """``int(100 + 100 n^1.5 / popsize)`` generations: pycma's default ``tolstagnation``
    (the length of the stagnation the ``tolstagnation`` test of ``es_stop`` waits for)."""
    return int(100 + 100 * n**1.5 / popsize)
