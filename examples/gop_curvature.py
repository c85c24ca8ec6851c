"""Curvature learning from a gradient stream (GOP), then preconditioning with S^(-1/2).

A stream of gradient batches g ~ N(0, Sigma) (n = 50, eigenvalues of Sigma from 0.1 to 10) is
fed to three curvature estimators, on the same batches:

* spectral, exact Cayley (float64): ``Gaussian.precision_step(x, GOP(batch))`` on SpectralSPD;
* spectral, Neumann Cayley (float32): the product-only map, with a Newton-Schulz
  re-orthogonalisation of B every 100 steps (``SpectralSPD.reorthogonalize``);
* the default scheme (float64): ``S <- (1 - beta2) S + beta2 batch^T batch / k``, which needs an
  eigendecomposition (``torch.linalg.eigh``) for every root.

With gamma = 1 the fixed point is S = E[g g^T] = Sigma, and one spectral step equals the default
step up to O(beta2^2) (paper Claim 2). The spectral estimators give the root from the factors,
``S^(-1/2) g = B (d^(-1/2) * (B^T g))``, without any decomposition. The preconditioned gradients
should be white: the condition number of S^(-1/2) Sigma S^(-1/2) drops from cond(Sigma) = 100
towards 1.

Note: the Neumann map rescales the rotation argument to Frobenius norm <= 0.25 (its region of
validity). In this stream almost every rotation step is larger than that (median norm ~1.4:
the step U_ij = -q_i q_j / (d_i - d_j) is large between close eigenvalues), so the Neumann run
takes shorter B steps; it averages more noise and so drifts further from the default iterate.

Run:  python examples/gop_curvature.py
"""

from __future__ import annotations

import sys
import time

import torch

from manifold_spectral import GOP, Gaussian, SpectralSPD, linalg

N = 50
STEPS = 1500
BATCH = 16
BETA2 = 0.02
REORTHO_EVERY = 100


def make_covariance(n: int, seed: int = 0) -> torch.Tensor:
    """Sigma = U Diag(logspace(-1, 1)) U^T with a Haar-random U (float64)."""
    g = torch.Generator().manual_seed(seed)
    U, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    U = U * torch.sign(torch.diagonal(R))
    return (U * torch.logspace(-1, 1, n, dtype=torch.float64)) @ U.T


def rel(A: torch.Tensor, B: torch.Tensor) -> float:
    """Relative Frobenius distance ||A - B|| / ||B|| (in float64)."""
    A, B = A.double(), B.double()
    return float(torch.linalg.matrix_norm(A - B) / torch.linalg.matrix_norm(B))


def cond(A: torch.Tensor) -> float:
    """Condition number of a symmetric PD matrix (a diagnostic only)."""
    ev = torch.linalg.eigvalsh(A.double())
    return float(ev[-1] / ev[0])


