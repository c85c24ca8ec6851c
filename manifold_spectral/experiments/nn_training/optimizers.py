"""The optimizer registry of the NN comparison: method names -> ``OptimizerSpec`` (label,
colour, random-search space, constructor).

``OPTIMIZERS`` are the tuned methods: AdamW (``torch.optim.AdamW``), SOAP and Muon
(``pytorch_optimizer``'s, ``pip install pytorch-optimizer``; SOAP with the same preconditioner
period ``update_every`` as ``SpectralKron``, paper: 2), ``SpectralKron``'s defaults and the
paper's scheme (``PAPER_SCHEME``) with ``root`` 1 and 2. ``ABLATIONS`` (Fig. 4 and 10) re-use
the tuned hyper-parameters of ``spectral-p2``. ``build_optimizer(name, model, hp,
update_every)`` builds any of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...optim import SpectralKron

__all__ = [
    "PAPER_SCHEME",
    "PEER_SOURCES",
    "OptimizerSpec",
    "OPTIMIZERS",
    "ABLATIONS",
    "lr_neighbours",
    "optimizer_spec",
    "build_optimizer",
    "spectral_variant",
]


def _muon_groups(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """Muon's split: hidden matrices (Newton-Schulz) vs embeddings, the output head (the last
    ``nn.Linear``) and vectors (its AdamW), as in Jordan's reference implementation."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    other = {id(p) for p in linears[-1].parameters()} if linears else set()
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            other |= {id(p) for p in m.parameters()}
    hidden = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in other]
    rest = [p for p in model.parameters() if p.ndim < 2 or id(p) in other]
    return hidden, rest


def _adamw(model: nn.Module, hp: dict[str, float], update_every: int) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(), lr=hp["lr"], betas=(0.9, 1.0 - hp["1-beta2"]), weight_decay=0.0
    )


def _soap(model: nn.Module, hp: dict[str, float], update_every: int) -> torch.optim.Optimizer:
    po = _pytorch_optimizer()
    return po.SOAP(
        model.parameters(),
        lr=hp["lr"],
        betas=(0.9, 1.0 - hp["1-beta2"]),
        weight_decay=0.0,
        precondition_frequency=update_every,
    )


def _muon(model: nn.Module, hp: dict[str, float], update_every: int) -> torch.optim.Optimizer:
    po = _pytorch_optimizer()
    hidden, rest = _muon_groups(model)
    groups = [dict(params=hidden, use_muon=True, lr=hp["lr"])]
    groups.append(dict(params=rest, use_muon=False, lr=hp["adamw_lr"], betas=(0.9, 0.95)))
    return po.Muon(groups)


def _spectral(**fixed: Any) -> Callable[..., torch.optim.Optimizer]:
    """``SpectralKron(model.parameters(), lr=..., **fixed)`` with the run's curvature period;
    the other knobs of the search space (``damping``) are passed when drawn."""

    def build(model: nn.Module, hp: dict[str, float], update_every: int) -> torch.optim.Optimizer:
        return SpectralKron(model.parameters(), update_every=update_every, **hp, **fixed)

    return build


def _pytorch_optimizer() -> Any:
    try:
        import pytorch_optimizer
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SOAP and Muon come from pytorch-optimizer: pip install pytorch-optimizer "
            "(or manifold_spectral[baselines])"
        ) from None
    return pytorch_optimizer


