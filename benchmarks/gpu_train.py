"""GPU training comparison: SpectralKron (p = 2, 1; bfloat16 state) vs AdamW, SOAP and Muon on a
GPT-small-sized model, bfloat16 mixed precision (paper Sec. 4.4, Fig. 4 and 11-12).

Task: next-token prediction on a synthetic order-2 Markov chain (``--vocab`` tokens, a
Dirichlet(0.2) law per two-token context; the Bayes loss is printed as the floor), sequences
drawn on the device into a pool before training. Model: ``TinyGPT`` (pre-LN causal
transformer) with ``--layers`` blocks of width ``--dim``; default 6 x 384 (GPT-small-ish,
~11M parameters), sequence length 256, batch 32. Every optimizer trains the same
initialisation on the same batches for ``--steps`` steps with a 5% warm-up and cosine decay;
the hyper-parameters are fixed (``DEFAULT_HP``, guided by the CPU random search of
``bench_optim_quality.py``; ``--lr-scale`` multiplies every learning rate), not tuned here.
SOAP and ours refresh their preconditioners every 2 steps.

Prints, per optimizer, the mean step time over whole refresh periods after the first steps
(forward + backward + optimizer, with device synchronisation; a median would report the cheap
step of SOAP and ours) and the optimizer step alone, then the evaluation-loss curves as a table;
writes ``gpu_train.png`` (loss vs steps and vs seconds) and ``gpu_train.json`` under ``--out``.

Run:  python benchmarks/gpu_train.py                     # CUDA (sized for < 8 min on an H200)
      python benchmarks/gpu_train.py --device cpu --tiny # seconds on a CPU (the test)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from manifold_spectral.experiments.nn_training import (
    TinyGPT,
    build_optimizer,
    lr_schedule,
)

#: Fixed hyper-parameters per method (learning rates scaled by ``--lr-scale``).
DEFAULT_HP: dict[str, dict[str, float]] = {
    "adamw": {"lr": 1e-3, "1-beta2": 0.01},
    "soap": {"lr": 3e-3, "1-beta2": 0.05},
    "muon": {"lr": 0.02, "adamw_lr": 1e-3},
    "spectral-p2": {"lr": 3e-4},  # the defaults: summed momentum, so ~1/10 of Adam's lr
    "spectral-p1": {"lr": 2e-3, "damping": 1e-9},  # damping below mean(g^2) of a wide model
    "spectral-p2-paper": {"lr": 2e-3, "damping": 1e-9},
}
LR_KEYS = ("lr", "adamw_lr")
#: SOAP's and our refresh period (``precondition_frequency``, ``update_every``).
PERIOD = 2


def markov_pool(n: int, seq_len: int, P: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` sequences of the order-2 chain ``P[a, b] = law of the next token``, on P's device."""
    vocab = P.shape[0]
    x = torch.empty(n, seq_len, dtype=torch.long, device=P.device)
    x[:, :2] = torch.randint(0, vocab, (n, 2), generator=gen, device=P.device)
    for t in range(2, seq_len):
        x[:, t] = torch.multinomial(P[x[:, t - 2], x[:, t - 1]], 1, generator=gen).squeeze(1)
    return x


def lm_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)[:, 1:-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 2:].reshape(-1))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(method, args, device, P, train_x, eval_x) -> dict:
    torch.manual_seed(args.seed)
    model = TinyGPT(
        args.vocab,
        args.seq_len,
        dim=args.dim,
        heads=args.heads,
        ff=4 * args.dim,
        layers=args.layers,
    ).to(device)
    hp = {k: v * (args.lr_scale if k in LR_KEYS else 1.0) for k, v in DEFAULT_HP[method].items()}
    opt = build_optimizer(method, model, hp, update_every=PERIOD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(args.steps))
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    order = torch.randint(0, train_x.shape[0], (args.steps, args.batch), generator=gen)
    eval_at = sorted({round(args.steps * i / args.evals) for i in range(args.evals + 1)})
    curve, step_ms, opt_ms, elapsed, error = [], [], [], 0.0, None
    for k in range(args.steps + 1):
        if k in eval_at:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                curve.append((k, elapsed, float(lm_loss(model, eval_x))))
        if k == args.steps:
            break
        x = train_x[order[k].to(device)]
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = lm_loss(model, x)
        loss.backward()
        sync(device)
        t1 = time.perf_counter()
        try:
            opt.step()
        except (ValueError, FloatingPointError) as exc:
            error = f"step {k}: {exc}"
            break
        sched.step()
        sync(device)
        t2 = time.perf_counter()
        elapsed += t2 - t0
        step_ms.append(1e3 * (t2 - t0))
        opt_ms.append(1e3 * (t2 - t1))
    return dict(
        method=method,
        hp=hp,
        curve=curve,
        step_ms=period_mean(step_ms),
        opt_ms=period_mean(opt_ms),
        final=curve[-1][2] if error is None else math.inf,
        error=error,
        params=sum(p.numel() for p in model.parameters()),
    )


