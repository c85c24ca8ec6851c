"""Seed statistics of ``SpectralKron`` options on the four NN tasks (issue 13).

The tables of ``bench_optim_quality.py`` and ``bench_nn_real.py`` re-run each tuned method
on three seeds, too few to tell a change of a default from luck: on ``digits`` one
confidently wrong test image moves the mean test cross-entropy by about 0.03. This script
trains ``SpectralKron``'s defaults and the defaults with the ``--option`` values on the same
``--seeds`` seeds (the same initialisation and minibatches per seed for both), at one
learning rate per task (``--lr``; default: the defaults' tuned lr as the tables print it,
read from README.md by ``tuned_from_readme``, so it follows the tables), with the
tables' settings: ``transformer`` and ``mlp`` as ``bench_optim_quality.py`` (bfloat16
autocast, curvature period 2), ``stdlib`` and ``digits`` at ``bench_nn_real.py --small``'s
sizes (float32, period 1), 200 steps, and ``digits-full`` and ``stdlib-full`` as
``bench_nn_real.py --block full-digits`` / ``full-stdlib`` train them (issue 13's sizes,
float32, period 2, 300 / 400 steps; minutes a seed), with warm-up and cosine decay
(``nn_training.lr_schedule``).

Reported per task: mean and standard error of the final held-out loss of both, the paired
difference (option minus defaults; the seed-to-seed spread cancels in it), on how many seeds
the option is lower, and the paired difference of the training loss over the last 10% of
the steps (fitting vs generalising).

``--against soap muon adamw`` instead compares the defaults with the peers, each at the
hyper-parameters its row of the README tables prints (the tables' tuned draws: read from
the optim-quality block for ``transformer``/``mlp`` and the nn-real-fp32 block for
``stdlib``/``digits``, so they are the ones the tables report), on the same seeds; the paired
difference is then peer minus defaults (positive: the defaults are lower).

Run:  python benchmarks/bench_optim_seeds.py --option nesterov=False
      python benchmarks/bench_optim_seeds.py --option nesterov=False --tasks mlp --seeds 4
      python benchmarks/bench_optim_seeds.py --against soap muon adamw
      python benchmarks/bench_optim_seeds.py --option state_dtype=bfloat16 --seeds 100
"""

from __future__ import annotations

import argparse
import ast
import datetime
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from bench_nn_real import SIZES  # noqa: E402

from manifold_spectral._threads import torch_threads
from manifold_spectral.experiments import nn_training
from manifold_spectral.experiments.nn_training import optimizers
from manifold_spectral.experiments.nn_training.tasks import make_task

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- optim-seeds:start -->", "<!-- optim-seeds:end -->"
PEERS_START, PEERS_END = "<!-- optim-peers:start -->", "<!-- optim-peers:end -->"
#: README block and row label of each task's and method's tuned hyper-parameters.
TABLE_OF = {"transformer": "optim-quality", "mlp": "optim-quality"} | {
    "stdlib": "nn-real-fp32",
    "digits": "nn-real-fp32",
    "digits-full": "nn-real-full-digits",
    "stdlib-full": "nn-real-full-stdlib",
}
ROW_LABEL = {
    "spectral-p2": "SpectralKron defaults (ours)",
    "adamw": "AdamW",
    "soap": "SOAP",
    "muon": "Muon",
}

#: Per task: the task, its sizes, precision, curvature period and steps as in the table that
#: reports it.
SETTINGS = {
    "transformer": ("transformer", {}, "bf16", 2, 200),
    "mlp": ("mlp", {}, "bf16", 2, 200),
    "stdlib": ("stdlib", SIZES["small"]["stdlib"], "fp32", 1, 200),
    "digits": ("digits", SIZES["small"]["digits"], "fp32", 1, 200),
    "digits-full": ("digits", SIZES["full"]["digits"], "fp32", 2, 300),
    "stdlib-full": ("stdlib", SIZES["full"]["stdlib"], "fp32", 2, 400),
}


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with a Python literal value (``nesterov=False``, ``beta2=0.03``) or a
    torch dtype's name (``state_dtype=bfloat16`` or ``torch.bfloat16``), which no literal
    spells: the bf16 state against the defaults' is a comparison this script runs."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option: expected key=value, got {text!r}")
    dtype = getattr(torch, value.removeprefix("torch."), None)
    if isinstance(dtype, torch.dtype):
        return key, dtype
    return key, ast.literal_eval(value)


def tuned_from_readme(task_name: str, method: str, text: str | None = None) -> dict[str, float]:
    """The hyper-parameters ``method``'s row prints for ``task_name`` in the README table that
    reports the task (``lr=0.017, 1-beta2=0.089`` -> a dict); ``ValueError`` if absent."""
    text = README.read_text() if text is None else text
    tag = TABLE_OF[task_name]
    block = text.split(f"<!-- {tag}:start -->")[1].split(f"<!-- {tag}:end -->")[0]
    name = SETTINGS[task_name][0]  # the task's name in the table (digits-full: digits)
    section = block.split(f"\n{name}: ")[1].split("\n\n| method")[1].split("\n\n")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == ROW_LABEL[method]:
            return {k: float(v) for k, v in (kv.split("=") for kv in cells[1].split(", "))}
    raise ValueError(f"no row {ROW_LABEL[method]!r} for {task_name!r} in the README's {tag} table")


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def compare(
    task_name: str,
    options: dict[str, object],
    seeds: list[int],
    lr: float,
    cache: Path | None = None,
) -> dict:
    """Final held-out losses and training tails of the defaults and the variant per seed."""
    precision, period, steps = SETTINGS[task_name][2:]
    # The variant as a registered method, so that ``nn_training.train`` builds it as it
    # builds every other method.
    with optimizers.spectral_variant("_seeds_variant", options, _label(options)) as name:
        methods = {"spectral-p2": {"lr": lr}, name: {"lr": lr}}
        base, var = paired_runs(task_name, methods, seeds, cache)
    return dict(
        task=task_name, lr=lr, period=period, precision=precision, steps=steps, base=base, var=var
    )