#: The paper's scheme (Sec. 3.4, Fig. 6 right) as docs/optim.md recommended it before the
#: eigenvalue correction became the default: the preconditioner is the product of the
#: factors' eigenvalues, bfloat16 state, layer-wise RMS clipping, a slow curvature EMA, and
#: the heavy-ball momentum 0.9 of the paper's scheme (Nesterov and 0.85 are the defaults'
#: choice, not the paper's), with one curvature period for the Kronecker and the diagonal
#: scheme, whose curvature step sees the current gradient alone (``accumulate_gop=False``),
#: the RGD step's rotation at the eigenvalues before the step (``updated_gaps=False``), and
#: the plain Neumann Cayley map (``neumann_squarings=0``) with one step size for the basis and
#: the eigenvalues (``basis_scale=1``).
PAPER_SCHEME: dict[str, Any] = dict(
    momentum=0.9,
    nesterov=False,
    diagonal_every=None,
    accumulate_gop=False,
    eigenvalue_correction=False,
    beta2=0.01,
    gap_damping=1e-2,
    updated_gaps=False,
    neumann_squarings=0,
    basis_scale=1.0,
    clip_rms=1.0,
    state_dtype=torch.bfloat16,
)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A method of the comparison: label, colour, random-search space (log-uniform ranges of
    the tuned knobs) and ``build(model, hp, update_every) -> optimizer``."""

    name: str
    label: str
    color: str
    space: dict[str, tuple[float, float]]
    build: Callable[[nn.Module, dict[str, float], int], torch.optim.Optimizer]
    tuned_as: str | None = None  # ablations re-use the tuned hyper-parameters of this method
    # the package files its runs execute (``run_cache``: its cached runs' key); None: all
    sources: tuple[str, ...] | None = None

    def sample(self, rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
        """``trials`` draws, log-uniform per knob and stratified (Latin hypercube: each knob's
        range is cut into ``trials`` equal log-intervals with one draw in each), so a small
        budget still covers every learning-rate decade; the pairing of knobs is random."""
        cols = {}
        for k, (lo, hi) in self.space.items():
            u = (rng.permutation(trials) + rng.uniform(size=trials)) / trials
            cols[k] = np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return [{k: float(v[i]) for k, v in cols.items()} for i in range(trials)]

    def neighbours(self, hp: dict[str, float], trials: int, round_: int) -> list[dict[str, float]]:
        """Refinement round ``round_`` (1, 2, ...) of the learning rate after ``trials``
        stratified draws: ``hp`` with its lr divided and multiplied by
        ``f = (hi / lo) ** (1 / (trials * 2 ** round_))``, half a stratum of the draws in
        round 1 and half the previous step in every later one (a bisection of the log-lr
        around the best run so far), the other knobs as in ``hp``. Stratified draws leave up
        to two strata between the best draw and its nearest neighbour, so the loss between
        them is unseen; two runs per round, the same for every method."""
        lo, hi = self.space["lr"]
        return lr_neighbours(hp, (hi / lo) ** (1.0 / trials), round_)


def lr_neighbours(hp: dict[str, float], spacing: float, round_: int) -> list[dict[str, float]]:
    """Round ``round_`` (1, 2, ...) of a bisection of the log learning rate around ``hp``,
    after a search whose points are a factor ``spacing`` apart: ``hp`` with its lr divided and
    multiplied by ``f = spacing ** (1 / 2 ** round_)`` (half the spacing in log in round 1,
    half the previous step after), the other knobs as in ``hp``."""
    f = spacing ** (1.0 / 2**round_)
    return [dict(hp, lr=hp["lr"] / f), dict(hp, lr=hp["lr"] * f)]


_LR = (1e-4, 3e-2)
#: The paper's scheme tunes its damping too. The defaults tune only the learning rate, over
#: as many decades as the others' range but three times lower: SpectralKron's momentum buffer
#: sums gradients (SGD's convention), so its steps are about ``1 / (1 - momentum)`` (7 for
#: the defaults' 0.85, 10 for the paper scheme's 0.9) times those
#: of an averaged momentum at the same ``lr``, while on some tasks its scaling in the learned
#: eigenbasis takes larger steps than AdamW's; the range covers both (bench_nn_real.py reports
#: the tuned ``lr`` per task).
_SK_SPACE = {"lr": _LR, "damping": (1e-10, 1e-5)}
_SK_DEFAULT_SPACE = {"lr": (_LR[0] / 3, _LR[1] / 3)}

#: The package files a peer's training run executes: the tasks and their data, the models,
#: the training loop and this registry (tests/test_nn_run_cache.py traces a run of each peer
#: and compares). Its cached runs (``run_cache``) do not depend on the rest of the package.
PEER_SOURCES = (
    "_threads.py",
    "experiments/real_tasks.py",
    "experiments/nn_training/models.py",
    "experiments/nn_training/optimizers.py",
    "experiments/nn_training/run_cache.py",
    "experiments/nn_training/tasks.py",
    "experiments/nn_training/training.py",
)
_ADAM_SPACE = {"lr": _LR, "1-beta2": (1e-3, 1e-1)}

OPTIMIZERS: dict[str, OptimizerSpec] = {
    s.name: s
    for s in [
        OptimizerSpec("adamw", "AdamW", "tab:blue", _ADAM_SPACE, _adamw, sources=PEER_SOURCES),
        OptimizerSpec("soap", "SOAP", "tab:green", _ADAM_SPACE, _soap, sources=PEER_SOURCES),
        OptimizerSpec(
            "muon",
            "Muon",
            "tab:purple",
            {"lr": (3e-3, 3e-1), "adamw_lr": _LR},
            _muon,
            sources=PEER_SOURCES,
        ),
        OptimizerSpec(
            "spectral-p2", "SpectralKron defaults (ours)", "tab:red", _SK_DEFAULT_SPACE, _spectral()
        ),
        OptimizerSpec(
            "spectral-p1",
            "Spectral p=1, paper scheme (ours)",
            "tab:orange",
            _SK_SPACE,
            _spectral(root=1.0, **PAPER_SCHEME),
        ),
        OptimizerSpec(
            "spectral-p2-paper",
            "Spectral p=2, paper scheme (ours)",
            "tab:brown",
            _SK_SPACE,
            _spectral(**PAPER_SCHEME),
        ),
    ]
}

#: Fig. 4 / Fig. 10 ablations of ``spectral-p2`` at its tuned hyper-parameters.
ABLATIONS: dict[str, OptimizerSpec] = {
    s.name: s
    for s in [
        OptimizerSpec(
            "spectral-p2-bf16",
            "SpectralKron defaults, bf16 state",
            "tab:olive",
            _SK_DEFAULT_SPACE,
            _spectral(state_dtype=torch.bfloat16),
            tuned_as="spectral-p2",
        ),
        OptimizerSpec(
            "spectral-p2-exact",
            "SpectralKron defaults, exact Cayley",
            "tab:pink",
            _SK_DEFAULT_SPACE,
            _spectral(cayley="exact"),
            tuned_as="spectral-p2",
        ),
    ]
}


def optimizer_spec(name: str) -> OptimizerSpec:
    """The method ``name``: its entry of ``OPTIMIZERS`` or ``ABLATIONS`` (``ValueError`` for
    any other name)."""
    spec = OPTIMIZERS.get(name) or ABLATIONS.get(name)
    if spec is None:
        raise ValueError(f"optimizer: expected one of {[*OPTIMIZERS, *ABLATIONS]}, got {name!r}")
    return spec


def build_optimizer(
    name: str, model: nn.Module, hp: dict[str, float], update_every: int = 2
) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of ``OPTIMIZERS`` or ``ABLATIONS``) for ``model``."""
    return optimizer_spec(name).build(model, hp, update_every)


@contextlib.contextmanager
def spectral_variant(name: str, options: dict[str, Any], label: str) -> Iterator[str]:
    """``SpectralKron``'s defaults with ``options`` as the method ``name`` (an entry of
    ``ABLATIONS`` while the block runs, labelled ``label``), so that ``train`` and the
    benchmarks build it as every other method; removed afterwards."""
    ABLATIONS[name] = OptimizerSpec(name, label, "k", {}, _spectral(**options))
    try:
        yield name
    finally:
        del ABLATIONS[name]
