"""The methods of ``spd.minimize``: one runner per parametrisation of ``S`` (paper Sec. 4.2).

All three take the Riemannian gradient step of the same Fisher-Rao (affine-invariant) metric
``1/2 tr(S^-1 dS S^-1 dS)``, so with the same ``lr`` each steps ``S - 2 lr S E S + O(lr^2)``
(paper Fig. 3):

* ``"spectral"``: ``S = B Diag(d) B^T`` on ``SpectralSPD``, ``RGD(M, lr).step`` (ours; no
  eigendecomposition, Cholesky or inverse of ``S`` after initialisation);
* ``"retraction"``: dense ``S`` with geoopt's ``SymmetricPositiveDefinite`` and
  ``RiemannianSGD`` at ``2 lr`` (``baselines.RetractionRGD``; geoopt's metric is twice ours);
* ``"cholesky"``: ``S = L L^T``, ``L <- L h(-2 lr Phi(L^T E L))`` (``baselines.CholeskyRGD``,
  Lin et al. 2023).

Fast path: on a problem with ``congruence_grad`` (``factored``) the spectral method passes
its factors ``(B, d)`` and hands ``G = B^T E B`` to ``RGD.step_eigenbasis``; the Cholesky
method passes ``(L, 1)``. Neither forms ``S``, ``S^-1`` or a decomposition. Other problems go
through the dense ``egrad(S)`` and ``RGD.step``.

Each runner exposes ``step(batch)``, ``matrix()``, ``logdet()``, ``factors()``, ``point()``,
``snapshot()``/``restore(state)``, ``accepts(state)`` (whether a state's point is a valid
``x0``), ``count`` (the steps of its re-orthogonalisation
schedule) and ``finish()``, the calls of ``minimize``'s loop.

Warm starts: ``result.point`` carries a ``Resume`` record (``attach_resume``/``resume_of``),
what a continuing call needs to be the same run, bit for bit: the runner's exact state before
``finish`` repaired it, the schedule's step count and the mini-batch generator's state.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..baselines.cholesky_rgd import CholeskyPoint, CholeskyRGD
from ..baselines.retraction_rgd import RetractionRGD
from ..linalg import sym
from ..manifolds import SpectralPoint, SpectralSPD
from ..rgd import RGD
from .spd_inputs import _as_tensor, _spd_matrix
from .spd_problems import SPDProblem

__all__ = [
    "METHODS",
    "METHOD_CLASSES",
    "GoodIterates",
    "Resume",
    "attach_resume",
    "resume_of",
    "resume_applies",
    "result_point",
    "start_matrix",
]

#: The methods of ``minimize``.
METHODS = ("spectral", "retraction", "cholesky")


class _Spectral:
    """``S = B Diag(d) B^T``; ``RGD(SpectralSPD).step`` (``step_eigenbasis`` on the fast path)."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        self.problem = problem
        self.M = SpectralSPD(problem.n, dtype=problem.dtype, device=problem.device)
        if x0 is None:
            self.x = self.M.origin()
        elif isinstance(x0, SpectralPoint):
            self.M.validate_point(x0, "x0")
            self.x = x0
        else:
            # The one eigendecomposition, at initialisation; its errors name the argument x0.
            self.x = self.M._from_matrix(x0, "x0")
        self.opt = RGD(
            self.M,
            lr,
            momentum,
            cayley=cayley,
            jacobi=rotation != "linear",
            second_order=rotation == "second-order",
        )
        #: The first step of a run (not of a resumed one) splits what ties it cannot
        #: (``SpectralSPD.split_ties``: from the default ``x0 = I`` a gradient of constant
        #: diagonal would leave every eigenvalue tied at every step).
        self.pending_split = True

    @property
    def count(self) -> int:
        """Steps on RGD's re-orthogonalisation schedule (every ``reorthogonalize_every``)."""
        return self.opt.steps

    @count.setter
    def count(self, value: int) -> None:
        self.opt.steps = value

    def step(self, batch: Any) -> None:
        p, x = self.problem, self.x
        split, self.pending_split = self.pending_split, False
        if p.factored:
            # x is the start (validated in __init__) or RGD's last output (checked by RGD).
            G = p.congruence_grad(x.B, x.d, batch, orthogonal=True)
            if split:
                x, G = self.M.split_ties(x, G, self.opt.lr)
            self.x = self.opt.step_eigenbasis(x, G, check_input=False)
        else:
            E = p.egrad(self.M.to_matrix(x), batch)
            if split:
                x, _ = self.M.split_ties(x, self.M.rotate(x, E), self.opt.lr)
            self.x = self.opt.step(x, E)

    def matrix(self) -> Tensor:
        return self.M.to_matrix(self.x)

    def logdet(self) -> Tensor:
        """``log det S`` of ``S = B Diag(d) B^T`` as it is: ``sum log d + log det(B^T B)``.

        ``sum log d`` alone assumes ``B^T B = I``; between RGD's re-orthogonalisations
        (float32: every 100 steps; Neumann: every 10) ``B`` drifts, and in float32 that drift
        moved ``f`` by 10x its resolution ``eps |f*|``: the reported value and the ``tol``
        test described another matrix than ``result.x``. With ``E = B^T B - I``,
        ``log det(I + E) = tr E + O(||E||^2)`` and ``tr E = ||B||_F^2 - n``: O(n^2), no
        product or decomposition, summed in float64 (in float32 the sum's own rounding
        would be of the size of the drift). Runs without a schedule (exact Cayley in
        float64, where ``B`` is orthogonal to rounding) skip it and keep their values bit
        for bit.
        """
        logdet = self.M.logdet(self.x)
        if not self.opt.reorthogonalize_every:
            return logdet
        B = self.x.B.to(torch.float64)
        drift = (B * B).sum() - self.problem.n
        return (logdet.to(torch.float64) + drift).to(logdet.dtype)

    def factors(self) -> tuple[Tensor, Tensor]:
        return self.x.B, self.x.d

    def point(self) -> Any:
        return self.x

    def snapshot(self) -> Any:
        return self.x  # immutable

    def restore(self, state: Any) -> None:
        self.x = state
        self.pending_split = False  # a resumed run continues as the run it came from

    def accepts(self, state: Any) -> bool:
        return True  # every iterate passed RGD's check: d > 0, B orthogonal

    def finish(self) -> bool:
        """Make the final iterate a point that ``SpectralSPD.check_point`` accepts; whether
        it changed.

        Neumann steps leave ``||B^T B - I||`` up to ``reorthogonalize_every`` steps' defect
        (1e-7 and more in float64) above the full check's ``orthogonality_tol``; RGD only
        needs its O(n^2) probe, but ``result.point`` is a point handed to other calls (a
        warm start validates ``x0`` fully). Newton-Schulz polar steps (two products each, no
        decomposition) converge quadratically from there; runs whose ``B`` already passes
        (exact Cayley) are returned bit for bit.
        """
        if self.M.check_point(self.x)[0]:
            return False
        x = self.x
        for _ in range(3):
            x = self.M.reorthogonalize(x)
            if self.M.check_point(x)[0]:
                self.x = x
                return True
        return False  # not repairable by polar steps: returned as the run left it


