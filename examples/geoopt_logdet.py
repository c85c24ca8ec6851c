"""geoopt's RiemannianAdam on the log-det problem: our spectral manifold vs geoopt's SPD manifold.

    f(S) = tr(S Q) - log det S,   minimiser S* = Q^-1,   f* = n + log det Q

Both runs use the same optimizer class (``geoopt.optim.RiemannianAdam``), the same learning
rate, the same number of iterations and autograd for the Euclidean gradient:

* ``manifold_spectral.geoopt.SpectralSPD``: the parameter is the packed spectral factors
  ``[B; d^T]`` ((n + 1) x n), ``S = B Diag(d) B^T``, ``log det S = sum(log d)``; the step is
  the chart retraction (one Cayley solve, no decomposition) under the Fisher-Rao metric, with
  the plain chart rotation (``rotation="linear"``) and with the second-order rotation angles
  that ``spd.minimize`` uses by default (``rotation="second_order"``);
* ``geoopt.SymmetricPositiveDefinite``: the parameter is the dense S (n x n), affine-invariant
  metric ``tr(S^-1 dS S^-1 dS)`` (twice ours), ``torch.logdet`` in the loss; RiemannianAdam
  steps with geoopt's ``retr_transp`` (its retraction and a parallel transport of the
  momentum).

The script prints the gap ``f - f*`` at a few iterations, the median time per step of each
run (optimizer step plus forward and backward pass) and their ratios, and exits 1 unless
every run reduces the gap by a factor of 1e4.

Run:  python examples/geoopt_logdet.py
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch

from manifold_spectral._compat import import_geoopt
from manifold_spectral.geoopt import SpectralSPD, pack

geoopt = import_geoopt()  # `import geoopt` without its torch.jit.script DeprecationWarning

N = 60  # the size of paper Sec. 4.2
LR = 0.1
ITERS = 400
DTYPE = torch.float64


def make_problem(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random SPD Q and the optimal value f* = n + log det Q."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=DTYPE)
    Q = A @ A.T / n + 0.1 * torch.eye(n, dtype=DTYPE)
    return Q, n + torch.logdet(Q)


def run(param: torch.Tensor, loss, value) -> tuple[list[float], float]:
    """RiemannianAdam on one parameter; returns the gaps after every step and the median
    seconds per step (robust to a loaded machine)."""
    opt = geoopt.optim.RiemannianAdam([param], lr=LR)
    gaps, seconds = [], []
    for _ in range(ITERS):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss(param).backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
        with torch.no_grad():
            gaps.append(value(param))
    return gaps, statistics.median(seconds)


def main() -> int:
    torch.set_num_threads(1)  # 30 x 30 matrices: one thread is fastest and never oversubscribes
    Q, f_star = make_problem(N)

    def f_ours(x: torch.Tensor) -> torch.Tensor:
        S = (x[:-1] * x[-1]) @ x[:-1].T  # B Diag(d) B^T
        return (S * Q).sum() - torch.log(x[-1]).sum()

    def f_spd(S: torch.Tensor) -> torch.Tensor:
        return (S * Q).sum() - torch.logdet(S)

    spd = geoopt.SymmetricPositiveDefinite()
    eye = torch.eye(N, dtype=DTYPE)
    runs = {}
    for rotation in ("linear", "second_order"):
        ours = SpectralSPD(N, rotation=rotation)
        start = geoopt.ManifoldParameter(pack(eye, torch.ones(N, dtype=DTYPE)), manifold=ours)
        gap = lambda p: float(f_ours(p) - f_star)  # noqa: E731
        runs[f"spectral, {rotation} rotation"] = run(start, f_ours, gap)
    with warnings.catch_warnings():
        # geoopt's SPD transport calls torch.jit.script at run time (its sym_funcm).
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=DeprecationWarning)
        spd_start = geoopt.ManifoldParameter(eye.clone(), manifold=spd)
        runs["geoopt SPD"] = run(spd_start, f_spd, lambda p: float(f_spd(p) - f_star))
    f0 = float(torch.trace(Q) - f_star)
    print(f"log-det problem, n = {N}, float64, start S = I, f(I) - f* = {f0:.2f}")
    print(f"geoopt.optim.RiemannianAdam, lr = {LR}, {ITERS} iterations, autograd gradients\n")
    names = list(runs)
    print("| iteration | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for k in (1, 10, 50, 100, 200, 300, 400):
        if k <= ITERS:
            print(f"| {k} | " + " | ".join(f"{runs[n][0][k - 1]:.2e}" for n in names) + " |")
    ms = {n: 1e3 * t for n, (_, t) in runs.items()}
    print("| ms / step (median) | " + " | ".join(f"{ms[n]:.3f}" for n in names) + " |")
    print()
    for n in names[:2]:
        print(f"per-step time ratio {n} / geoopt SPD: {ms[n] / ms['geoopt SPD']:.2f}")
    failed = [n for n, (g, _) in runs.items() if not g[-1] < 1e-4 * f0]
    if failed:
        print(f"gap not reduced by 1e4: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
