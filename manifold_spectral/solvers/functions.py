"""Test functions for gradient-free minimisation (paper App. C, and the usual benchmark set).

Every function takes a point of shape (n,) or a batch (k, n), as a numpy array or a torch
tensor, and returns the value(s) in the same library: a 0-d result for one point, shape
(k,) for a batch (so ``f`` is *vectorised*: the last axis is the coordinate axis). All have
their global minimum 0.

App. C of the paper (n-dimensional, ``w`` the point):

* Ackley: ``20 - 20 exp(-0.2 sqrt(mean(w^2))) + e - exp(mean(cos(2 pi w)))``, minimum at 0;
* Rosenbrock: ``sum_{i<n} 100 (w_{i+1} - w_i^2)^2 + (w_i - 1)^2``, minimum at 1;
* Bohachevsky: ``sum_{i<n} w_i^2 + 2 w_{i+1}^2 - 0.3 cos(3 pi w_i) - 0.4 cos(4 pi w_{i+1}) + 0.7``;
* Schaffer: ``sum_{i<n} (w_i^2 + w_{i+1}^2)^0.25 (sin^2(50 (w_i^2 + w_{i+1}^2)^0.1) + 1)``;
* Griewank: ``sum(w^2) / 4000 - prod(cos(w_i / sqrt(i))) + 1``.

Benchmark additions: ``sphere``, ``ellipsoid`` (condition number ``cond``, axis-aligned),
``RotatedEllipsoid`` (the same under a fixed seeded rotation) and ``rastrigin``.

``FUNCTIONS`` lists them with the initialisation box used by the experiments and benchmarks:
``x0`` uniform in ``[-a, a]^n`` (seeded) and ``sigma0 = a / 2``, with the usual search domains
of the literature for ``a`` (Ackley 32.768, Griewank 600, Rastrigin 5.12, Rosenbrock 2.048,
Schaffer 100, Bohachevsky 15) and ``a = 5`` for the quadratics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "sphere",
    "ellipsoid",
    "RotatedEllipsoid",
    "rosenbrock",
    "ackley",
    "bohachevsky",
    "schaffer",
    "griewank",
    "rastrigin",
    "TestFunction",
    "FUNCTIONS",
]


def _xp(x: Any) -> Any:
    """The array library of ``x`` (torch or numpy); lists become numpy float64."""
    return torch if isinstance(x, torch.Tensor) else np


def _as_array(x: Any, min_n: int = 1) -> Any:
    """``x`` as a floating array of its library; ``ValueError`` naming ``x`` for a scalar
    (no coordinate axis) or fewer than ``min_n`` coordinates: the sums over consecutive
    pairs (Rosenbrock, Bohachevsky, Schaffer) are empty at n = 1 and would return their
    minimum 0 at every point."""
    if isinstance(x, torch.Tensor):
        x = x if x.dtype.is_floating_point else x.to(torch.float64)
    else:
        x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] < min_n:
        raise ValueError(
            f"x: expected a point (n,) or a batch (k, n) with n >= {min_n}, got shape "
            f"{tuple(x.shape)}"
        )
    return x


def _arange1(x: Any) -> Any:
    """1, 2, ..., n matching ``x``'s library, dtype and device (n = last axis)."""
    n = x.shape[-1]
    if isinstance(x, torch.Tensor):
        return torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    return np.arange(1, n + 1, dtype=x.dtype)


def sphere(x: Any) -> Any:
    """``sum(x^2)``."""
    x = _as_array(x)
    return (x * x).sum(-1)


def ellipsoid(x: Any, cond: float = 1e6) -> Any:
    """``sum_i cond^((i - 1)/(n - 1)) x_i^2``: axis-aligned, condition number ``cond``."""
    x = _as_array(x)
    n = x.shape[-1]
    expo = (_arange1(x) - 1) / max(n - 1, 1)
    return (cond**expo * x * x).sum(-1)