class _Cholesky:
    """``S = L L^T``; ``CholeskyRGD.step`` (or ``step_congruence`` on the fast path)."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        self.problem = problem
        self.opt = CholeskyRGD(problem.n, lr, momentum, dtype=problem.dtype, device=problem.device)
        if x0 is None:
            self.L = self.opt.origin()
        elif isinstance(x0, CholeskyPoint):  # a warm start: resume at exactly this L
            self.L = self.opt.validate_point(x0, "x0")
        else:
            self.L = self.opt.from_matrix(x0)
        self.ones = torch.ones(problem.n, dtype=problem.dtype, device=problem.device)
        self.count = 0  # no re-orthogonalisation schedule

    def step(self, batch: Any) -> None:
        p = self.problem
        if p.factored:
            self.L = self.opt.step_congruence(self.L, p.congruence_grad(self.L, self.ones, batch))
        else:
            self.L = self.opt.step(self.L, p.egrad(self.opt.to_matrix(self.L), batch))

    def matrix(self) -> Tensor:
        return self.opt.to_matrix(self.L)

    def logdet(self) -> Tensor:
        return self.opt.logdet(self.L)

    def factors(self) -> tuple[Tensor, Tensor]:
        return _eig_factors(self.matrix())

    def point(self) -> Any:
        return CholeskyPoint(self.L)  # typed: x0=L would be read as the matrix S = L

    def snapshot(self) -> Any:
        return self.L  # replaced, never updated in place

    def restore(self, state: Any) -> None:
        self.L = state

    def accepts(self, state: Any) -> bool:
        """Whether ``L L^T`` is positive definite as a matrix (what every method's ``x0``
        check asks): the positive diagonal that ``CholeskyRGD`` keeps is not enough once
        ``L`` is ill-conditioned enough that the product rounds to an indefinite matrix. One
        float64 Cholesky, after the run only."""
        try:
            _spd_matrix(self.opt.to_matrix(state), "S")
        except ValueError:
            return False
        return True

    def finish(self) -> bool:
        return False


class _Retraction:
    """Dense ``S``; geoopt's ``RiemannianSGD`` on ``SymmetricPositiveDefinite`` at ``2 lr``."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        if problem.dtype in (torch.float16, torch.bfloat16):  # a named error, not torch's
            raise TypeError(
                f"method='retraction': geoopt's SPD retraction inverts S, which torch cannot do "
                f"in {problem.dtype}; build the problem in float32 or float64, or use "
                f"method='spectral' or 'cholesky'"
            )
        self.problem = problem
        if x0 is None:
            x0 = torch.eye(problem.n, dtype=problem.dtype, device=problem.device)
        self.opt = RetractionRGD(x0, lr, momentum)
        self.count = 0  # no re-orthogonalisation schedule

    def step(self, batch: Any) -> None:
        S = self.opt.S.detach()
        self.opt.step(self.problem.egrad(S, batch))

    def matrix(self) -> Tensor:
        return self.opt.matrix()

    def logdet(self) -> Tensor | None:
        return None  # the problem computes it densely (monitoring only)

    def factors(self) -> tuple[Tensor, Tensor]:
        return _eig_factors(self.matrix())

    def point(self) -> Any:
        return self.matrix()

    def snapshot(self) -> Any:
        return self.matrix()  # a copy: geoopt updates S in place

    def restore(self, state: Any) -> None:
        with torch.no_grad():
            self.opt.S.copy_(state)

    def accepts(self, state: Any) -> bool:
        """Whether ``x0=state`` passes (symmetric, positive definite). geoopt's update keeps
        ``S`` finite but not positive definite once it diverges: the iterate can be
        indefinite with a finite ``f`` (metric nearness). One float64 Cholesky, after the
        run only (``minimize`` asks for the returned point and, if refused, earlier ones)."""
        try:
            _spd_matrix(state, "S")
        except ValueError:
            return False
        return True

    def finish(self) -> bool:
        return False


