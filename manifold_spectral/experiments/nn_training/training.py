"""The training loop of the NN comparison: ``train`` (one run of one method on one seed) and
``run_quality`` (the whole comparison).

Every optimizer gets the same random-search budget (``trials`` draws of its learning rate and
one key knob, log-uniform and stratified, drawn from ``search_seed``, and ``refine`` rounds of
two runs at the best run's neighbouring learning rates; every trial trains on seed 0, so the
hyper-parameters alone differ between trials), the best trial is re-run on ``seeds`` seeds,
and the ablations of Fig. 4 and 10 (``ABLATIONS``: ``SpectralKron``'s defaults with bfloat16
state, and with the exact Cayley map) re-use the tuned hyper-parameters of ``spectral-p2``,
as the paper does for Fig. 10. The forward and backward passes run under ``torch.autocast``
in bfloat16 (the paper's mixed precision; ``precision="fp32"``: in float32); the schedule
(``lr_schedule``) is a linear warm-up over 5% of the steps and a cosine decay to 10% for every
method.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._threads import torch_threads
from . import run_cache
from .optimizers import ABLATIONS, OPTIMIZERS, build_optimizer, optimizer_spec
from .tasks import make_task

__all__ = [
    "Run",
    "lr_schedule",
    "train",
    "DEFAULT_STEPS",
    "TaskResult",
    "QualityResult",
    "run_quality",
    "cached_train",
]


@dataclasses.dataclass
class Run:
    """One training run: per-step training loss and cumulative training seconds (forward,
    backward and optimizer step; data generation and evaluation excluded; on a CPU the
    process's CPU time, so that a busy neighbour on a shared machine does not enter the
    comparison, on an accelerator wall time), the evaluation
    loss at ``eval_steps``, and ``final`` (``inf`` if the run diverged)."""

    method: str
    hp: dict[str, float]
    seed: int
    loss: np.ndarray
    seconds: np.ndarray
    eval_steps: list[int]
    eval_loss: list[float]
    final: float
    error: str | None = None

    @property
    def train_tail(self) -> float:
        """Mean training minibatch loss over the last 10% of the steps (at least one): how
        well the run fits its training data, beside ``final``, how well it generalises
        (``nan`` for a run that stopped early)."""
        k = max(1, self.loss.size // 10)
        tail = self.loss[-k:]
        return float(np.mean(tail)) if tail.size and np.isfinite(tail).all() else math.nan

    @property
    def ms_per_step(self) -> float:
        """Mean milliseconds per training step after the first (the first builds the state: a
        one-off); a mean, not a median, because SOAP's and our refresh steps cost more than
        the steps between them (``nan`` with fewer than two steps or a stopped run)."""
        t = self.seconds[np.isfinite(self.seconds)]
        if t.size < 2 or t.size < self.seconds.size:
            return float("nan")
        return 1e3 * float(t[-1] - t[0]) / (t.size - 1)


def lr_schedule(steps: int, warmup: float = 0.05, floor: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up over ``warmup * steps``, then cosine decay to ``floor`` (a factor)."""
    w = max(1, round(warmup * steps))

    def factor(k: int) -> float:
        if k < w:
            return (k + 1) / w
        t = min(1.0, (k - w) / max(1, steps - w))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def train(
    task: Any,
    method: str,
    hp: dict[str, float],
    seed: int,
    steps: int,
    *,
    update_every: int = 2,
    precision: str = "bf16",
    evals: int = 10,
    device: str = "cpu",
) -> Run:
    """Train ``task``'s model with ``method`` for ``steps`` fresh minibatches (seeded by
    ``seed``: every method sees the same data and initialisation for a given seed).

    ``device``: where the model, its optimizer state and the minibatches live (batches are
    drawn on the CPU, so every device sees the same data); evaluation runs on the CPU, where
    the tasks keep their evaluation sets."""
    model = task.make_model(seed).to(device)
    opt = build_optimizer(method, model, hp, update_every)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps))
    gen = torch.Generator().manual_seed(10_000 + seed)
    autocast = precision == "bf16"
    device_type = torch.device(device).type
    # CPU time where the work is on the CPU (one torch thread: the step's own cost); an
    # accelerator's work is not the host's CPU time, so there the wall clock
    clock = time.process_time if device_type == "cpu" else time.perf_counter
    losses, secs = np.full(steps, np.nan), np.full(steps, np.nan)
    eval_at = sorted({round(steps * i / evals) for i in range(evals + 1)})
    eval_steps, eval_loss = [], []
    elapsed, error = 0.0, None
    for k in range(steps + 1):
        if k in eval_at:
            eval_steps.append(k)
            eval_loss.append(_evaluate(task, model, device))
            if not math.isfinite(eval_loss[-1]):
                error = "non-finite evaluation loss"
                break
        if k == steps:
            break
        x, y = task.sample(task.batch, gen)
        x, y = x.to(device), (None if y is None else y.to(device))
        t0 = clock()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            loss = task.loss(model, x, y)
        loss.backward()
        try:
            opt.step()
        except (ValueError, FloatingPointError) as exc:  # non-finite gradients or state
            error = f"step {k}: {exc}"
            break
        sched.step()
        elapsed += clock() - t0
        losses[k], secs[k] = float(loss.detach()), elapsed
        if not math.isfinite(losses[k]):
            error = f"step {k}: non-finite loss"
            break
    final = eval_loss[-1] if error is None and eval_steps[-1] == steps else math.inf
    return Run(method, hp, seed, losses, secs, eval_steps, eval_loss, final, error)