def main() -> int:
    torch.set_num_threads(1)  # 50 x 50 matrices: one thread is fastest and never oversubscribes
    Sigma = make_covariance(N)
    L = torch.linalg.cholesky(Sigma)

    M64 = SpectralSPD(N, dtype=torch.float64)
    M32 = SpectralSPD(N, dtype=torch.float32)
    exact = Gaussian(M64, beta2=BETA2, gamma=1.0, root=2, cayley="exact")
    neumann = Gaussian(M32, beta2=BETA2, gamma=1.0, root=2, cayley="neumann")
    x64, x32 = M64.origin(), M32.origin()
    S_default = torch.eye(N, dtype=torch.float64)

    seconds = {"exact": 0.0, "neumann": 0.0, "default": 0.0}
    stream = torch.Generator().manual_seed(1)
    for t in range(STEPS):
        batch = torch.randn(BATCH, N, generator=stream, dtype=torch.float64) @ L.T  # (k, n)

        t0 = time.perf_counter()
        x64 = exact.precision_step(x64, GOP(batch))
        t1 = time.perf_counter()
        x32 = neumann.precision_step(x32, GOP(batch.float()))
        if (t + 1) % REORTHO_EVERY == 0:
            x32 = M32.reorthogonalize(x32)  # two products, no decomposition
        t2 = time.perf_counter()
        S_default = (1 - BETA2) * S_default + BETA2 * (batch.T @ batch) / BATCH
        t3 = time.perf_counter()
        seconds["exact"] += t1 - t0
        seconds["neumann"] += t2 - t1
        seconds["default"] += t3 - t2

    S64, S32 = M64.to_matrix(x64), M32.to_matrix(x32)
    print(
        f"GOP stream: n = {N}, {STEPS} steps of {BATCH} gradients, beta2 = {BETA2}, "
        f"gamma = 1, start S = I\n"
    )
    print(
        "| estimator | rel. error to E[gg^T] | rel. diff. to default | orth. error of B "
        "| ms / step |"
    )
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("spectral, exact Cayley (f64)", S64, linalg.orthogonality_error(x64.B), "exact"),
        ("spectral, Neumann Cayley (f32)", S32, linalg.orthogonality_error(x32.B), "neumann"),
        ("default scheme (f64)", S_default, None, "default"),
    ]
    for name, S, orth, key in rows:
        orth_s = "-" if orth is None else f"{float(orth):.1e}"
        print(
            f"| {name} | {rel(S, Sigma):.3f} | {rel(S, S_default):.3f} | {orth_s} | "
            f"{1e3 * seconds[key] / STEPS:.3f} |"
        )
    print("\n(orth. error = ||B^T B - I||_F; the default scheme's time excludes its eigh)")

    # Precondition fresh gradients with S^(-1/2): from the factors vs from eigh of the default S.
    g = torch.randn(256, N, generator=stream, dtype=torch.float64) @ L.T  # (256, n)
    t0 = time.perf_counter()
    P64 = M64.apply_power(x64, g.T, -0.5)  # B (d^-1/2 * (B^T g)): no decomposition
    t1 = time.perf_counter()
    P32 = M32.apply_power(x32, g.T.float(), -0.5)
    t2 = time.perf_counter()
    evals, V = torch.linalg.eigh(S_default)  # what the default scheme has to do
    P_def = V @ (evals.rsqrt()[:, None] * (V.T @ g.T))
    t3 = time.perf_counter()

    roots = {  # dense S^(-1/2), only to measure how white the preconditioned gradients are
        "exact": M64.power(x64, -0.5),
        "neumann": M32.power(x32, -0.5).double(),
        "default": (V * evals.rsqrt()) @ V.T,
    }
    print("\nPreconditioning 256 fresh gradients with S^(-1/2):\n")
    print("| root from | cond(S^-1/2 Sigma S^-1/2) | rel. diff. to default root | ms |")
    print("|---|---:|---:|---:|")
    print(f"| (no preconditioning) | {cond(Sigma):.1f} | - | - |")
    for name, key, P, sec in [
        ("spectral factors, exact (f64)", "exact", P64, t1 - t0),
        ("spectral factors, Neumann (f32)", "neumann", P32, t2 - t1),
        ("eigh of default S (f64)", "default", P_def, t3 - t2),
    ]:
        whitened = roots[key] @ Sigma @ roots[key]
        print(f"| {name} | {cond(whitened):.2f} | {rel(P, P_def):.3f} | {1e3 * sec:.2f} |")

    ok = rel(S64, Sigma) < 0.3 and rel(S32, Sigma) < 0.3 and rel(S64, S_default) < 0.2
    ok = ok and float(linalg.orthogonality_error(x32.B)) < 1e-3
    ok = ok and all(cond(r @ Sigma @ r) < 10 for r in roots.values())
    print(
        "\nlearned curvature tracks E[gg^T] and whitens the gradients."
        if ok
        else "\nUNEXPECTED: see the tables above."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
