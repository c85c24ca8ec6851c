"""Optimizer step cost: SpectralKron vs AdamW, SOAP and Muon on square layers and a block.

Workloads: one square n x n weight for n in {256, 512, 1024, 2048}, and "block": the matrices
and vectors of a pre-LN transformer block of width 256 (qkv 768 x 256, proj 256 x 256,
fc1 1024 x 256, fc2 256 x 1024, biases and LayerNorm scales). Every step gets a fresh random
gradient (drawn outside the clock); parameters are float32 (torch's mixed precision keeps
float32 master weights).

Optimizers (one run, interleaved round-robin with the order rotated every repeat; each cell is
the median over the repeats, and the ratios come from the same run):

* AdamW: ``torch.optim.AdamW`` (default ``foreach``);
* SOAP: ``pytorch_optimizer.SOAP`` with ``precondition_frequency = 2`` (its eigenbases are
  refreshed by one power-iteration + QR in float32 every 2 steps; the first step is an eigh);
* Muon: ``pytorch_optimizer.Muon`` (5 Newton-Schulz iterations) on the matrices, its AdamW on
  the vectors;
* SpectralKron (ours): its defaults (eigenvalue correction, Neumann Cayley) with
  ``update_every = 2`` (equal to SOAP's period), float32 or bfloat16 state.

Steps alternate between a curvature update and a precondition-only step for SOAP and
SpectralKron, so each repeat times two consecutive steps; "ms / step" is their mean.
"update ms" is SpectralKron's update step alone, for which the ``KroneckerSpectralSPD``
docstring counts (32 + 4k) n^3 flops at a = b = n with k squarings of the Neumann map (Z, W_L,
W_R, two Neumann Cayley maps, the B products and the preconditioning product); the
eigenvalue correction rotates the gradient and the momentum (``B_L^T (.) B_R``, 8 n^3) and
the result back (4 n^3) in the basis before the update, whose GOP reuses the rotated
gradient (no separate Z): (32 + 4k) n^3 as well (a
precondition-only step is 12 n^3, a Newton-Schulz re-orthogonalisation every 10 updates
adds 8 n^3). "GEMM %" divides those flops per second by
the rate of one n x n product in the state dtype as the update takes it (``linalg.matmul``),
timed in the same run. "state MiB" sums the
bytes of every tensor in ``optimizer.state`` after the run.

Run:  python benchmarks/bench_optim_step.py [--sizes 256 512] [--no-block] [--threads 1]
      [--repeat-scale 0.5] [--no-write] [--plot PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from torch import nn

from manifold_spectral.linalg import matmul
from manifold_spectral.optim import SpectralKron
from manifold_spectral.optim.option_defaults import NEUMANN_SQUARINGS

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- optim-step:start -->", "<!-- optim-step:end -->"
#: Repeats (pairs of steps) per workload; SOAP and Muon at 2048 take seconds per step.
REPEATS = {256: 12, 512: 8, 1024: 4, 2048: 2, "block": 10}
#: Flops of one update at a = b = n, in n^3 (``KroneckerSpectralSPD``'s count): each of the
#: defaults' squarings of the Neumann map is one more product per factor.
UPDATE_FLOPS = 32 + 4 * NEUMANN_SQUARINGS
WARMUP = 2  # pairs of steps before timing (SOAP's first step is an eigh and no update)


def workload(name: int | str) -> list[nn.Parameter]:
    torch.manual_seed(0)
    if name == "block":
        d = 256
        shapes = [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        shapes += [(d,)] * 4  # two LayerNorms
        return [nn.Parameter(torch.randn(*s) / 16) for s in shapes]
    return [nn.Parameter(torch.randn(name, name) / name**0.5)]


def optimizers(params_for: Callable[[], list[nn.Parameter]]) -> dict[str, torch.optim.Optimizer]:
    import pytorch_optimizer as po

    def muon(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        mats = [p for p in params if p.ndim >= 2]
        vecs = [p for p in params if p.ndim < 2]
        groups = [dict(params=mats, use_muon=True)]
        if vecs:
            groups.append(dict(params=vecs, use_muon=False))
        return po.Muon(groups, lr=0.02)

    sk = dict(lr=1e-4, update_every=2)  # the defaults at SOAP's period
    return {
        "AdamW": torch.optim.AdamW(params_for(), lr=1e-3),
        "SOAP": po.SOAP(params_for(), lr=3e-3, precondition_frequency=2),
        "Muon": muon(params_for()),
        "ours fp32": SpectralKron(params_for(), **sk),
        "ours bf16": SpectralKron(params_for(), state_dtype=torch.bfloat16, **sk),
    }


def state_bytes(opt: torch.optim.Optimizer) -> int:
    total = 0

    def add(v: object) -> None:
        nonlocal total
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, (list, tuple)):
            for w in v:
                add(w)
        elif isinstance(v, dict):
            for w in v.values():
                add(w)

    for st in opt.state.values():
        add(st)
    return total


def gemm_seconds(n: int, dtype: torch.dtype, reps: int = 3) -> float:
    """One n x n product in ``dtype`` as the update takes it (``linalg.matmul``: on a CPU
    without 16-bit matrix units, 16-bit operands are multiplied in float32)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    matmul(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        matmul(a, b)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: int | str, repeats: int) -> dict[str, dict[str, float]]:
    """Interleaved timing of every optimizer on workload ``name``."""
    opts = optimizers(lambda: workload(name))
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in opts}
    keys = list(opts)
    for r in range(WARMUP + repeats):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            opt = opts[k]
            pair = []
            for _ in range(2):
                for group in opt.param_groups:
                    for p in group["params"]:
                        p.grad = torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5
                t = time.perf_counter()
                opt.step()
                pair.append(time.perf_counter() - t)
            if r >= WARMUP:
                times[k].append((pair[0], pair[1]))
    out: dict[str, dict[str, float]] = {}
    for k, ts in times.items():
        first = statistics.median(t[0] for t in ts)
        second = statistics.median(t[1] for t in ts)
        step = statistics.median((a + b) / 2 for a, b in ts)
        # SpectralKron updates at odd steps (1, 3, ...): the first of each timed pair.
        out[k] = dict(step=step, update=first, precond=second, state=state_bytes(opts[k]))
    if isinstance(name, int):
        out["gemm"] = {
            "fp32": gemm_seconds(name, torch.float32),
            "bf16": gemm_seconds(name, torch.bfloat16),
        }
    return out


