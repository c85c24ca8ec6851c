"""How well does SpectralKron's learned eigenbasis track the eigenbasis of its curvature?

SOAP runs Adam in the eigenbasis of ``L = EMA(G G^T)`` and ``R = EMA(G^T G)``, recomputed by
a decomposition; SpectralKron learns ``B_L``, ``B_R`` by Riemannian steps. Along one training
run of a byte-level GPT on the standard library's source (``real_tasks.StdlibBytesTask``), this
script keeps, for four weight matrices, SOAP's factors (EMA coefficient ``--beta``) and the
target of SpectralKron's own Kronecker factors, ``T_L = EMA(G S_R^(-1) G^T)`` and
``T_R = EMA(G^T S_L^(-1) G)`` (the fixed point of its curvature step), and reports the
off-diagonal energy of each in the learned basis,

    off(B, L) = ||B^T L B - Diag(B^T L B)||_F / ||B^T L B||_F,

0 for a perfectly tracked eigenbasis; the identity basis is the reference of no tracking.
Values are the mean over the four matrices and both sides, at the last step. Each
configuration is a full training run (same data and initialisation), so its final training
loss (mean of the last 20 steps) is reported as well.

Run:  python benchmarks/bench_basis_tracking.py        # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral.experiments import nn_training as nt
from manifold_spectral.experiments.real_tasks import make_real_task
from manifold_spectral.optim import SpectralKron

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- basis-tracking:start -->", "<!-- basis-tracking:end -->"
LAYERS = ("blocks.0.qkv.weight", "blocks.1.fc1.weight", "blocks.1.fc2.weight", "head.weight")

#: name -> (options, learning rate): the paper's scheme at its old recommended settings, the
#: defaults, the defaults with the exact Cayley map (no norm budget on the rotation), and the
#: defaults with the rotation at the gaps before the eigenvalue step (the RGD step's angle).
CONFIGS: dict[str, tuple[dict, float]] = {
    "paper scheme (beta2 0.01, gap_damping 0.01, no correction)": (
        dict(nt.PAPER_SCHEME, state_dtype=None, clip_rms=None),
        3e-3,
    ),
    "defaults": ({}, 3e-3),
    "defaults, exact Cayley": ({"cayley": "exact"}, 3e-3),
    "defaults, updated_gaps=False": ({"updated_gaps": False}, 3e-3),
}


def off(B: torch.Tensor, L: torch.Tensor) -> float:
    M = B.T @ L @ B
    return float((M - torch.diag(torch.diag(M))).norm() / M.norm())


def targets(G: torch.Tensor, st: dict | None) -> dict[str, torch.Tensor]:
    """One gradient matrix's terms of the EMAs whose eigenbases are compared: SOAP's
    ``L = G G^T``, ``R = G^T G`` and, given the parameter's SpectralKron state ``st`` (not
    empty), its own ``TL = G S_R^-1 G^T``, ``TR = G^T S_L^-1 G`` at the current factors
    (``S = B Diag(d) B^T``; alpha, a scalar, leaves the eigenbasis alone): the one-sided sums
    whose EMA is the fixed point of its curvature step."""
    new = {"L": G @ G.T, "R": G.T @ G}
    if st:
        iR = st["pc_B_R"].double() / st["pc_d_R"].double() @ st["pc_B_R"].double().T
        iL = st["pc_B_L"].double() / st["pc_d_L"].double() @ st["pc_B_L"].double().T
        new |= {"TL": G @ iR @ G.T, "TR": G.T @ iL @ G}
    return new


def run(opts: dict, lr: float, steps: int, beta: float) -> dict[str, float]:
    torch.manual_seed(0)
    task = make_real_task(
        "stdlib", seq_len=64, batch=16, model=dict(dim=64, heads=4, ff=256, layers=2)
    )
    model = task.make_model(1)
    opt = SpectralKron(model.parameters(), lr=lr, **opts)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, nt.lr_schedule(steps))
    params = dict(model.named_parameters())
    ema: dict[str, dict[str, torch.Tensor]] = {n: {} for n in LAYERS}
    gen = torch.Generator().manual_seed(11_001)
    losses = []
    for _ in range(steps):
        x, _ = task.sample(task.batch, gen)
        opt.zero_grad()
        loss = task.loss(model, x)
        loss.backward()
        losses.append(float(loss.detach()))
        for n in LAYERS:
            p = params[n]
            new = targets(p.grad.double().reshape(p.shape[0], -1), opt.state[p])
            for k, v in new.items():
                ema[n][k] = v if k not in ema[n] else beta * ema[n][k] + (1 - beta) * v
        opt.step()
        sched.step()
    out = {"soap": 0.0, "own": 0.0, "identity": 0.0}
    for n in LAYERS:
        st = opt.state[params[n]]
        BL, BR = st["pc_B_L"].double(), st["pc_B_R"].double()
        e = ema[n]
        out["soap"] += off(BL, e["L"]) + off(BR, e["R"])
        out["own"] += off(BL, e["TL"]) + off(BR, e["TR"])
        eye = torch.eye
        out["identity"] += off(eye(len(e["L"]), dtype=BL.dtype), e["L"]) + off(
            eye(len(e["R"]), dtype=BL.dtype), e["R"]
        )
    out = {k: v / (2 * len(LAYERS)) for k, v in out.items()}
    out["loss"] = sum(losses[-20:]) / 20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--beta", type=float, default=0.95, help="EMA of the reference factors")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        "| configuration | off-diagonal energy vs SOAP's `EMA(G G^T)` | vs its own target "
        "| identity basis vs SOAP's | final training loss (nats) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (opts, lr) in CONFIGS.items():
        r = run(opts, lr, args.steps, args.beta)
        rows.append(
            f"| {name} | {r['soap']:.2f} | {r['own']:.2f} | {r['identity']:.2f} | {r['loss']:.3f} |"
        )
        print(rows[-1], flush=True)
    block = (
        f"Measured {datetime.date.today().isoformat()} (`bench_basis_tracking.py "
        f"--steps {args.steps} --beta {args.beta}`); byte GPT dim 64, 2 blocks, context 64, "
        f"batch 16, lr 3e-3 with warm-up + cosine; torch {torch.__version__}; {machine()}.\n\n"
        + "\n".join(rows)
    )
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