def period_mean(ms: list[float], skip: int = 6) -> float:
    """Mean of ``ms`` after its first ``skip`` steps (allocations, warm start, SOAP's first
    ``eigh``), over a whole number of refresh periods (all of ``ms`` if it is shorter)."""
    tail = ms[skip:] if len(ms) >= skip + PERIOD else ms
    tail = tail[: len(tail) - len(tail) % PERIOD] or tail
    return statistics.fmean(tail) if tail else math.nan


def plot(results: list[dict], floor: float, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_k, ax_t = fig.subplots(1, 2)
    for r in results:
        if not r["curve"]:
            continue
        k, t, loss = zip(*r["curve"], strict=True)
        ax_k.plot(k, loss, label=r["method"])
        ax_t.plot(t, loss, label=r["method"])
    for ax, xl in ((ax_k, "steps"), (ax_t, "training seconds")):
        ax.axhline(floor, color="gray", ls=":", label="Bayes loss")
        ax.set_xlabel(xl)
        ax.set_ylabel("eval loss")
        ax.grid(alpha=0.3)
    ax_k.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and run (CPU test)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_HP), choices=list(DEFAULT_HP))
    parser.add_argument("--steps", type=int, default=None, help="default 400 (tiny: 12)")
    parser.add_argument("--dim", type=int, default=None, help="default 384 (tiny: 16)")
    parser.add_argument("--layers", type=int, default=None, help="default 6 (tiny: 1)")
    parser.add_argument("--heads", type=int, default=None, help="default 6 (tiny: 2)")
    parser.add_argument("--seq-len", type=int, default=None, help="default 256 (tiny: 12)")
    parser.add_argument("--vocab", type=int, default=None, help="default 64 (tiny: 8)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (tiny: 8)")
    parser.add_argument("--evals", type=int, default=None, help="evaluation points (20; tiny 3)")
    parser.add_argument("--lr-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    tiny = dict(steps=12, dim=16, layers=1, heads=2, seq_len=12, vocab=8, batch=8, evals=3)
    full = dict(steps=400, dim=384, layers=6, heads=6, seq_len=256, vocab=64, batch=32, evals=20)
    for k, v in (tiny if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; use --device cpu --tiny")
    if device.type == "cpu":
        torch.set_num_threads(1)  # small CPU runs: one thread avoids OpenMP contention

    start = time.perf_counter()
    rng = np.random.default_rng(1234)
    law = rng.dirichlet(np.full(args.vocab, 0.2), size=(args.vocab, args.vocab))
    P = torch.from_numpy(law).float().to(device)
    gen = torch.Generator(device=device).manual_seed(5)
    pool = max(256 * args.batch, 512)
    train_x = markov_pool(pool, args.seq_len, P, gen)
    eval_x = markov_pool(min(256, pool), args.seq_len, P, gen)
    floor = float(-torch.log(P[eval_x[:, :-2], eval_x[:, 1:-1], eval_x[:, 2:]]).mean())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {name}; TinyGPT {args.layers} x {args.dim} (heads {args.heads}), vocab "
        f"{args.vocab}, length {args.seq_len}, batch {args.batch}, {args.steps} steps, bf16 "
        f"autocast; Bayes loss {floor:.3f}",
        flush=True,
    )
    results = []
    for method in args.methods:
        r = run_one(method, args, device, P, train_x, eval_x)
        results.append(r)
        status = f"final eval loss {r['final']:.3f}" if r["error"] is None else r["error"]
        print(
            f"{method:12s} {r['step_ms']:8.1f} ms/step ({r['opt_ms']:7.1f} ms optimizer)  "
            f"{status}  [{r['params'] / 1e6:.2f}M params]",
            flush=True,
        )
    print("\neval loss curves (step: " + " | ".join(r["method"] for r in results) + ")")
    for i, (k, _, _) in enumerate(results[0]["curve"]):
        cells = [f"{r['curve'][i][2]:.3f}" if i < len(r["curve"]) else "-" for r in results]
        print(f"{k:6d}: " + " | ".join(cells))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_train.json").write_text(
        json.dumps(
            dict(args={k: str(v) for k, v in vars(args).items()}, floor=floor, results=results)
        )
    )
    plot(results, floor, args.out / "gpu_train.png")
    print(f"\nwrote {args.out / 'gpu_train.png'}; total {time.perf_counter() - start:.0f} s")
    return 0 if all(r["error"] is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
