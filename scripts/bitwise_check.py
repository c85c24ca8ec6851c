"""Bitwise fingerprint of the package's numerical results on fixed seeds.

Runs small seeded problems through each public entry point whose code a refactoring may move
(RGD on SpectralSPD, DiagonalSPD and KroneckerSpectralSPD, the Gaussian step, SpectralKron on a
tiny model, ``spd.minimize`` with each method, ``nes.minimize`` and the xNES / Cholesky-NES
baselines, the Kronecker and Cholesky curvature baselines) and records, per case, the sha256 of
the float64 bytes of its results. A pure refactoring leaves every digest unchanged.

    python scripts/bitwise_check.py --write digests.json     # record
    python scripts/bitwise_check.py --compare digests.json   # exit 1 on any difference

``scripts/bitwise_digests.json`` holds the digests recorded by the last commit that changed
the numbers on purpose (``git log scripts/bitwise_digests.json`` names it), with torch 2.13.0
(CPU build) and one thread; other builds or machines may differ in the last bits, so record a
fresh baseline there first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The checkout this script belongs to, not whatever manifold_spectral is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DT = torch.float64


def _arrays(value: Any) -> list[np.ndarray]:
    """Every tensor / array / float in ``value`` (nested), as float64 numpy arrays, in order."""
    if isinstance(value, torch.Tensor):
        return [value.detach().to(torch.float64).cpu().numpy()]
    if isinstance(value, np.ndarray):
        return [value.astype(np.float64)]
    if isinstance(value, int | float | np.floating | np.integer):
        return [np.asarray(value, dtype=np.float64)]
    if isinstance(value, dict):
        return [a for k in sorted(value) for a in _arrays(value[k])]
    if isinstance(value, list | tuple):
        return [a for v in value for a in _arrays(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [a for k in value.__dataclass_fields__ for a in _arrays(getattr(value, k))]
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def digest(value: Any) -> str:
    h = hashlib.sha256()
    for a in _arrays(value):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _egrad(M: Any, g: torch.Generator) -> torch.Tensor:
    G = torch.randn(M.egrad_shape, generator=g, dtype=DT)
    return (G + G.transpose(-1, -2)) / 2 if len(M.egrad_shape) >= 2 else G


def case_rgd_spectral() -> Any:
    import manifold_spectral as ms

    out = []
    for kw in ({}, {"momentum": 0.5, "cayley": "neumann"}, {"jacobi": True, "second_order": True}):
        M = ms.SpectralSPD(6, dtype=DT)
        g = torch.Generator().manual_seed(3)
        x = M.random(g)
        opt = ms.RGD(M, lr=0.1, **kw)
        for _ in range(5):
            x = opt.step(x, _egrad(M, g))
        out.append((x.B, x.d))
    return out


def case_rgd_kronecker() -> Any:
    import manifold_spectral as ms

    out = []
    for kw in ({}, {"momentum": 0.3}, {"jacobi": True}):
        M = ms.KroneckerSpectralSPD(3, 4, dtype=DT)
        g = torch.Generator().manual_seed(4)
        x = M.random(g)
        opt = ms.RGD(M, lr=0.05, **kw)
        for _ in range(5):
            x = opt.step(x, _egrad(M, g))
        out.append(M.to_matrix(x))
    return out


def case_rgd_diagonal_batched() -> Any:
    import manifold_spectral as ms

    out = []
    for M in (ms.DiagonalSPD(5, dtype=DT), ms.SpectralSPD(4, dtype=DT, batch=3)):
        g = torch.Generator().manual_seed(5)
        x = M.random(g)
        opt = ms.RGD(M, lr=0.1, momentum=0.2)
        for _ in range(4):
            x = opt.step(x, _egrad(M, g))
        out.append(M.to_matrix(x))
    return out


def case_gaussian() -> Any:
    import manifold_spectral as ms

    M = ms.SpectralSPD(5, dtype=DT)
    gauss = ms.Gaussian(M, beta1=0.1, beta2=0.05, gamma=1.0, root=2.0)
    g = torch.Generator().manual_seed(6)
    mu, x = torch.zeros(5, dtype=DT), M.origin()
    for _ in range(5):
        mu, x = gauss.step(mu, x, torch.randn(5, generator=g, dtype=DT))
    return mu, x.B, x.d


def case_spectral_kron() -> Any:
    from torch import nn

    from manifold_spectral.optim import SpectralKron

    out = []
    for kw in (
        {},
        {"root": 1.0, "clip_rms": 1.0},
        {"graft": "adam", "weight_decay": 1e-3, "nesterov": True},
        {"jacobi": True, "cayley": "exact"},
        {"eigenvalue_correction": True, "update_every": 2},
    ):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        g = torch.Generator().manual_seed(0)
        X = torch.randn(32, 6, generator=g)
        Y = torch.randint(0, 3, (32,), generator=g)
        opt = SpectralKron(model.parameters(), lr=1e-2, beta2=0.05, damping=1e-4, **kw)
        for _ in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
    return out


def case_spd_minimize() -> Any:
    from manifold_spectral.solvers import spd

    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    Q = A @ A.T / 6 + np.eye(6)
    out = []
    for method in spd.METHODS:
        res = spd.minimize(spd.LogDet(Q), method, lr=0.05, steps=20, momentum=0.3)
        out.append((res.x, res.B, res.d, res.history["gap"]))
    res = spd.minimize(spd.MetricNearness(Q, seed=1), "spectral", lr=0.02, steps=10, seed=2)
    out.append((res.x, res.history["fun"], res.history["nit"]))
    return out


def case_nes() -> Any:
    from manifold_spectral.solvers import functions, nes

    out = []
    res = nes.minimize(functions.rosenbrock, np.zeros(4), sigma0=0.5, max_evals=400, seed=0)
    out.append((res.x, res.fun, res.history["fun"]))
    res = nes.minimize(
        functions.rastrigin, np.ones(3), sigma0=1.0, max_evals=600, seed=1, restarts=2
    )
    out.append((res.x, res.fun))
    return out


def case_nes_baselines() -> Any:
    import warnings

    with warnings.catch_warnings():  # the names of 05da16d: deprecated since, still working
        warnings.simplefilter("ignore", DeprecationWarning)
        from manifold_spectral.baselines import XNES, CholeskyNES
    from manifold_spectral.solvers.functions import FUNCTIONS

    out = []
    f = FUNCTIONS["rosenbrock"].make(4)
    for make in (
        lambda: XNES(np.zeros(4), 0.5, seed=0, max_evals=300),
        lambda: XNES(
            np.zeros(4),
            0.5,
            seed=0,
            max_evals=300,
            mirrored=True,
            distance_weights=True,
            adaptive_rates=True,
            rank_one=True,
        ),
        lambda: CholeskyNES(np.zeros(4), 0.5, seed=0, max_evals=300),
    ):
        res = make().optimize(f, vectorized=True)
        out.append((res.x, res.fun, res.history["fun"]))
    return out


def case_curvature_baselines() -> Any:
    from manifold_spectral.baselines import (
        CholeskyCurvature,
        KroneckerCholeskyCurvature,
        KroneckerProjection,
        nearest_kronecker,
    )

    g = torch.Generator().manual_seed(7)
    out = []
    S = torch.randn(12, 12, generator=g, dtype=DT)
    S = S @ S.T + torch.eye(12, dtype=DT)
    out.append(nearest_kronecker(S, 3, 4))
    P = KroneckerProjection(3, 4, dtype=DT)
    state = P.from_matrix(S)
    for _ in range(3):
        state = P.step(state, torch.randn(5, 12, generator=g, dtype=DT), beta2=0.1)
    out.append(state)
    for curv in (CholeskyCurvature(12, dtype=DT), KroneckerCholeskyCurvature(3, 4, dtype=DT)):
        out.append(_run_curvature(curv, g))
    return out


def _run_curvature(curv: Any, g: torch.Generator) -> Any:
    S = torch.randn(12, 12, generator=g, dtype=DT)
    x = curv.from_matrix(S @ S.T + torch.eye(12, dtype=DT))
    for _ in range(3):
        x = curv.step(x, torch.randn(5, 12, generator=g, dtype=DT), beta2=0.1)
    return curv.to_matrix(x)


def case_samplers_and_helpers() -> Any:
    """Haar sampling, the nearest Kronecker product, ``I + M + M^2/2``, orthogonality errors."""
    import manifold_spectral as ms
    from manifold_spectral import geoopt as msgeo
    from manifold_spectral.baselines.cholesky_rgd import cholesky_h
    from manifold_spectral.experiments import curvature, curvature_kronecker, spd

    g = torch.Generator().manual_seed(8)
    out = [spd.random_spd(5, 2.0, g), curvature.ground_truth(5, 2.0, g)]
    Q, lam = curvature.ground_truth(12, 2.0, g)
    for init in ("random", "sample"):
        out.append(curvature_kronecker.initial_kronecker(init, 3, 4, Q, lam, g))
    out.append(msgeo.SpectralSPD(4).random(2, 5, 4, dtype=DT, generator=g))
    out.append(msgeo.KroneckerSpectralSPD(2, 3).random(dtype=DT, generator=g))
    S = torch.randn(12, 12, generator=g, dtype=DT)
    M = ms.KroneckerSpectralSPD(3, 4, dtype=DT)
    x = M.from_matrix(S @ S.T + torch.eye(12, dtype=DT))
    out.append((M.to_matrix(x), curvature_kronecker._orthogonality(x)))
    out.append(cholesky_h(torch.tril(torch.randn(4, 4, generator=g, dtype=DT))))
    return out


CASES: dict[str, Callable[[], Any]] = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", help="record the digests to FILE (JSON)")
    group.add_argument("--compare", metavar="FILE", help="compare with the digests in FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import manifold_spectral

    print(f"manifold_spectral from {Path(manifold_spectral.__file__).parent}")
    digests = {name: digest(fn()) for name, fn in CASES.items()}
    if args.write:
        with open(args.write, "w") as fh:
            json.dump(digests, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"wrote {len(digests)} digests to {args.write}")
        return 0
    with open(args.compare) as fh:
        expected = json.load(fh)
    bad = sorted(k for k in expected.keys() | digests.keys() if expected.get(k) != digests.get(k))
    for name in sorted(digests):
        print(f"{'DIFFERS' if name in bad else 'equal  '} {name}")
    print("bitwise equal" if not bad else f"{len(bad)} case(s) differ: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
