"""Argument checks of the evolution strategies (``NESBase``, ``RestartNES``): each raises
``TypeError`` or ``ValueError`` naming the argument, before anything is built."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..validation import check_dtype
from .es_defaults import default_popsize
from .es_stop import precision_bounds

__all__ = [
    "check_state_dtype",
    "check_x0",
    "check_sigma0",
    "check_sigma0_range",
    "check_rate",
    "check_nonneg",
    "check_popsize",
    "min_popsize",
    "check_max_evals",
    "check_target",
    "check_seed",
    "check_population",
    "check_values",
    "check_options",
    "check_incpopsize",
]

#: pycma's names of options that are named otherwise here (a pycma user's first guess).
PYCMA_NAMES = {
    "maxfevals": "max_evals",
    "ftarget": "target",
    "maxiter": "max_evals (evaluations, not generations)",
    "CMA_stds": "sigma0 (a vector: one standard deviation per coordinate)",
    "CMA_mirrors": "mirrored",
    "tolfacupx": "scalerange (always on)",
    # scipy's and pycma's containers, which here are keywords or a closure
    "options": "the options as keywords, **options",
    "inopts": "the options as keywords, **inopts",
    "args": "f with its arguments bound, lambda x: f(x, *args)",
}


def check_state_dtype(dtype: Any) -> torch.dtype:
    """A floating ``torch.dtype`` the strategies can keep their state in: not bfloat16, which
    numpy (their utilities, values and numpy output) cannot represent."""
    dtype = check_dtype(dtype)
    if dtype == torch.bfloat16:
        raise TypeError(
            "dtype: torch.bfloat16 is not supported by the evolution strategies (their "
            "utilities and numpy output have no bfloat16); use float32 or float64"
        )
    return dtype


def check_x0(x0: Any) -> tuple[Tensor, bool]:
    is_torch = isinstance(x0, Tensor)
    if is_torch:
        if x0.dtype.is_complex or x0.dtype == torch.bool:
            raise TypeError(f"x0: expected a real vector, got dtype {x0.dtype}")
        t = x0.detach()
    else:
        try:
            arr = np.asarray(x0)
        except (TypeError, ValueError) as e:
            raise TypeError(f"x0: expected a real vector, got {type(x0).__name__}") from e
        if arr.dtype.kind not in "iuf":  # bool refused, as a torch bool start is
            raise TypeError(f"x0: expected a real vector, got dtype {arr.dtype}")
        # A float16/32/64 start keeps its dtype (points and results come back in it); other
        # real types (integers, long double) are read as float64.
        keep = arr.dtype in (np.float16, np.float32, np.float64)
        t = torch.as_tensor(arr.astype(arr.dtype if keep else np.float64))
    if t.ndim != 1 or t.shape[0] < 1:
        raise ValueError(f"x0: expected a non-empty 1-d vector, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x0: contains NaN or Inf")
    return t, is_torch


def check_sigma0(sigma0: Any, n: int) -> Tensor:
    if isinstance(sigma0, (bool, np.bool_)):
        raise TypeError("sigma0: expected a positive number or a vector of them, got a bool")
    if isinstance(sigma0, numbers.Real):
        s = torch.full((n,), float(sigma0), dtype=torch.float64)
    else:
        try:
            s = torch.as_tensor(
                sigma0.detach().cpu().numpy() if isinstance(sigma0, Tensor) else sigma0,
                dtype=torch.float64,
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"sigma0: expected a positive number or a vector of them, got {sigma0!r}"
            ) from e
        if s.ndim == 0:
            s = s.expand(n).clone()
        if tuple(s.shape) != (n,):
            raise ValueError(f"sigma0: expected a scalar or shape ({n},), got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"sigma0: expected finite values > 0, got {sigma0!r}")
    return s


def check_sigma0_range(sigma: Tensor, dtype: torch.dtype, what: str = "sigma0") -> None:
    """``sigma`` (checked by ``check_sigma0``) inside the range a run keeps its distribution
    in: the precisions ``sigma^-2`` within ``es_stop.precision_bounds(dtype)``, i.e.
    ``max^-0.2 <= sigma <= tiny^-0.2`` (float64: ``[2.2e-62, 3.4e61]``). Outside it the run's
    ``scalerange`` stop would end it after one generation (and beyond ``sqrt(tiny)`` /
    ``sqrt(max)`` the state would hold 0 or Inf and ``ask`` return NaN points)."""
    p_lo, p_hi = precision_bounds(dtype)
    lo, hi = p_hi**-0.5, p_lo**-0.5
    s_min, s_max = float(sigma.min()), float(sigma.max())
    if s_min < lo or s_max > hi:
        raise ValueError(
            f"{what}: expected values in [{lo:.3g}, {hi:.3g}] for dtype {dtype} (the range "
            f"the run keeps its precisions sigma^-2 in), got min {s_min:.3g}, max {s_max:.3g}"
        )


def check_rate(value: Any, name: str, optional: bool = True) -> float | None:
    """``value`` as a finite float > 0, or ``None`` where ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        also = " or None" if optional else ""
        raise TypeError(f"{name}: expected a positive number{also}, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return v


def check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def min_popsize(mirrored: bool) -> int:
    """The smallest population: 2, or 4 with mirrored sampling (``check_popsize``)."""
    return 4 if mirrored else 2


def check_popsize(popsize: Any, n: int, mirrored: bool) -> int:
    """``popsize`` as an int >= 2 (even and >= 4 with mirrored sampling: the two points of a
    single mirrored pair have opposite utilities and equal ``z z^T``, so they cancel in the
    covariance estimate and the shape never changes); ``None``: the default."""
    if popsize is None:
        popsize = default_popsize(n, mirrored)
    elif isinstance(popsize, Mapping):  # pycma's CMAEvolutionStrategy(x0, sigma0, inopts)
        raise TypeError(
            "popsize: expected an int >= 2, got a dict: pycma's options dict is passed as "
            "keywords here, NES(x0, sigma0, **options), with this package's names (maxfevals: "
            "max_evals, ftarget: target)"
        )
    elif isinstance(popsize, bool) or not isinstance(popsize, numbers.Integral):
        raise TypeError(f"popsize: expected an int >= 2, got {popsize!r}")
    popsize = int(popsize)
    if popsize < 2:
        raise ValueError(f"popsize: expected an int >= 2, got {popsize}")
    if mirrored and (popsize % 2 or popsize < min_popsize(True)):
        raise ValueError(
            f"popsize: mirrored sampling needs an even popsize >= 4 (one mirrored pair cancels "
            f"in the covariance estimate), got {popsize}; or pass mirrored=False"
        )
    return popsize


def check_max_evals(max_evals: Any) -> int | None:
    """``max_evals`` as a positive int, or ``None``."""
    if max_evals is not None and (
        isinstance(max_evals, bool) or not isinstance(max_evals, numbers.Integral) or max_evals < 1
    ):
        raise ValueError(f"max_evals: expected a positive int or None, got {max_evals!r}")
    return None if max_evals is None else int(max_evals)


def check_target(target: Any) -> float | None:
    """``target`` as a float (not NaN, not ``+inf``: every value, and the start's "none yet",
    would be at or below it, so a run would stop before its first evaluation), or ``None``."""
    if target is not None and (
        isinstance(target, bool)
        or not isinstance(target, numbers.Real)
        or math.isnan(target)
        or target == math.inf
    ):
        raise ValueError(f"target: expected a number below +inf or None, got {target!r}")
    return None if target is None else float(target)


def check_seed(seed: Any) -> int:
    """``seed`` as an int >= 0; ``None``: fresh entropy."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif (
        isinstance(seed, (bool, np.bool_))
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed < 2**63  # torch's generators take a signed 64-bit seed
    ):
        raise ValueError(f"seed: expected an int in [0, 2**63) or None, got {seed!r}")
    return int(seed)


def check_population(X: Any, popsize: int, n: int, dtype: torch.dtype, device: Any) -> Tensor:
    """The population ``X`` given to ``tell`` as a (popsize, n) tensor of the state's dtype
    and device."""
    if isinstance(X, Tensor):
        T = X.detach().to(dtype=dtype, device=device)
    else:
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"X: expected a (popsize, n) array, got {type(X).__name__}") from e
        T = torch.as_tensor(arr, dtype=dtype, device=device)
    if tuple(T.shape) != (popsize, n):
        raise ValueError(f"X: expected shape ({popsize}, {n}), got {tuple(T.shape)}")
    return T


def check_values(fvals: Any, k: int) -> np.ndarray:
    """The values ``fvals`` given to ``tell`` as a (k,) float64 array (a (k, 1) or (1, k) array
    is flattened)."""
    if isinstance(fvals, Tensor):
        if fvals.dtype.is_complex:
            raise TypeError("fvals: expected real values, got a complex tensor")
        fvals = fvals.detach().cpu().numpy()
    try:
        f = np.asarray(fvals)
    except (TypeError, ValueError) as e:
        raise TypeError(f"fvals: expected {k} real values, got {type(fvals).__name__}") from e
    if f.dtype.kind not in "biuf":
        raise TypeError(f"fvals: expected real values, got dtype {f.dtype}")
    f = f.astype(np.float64).reshape(-1) if f.ndim == 2 and 1 in f.shape else f
    if f.shape != (k,):
        raise ValueError(f"fvals: expected shape ({k},), got {tuple(np.shape(fvals))}")
    return f.astype(np.float64)


def check_options(
    options: dict[str, Any], init: Callable[..., Any], extra: tuple[str, ...], owner: str
) -> None:
    """``TypeError`` naming the first of ``options`` that is neither a named argument of
    ``init`` nor in ``extra``, with pycma's equivalent or the closest known name: a misspelt
    option (or pycma's ``maxfevals``) would otherwise fail deep inside the search
    distribution's constructor."""
    params = inspect.signature(init).parameters.values()
    known = [p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD]
    known += extra
    unknown = sorted(set(options) - set(known))
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = PYCMA_NAMES.get(name) or (close[0] if close else None)
    also = f"; did you mean {hint}?" if hint else ""
    raise TypeError(f"{name}: unknown option of {owner}{also} (known: {', '.join(known)})")


def check_incpopsize(incpopsize: Any) -> float:
    """IPOP's population factor ``incpopsize`` as a float > 1."""
    if (
        isinstance(incpopsize, bool)
        or not isinstance(incpopsize, numbers.Real)
        or not incpopsize > 1
    ):
        raise ValueError(f"incpopsize: expected a number > 1, got {incpopsize!r}")
    return float(incpopsize)
