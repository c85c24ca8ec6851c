"""Batched buckets: SpectralKron with ``batched=True`` vs one update per parameter.

``SpectralKron`` updates the same-shaped Kronecker parameters of a group (same state dtype,
device and step count) on one ``batch=k`` manifold: the same formulas, one set of batched
products, and the per-parameter Python work (checks, small kernels) paid once per bucket.
This measures what that buys, per optimizer step, on

* ``12 x n^2``: twelve n x n matrices (n = 32, 64, 128, 256), e.g. the heads or layers of a
  small model;
* ``stack``: the matrices and vectors of four pre-LN transformer blocks of width 128 (qkv
  384 x 128, proj 128 x 128, fc1 512 x 128, fc2 128 x 512: four buckets of four);
* ``mixed``: small layers of different shapes, one of each: two pre-LN blocks of width 32
  (qkv 96 x 32, proj 32 x 32, fc1 64 x 32, fc2 32 x 64, per block) and the kernels of a small
  conv net (8 x 9, 16 x 72), which ``batched`` pads into two buckets
  (``manifolds.kronecker_padding``).

Both settings run interleaved in one process, one thread, float32 parameters, ``update_every
= 1`` (every step is a curvature update; the paper's ``update_every = 2`` halves the update
share), Neumann Cayley, float32 and bfloat16 state; each cell is the median over repeats.
AdamW's step and SOAP's (pytorch-optimizer, its eigenbasis refreshed every step like our
curvature) are timed beside them: the per-parameter overhead of many small matrices against
the elementwise optimizer and against the other Kronecker one. The parameters of the two
settings agree to rounding
(``tests/test_optim_buckets.py::test_batched_buckets_equal_separate_updates``).

A second table runs the small workloads at SOAP's default period, 10 (SOAP's eigenbasis
and our curvature refreshed every tenth step, ``batched=True``, float32 state): the mean
step over whole periods, where the nine steps between refreshes (preconditioning with the
kept basis) dominate.

A third table measures what ``buckets.PAD_OVERHEAD_COST`` rests on: groups of small layers
of different shapes updated separately (``batched=False``) and forced into one padded
bucket, against the padding's cost in ``param_cost`` units per member beyond the first.

Run:  python benchmarks/bench_optim_batched.py [--sizes 32 64] [--no-stack] [--no-mixed]
      [--no-period] [--no-pairs] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from pytorch_optimizer import SOAP
from torch import nn

from manifold_spectral.optim import SpectralKron, buckets
from manifold_spectral.optim.preconditioners import kronecker_cost

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- optim-batched:start -->", "<!-- optim-batched:end -->"
REPEATS = 9
WARMUP = 2


def workload(name: int | str) -> list[nn.Parameter]:
    torch.manual_seed(0)
    if name == "stack":
        d, shapes = 128, []
        for _ in range(4):
            shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d)]
            shapes += [(d,)] * 5  # fc2 bias, two LayerNorms
        return [nn.Parameter(torch.randn(*s) / 16) for s in shapes]
    if name == "mixed":
        d, shapes = 32, [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,)]
        for _ in range(2):
            shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (2 * d, d), (2 * d,), (d, 2 * d)]
            shapes += [(d,)] * 5
        return [nn.Parameter(torch.randn(*s) / 8) for s in shapes]
    return [nn.Parameter(torch.randn(name, name) / name**0.5) for _ in range(12)]


def bench(name: int | str) -> dict[str, float]:
    sk = dict(lr=1e-3, beta2=0.01, damping=1e-8, update_every=1, warm_start=True)
    opts: dict[str, torch.optim.Optimizer] = {
        "AdamW": torch.optim.AdamW(workload(name)),
        "SOAP": SOAP(workload(name), lr=1e-3, precondition_frequency=1),
    }
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for batched in (False, True):
            key = f"{label} {'batched' if batched else 'separate'}"
            opts[key] = SpectralKron(workload(name), state_dtype=dtype, batched=batched, **sk)
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {k: [] for k in opts}
    keys = list(opts)
    for r in range(WARMUP + REPEATS):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            opt = opts[k]
            for p in opt.param_groups[0]["params"]:
                p.grad = torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5
            t = time.perf_counter()
            opt.step()
            if r >= WARMUP:
                times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def bench_period(name: int | str, period: int = 10, repeats: int = 7) -> dict[str, float]:
    """ms per step, mean over one period of ``period`` steps (one refresh of SOAP's basis and
    of our curvature, then preconditioning only), median over interleaved repeats."""
    sk = dict(lr=1e-3, beta2=0.01, damping=1e-8, warm_start=True)
    opts: dict[str, torch.optim.Optimizer] = {
        "AdamW": torch.optim.AdamW(workload(name)),
        "SOAP": SOAP(workload(name), lr=1e-3, precondition_frequency=period),
        "ours": SpectralKron(workload(name), update_every=period, **sk),
    }
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {k: [] for k in opts}
    keys = list(opts)
    for r in range(1 + repeats):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            opt, total = opts[k], 0.0
            for _ in range(period):
                for p in opt.param_groups[0]["params"]:
                    p.grad = torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5
                t = time.perf_counter()
                opt.step()
                total += time.perf_counter() - t
            if r >= 1:
                times[k].append(total / period)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def period_table(names: list[int | str], period: int = 10) -> str:
    rows = [
        "| workload | AdamW ms | SOAP ms | ours ms | ours / AdamW | ours / SOAP |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        r = bench_period(name, period)
        cells = [f"{r[k]:.2f}" for k in ("AdamW", "SOAP", "ours")]
        cells += [f"{r['ours'] / r['AdamW']:.1f}", f"{r['ours'] / r['SOAP']:.2f}"]
        rows.append(f"| {label_of(name)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def label_of(name: int | str) -> str:
    label = {"stack": "4 blocks, width 128", "mixed": "2 blocks, width 32, 2 conv kernels"}
    return f"12 x {name}x{name}" if isinstance(name, int) else label[name]


#: Groups of Kronecker shapes for the padding table.
PAIRS = [
    [(64, 32), (32, 32)],
    [(16, 72), (8, 9)],
    [(64, 64), (32, 32)],
    [(96, 32), (32, 32)],
    [(96, 32), (64, 32), (32, 64), (32, 32)],
    [(128, 64), (64, 64)],
    [(96, 96), (32, 32)],
    [(128, 128), (32, 32)],
]


def bench_padding(shapes: list[tuple[int, int]], repeats: int = 60) -> tuple[float, float, float]:
    """(padding per extra member in param_cost units, separate ms, padded ms): fp32, every
    step a curvature update, the two settings interleaved."""
    torch.manual_seed(0)
    opts = {}
    for batched in (False, True):
        ps = [nn.Parameter(torch.randn(s) / 8) for s in shapes]
        opts[batched] = SpectralKron(ps, lr=1e-3, batched=batched)
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
    times: dict[bool, list[float]] = {False: [], True: []}
    saved = buckets.PAD_OVERHEAD_COST
    buckets.PAD_OVERHEAD_COST = 10**15  # force one padded bucket
    try:
        for r in range(WARMUP + repeats):
            for batched, opt in opts.items():
                for p, g in zip(opt.param_groups[0]["params"], grads[r % 4], strict=True):
                    p.grad = g
                t = time.perf_counter()
                opt.step()
                if r >= WARMUP:
                    times[batched].append(time.perf_counter() - t)
    finally:
        buckets.PAD_OVERHEAD_COST = saved
    A, B = max(s[0] for s in shapes), max(s[1] for s in shapes)
    extra = len(shapes) * kronecker_cost(A, B) - sum(kronecker_cost(*s) for s in shapes)
    sep, pad = (1e3 * statistics.median(times[b]) for b in (False, True))
    return extra / (len(shapes) - 1), sep, pad


def padding_table() -> str:
    rows = [
        "| layers | padding per extra member (param_cost) | separate ms | one padded bucket ms "
        "| saved per extra member ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for shapes in PAIRS:
        extra, sep, pad = bench_padding(shapes)
        names = ", ".join(f"{a}x{b}" for a, b in shapes)
        saved = (sep - pad) / (len(shapes) - 1)
        rows.append(f"| {names} | {extra / 1e6:.2f}e6 | {sep:.2f} | {pad:.2f} | {saved:.2f} |")
    bound = buckets.PAD_OVERHEAD_COST
    rows.append(
        f"\nThe bound `PAD_OVERHEAD_COST` = {bound / 1e6:.2f}e6: a bucket takes a member while "
        "the padding it adds (to itself and to the members already there) stays below it."
    )
    return "\n".join(rows)


def table(results: dict[int | str, dict[str, float]]) -> str:
    rows = [
        "| workload | AdamW ms | SOAP ms | fp32 separate ms | fp32 batched ms | batched / separate "
        "| bf16 separate ms | bf16 batched ms | batched / separate | fp32 batched / AdamW "
        "| fp32 batched / SOAP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        label = label_of(name)
        cells = [f"{r['AdamW']:.2f}", f"{r['SOAP']:.1f}"]
        for dt in ("fp32", "bf16"):
            sep, bat = r[f"{dt} separate"], r[f"{dt} batched"]
            cells += [f"{sep:.1f}", f"{bat:.1f}", f"{bat / sep:.2f}"]
        bat = r["fp32 batched"]
        cells += [f"{bat / r['AdamW']:.1f}", f"{bat / r['SOAP']:.2f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--no-stack", dest="stack", action="store_false")
    parser.add_argument("--no-mixed", dest="mixed", action="store_false")
    parser.add_argument("--no-period", dest="period", action="store_false")
    parser.add_argument("--no-pairs", dest="pairs", action="store_false")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    results: dict[int | str, dict[str, float]] = {}
    extra = ["stack"] * args.stack + ["mixed"] * args.mixed
    for name in [*args.sizes, *extra]:
        t = time.perf_counter()
        results[name] = bench(name)
        print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load:.1f} at start; whole run "
        f"{time.perf_counter() - start:.0f} s. ms per optimizer step (every step a curvature "
        "update), median over interleaved repeats; ratios < 1: batching is faster."
    )
    block = f"{header}\n\n{table(results)}"
    if args.period:
        small = [n for n in [*args.sizes, *extra] if n in (32, 64, "mixed")]
        block += (
            "\n\nAt SOAP's default period (every 10th step a refresh; fp32 state, `batched=True`; "
            "ms per step, mean over a period):\n\n" + period_table(small)
        )
    if args.pairs:
        block += "\n\nPadding (float32 state, one thread; ms per step):\n\n" + padding_table()
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