class RotatedEllipsoid:
    """``ellipsoid(R x)`` for a fixed Haar-random rotation ``R`` (seeded; QR of a Gaussian).

    The rotation makes the problem non-separable: a method has to learn the full covariance.
    """

    def __init__(self, n: int, cond: float = 1e6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        Q, R = np.linalg.qr(rng.standard_normal((n, n)))  # init-only: the fixed rotation
        self.R = Q * np.sign(np.diag(R))[None, :]
        self.n = n
        self.cond = float(cond)
        self._torch: dict[tuple[Any, Any], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"RotatedEllipsoid(n={self.n}, cond={self.cond:g})"

    def __call__(self, x: Any) -> Any:
        x = _as_array(x)
        if x.shape[-1] != self.n:
            raise ValueError(f"x: expected last axis of length {self.n}, got {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            key = (x.dtype, x.device)
            if key not in self._torch:
                self._torch[key] = torch.as_tensor(self.R, dtype=x.dtype, device=x.device)
            y = x @ self._torch[key].T
        else:
            y = x @ self.R.T
        return ellipsoid(y, self.cond)


def rosenbrock(x: Any) -> Any:
    """``sum_{i<n} 100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2`` (minimum at ``x = 1``)."""
    x = _as_array(x, min_n=2)
    a, b = x[..., :-1], x[..., 1:]
    return (100.0 * (b - a * a) ** 2 + (a - 1.0) ** 2).sum(-1)


def ackley(x: Any) -> Any:
    """``20 - 20 exp(-0.2 sqrt(mean(x^2))) + e - exp(mean(cos(2 pi x)))``."""
    x = _as_array(x)
    xp = _xp(x)
    n = x.shape[-1]
    r = xp.sqrt((x * x).sum(-1) / n)
    c = xp.cos(2.0 * math.pi * x).sum(-1) / n
    return 20.0 - 20.0 * xp.exp(-0.2 * r) + math.e - xp.exp(c)


def bohachevsky(x: Any) -> Any:
    """``sum_{i<n} x_i^2 + 2 x_{i+1}^2 - 0.3 cos(3 pi x_i) - 0.4 cos(4 pi x_{i+1}) + 0.7``."""
    x = _as_array(x, min_n=2)
    xp = _xp(x)
    a, b = x[..., :-1], x[..., 1:]
    terms = a * a + 2.0 * b * b - 0.3 * xp.cos(3.0 * math.pi * a)
    return (terms - 0.4 * xp.cos(4.0 * math.pi * b) + 0.7).sum(-1)


def schaffer(x: Any) -> Any:
    """``sum_{i<n} (x_i^2 + x_{i+1}^2)^0.25 (sin^2(50 (x_i^2 + x_{i+1}^2)^0.1) + 1)``."""
    x = _as_array(x, min_n=2)
    xp = _xp(x)
    s = x[..., :-1] ** 2 + x[..., 1:] ** 2
    return (s**0.25 * (xp.sin(50.0 * s**0.1) ** 2 + 1.0)).sum(-1)


def griewank(x: Any) -> Any:
    """``sum(x^2) / 4000 - prod_i cos(x_i / sqrt(i)) + 1``."""
    x = _as_array(x)
    xp = _xp(x)
    return (x * x).sum(-1) / 4000.0 - xp.cos(x / xp.sqrt(_arange1(x))).prod(-1) + 1.0


def rastrigin(x: Any) -> Any:
    """``10 n + sum(x^2 - 10 cos(2 pi x))`` (highly multimodal; not in the paper)."""
    x = _as_array(x)
    xp = _xp(x)
    n = x.shape[-1]
    return 10.0 * n + (x * x - 10.0 * xp.cos(2.0 * math.pi * x)).sum(-1)


@dataclasses.dataclass(frozen=True)
class TestFunction:
    """A named test function and the box ``[-half_width, half_width]^n`` that ``x0`` is
    drawn from (``sigma0 = half_width / 2``); ``make(n)`` returns the callable."""

    __test__ = False  # not a pytest class

    name: str
    make: Callable[[int], Callable[[Any], Any]]
    half_width: float
    multimodal: bool = False

    def initial(self, n: int, seed: int) -> tuple[np.ndarray, float]:
        """``(x0, sigma0)``: ``x0`` uniform in the box (seeded), ``sigma0 = half_width / 2``."""
        rng = np.random.default_rng([seed, 7919])
        x0 = rng.uniform(-self.half_width, self.half_width, size=n)
        return x0, 0.5 * self.half_width


FUNCTIONS: dict[str, TestFunction] = {
    t.name: t
    for t in [
        TestFunction("sphere", lambda n: sphere, 5.0),
        TestFunction("ellipsoid", lambda n: ellipsoid, 5.0),
        TestFunction("rotated-ellipsoid", lambda n: RotatedEllipsoid(n), 5.0),
        TestFunction("rosenbrock", lambda n: rosenbrock, 2.048),
        TestFunction("ackley", lambda n: ackley, 32.768, multimodal=True),
        TestFunction("bohachevsky", lambda n: bohachevsky, 15.0, multimodal=True),
        TestFunction("schaffer", lambda n: schaffer, 100.0, multimodal=True),
        TestFunction("griewank", lambda n: griewank, 600.0, multimodal=True),
        TestFunction("rastrigin", lambda n: rastrigin, 5.12, multimodal=True),
    ]
}
