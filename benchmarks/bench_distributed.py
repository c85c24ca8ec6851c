"""SpectralKron on several processes: per-rank optimizer compute, step time and state memory,
unsharded (every rank preconditions every parameter, as under plain DDP) vs ``shard=True``
(each parameter's factor work on one rank, updates all-gathered), for 1, 2 and 4 CPU
processes (gloo, one torch thread each).

Workload: a stack of ``--layers`` square layers, ``Linear(n, n)`` weight and bias in float32
(default 8 x 512; ``--quick``: 8 x 128). Gradients come from a seeded generator, identical on
every rank (what DDP's all-reduce leaves); forward and backward are not timed. Every step is
a curvature update (``update_every = 1``). Per rank and step:

* compute: time inside this rank's ``compute_update`` calls (the preconditioner work), as wall
  time and as the thread's CPU time (``time.thread_time``: unaffected by other processes
  sharing the cores);
* step: the whole ``opt.step()`` wall time, collectives included, after a barrier;
* state: bytes of the tensors in ``opt.state`` after the run.

A cell is the median over the timed steps of one rank, then the maximum over ranks (the
slowest rank sets the pace). The sharded parameters are compared bit for bit with the
unsharded ones of the same invocation. With more processes than cores, wall times include
waiting for a core; the CPU-time column is the per-rank work. The table is written into
benchmarks/README.md and docs/distributed.md between the ``distributed`` markers.

Run:  python benchmarks/bench_distributed.py [--quick] [--worlds 1 2 4] [--steps 5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from torch import nn

from manifold_spectral.optim import SpectralKron

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- distributed:start -->", "<!-- distributed:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "distributed.md"
WARMUP = 1  # the first step initialises the state


def make_params(layers: int, n: int) -> list[nn.Parameter]:
    torch.manual_seed(0)
    out = []
    for _ in range(layers):
        out += [nn.Parameter(torch.randn(n, n) / n**0.5), nn.Parameter(torch.zeros(n))]
    return out


def run_mode(shard: bool, args: dict[str, Any]) -> dict[str, Any]:
    params = make_params(args["layers"], args["n"])
    opt = SpectralKron(params, lr=1e-3, beta2=0.05, damping=1e-4, shard=shard)
    clock = {"wall": 0.0, "cpu": 0.0}
    # Every path of a step computes its updates in ``_compute_many`` (the unsharded step per
    # bucket, ``compute_update`` per owned parameter): timing it times the work either way.
    compute = opt._compute_many

    def timed(*a: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        out = compute(*a)
        clock["wall"] += time.perf_counter() - t0
        clock["cpu"] += time.thread_time() - c0
        return out

    opt._compute_many = timed  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(1)  # the same gradients on every rank
    rows: list[tuple[float, float, float]] = []
    for k in range(WARMUP + args["steps"]):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) / args["n"]
        clock["wall"] = clock["cpu"] = 0.0
        dist.barrier()
        t0 = time.perf_counter()
        opt.step()
        step = time.perf_counter() - t0
        if k >= WARMUP:
            rows.append((clock["wall"], clock["cpu"], step))
    state = sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor)
    )
    return {
        "compute_wall": statistics.median(r[0] for r in rows),
        "compute_cpu": statistics.median(r[1] for r in rows),
        "step": statistics.median(r[2] for r in rows),
        "state": state,
        "owned": sum(1 for st in opt.state.values() if st),
        "params": [p.detach().clone() for p in params],
    }


def worker(rank: int, world: int, tmp: str, args: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/store{world}", rank=rank, world_size=world
    )
    try:
        out = {shard: run_mode(shard, args) for shard in (False, True)}
        torch.save(out, f"{tmp}/w{world}_r{rank}.pt")
        dist.barrier()  # no rank closes its connections while another still talks
    finally:
        dist.destroy_process_group()


def measure(world: int, tmp: str, args: dict[str, Any]) -> list[dict[bool, Any]]:
    torch.multiprocessing.spawn(worker, args=(world, tmp, args), nprocs=world, join=True)
    return [torch.load(f"{tmp}/w{world}_r{r}.pt", weights_only=False) for r in range(world)]


def table(results: dict[int, list[dict[bool, Any]]], n_params: int) -> str:
    base = max(r[False]["compute_cpu"] for r in results[min(results)])
    lines = [
        "| processes | preconditioner work | compute ms / rank (wall) | compute ms / rank (CPU) "
        "| compute CPU vs 1 process | step ms (wall, with comm.) | state MiB / rank "
        "| parameters with state / rank | equal to unsharded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for world, ranks in results.items():
        for shard in (False, True):
            cells = [r[shard] for r in ranks]
            cpu = max(c["compute_cpu"] for c in cells)
            equal = all(
                torch.equal(a, b)
                for r in ranks
                for a, b in zip(r[True]["params"], r[False]["params"], strict=True)
            )
            lines.append(
                f"| {world} | {'sharded' if shard else 'every rank'} "
                f"| {1e3 * max(c['compute_wall'] for c in cells):.1f} | {1e3 * cpu:.1f} "
                f"| {cpu / base:.2f} | {1e3 * max(c['step'] for c in cells):.1f} "
                f"| {max(c['state'] for c in cells) / 2**20:.2f} "
                f"| {max(c['owned'] for c in cells)} of {n_params} "
                f"| {'bitwise' if equal else 'NO'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 x Linear(128, 128)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--n", type=int, default=None, help="layer width (default 512)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md and docs")
    ns = parser.parse_args(argv)
    if not (dist.is_available() and dist.is_gloo_available()):
        print("this torch build has no gloo backend", file=sys.stderr)
        return 1
    args = {"layers": ns.layers, "n": ns.n or (128 if ns.quick else 512), "steps": ns.steps}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = {w: measure(w, tmp, args) for w in ns.worlds}
    wall = time.perf_counter() - t0
    n = args["n"]
    head = (
        f"Measured {datetime.date.today()} on {machine()}; torch {torch.__version__}, gloo, "
        f"1 thread per process; load average {load:.1f} at start; whole run {wall:.0f} s. "
        f"Workload: {args['layers']} x Linear({n}, {n}) (weight + bias, float32), "
        f"update_every = 1, median of {args['steps']} steps, slowest rank."
    )
    block = f"{head}\n\n{table(results, 2 * args['layers'])}"
    print(block)
    if not ns.no_write:
        replace_between(README, START, END, block)
        replace_between(DOCS, START, END, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
