"""What does SpectralKron's learned eigenbasis cost in held-out loss? An oracle-basis study.

SOAP runs Adam in the eigenbasis of ``EMA(G G^T)``, ``EMA(G^T G)``, recomputed by a
decomposition; ``SpectralKron`` (eigenvalue correction on, its default) runs the same
second-moment scaling in a basis learned by Riemannian steps. This script swaps the basis
alone: ``OracleKron`` takes each Kronecker parameter's direction in the exact eigenbasis
(``torch.linalg.eigh``: a diagnostic, never the package's per-step path) of an EMA of the
gradients up to the previous step (where SOAP's basis comes from), either of

* ``own``: SpectralKron's own target, ``EMA(G S_R^-1 G^T)``, ``EMA(G^T S_L^-1 G)`` at the
  current factors (``bench_basis_tracking.targets``; EMA coefficient ``1 - beta2 = 0.9``, the
  memory of its curvature step), or
* ``soap``: SOAP's ``EMA(G G^T)``, ``EMA(G^T G)`` (coefficient 0.95, SOAP's ``shampoo_beta``
  at the ``1 - beta2 = 0.05`` that wins on this task),

while everything else runs untouched: momentum, the second moment ``v`` (now in the oracle
basis) and the curvature learning itself, whose GOP is still taken in the learned basis.
The gap that closes is the cost of the learned basis; what stays is the rest of the method.
A row with ``cayley="exact"`` (the learned basis, its rotations not bounded by the Neumann
map's spectral-norm budget ``linalg.NEUMANN_MAX_NORM``) separates how fast the basis can
turn from where it is going; the default map takes one squaring (``C(N / 2)^2``: the budget
twice as far, products only), rows with ``neumann_squarings=0`` (the paper's map) and ``2``
(four times) measure what the budget costs.

Task: ``bench_heldout``'s ``digits-mlp`` (MLP 64-128-128-10 on raw pixels), 300 steps,
float32, one thread, curvature every step, ``nn_training.train``'s schedule. Every row runs
the same seeds at each lr of its grid; the table gives each row's best lr (lowest mean) and
paired differences per seed against the defaults and against SOAP at their best lr.

Run:  python benchmarks/bench_basis_oracle.py            # about 6 minutes on one thread
      python benchmarks/bench_basis_oracle.py --seeds 3 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from bench_basis_tracking import targets
from bench_heldout import _mean_se, make_task
from torch import Tensor, nn

from manifold_spectral._threads import torch_threads
from manifold_spectral.experiments import nn_training
from manifold_spectral.experiments.nn_training import optimizers
from manifold_spectral.optim import SpectralKron

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- basis-oracle:start -->", "<!-- basis-oracle:end -->"


class OracleKron(SpectralKron):
    """``SpectralKron`` whose Kronecker directions are taken in the exact eigenbasis of the
    ``target`` EMA (``"own"`` or ``"soap"``, coefficient ``beta``) of the gradients before
    the current one; the curvature state evolves exactly as without the oracle (module
    docstring). ``bases`` holds the last step's ``(B_L, B_R)`` per parameter."""

    def __init__(self, params: Any, *, target: str, beta: float, **kw: Any) -> None:
        if target not in ("own", "soap"):
            raise ValueError(f"target: expected 'own' or 'soap', got {target!r}")
        super().__init__(params, batched=False, **kw)  # one preconditioner per parameter
        self.target, self.beta = target, beta
        self.ema: dict[Tensor, tuple[Tensor, Tensor]] = {}
        self.bases: dict[Tensor, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self.bases = {}
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if p.grad is None or p.ndim < 2 or (st and "pc_B_L" not in st):
                    continue
                G = p.grad.double().reshape(p.shape[0], -1)
                # the first step has no factors yet: its own target is SOAP's (S = I)
                t = targets(G, st if self.target == "own" and st else None)
                new = (t["TL"], t["TR"]) if "TL" in t else (t["L"], t["R"])
                old = self.ema.get(p)
                if old is None:
                    self.ema[p] = tuple((1 - self.beta) * n for n in new)
                    continue
                dtype = st["pc_B_L"].dtype
                self.bases[p] = tuple(torch.linalg.eigh(m)[1].to(dtype) for m in old)
                self.ema[p] = tuple(
                    self.beta * o + (1 - self.beta) * n for o, n in zip(old, new, strict=True)
                )
        out = super().step(closure)
        for p in self.ema:  # built by the first step: from the second on, the oracle's
            pre = self._preconditioners[p][1]
            if pre.kind == "kronecker" and "precondition_corrected" not in vars(pre):
                pre.precondition_corrected = _oracle_direction(self, p, pre)
        return out


def _oracle_direction(opt: OracleKron, p: Tensor, pre: Any) -> Callable[..., Any]:
    """``pre.precondition_corrected`` with the oracle basis for the direction and ``v``; the
    rotated gradient it returns (the curvature step's GOP) stays in the learned basis."""
    learned = pre.precondition_corrected

    def corrected(state, direction, grad, v, step, beta):
        basis = opt.bases.get(p)
        if basis is None:
            return learned(state, direction, grad, v, step, beta)
        oracle = dict(state, B_L=basis[0], B_R=basis[1])
        u, v_new, _ = learned(oracle, direction, grad, v, step, beta)
        g = grad.reshape(pre.shape).to(pre.manifold.dtype)
        return u, v_new, pre.manifold.to_eigenbasis(pre.point(state), g)

    return corrected


def _build(**kw: Any) -> Callable[[nn.Module, dict[str, float], int], torch.optim.Optimizer]:
    def build(model: nn.Module, hp: dict[str, float], update_every: int) -> Any:
        return OracleKron(model.parameters(), lr=hp["lr"], update_every=update_every, **kw)

    return build


def _quarter_decades(lo: float, n: int) -> list[float]:
    return [lo * 10 ** (i / 4) for i in range(n)]


#: label -> (registry name, builder or None for the registry's own, lr grid, fixed knobs).
ROWS: dict[str, tuple[str, Any, list[float], dict[str, float]]] = {
    "SpectralKron defaults": ("spectral-p2", None, _quarter_decades(1e-3, 3), {}),
    "defaults, cayley='exact' (rotations not bounded)": (
        "exact-cayley",
        optimizers._spectral(cayley="exact"),
        _quarter_decades(1e-3, 3),
        {},
    ),
    "defaults, neumann_squarings=0 (the paper's map: rotations bounded 2x closer)": (
        "plain-neumann",
        optimizers._spectral(neumann_squarings=0),
        _quarter_decades(1e-3, 3),
        {},
    ),
    "defaults, neumann_squarings=2 (rotations bounded 2x further)": (
        "squared-neumann",
        optimizers._spectral(neumann_squarings=2),
        _quarter_decades(1e-3, 3),
        {},
    ),
    "defaults, direction in eigh(own target, EMA 0.9)": (
        "oracle-own",
        _build(target="own", beta=0.9),
        _quarter_decades(1e-3, 3),
        {},
    ),
    "defaults, direction in eigh(SOAP's EMA(GG^T), 0.95)": (
        "oracle-soap",
        _build(target="soap", beta=0.95),
        _quarter_decades(1e-3, 3),
        {},
    ),
    "SOAP (1 - beta2 = 0.05)": ("soap", None, _quarter_decades(5.3e-3, 3), {"1-beta2": 0.05}),
}


def measure(seeds: int, steps: int) -> dict[str, dict[float, list[float]]]:
    """Per row and lr: the held-out losses of seeds 1 .. ``seeds``."""
    task, out = make_task("digits-mlp"), {}
    for label, (name, build, lrs, fixed) in ROWS.items():
        if build is not None:  # registered for nn_training.train, as the other methods
            optimizers.OPTIMIZERS[name] = optimizers.OptimizerSpec(name, label, "k", {}, build)
        try:
            out[label] = {
                lr: [
                    nn_training.train(
                        task, name, {"lr": lr, **fixed}, s, steps, update_every=1, precision="fp32"
                    ).final
                    for s in range(1, seeds + 1)
                ]
                for lr in lrs
            }
        finally:  # the registry is the CLI's list of methods: leave it as it was
            if build is not None:
                del optimizers.OPTIMIZERS[name]
        means = {f"{k:.3g}": round(float(np.mean(v)), 4) for k, v in out[label].items()}
        print(label, means, file=sys.stderr, flush=True)
    return out


def format_table(results: dict[str, dict[float, list[float]]]) -> str:
    """Row: best lr (lowest mean), held-out mean ± s.e. there, and the paired per-seed
    differences against the first row (the defaults) and the last (SOAP) at their best lr."""
    best = {r: min(res, key=lambda lr: np.mean(res[lr])) for r, res in results.items()}
    first, last = next(iter(results)), list(results)[-1]
    lines = [
        "| variant | lr | held-out loss | minus defaults (paired) | minus SOAP (paired) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r, res in results.items():
        x = np.asarray(res[best[r]])
        cells = [f"{best[r]:.2g}", "{:.4f} ± {:.4f}".format(*_mean_se(x))]
        for ref in (first, last):
            d = x - np.asarray(results[ref][best[ref]])
            cells.append("{:+.4f} ± {:.4f}".format(*_mean_se(list(d))) if ref != r else "0")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 1 .. N at every lr")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    with torch_threads(1):
        results = measure(args.seeds, args.steps)
    grids = "; ".join(f"{r}: " + ", ".join(f"{lr:.3g}" for lr in res) for r, res in results.items())
    block = (
        f"Measured {datetime.date.today().isoformat()} (`bench_basis_oracle.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`); digits-mlp, {args.steps} "
        f"steps, float32, one thread; held-out loss mean ± standard error over seeds "
        f"1-{args.seeds} at each row's best lr of its quarter-decade grid ({grids}); torch "
        f"{torch.__version__}; {machine()}; load average {load:.1f} at start; run "
        f"{time.perf_counter() - t0:.0f} s.\n\n{format_table(results)}"
    )
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
