"""Gradient-free minimisation with spectral NES (paper Sec. 4.3).

1. ``nes.minimize`` on a 10-dimensional rotated ellipsoid (condition number 1e6): function
   values only, the search precision ``S = B Diag(d) B^T`` learned on ``SpectralSPD``. The
   learned ``S`` lines up with the Hessian of the quadratic (up to scale).
2. The pycma-style ask/tell loop on Rosenbrock, with torch tensors in and out.
3. CMA-ES (pycma) on the same ellipsoid for comparison, when ``cma`` is installed.

Exits with status 1 when a run does not reach its target. Runs in a few seconds.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from manifold_spectral.solvers import functions, nes

ok = True

# 1. minimize -----------------------------------------------------------------------------
n = 10
f = functions.RotatedEllipsoid(n, cond=1e6, seed=0)
x0 = np.full(n, 3.0)
res = nes.minimize(f, x0, sigma0=1.0, target=1e-8, seed=1, max_evals=50_000)
print(
    f"rotated ellipsoid, n={n}: f = {res.fun:.2e} after {res.nfev} evaluations, "
    f"{res.nit} generations, {res.time:.2f} s ({res.message})"
)
ok &= res.success

# The search precision after the run, read from its factors (no inverse): compare its shape
# with the Hessian R^T Diag(h) R of the quadratic.
es = nes.NES(x0, 1.0, seed=1, target=1e-8, max_evals=50_000)
es.optimize(f, vectorized=True)
S = es.dist.manifold.to_matrix(es.dist.point)
H = torch.as_tensor(f.R.T @ np.diag(1e6 ** (np.arange(n) / (n - 1))) @ f.R)
cosine = float((S * H).sum() / (S.norm() * H.norm()))
d = es.dist.point.d
print(
    f"cosine(S, Hessian) = {cosine:.4f}; eigenvalue spread of S: {float(d.max() / d.min()):.2e}"
    " (Hessian: 1e6)"
)
ok &= cosine > 0.95

# 2. ask / tell with torch tensors ----------------------------------------------------------
es = nes.NES(torch.zeros(8, dtype=torch.float64), 0.5, seed=0, target=1e-8, max_evals=30_000)
while not es.stop():
    X = es.ask()  # a (popsize, 8) torch tensor
    es.tell(X, functions.rosenbrock(X))  # any NaN/Inf would be ranked worst
r = es.result
print(
    f"Rosenbrock, n=8 (ask/tell, torch): f = {r.fun:.2e} at x ~ {r.x.mean():.6f} "
    f"after {r.nfev} evaluations; stop: {r.stop}"
)
ok &= r.success

# 3. CMA-ES on the same ellipsoid -----------------------------------------------------------
try:
    import cma
except ImportError:  # the "baselines" extra
    print("cma not installed: skipping the CMA-ES comparison")
else:
    ref = cma.CMAEvolutionStrategy(x0, 1.0, {"seed": 2, "ftarget": 1e-8, "verbose": -9})
    ref.optimize(lambda x: float(f(np.asarray(x))))
    print(
        f"CMA-ES on the same ellipsoid: f = {ref.result.fbest:.2e} after "
        f"{ref.result.evaluations} evaluations (spectral NES: {res.nfev})"
    )

sys.exit(0 if ok else 1)
