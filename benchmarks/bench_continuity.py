"""Rounding in, rounding out? Two training runs whose gradients differ only by rounding.

The same model, data and optimizer twice; the second run sees the batch's rows permuted (at
step 0 only, or at every step), which changes each gradient by the summation order alone
(relative size ~1e-16 in float64). The table reports how far apart the parameters end up
after ``--steps`` steps, for SpectralKron (defaults and two options), SOAP
(pytorch-optimizer, eigenbasis refreshed every step and every 10th), Adam and SGD, in
float64 and float32. A continuous optimizer on a non-chaotic run keeps the difference at
rounding size; docs/optim.md ("Continuity") explains the SpectralKron rows.

    python benchmarks/bench_continuity.py            # writes benchmarks/README.md and docs/optim.md
    python benchmarks/bench_continuity.py --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme import machine, replace_between  # noqa: E402

from manifold_spectral.optim import SpectralKron  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 24

Factory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def soap(lr: float, frequency: int) -> Factory:
    from pytorch_optimizer import SOAP

    return lambda ps: SOAP(ps, lr=lr, precondition_frequency=frequency)


OPTIMIZERS: dict[str, Factory] = {
    "SpectralKron defaults, lr 3e-3": lambda ps: SpectralKron(ps, lr=3e-3),
    "SpectralKron `warm_start=False`": lambda ps: SpectralKron(ps, lr=3e-3, warm_start=False),
    "SpectralKron `eigenvalue_correction=False`": lambda ps: SpectralKron(
        ps, lr=3e-3, eigenvalue_correction=False
    ),
    "SOAP, lr 3e-3, refresh every step": soap(3e-3, 1),
    "SOAP, lr 3e-3, refresh every 10th": soap(3e-3, 10),
    "Adam, lr 3e-3": lambda ps: torch.optim.Adam(ps, lr=3e-3),
    "Adam, lr 0.1": lambda ps: torch.optim.Adam(ps, lr=0.1),
    "SGD, lr 0.3, momentum 0.9": lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=0.9),
}


def model(dtype: torch.dtype) -> nn.Module:
    """6-8-8-5-3 tanh MLP with a final LayerNorm: rectangular, rank-deficient layers."""
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 5)]
    layers += [nn.Tanh(), nn.Linear(5, 3), nn.LayerNorm(3)]
    return nn.Sequential(*layers).to(dtype)


def data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 3, generator=g)
    perm = torch.randperm(BATCH, generator=torch.Generator().manual_seed(9))
    return X.to(dtype), Y.to(dtype), perm


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest relative difference over the tensors (norms in float64)."""
    return max(
        float(torch.linalg.vector_norm((x - y).double()) / torch.linalg.vector_norm(y.double()))
        for x, y in zip(a, b, strict=True)
    )


def train(make: Factory, dtype: torch.dtype, permuted: Callable[[int], bool], steps: int):
    """Parameters after ``steps`` steps, the first gradient, the first two updates (SOAP's
    first step only sets up its preconditioner), the loss curve."""
    X, Y, perm = data(dtype)
    net = model(dtype)
    opt = make(list(net.parameters()))
    losses, first_grad, updates = [], None, []
    for t in range(steps):
        x, y = (X[perm], Y[perm]) if permuted(t) else (X, Y)
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        before = [p.detach().clone() for p in net.parameters()]
        opt.step()
        if t == 0:
            first_grad = [p.grad.detach().clone() for p in net.parameters()]
        if t < 2:
            updates.append([p.detach() - q for p, q in zip(net.parameters(), before, strict=True)])
        losses.append(float(loss.detach()))
    return [p.detach().clone() for p in net.parameters()], first_grad, updates, losses


def row(name: str, make: Factory, dtype: torch.dtype, steps: int) -> str:
    base, g0, u0, losses = train(make, dtype, lambda t: False, steps)
    once, g1, u1, _ = train(make, dtype, lambda t: t == 0, steps)
    # the first step that moved the parameters (step 1 for SOAP)
    t = 0 if any(bool(u.any()) for u in u0[0]) else 1
    every = train(make, dtype, lambda t: True, steps)[0]
    rises = sum(b > a * 1.01 for a, b in zip(losses, losses[1:], strict=False))
    cells = [f"{rel(g1, g0):.1e}", f"{rel(u1[t], u0[t]):.1e}", f"{rel(once, base):.1e}"]
    cells += [f"{rel(every, base):.1e}", str(rises), f"{losses[-1]:.3f}"]
    return f"| {name} | {str(dtype).removeprefix('torch.')} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0, load = time.time(), os.getloadavg()[0]
    lines = []
    for dtype in (torch.float64, torch.float32):
        for name, make in OPTIMIZERS.items():
            lines.append(row(name, make, dtype, args.steps))
            print(lines[-1], flush=True)
    head = (
        f"Measured {datetime.date.today()} (`bench_continuity.py --steps {args.steps}`); "
        f"torch {torch.__version__}; {machine()}; one thread; load average {load:.1f} at "
        f"start; run {time.time() - t0:.0f} s. A 6-8-8-5-3 tanh MLP with a final LayerNorm, "
        f"MSE on one fixed batch of {BATCH} random rows; the second run sees the rows "
        "permuted. Relative differences (largest over the parameter tensors): of the first "
        "gradient, of the first update that moves the parameters (SOAP: step 1), of the "
        f"parameters after {args.steps} steps with the "
        'rows permuted at step 0 only and at every step; "loss rises": steps whose loss '
        "exceeds the previous one by more than 1% (unpermuted run)."
    )
    table = [
        "| optimizer | dtype | gradient, step 0 | first update | parameters, permuted at "
        "step 0 | parameters, permuted every step | loss rises | final loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]
    block = head + "\n\n" + "\n".join(table)
    if args.no_write:
        print(block)
        return
    for path in (ROOT / "benchmarks" / "README.md", ROOT / "docs" / "optim.md"):
        replace_between(path, "<!-- continuity:start -->", "<!-- continuity:end -->", block)


if __name__ == "__main__":
    main()
