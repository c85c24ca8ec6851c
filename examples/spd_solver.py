"""Optimise over SPD matrices with ``manifold_spectral.solvers.spd`` (paper Sec. 4.2).

1. Log-det, ``f(S) = tr(S Q) - log det S`` with ``S* = Q^-1``, numpy in and numpy out, with
   the spectral method (ours) beside the retraction (geoopt) and Cholesky baselines at the
   same step size.
2. Metric nearness from mini-batches, ``f(S) = 1/(2N) sum_i ||S Q x_i - x_i||^2``.
3. A user objective written as a torch function of ``S`` (gradient by autograd):
   ``f(S) = tr(S A^-1) + tr(S^-1 C)``, whose minimiser (``S A^-1 S = C``) is the geometric
   mean ``A # C = A^1/2 (A^-1/2 C A^-1/2)^1/2 A^1/2`` of two SPD matrices.

Run:  python examples/spd_solver.py   (a few seconds; exits 1 if a run does not converge)
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from manifold_spectral.solvers import spd


def random_spd(n: int, cond: float, rng: np.random.Generator) -> np.ndarray:
    """``H Diag(q) H^T`` with Haar-random ``H`` and ``q`` log-spaced over ``[1, cond]``."""
    H, _ = np.linalg.qr(rng.standard_normal((n, n)))
    q = np.logspace(0, np.log10(cond), n) / np.sqrt(cond)
    return (H * q) @ H.T


def main() -> int:
    torch.set_num_threads(1)  # 30 x 30 matrices: one thread is fastest
    rng = np.random.default_rng(0)
    n = 30
    Q = random_spd(n, 10.0, rng)
    S0 = random_spd(n, 10.0, rng)  # shared start with distinct eigenvalues
    ok = True

    # 1. Log-det in five lines: problem, minimize, result.
    problem = spd.LogDet(Q)
    res = spd.minimize(problem, "spectral", lr=0.05, steps=500, x0=S0, tol=1e-10)
    err = np.linalg.norm(res.x - np.linalg.inv(Q)) / np.linalg.norm(np.linalg.inv(Q))
    print(f"log-det: {res.message} after {res.nit} steps; ||S - Q^-1|| / ||Q^-1|| = {err:.1e}")
    print(
        f"  x is {type(res.x).__name__}; eigenvalues from the factors: d in "
        f"[{res.d.min():.3f}, {res.d.max():.3f}] (no eigh needed)"
    )
    ok &= bool(res.success and err < 1e-4)
    for method in ("retraction", "cholesky"):
        other = spd.minimize(problem, method, lr=0.05, steps=500, x0=S0, tol=1e-10)
        print(
            f"  {method:>10}: {other.nit} steps, {1e3 * other.history['time'][-1] / other.nit:.2f}"
            f" ms/step (spectral: {1e3 * res.history['time'][-1] / res.nit:.2f})"
        )
        ok &= bool(other.success)

    # 2. Metric nearness from mini-batches of 10 of N = 300 samples.
    nearness = spd.MetricNearness(Q, n_samples=300, batch_size=10, seed=1)
    res = spd.minimize(nearness, lr=0.01, steps=5000, x0=S0, tol=1e-6, record_every=10)
    print(f"metric nearness: {res.message} after {res.nit} steps (gap {res.gap:.1e})")
    ok &= bool(res.success)

    # 3. A user objective by autograd: tr(S A^-1) + tr(S^-1 C), minimised by A # C.
    A, C = (torch.as_tensor(random_spd(n, 5.0, rng)) for _ in range(2))
    A_inv = torch.linalg.inv(A)

    def f(S: torch.Tensor) -> torch.Tensor:
        return (S * A_inv).sum() + (torch.linalg.inv(S) * C).sum()

    ea, Va = torch.linalg.eigh(A)
    A_half, A_mhalf = (Va * ea.sqrt()) @ Va.T, (Va * ea.rsqrt()) @ Va.T
    em, Vm = torch.linalg.eigh(A_mhalf @ C @ A_mhalf)
    mean = A_half @ ((Vm * em.sqrt()) @ Vm.T) @ A_half
    objective = spd.Objective(f, n, f_star=float(f(mean)), x_star=mean)
    res = spd.minimize(objective, lr=0.1, steps=2000, tol=1e-9)
    err = float(torch.linalg.norm(res.x - mean) / torch.linalg.norm(mean))
    print(f"geometric mean (autograd): {res.message} after {res.nit} steps; rel. error {err:.1e}")
    ok &= bool(res.success and err < 1e-3)

    if not ok:
        print("a run did not converge", file=sys.stderr)
        return 1
    print("all runs converged.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
