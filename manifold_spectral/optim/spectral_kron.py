"""``SpectralKron``: a torch optimizer with Kronecker spectral preconditioning (paper Sec. 3.4,
4.4, Fig. 6 right).

For a weight ``W`` (a x b; conv kernels viewed as (out, fan_in)) the curvature is
``S = alpha (S_L kron S_R)`` on ``KroneckerSpectralSPD(a, b)``, learned from the GOP of the
gradient by the practical (truncated-exponential) scheme with a Neumann Cayley map, and the step is

    W <- W - lr * clip(alpha^(-1/p) S_L^(-1/p) M S_R^(-1/p)),   M = momentum of the gradient,

computed from the factors: no decomposition, no inverse, every tensor of the state may be
bfloat16. Vectors (biases, norm scales), embeddings and matrices with a side larger than
``max_factor_dim`` use the diagonal spectral scheme (root-p RMSprop, App. A.1). The
curvature and root formulas live in the manifolds; this module only composes them with
momentum, weight decay, clipping and grafting (``transforms.py``); ``distributed.py`` runs the
step on several processes (``shard=True``, FSDP2 ``DTensor`` parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._denormals import flush_denormals
from . import checks, distributed, groups, option_defaults, transforms
from .checks import NonFiniteUpdate
from .consensus import JoinableMixin
from .groups import GroupsMixin
from .guards import GradientCheckFailed, GuardsMixin
from .pending import PendingChecks
from .precision import state_precision
from .serialization import StateDictMixin
from .updates import UpdateMixin

__all__ = ["SpectralKron", "NonFiniteUpdate"]


class SpectralKron(
    GroupsMixin, GuardsMixin, UpdateMixin, StateDictMixin, torch.optim.Optimizer, JoinableMixin
):
    """Kronecker spectral preconditioning, a drop-in ``torch.optim.Optimizer``.

    Args:
        params: parameters or parameter groups (every option may be set per group).
        lr: step size.
        beta2: curvature step size (the RGD step of the precision). ``None`` (default):
            ``1 - (1 - 0.1)^k`` for a curvature step every ``k`` steps (``update_every``;
            ``diagonal_every`` for the diagonal scheme), ``0.1`` at ``k = 1``: the curvature
            remembers about 10 optimizer steps at every period, as an average of every
            step's gradient statistics (SOAP's) does (``option_defaults.beta2``). A number:
            the rate of every curvature step, whatever the period (the paper's ``beta2``).
        root: ``p`` of the preconditioner ``S^(-1/p)`` (paper: 1 and 2).
        damping: ``lambda > 0`` added to the curvature (``H + lambda I``); keeps ``d > 0``
            where a gradient entry or direction is exactly zero. An absolute number in the
            gradient's squared units: the step ``g / sqrt(v + lambda)`` (the diagonal scheme;
            with the eigenvalue correction, ``(v + lambda)^(1/2) + eps`` with Adam's
            ``eps = 1e-8``) treats gradients below ``sqrt(lambda)`` as noise, as Adam's
            ``eps`` does below ``eps``. The default ``1e-16`` is Adam's ``eps^2``, so a loss
            multiplied by a constant changes the trajectory about as much as it changes
            AdamW's; a larger ``lambda`` turns the steps of a loss whose gradient entries are
            ``sqrt(lambda)`` or smaller into SGD's.
        gamma: entropy weight: 1 = moving average of the GOP, 0 = AdaGrad-like sum.
        update_every: curvature update period (paper: 2). Above 1, the uncorrected scheme's
            eigenvalues are floored by the GOP of ``(1 - momentum)`` times the direction, which
            its curvature has not wholly seen (``eigen_floor``; docs/optim.md): a spike is not
            stepped as far as it is large. Where the floor does not bind: the paper's step.
        accumulate_gop: with ``update_every > 1``, the Kronecker curvature step learns from
            the GOP of every gradient since the previous one (``mean_i vec(G_i) vec(G_i)^T``,
            ``KroneckerGOPSides``), not from the current gradient alone: the factors do not
            move between two curvature steps, so the one-sided sums ``W_L``, ``W_R`` of each
            step's gradient at that point are added up in the state (a x a and b x b per
            matrix; ``2ab(a + b)`` flops per step, a rotation ``B_L^T G B_R`` more without the
            eigenvalue correction). ``False``: the paper's scheme, which discards the
            gradients between two curvature steps. A curvature step that the period's mean
            overflows (a finite spike kept earlier) takes its own gradient's GOP instead,
            counted in the state (``gop_fallbacks``).
        diagonal_every: curvature period of the diagonal scheme (default ``1``: every step,
            whatever ``update_every``; ``None``: ``update_every``, the paper's one period). Its
            update is elementwise, as cheap as its step, and updating first bounds the step
            by ``beta2^(-1/2)``; a curvature that has not seen the gradient is only floored by
            the direction's GOP, a bound ``1 / (1 - momentum)`` times looser
            (``checks.curvature_period``).
        cayley: ``"neumann"`` (products only, bf16-friendly) or ``"exact"``.
        neumann_squarings: ``k``: the Neumann map as ``C(N / 2^k)^(2^k)`` (``k`` more
            products): the basis may turn ``2^k`` times further per curvature step.
            ``None``: ``option_defaults.NEUMANN_SQUARINGS`` with the Neumann map, ``0`` with
            the exact one.
        exponential: the curvature step's eigenvalue map: ``"truncated"`` (practical, Fig. 6
            right; default) or ``"exact"`` (``validation.EXPONENTIALS``; the ``truncated``
            bool of earlier versions is accepted with a ``DeprecationWarning``). The step is
            taken in closed form (``KroneckerSpectralSPD.closed_form_step``, paper Fig. 6
            right), whose truncated map ``(1 - gamma beta2) d + beta2 diag(W) / (alpha
            kappa)`` stays positive (``gamma beta2 < 1`` is required). A step whose map
            leaves the positive reals even so (a NaN from overflow) is retried with the
            map continued positively below ``m = -1/2`` (``blocks.eig_retract``) and counted
            in the parameter's state (``curvature_fallbacks``); a curvature step that fails
            even so (overflow) skips the whole step (``skipped_steps``, with a warning).
        eigenvalue_correction: precondition Kronecker parameters with the diagonal of the
            gradient outer product in the learned eigenbasis (an EMA of
            ``(B_L^T g B_R)^2``, bias-corrected, power ``-1/p``) instead of the product of the
            factors' eigenvalues: EKFAC's correction, where SOAP runs Adam, with the basis
            still learned by the spectral RGD (no decomposition). One buffer of the
            parameter's size (float32 for 16-bit states). The direction is taken in the basis
            before the step's curvature update (as SOAP's), whose GOP reuses the rotated
            gradient: no more matrix products than the paper's scheme.
            ``None`` (default): on for ``root >= 2`` (``option_defaults.corrected``). A Kronecker
            product of two factors' eigenvalues cannot scale the coordinates of the
            eigenbasis independently, and on held-out tasks that costs more than the buffer
            (benchmarks/bench_nn_real.py); ``False`` is the paper's scheme. Off by default
            below ``root=2``: the elementwise ``(v + lambda)^(-1/p)`` then amplifies the
            near-zero directions of rank-deficient layers by up to ``1 / lambda``.
        correction_beta: EMA coefficient of that diagonal (Adam's ``beta2``).
        jacobi: turn each eigenvector pair of a factor by its exact 2 x 2 Jacobi angle
            (``blocks.jacobi_angles``; default): the same first-order step, with rotations
            bounded where a factor's eigenvalues are close (e.g. right after the start).
        updated_gaps: divide the rotation by the gaps of the eigenvalues after the step's
            eigenvalue update (with ``jacobi``: each pair's exact 2 x 2 angle in the updated
            curvature, a Jacobi sweep's step; ``manifolds.kronecker_gop`` has the formula and
            why): nearly equal eigenvalues that a new gradient separates (a warm start on
            badly scaled inputs) turn at once. ``False``: the RGD step's angle at the old gaps.
        gap_damping: ``rho``: the rotation block's pseudo-inverse ``1 / (d_i - d_j)`` becomes
            ``(d_i - d_j) / ((d_i - d_j)^2 + (rho max(d_i, d_j))^2)`` (Tikhonov;
            ``blocks.rotation_natural_grad``). Pairs of eigenvalues closer than ``rho``
            (relative), whose rotation barely changes ``S`` but whose angle is an
            ill-conditioned ratio of two small numbers, are turned smoothly less; this makes
            the update a continuous (Lipschitz) function of the state and the gradient, so
            results differ by rounding when inputs do (threads, BLAS, DDP). ``0``: the hard
            Moore-Penrose cut at ``sqrt(eps)``.
        gap_floor: ``f`` in ``[0, 1]``: pairs of a factor's eigenvalues both below ``f`` times
            its largest are damped as if at ``f`` times it (``blocks.inverse_gaps``): a wide
            rank-deficient factor's directions without gradient energy stop using up the
            Neumann map's norm bound. ``0`` (default): no floor.
        basis_scale: ``c``: the basis's curvature step is ``c`` times the eigenvalues' (the
            rotation block's RGD step ``c beta2``, Fig. 6 right's ``M`` scaled by ``c``; with
            ``jacobi`` each pair turns by the 2 x 2 angle of a ``c`` times larger
            off-diagonal entry), the eigenvalues and ``alpha`` still move at ``beta2``. The
            learned basis lags the eigenbasis of its target, which is what the defaults
            pay against SOAP's ``eigh``-refreshed basis (``benchmarks/bench_basis_oracle.py``);
            ``c > 1`` over-relaxes each turn towards it while keeping the eigenvalues'
            memory (default ``option_defaults.BASIS_SCALE``). ``1``: the paper's single step
            size.
        momentum: momentum coefficient on the gradient, in ``[0, 1)``. The buffer sums
            gradients (SGD's convention, ``m <- momentum m + g``), so at equal ``lr`` the step
            is about ``1 / (1 - momentum)`` times that of Adam's averaged ``m`` (a different
            ``momentum`` at the same step size: ``lr (1 - momentum)`` held fixed). The
            default ``0.85`` remembers about 7 gradients, not 0.9's 10: in the learned
            eigenbasis the step is already Adam's normalised one, and at equal step size a
            shorter memory follows the gradient with less lag, so a run tolerates larger steps
            before its held-out loss turns up (benchmarks/bench_optim_seeds.py and the
            ``digits`` learning-rate curve; the paper's scheme keeps ``0.9``).
        nesterov: Nesterov momentum (default): the direction ``g + momentum m`` with the
            updated buffer ``m``, instead of ``m`` itself. Its size for a steady gradient is
            the heavy ball's, ``g / (1 - momentum)``, so a tuned ``lr`` carries over; it
            weights the current gradient ``1 + momentum`` times more than the heavy ball does,
            so the step lags the gradient less, as with SGD's and Muon's Nesterov option
            (benchmarks/bench_optim_seeds.py: the four NN tasks over many seeds with and
            without it). ``False``: the heavy ball.
        weight_decay: decoupled weight decay.
        clip_rms: if set, the preconditioned update of each layer is rescaled to RMS at most
            this value (paper Sec. 3.4).
        graft: ``None`` or ``"adam"``: use the preconditioned direction with the norm of
            Adam's update (an extra second-moment buffer).
        state_dtype: dtype of factors, ``d``, ``alpha`` and momentum (default: the
            parameter's, float32 for float16 parameters, whose range cannot hold squared
            gradients); ``torch.bfloat16`` works without casts to float32.
        max_factor_dim: matrices with a side above this use the diagonal scheme.
        max_aspect: matrices whose long side is more than this many times their short side
            use the diagonal scheme (``None``: no limit). Why: an ``a x b`` gradient has rank
            at most ``min(a, b)``, so the long side's factor sees about ``min(a, b) / beta2``
            directions within its memory; a classification head on wide features (``10 x
            1024``) leaves most of its ``1024 x 1024`` factor at the damping.
        warm_start: initialise ``S`` from the first gradient, at its scale
            (``tr(S) / (ab) = mean(g^2) + damping``; one float64 ``eigh`` per factor, at
            initialisation only, whose basis inside repeated eigenvalues is fixed by ``S``
            alone: ``linalg.eigh_canonical``; default) instead of the identity (``False``): from the
            identity, ``alpha`` needs hundreds of updates to come down to the gradient's
            scale. A parameter whose gradient is all zeros before its first nonzero one
            waits for it (no state, no update, no weight decay): a zero gradient has no scale
            (``BucketMixin._awaits_warm_start``).
        diagonal: force the diagonal scheme for every parameter of the group.
        batched: update Kronecker parameters of a group (same state dtype, device and step
            count, sides up to about 256) together: one set of batched products on a
            ``batch=k`` manifold instead of k separate updates (the same formulas; results
            equal to rounding). Same-shaped parameters always share a bucket; small ones of
            different shapes are padded with identity factors to the bucket's largest sides
            while the padding costs fewer flops than the per-call overhead it saves
            (``manifolds.kronecker_padding``, ``buckets._pad_buckets``). Saves the
            per-parameter overhead that dominates small layers; costs one transient copy of
            the bucket's factors.
        nonfinite: ``"raise"`` (default: a ``ValueError`` naming the parameter, nothing
            changed) or ``"skip"`` (the step is skipped, ``skipped_steps`` counts them) for
            a NaN or Inf gradient. A finite gradient never raises: a step that the state or
            parameter dtype cannot hold (squares of the gradient, the curvature step, the
            update or ``lr`` times it overflow; ``checks.square_bound``, ``pending.
            update_fits``) is skipped with a ``RuntimeWarning`` and counted in
            ``skipped_steps`` whatever this option.
        shard: split the preconditioner work over the ranks of ``process_group`` (ZeRO-1
            style, as Distributed Shampoo): each parameter has one owner rank (greedy
            balance of ``a^3 + b^3 + ab(a + b)`` per Kronecker matrix, ``numel`` per diagonal
            one), which alone computes its update and keeps its state; the updates are then
            all-gathered and every rank applies all of them. Needs an initialised
            ``torch.distributed`` and the same gradients on every rank (DDP, FSDP2), and
            the same parameters: construction and ``add_param_group`` are collectives that
            raise ``ValueError`` on every rank when they differ (``Sharding.check_params``). The
            parameters equal the unsharded run's bit for bit (the owners hold whole buckets);
            compute and state per rank fall
            roughly as ``1 / world_size``. ``state_dict()`` is this rank's shard (resume with
            the same world size); ``consolidated_state_dict()`` gathers the whole state.
        process_group: the ranks that share the work (default: the whole world). Also used
            for the step's consensus on ``DTensor`` parameters.

    Parameters may be FSDP2 ``DTensor`` shards (``torch.distributed.fsdp.fully_shard``): the
    gradient is gathered in full where the update is computed (a Kronecker factor needs the
    whole matrix) and every rank adds its own slice of the update. Without ``shard`` every
    rank computes every update and keeps the whole state; with it, only the owner does.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        beta2: float | None = None,
        root: float = 2.0,
        damping: float = 1e-16,
        gamma: float = 1.0,
        update_every: int = 1,
        accumulate_gop: bool = True,
        diagonal_every: int | None = 1,
        cayley: str = "neumann",
        neumann_squarings: int | None = None,
        exponential: str = option_defaults.DEFAULT_EXPONENTIAL,
        jacobi: bool = True,
        updated_gaps: bool = True,
        gap_damping: float = option_defaults.GAP_DAMPING,
        gap_floor: float = 0.0,
        basis_scale: float = option_defaults.BASIS_SCALE,
        eigenvalue_correction: bool | None = None,
        correction_beta: float = 0.95,
        momentum: float = 0.85,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        clip_rms: float | None = None,
        graft: str | None = None,
        state_dtype: torch.dtype | None = None,
        max_factor_dim: int = 2048,
        max_aspect: float | None = None,
        warm_start: bool = True,
        diagonal: bool = False,
        batched: bool = True,
        nonfinite: str = "raise",
        shard: bool = False,
        process_group: Any = None,
        truncated: bool | None = None,
    ) -> None:
        if truncated is not None:
            exponential = option_defaults.legacy_truncated(truncated, exponential)
        defaults = dict(
            lr=lr,
            beta2=beta2,
            root=root,
            damping=damping,
            gamma=gamma,
            update_every=update_every,
            accumulate_gop=accumulate_gop,
            diagonal_every=diagonal_every,
            cayley=cayley,
            neumann_squarings=neumann_squarings,
            exponential=exponential,
            jacobi=jacobi,
            updated_gaps=updated_gaps,
            gap_damping=gap_damping,
            gap_floor=gap_floor,
            basis_scale=basis_scale,
            eigenvalue_correction=eigenvalue_correction,
            correction_beta=correction_beta,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clip_rms=clip_rms,
            graft=graft,
            state_dtype=state_dtype,
            max_factor_dim=max_factor_dim,
            max_aspect=max_aspect,
            warm_start=warm_start,
            diagonal=diagonal,
            batched=batched,
        )
        self._validate(defaults)
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite: expected 'raise' or 'skip', got {nonfinite!r}")
        if not isinstance(shard, bool):
            raise TypeError(f"shard: expected a bool, got {shard!r}")
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._process_group = process_group
        self._sharding: distributed.Sharding | None = None  # add_param_group reads it
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._validate(group)
        self._preconditioners: dict[Tensor, Any] = {}
        self._batched: dict[Any, Any] = {}
        self._packed: dict[Any, Any] = {}  # pack_cache.PackCache
        self._signatures: dict[int, tuple[Any, ...]] = {}  # id(group) -> its options
        self._new_step_tensors()
        if shard:
            self._sharding = distributed.Sharding(process_group)
            self._sharding.assign(self.param_groups, self._owner_units)

    param_groups = staticmethod(groups.param_groups)

    # The step ----------------------------------------------------------------------------

    # Not traced by torch.compile: a step is many small data-dependent calls with host
    # synchronisations; a compiled caller runs it eagerly (a graph break), with the same bits.
    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimisation step. All updates are computed before any parameter or state is
        written, so a failure (non-finite gradient, a curvature step that leaves the
        manifold) leaves everything as it was."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._new_step_tensors()
        # Subnormal entries (gradients of tokens the data never contains, decaying momenta,
        # the Neumann series' powers of small angles) would take the CPU's slow path in every
        # product; flushed to zero they change no rounded result (_denormals). A step called
        # under torch.inference_mode makes ordinary tensors (its reuse reads version counters)
        # and computes in the state dtype, whatever autocast or matmul precision (precision).
        precision = state_precision(p.device.type for g in self.param_groups for p in g["params"])
        with flush_denormals(), precision, torch.inference_mode(False), torch.no_grad():
            self._step()
        return loss

    def _step(self, defer: bool = True) -> None:
        """The body of ``step`` after the closure: skipped steps count in ``skipped_steps``.
        ``defer``: read the gradients' check with the results' where it may
        (``_check_grads``); when it fails, the step is taken again with it read first."""
        if self._sharding is not None or distributed.has_dtensor(self.param_groups):
            if not distributed.step(self, self._sync_groups):
                self.skipped_steps += 1
            return
        self._sync_groups()
        plan: list[tuple[dict[str, Any], list[Tensor], Tensor | None, Any]] = []
        fresh: list[bool] = []  # per bucket: without state (its members share a step count)

        def packed() -> list[Tensor]:
            """The step's buckets, with their gradients packed once (for the check and the
            update); a bucket of gradients of different dtypes gives them one by one."""
            out = []
            for group in self.param_groups:
                for bucket in self._buckets(group):
                    pre = self._bucket_preconditioner(group, bucket)  # once a step
                    G = self._pack_grads(group, bucket, pre)
                    plan.append((group, bucket, G, pre))
                    fresh.append(not self.state.get(bucket[0]))
                    out.extend([p.grad for p in bucket] if G is None else [G])
            return out

        # The buckets' checks of their results, read together (one host synchronisation) before
        # anything is written or a curvature update runs; an error of a later bucket is raised
        # only when every earlier check passed, as when each is read at once. The gradients'
        # check comes first among them.
        pending = PendingChecks()
        if not self._check_grads(packed, lambda: pending if defer and not any(fresh) else None):
            self.skipped_steps += 1
            return
        results: list[tuple[dict[str, Any], Tensor, Any]] = []
        try:
            try:
                for group, bucket, G, pre in plan:
                    grads = [p.grad for p in bucket]
                    out = self._compute_many(group, bucket, grads, pending, G, pre)
                    results.extend((group, p, r) for p, r in zip(bucket, out, strict=True))
            except Exception:
                pending.flush()
                raise
            pending.flush()
        except NonFiniteUpdate as e:
            self.skipped_steps += 1
            checks.warn_skipped(str(e))
            return
        except GradientCheckFailed:  # nothing written: the check read first decides
            return self._step(defer=False)
        self._apply_updates(results)

    # The two halves of a step, for ``distributed.step`` -----------------------------------

    @property
    def sharding(self) -> distributed.Sharding | None:
        """The owner ranks of the parameters (``shard=True``), else ``None``."""
        return self._sharding

    @property
    def process_group(self) -> Any:
        """The ranks that share the work (``None``: the whole world)."""
        return self._process_group

    def compute_update(
        self, group: dict[str, Any], p: Tensor, grad: Tensor | None = None
    ) -> tuple[dict[str, Any], Tensor]:
        """The new state entries and the update direction ``u`` of one parameter, writing
        nothing; ``grad`` (default ``p.grad``) is the whole gradient, gathered for a
        ``DTensor``. Raises ``NonFiniteUpdate`` when the step must be skipped."""
        return self._compute_many(group, [p], [p.grad if grad is None else grad])[0]

    def apply_update(
        self, group: dict[str, Any], p: Tensor, new_state: dict[str, Any] | None, u: Tensor
    ) -> None:
        """Write one parameter's step: its new state entries (``None``: another rank keeps
        them), decoupled weight decay, then ``p <- p - lr u`` (``u`` shaped and typed like
        ``p``; a ``DTensor`` parameter gets its local slice of ``u``)."""
        if new_state is not None:
            self.state[p].update(new_state)
        transforms.weight_decay(p, group["lr"], group["weight_decay"])
        p.add_(distributed.local_part(u, p), alpha=-group["lr"])