def fmt_ms(s: float) -> str:
    ms = 1e3 * s
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def table(results: dict[int | str, dict[str, dict[str, float]]]) -> str:
    head = (
        "| layer | AdamW ms | SOAP ms | Muon ms | ours fp32 ms | ours bf16 ms "
        "| ours fp32 / AdamW | / SOAP | / Muon | ours bf16 / AdamW | / SOAP | / Muon |"
    )
    lines = [head, "|---" + "|---:" * 11 + "|"]
    for name, r in results.items():
        label = f"{name} x {name}" if isinstance(name, int) else "block (d=256)"
        cells = [fmt_ms(r[k]["step"]) for k in ("AdamW", "SOAP", "Muon", "ours fp32", "ours bf16")]
        for ours in ("ours fp32", "ours bf16"):
            cells += [f"{r[ours]['step'] / r[k]['step']:.2f}" for k in ("AdamW", "SOAP", "Muon")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| layer | ours update step ms (fp32 / bf16) | flops of one update | GEMM ms (fp32 / bf16) "
        "| update at % of GEMM rate (fp32 / bf16) | precondition-only step ms (fp32 / bf16) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if not isinstance(name, int):
            continue
        flops = UPDATE_FLOPS * name**3
        g32, g16 = r["gemm"]["fp32"], r["gemm"]["bf16"]
        u32, u16 = r["ours fp32"]["update"], r["ours bf16"]["update"]
        frac32 = 100 * (flops / u32) / (2 * name**3 / g32)
        frac16 = 100 * (flops / u16) / (2 * name**3 / g16)
        lines.append(
            f"| {name} x {name} | {fmt_ms(u32)} / {fmt_ms(u16)} "
            f"| {UPDATE_FLOPS} n^3 = {flops / 1e9:.2f} G "
            f"| {fmt_ms(g32)} / {fmt_ms(g16)} | {frac32:.0f}% / {frac16:.0f}% "
            f"| {fmt_ms(r['ours fp32']['precond'])} / {fmt_ms(r['ours bf16']['precond'])} |"
        )
    lines += [
        "",
        "| layer | parameters MiB | AdamW | SOAP | Muon | ours fp32 | ours bf16 "
        "| ours bf16 / AdamW | ours bf16 / SOAP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        label = f"{name} x {name}" if isinstance(name, int) else "block (d=256)"
        params = sum(p.numel() * 4 for p in workload(name)) / 2**20
        mib = {
            k: r[k]["state"] / 2**20 for k in ("AdamW", "SOAP", "Muon", "ours fp32", "ours bf16")
        }
        cells = [f"{v:.2f}" for v in mib.values()]
        lines.append(
            f"| {label} | {params:.2f} | " + " | ".join(cells) + f" | "
            f"{mib['ours bf16'] / mib['AdamW']:.2f} | {mib['ours bf16'] / mib['SOAP']:.2f} |"
        )
    return "\n".join(lines)


def plot(results: dict[int | str, dict[str, dict[str, float]]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = [n for n in results if isinstance(n, int)]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    style = {
        "AdamW": "tab:blue",
        "SOAP": "tab:green",
        "Muon": "tab:purple",
        "ours fp32": "tab:orange",
        "ours bf16": "tab:red",
    }
    for k, c in style.items():
        ax1.plot(sizes, [1e3 * results[n][k]["step"] for n in sizes], "o-", color=c, label=k)
        ax2.plot(sizes, [results[n][k]["state"] / 2**20 for n in sizes], "o-", color=c, label=k)
    ax1.plot(sizes, [1e3 * results[n]["gemm"]["fp32"] for n in sizes], "k--", label="one GEMM")
    for ax, title in ((ax1, "ms / optimizer step"), (ax2, "optimizer state (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (n x n layer)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--no-block", dest="block", action="store_false")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine, 2 OpenMP threads contend)",
    )
    parser.add_argument("--repeat-scale", type=float, default=1.0, help="multiply the repeats")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument("--plot", type=Path, default=Path("results/optim_step.png"))
    args = parser.parse_args(argv)
    try:
        import pytorch_optimizer  # noqa: F401
    except ImportError:
        raise SystemExit("needs pytorch-optimizer: pip install pytorch-optimizer") from None
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    results: dict[int | str, dict[str, dict[str, float]]] = {}
    names: list[int | str] = [*args.sizes, *(["block"] if args.block else [])]
    for name in names:
        base = REPEATS.get(name, 2)
        reps = max(1, round(base * args.repeat_scale))
        t = time.perf_counter()
        results[name] = bench(name, reps)
        print(f"  {name}: {reps} repeats, {time.perf_counter() - t:.0f} s", file=sys.stderr)
    wall = time.perf_counter() - start
    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load:.1f} at start; whole run "
        f"{wall:.0f} s. Median over repeats of two consecutive steps (one curvature update, one "
        "precondition-only step for SOAP and ours); ratios < 1: ours is faster."
    )
    block = f"{header}\n\n{table(results)}"
    print(block)
    if any(isinstance(n, int) for n in results):
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
        print(f"\nplot: {args.plot}", file=sys.stderr)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