#: The runner of each method (the interface is in the module docstring).
METHOD_CLASSES = {"spectral": _Spectral, "retraction": _Retraction, "cholesky": _Cholesky}


class GoodIterates:
    """The recorded iterates with a finite ``f`` that a run which ends badly may return: the
    start and the last ``KEEP`` (the runner's snapshots, which it makes at every record
    anyway; references only for the spectral and Cholesky methods, whose states are never
    updated in place).

    ``last_valid()`` is the newest one whose point the next call accepts as ``x0``
    (``runner.accepts``): a diverged retraction run can pass through indefinite iterates
    with a finite ``f`` before ``f`` overflows, so "the last finite record" alone could
    return a point that no warm start takes. The start is always valid.
    """

    KEEP = 4

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.start: tuple[int, Any, float] | None = None
        self.recent: collections.deque = collections.deque(maxlen=self.KEEP)

    def add(self, k: int, fun: float) -> None:
        item = (k, self.runner.snapshot(), fun)
        if k == 0:
            self.start = item
        else:
            self.recent.append(item)

    def last_valid(self) -> tuple[tuple[int, Any, float] | None, bool]:
        """``(iteration, state, f)`` of the newest kept iterate that is a valid ``x0``
        (``None`` if none is), and whether newer finite ones were passed over."""
        for i, item in enumerate([*reversed(self.recent), self.start]):
            if item is not None and self.runner.accepts(item[1]):
                return item, i > 0
        return None, False