def _evaluate(task: Any, model: nn.Module, device: str) -> float:
    """``task.eval_loss`` on the CPU; a model on another device is moved there and back
    (``Module.to`` keeps the parameter objects, so the optimizer's references stay valid)."""
    if torch.device(device).type == "cpu":
        return task.eval_loss(model)
    model.to("cpu")
    try:
        return task.eval_loss(model)
    finally:
        model.to(device)


# The comparison -----------------------------------------------------------------------------

#: Steps per task of the default comparison (about 100 curvature updates).
DEFAULT_STEPS = {"transformer": 200, "mlp": 200, "stdlib": 200, "digits": 200}


@dataclasses.dataclass
class TaskResult:
    """One task: the tuning trials (trained on seed 0), each method's best hyper-parameters and its
    runs on the evaluation seeds."""

    task: str
    describe: str
    floor: float | None  # the Bayes loss, None where unknown (real data)
    initial: float
    steps: int
    trials: dict[str, list[Run]]
    best: dict[str, dict[str, float] | None]
    runs: dict[str, list[Run]]


@dataclasses.dataclass
class QualityResult:
    """The whole comparison of ``run_quality``: one ``TaskResult`` per task and the settings
    (search budget, evaluation seeds, precision, preconditioner period, torch threads) and
    wall time of the run; ``search_seed`` is the seed of the random-search draws (the trials
    themselves train on seed 0)."""

    tasks: list[TaskResult]
    trials: int
    seeds: list[int]
    precision: str
    update_every: int
    threads: int
    wall_time: float
    search_seed: int = 0
    cached: int = 0  # runs read from ``run_quality``'s cache instead of trained
    refine: int = 0  # refinement rounds of the best learning rate after the draws