def paired_runs(
    task_name: str, methods: dict[str, dict], seeds: list[int], cache: Path | None = None
) -> list[np.ndarray]:
    """Per method (with its hyper-parameters), per seed: (final held-out loss, training tail),
    every method on the same seeds at the task's table settings; ``cache``: a directory of
    finished runs (``nn_training.cached_train``)."""
    name, kw, precision, period, steps = SETTINGS[task_name]
    task = make_task(name, **kw)
    out: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for seed in seeds:
        for method, hp in methods.items():
            run, _ = nn_training.cached_train(
                cache, task, method, hp, seed, steps, task_id=dict(task=name, sizes=kw),
                update_every=period, precision=precision, evals=1,
            )  # fmt: skip
            out[method].append((run.final, run.train_tail))
    return [np.array(v) for v in out.values()]


def against(
    task_name: str, peers: list[str], seeds: list[int], cache: Path | None = None
) -> list[dict]:
    """The defaults and each peer at the hyper-parameters of their README rows."""
    hps = {m: tuned_from_readme(task_name, m) for m in ["spectral-p2", *peers]}
    runs = paired_runs(task_name, hps, seeds, cache)
    precision, period, steps = SETTINGS[task_name][2:]
    return [
        dict(task=task_name, peer=peer, hp=hps[peer], lr=hps["spectral-p2"]["lr"], period=period,
             precision=precision, steps=steps, base=runs[0], var=runs[1 + i])
        for i, peer in enumerate(peers)
    ]  # fmt: skip


def format_peers(rows: list[dict]) -> str:
    lines = [
        "| task | peer (its table's hyper-parameters) | defaults' lr | seeds | defaults: final "
        "loss | peer: final loss | peer minus defaults | defaults lower on | training-tail "
        "difference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, v = r["base"], r["var"]
        d, dt = v[:, 0] - b[:, 0], v[:, 1] - b[:, 1]
        hp = ", ".join(f"{k}={x:g}" for k, x in r["hp"].items())
        lines.append(
            f"| {r['task']} ({r['precision']}, period {r['period']}, {r['steps']} steps) | "
            f"{ROW_LABEL[r['peer']]} ({hp}) | {r['lr']:g} | {len(d)} | {b[:, 0].mean():.4f} ± "
            f"{_se(b[:, 0]):.4f} | {v[:, 0].mean():.4f} ± {_se(v[:, 0]):.4f} | {d.mean():+.4f} "
            f"± {_se(d):.4f} | {int((d > 0).sum())}/{len(d)} | {dt.mean():+.4f} ± {_se(dt):.4f} |"
        )
    return "\n".join(lines)


def _label(options: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def format_table(rows: list[dict], options: dict[str, object]) -> str:
    lines = [
        f"| task | lr | seeds | defaults: final loss | `{_label(options)}`: final loss | "
        "paired difference | lower on | training-tail difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, v = r["base"], r["var"]
        d, dt = v[:, 0] - b[:, 0], v[:, 1] - b[:, 1]
        lines.append(
            f"| {r['task']} ({r['precision']}, period {r['period']}, {r['steps']} steps) | "
            f"{r['lr']:.4g} | {len(d)} "
            f"| {b[:, 0].mean():.4f} ± {_se(b[:, 0]):.4f} | {v[:, 0].mean():.4f} ± "
            f"{_se(v[:, 0]):.4f} | {d.mean():+.4f} ± {_se(d):.4f} | {int((d < 0).sum())}/"
            f"{len(d)} | {dt.mean():+.4f} ± {_se(dt):.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--option", type=parse_option, nargs="+", help="key=value ...")
    what.add_argument("--against", nargs="+", choices=["soap", "muon", "adamw"], help="peers")
    parser.add_argument(
        "--tasks", nargs="+", default=list(SETTINGS)[:4], choices=list(SETTINGS)
    )  # digits-full (minutes a seed) only when named
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1 .. N")
    parser.add_argument("--lr", type=float, default=None, help="one lr for every task")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument(
        "--block",
        default=None,
        help="README block NAME (markers <!-- NAME:start/end -->) to write instead of the "
        "default one (optim-seeds for --option, optim-peers for --against)",
    )
    parser.add_argument(
        "--cache", type=Path, help="directory of finished runs (read instead of trained)"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    seeds = list(range(1, args.seeds + 1))
    with torch_threads(1):
        if args.against:
            rows = [r for t in args.tasks for r in against(t, args.against, seeds, args.cache)]
            table, start, end = format_peers(rows), PEERS_START, PEERS_END
        else:
            options = dict(args.option)
            lrs = {t: args.lr or tuned_from_readme(t, "spectral-p2")["lr"] for t in args.tasks}
            rows = [compare(t, options, seeds, lrs[t], args.cache) for t in args.tasks]
            table, start, end = format_table(rows, options), START, END
    header = (
        f"Measured {datetime.date.today().isoformat()} "
        f"(`{' '.join(['bench_optim_seeds.py', *(argv if argv is not None else sys.argv[1:])])}`); "
        f"mean ± standard error over seeds; torch {torch.__version__}; {machine()}; "
        f"load average {load:.1f} at start."
    )
    if args.block is not None:
        start, end = f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->"
    block = f"{header}\n\n{table}"
    print(block)
    if not args.no_write:
        replace_between(README, start, end, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