@dataclasses.dataclass(frozen=True, eq=False)
class Resume:
    """What ``x0=result.point`` needs to continue the run that returned it, bit for bit.

    ``method``: the run's method (``state`` and ``count`` apply to the same method only);
    ``state``: the runner's ``snapshot()`` before ``finish`` (a Neumann run's returned point
    is re-orthogonalised, but the run itself continues from the unrepaired iterate; the
    retraction's exact ``S``, which ``x0``'s conversion would symmetrise); ``count``: the
    steps of the spectral method's re-orthogonalisation schedule (every 100 steps in float32,
    10 with Neumann), which would otherwise restart with each call; ``seed`` and
    ``generator``: the mini-batch generator's seed and its state after the run's last batch
    (``None`` for a deterministic problem), which would otherwise replay the first batches.
    """

    method: str
    state: Any
    count: int
    seed: int
    generator: Tensor | None


#: The attribute of ``result.point`` that holds its ``Resume`` (a plain attribute: it is
#: not a leaf, so ``.to``, ``.clone`` and ``map`` drop it and a moved point starts afresh).
_RESUME = "_spd_resume"


def attach_resume(point: Any, resume: Resume) -> Any:
    """``point`` (a ``SpectralPoint``, ``CholeskyPoint`` or tensor, returned by
    ``runner.point()``) carrying ``resume``."""
    object.__setattr__(point, _RESUME, resume)  # frozen dataclasses refuse setattr
    return point


def resume_of(x0: Any) -> Resume | None:
    """The ``Resume`` that ``x0`` carries (``None`` for any other start)."""
    resume = getattr(x0, _RESUME, None)
    return resume if isinstance(resume, Resume) else None


def resume_applies(resume: Resume | None, method: str, problem: SPDProblem) -> bool:
    """Whether ``resume`` (carried by ``x0``) is the state of a run of ``method`` that
    ``problem``'s runner can continue: same method, dtype and device."""
    if resume is None or resume.method != method:
        return False
    leaf = resume.state.leaves()[0] if hasattr(resume.state, "leaves") else resume.state
    return leaf.dtype == problem.dtype and leaf.device == problem.device


def result_point(
    runner: Any, state: Any, method: str, seed: int, generator: Any, stochastic: bool
) -> Any:
    """``result.point``, carrying (when ``state`` is not None) what a warm start needs to
    continue this run bit for bit (``spd_methods.Resume``)."""
    point = runner.point()
    if state is None:
        return point
    batches = generator.get_state() if stochastic else None
    return attach_resume(point, Resume(method, state, runner.count, seed, batches))


def start_matrix(problem: SPDProblem, x0: Any) -> Any:
    """A matrix ``x0`` of ``spd.minimize`` validated against the problem (shape, symmetric,
    positive definite) in its dtype and device; ``None`` and points (``SpectralPoint``,
    ``CholeskyPoint``, which their methods validate) are returned as they are."""
    if x0 is None or isinstance(x0, (SpectralPoint, CholeskyPoint)):
        return x0
    S0, _ = _as_tensor(x0, "x0")
    if tuple(S0.shape) != (problem.n, problem.n):
        raise ValueError(
            f"x0: expected shape ({problem.n}, {problem.n}) to match the problem, "
            f"got {tuple(S0.shape)}"
        )
    S0, _, _ = _spd_matrix(S0, "x0")
    return S0.to(dtype=problem.dtype, device=problem.device)


def _eig_factors(S: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, d)`` of a dense baseline result: one ``eigh`` after the run (reporting only)."""
    # Post-processing of a baseline, not on the update path; 16-bit types have no eigh kernel.
    d, B = torch.linalg.eigh(  # baseline reporting only, after the run
        sym(S).float() if S.dtype in (torch.float16, torch.bfloat16) else sym(S)
    )
    return B.to(S.dtype), d.to(S.dtype)