def run_quality(
    tasks: Any = ("transformer", "mlp"),
    methods: Any = tuple(OPTIMIZERS),
    *,
    ablations: bool = True,
    trials: int = 8,
    refine: int = 0,
    steps: dict[str, int] | int | None = None,
    seeds: Any = (1, 2),
    precision: str = "bf16",
    update_every: int = 2,
    threads: int | None = 1,
    task_kw: dict[str, dict[str, Any]] | None = None,
    search_seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
    cache: str | Path | None = None,
) -> QualityResult:
    """Random search (``trials`` draws per method from ``search_seed``, each trained on seed
    0, then ``refine`` rounds of two runs at the best run's neighbouring learning rates,
    ``OptimizerSpec.neighbours``), then the best run of every method, and the ablations at
    ``spectral-p2``'s best, on each of ``seeds``.

    ``steps``: per task (a dict), one number for every task, or ``DEFAULT_STEPS``;
    ``task_kw``: per-task keyword arguments of ``MarkovTask`` / ``TeacherTask`` (sizes).
    ``cache``: a directory of finished runs (``run_cache``): a run found there is read instead
    of trained, a trained one is stored, so an interrupted comparison resumes.
    """
    from ..._compat import progress_bar as tqdm  # tqdm, or silent without it

    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision: expected 'bf16' or 'fp32', got {precision!r}")
    methods = list(methods)
    for m in methods:
        if m not in OPTIMIZERS:
            raise ValueError(f"methods: expected names from {list(OPTIMIZERS)}, got {m!r}")
    extra = list(ABLATIONS) if ablations and "spectral-p2" in methods else []
    seeds = [int(s) for s in seeds]
    start = time.perf_counter()
    results = []
    hits = 0

    def run(task: Any, name: str, m: str, hp: dict[str, float], seed: int, n: int, **kw: Any):
        nonlocal hits
        task_id = dict(task=name, sizes=(task_kw or {}).get(name, {}))
        out, read = cached_train(cache, task, m, hp, seed, n, task_id=task_id, **kw)
        hits += read
        return out

    with torch_threads(threads):
        for name in tasks:
            task = make_task(name, **(task_kw or {}).get(name, {}))
            n = steps if isinstance(steps, int) else (steps or DEFAULT_STEPS).get(name, 200)
            total = len(methods) * (trials + 2 * refine + len(seeds)) + len(extra) * len(seeds)
            bar = tqdm(total=total, desc=name, disable=not progress, leave=False)
            kw = dict(update_every=update_every, precision=precision, device=device)
            trial_runs: dict[str, list[Run]] = {}
            best: dict[str, dict[str, float] | None] = {}
            for m in methods:
                rng = np.random.default_rng([zlib.crc32(m.encode()), search_seed])
                trial_runs[m] = []
                for hp in OPTIMIZERS[m].sample(rng, trials):
                    trial_runs[m].append(run(task, name, m, hp, 0, n, evals=1, **kw))
                    bar.update()
                best[m] = _best(trial_runs[m])
                for round_ in range(1, refine + 1):
                    if best[m] is None:  # every draw diverged: nothing to refine
                        bar.update(2 * (refine - round_ + 1))
                        break
                    for hp in OPTIMIZERS[m].neighbours(best[m], trials, round_):
                        trial_runs[m].append(run(task, name, m, hp, 0, n, evals=1, **kw))
                        bar.update()
                    best[m] = _best(trial_runs[m])
            runs: dict[str, list[Run]] = {}
            for m in methods + extra:
                hp = best[optimizer_spec(m).tuned_as or m]
                runs[m] = []
                if hp is None:
                    bar.update(len(seeds))
                    continue
                for s in seeds:
                    runs[m].append(run(task, name, m, hp, s, n, evals=20, **kw))
                    bar.update()
            bar.close()
            initial = task.eval_loss(task.make_model(seeds[0] if seeds else 0))
            results.append(
                TaskResult(name, task.describe, task.floor, initial, n, trial_runs, best, runs)
            )
    return QualityResult(
        results,
        trials,
        seeds,
        precision,
        update_every,
        threads or torch.get_num_threads(),
        time.perf_counter() - start,
        search_seed,
        hits,
        refine,
    )


def _best(runs: list[Run]) -> dict[str, float] | None:
    """The hyper-parameters of the finite run of lowest ``final`` (the first on a tie), or
    ``None`` if every run diverged."""
    finite = [r for r in runs if math.isfinite(r.final)]
    return min(finite, key=lambda r: r.final).hp if finite else None


def cached_train(
    cache: str | Path | None,
    task: Any,
    method: str,
    hp: dict[str, float],
    seed: int,
    steps: int,
    *,
    task_id: dict[str, Any],
    **kw: Any,
) -> tuple[Run, bool]:
    """``train(task, method, hp, seed, steps, **kw)`` through the directory of finished runs
    ``cache`` (``run_cache``; ``None``: no cache), and whether the run was read from it.

    ``task_id``: what made ``task`` (e.g. ``make_task``'s name and keyword arguments), JSON
    values; the task class's source text is added (a task defined outside the package is not
    in the package's digest). The key also holds the method's builder and package files
    (``OptimizerSpec.sources``) and the torch thread count."""
    if cache is None:
        return train(task, method, hp, seed, steps, **kw), False
    spec = optimizer_spec(method)
    key = run_cache.run_key(
        spec.sources,
        task=task_id,
        task_class=run_cache.builder_identity(type(task)),
        method=method,
        build=run_cache.builder_identity(spec.build),
        hp=hp,
        seed=seed,
        steps=steps,
        threads=torch.get_num_threads(),
        **kw,
    )
    stored = run_cache.load(Path(cache), key)
    if stored is not None:
        return _run_from_fields(stored), True
    out = train(task, method, hp, seed, steps, **kw)
    run_cache.store(Path(cache), key, _run_fields(out))
    return out, False


def _run_fields(run: Run) -> dict[str, Any]:
    """``run`` as JSON values (the arrays as lists; JSON's float text reads back exactly)."""
    fields = dataclasses.asdict(run)
    fields["loss"], fields["seconds"] = run.loss.tolist(), run.seconds.tolist()
    fields["eval_loss"] = [float(v) for v in run.eval_loss]
    fields["final"] = float(run.final)
    return fields


def _run_from_fields(fields: dict[str, Any]) -> Run:
    """The ``Run`` that ``_run_fields`` stored."""
    out = dict(fields)
    out["loss"], out["seconds"] = np.asarray(out["loss"]), np.asarray(out["seconds"])
    return Run(**out)
