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

from ..linalg import all_finite
from ..manifolds.blocks import TruncationError
from . import checks, distributed, transforms
from .checks import COUNTERS, NonFiniteUpdate, check_param_state, validate_group
from .preconditioners import make_preconditioner, param_cost

__all__ = ["SpectralKron", "NonFiniteUpdate"]

_PRECOND_PREFIX = "pc_"
#: ``batched`` buckets only parameters whose preconditioner cost ``a^3 + b^3 + ab(a + b)``
#: is at most that of a 256 x 256 matrix: above it the products dominate the per-parameter
#: overhead, and batched elementwise work on large factors falls out of cache
#: (``benchmarks/bench_optim_batched.py`` measures both sides of the bound).
BATCH_MAX_COST = 4 * 256**3


#: Default ``gap_damping``: the perturbation of a rotation angle by a rounding-level change of
#: the input grows like ``1 / rho^2`` (tests/test_optim_continuity.py), and a rotation inside
#: a pair closer than ``rho`` changes ``S^(-1/2)`` by at most about ``rho / 2`` relative. The
#: angles of such pairs are mostly gradient noise (a one-sample GOP's off-diagonal entries
#: are as large as the gaps), and with the Neumann Cayley map they would also use up the
#: norm budget of the whole rotation step, slowing the pairs whose rotation matters:
#: benchmarks/bench_basis_tracking.py measures how well the basis tracks its target.
GAP_DAMPING = 0.3

#: Values of options missing from a state dict saved before they existed: the behaviour of
#: that version (the current defaults for the others).
_LEGACY = {"jacobi": False, "gap_damping": 0.0}


class SpectralKron(torch.optim.Optimizer):
    """Kronecker spectral preconditioning, a drop-in ``torch.optim.Optimizer``.

    Args:
        params: parameters or parameter groups (every option may be set per group).
        lr: step size.
        beta2: curvature step size (the RGD step of the precision).
        root: ``p`` of the preconditioner ``S^(-1/p)`` (paper: 1 and 2).
        damping: ``lambda > 0`` added to the curvature (``H + lambda I``); keeps ``d > 0``
            where a gradient entry or direction is exactly zero.
        gamma: entropy weight: 1 = moving average of the GOP, 0 = AdaGrad-like sum.
        update_every: curvature update period (paper: 2).
        cayley: ``"neumann"`` (products only, bf16-friendly) or ``"exact"``.
        exponential: the curvature step's eigenvalue map: ``"truncated"`` (practical, Fig. 6
            right; default) or ``"exact"`` (``validation.EXPONENTIALS``; the ``truncated``
            bool of earlier versions is accepted with a ``DeprecationWarning``). A truncated
            step whose map ``d (1 + m)`` would leave the positive reals (a very
            large curvature step, or bf16 cancellation) is taken with that map continued
            positively below ``m = -1/2`` instead (``blocks.eig_retract``), and counted in
            the parameter's state (``curvature_fallbacks``); a curvature step that fails even
            so (overflow) keeps the previous curvature (``curvature_rejections``).
        eigenvalue_correction: precondition Kronecker parameters with the diagonal of the
            gradient outer product in the learned eigenbasis (an EMA of
            ``(B_L^T g B_R)^2``, bias-corrected, power ``-1/p``) instead of the product of the
            factors' eigenvalues: EKFAC's correction, where SOAP runs Adam, with the basis
            still learned by the spectral RGD (no decomposition). One buffer of the
            parameter's size (float32 for 16-bit states). The direction is taken in the basis
            before the step's curvature update (as SOAP's), whose GOP reuses the rotated
            gradient: no more matrix products than the paper's scheme.
            ``None`` (default): on for ``root >= 2`` (``checks.corrected``). A Kronecker
            product of two factors' eigenvalues cannot scale the coordinates of the
            eigenbasis independently, and on held-out tasks that costs more than the buffer
            (benchmarks/bench_nn_real.py); ``False`` is the paper's scheme. Off by default
            below ``root=2``: the elementwise ``(v + lambda)^(-1/p)`` then amplifies the
            near-zero directions of rank-deficient layers by up to ``1 / lambda``.
        correction_beta: EMA coefficient of that diagonal (Adam's ``beta2``).
        jacobi: turn each eigenvector pair of a factor by its exact 2 x 2 Jacobi angle
            (``blocks.jacobi_angles``; default): the same first-order step, with rotations
            bounded where a factor's eigenvalues are close (e.g. right after the start).
        gap_damping: ``rho``: the rotation block's pseudo-inverse ``1 / (d_i - d_j)`` becomes
            ``(d_i - d_j) / ((d_i - d_j)^2 + (rho max(d_i, d_j))^2)`` (Tikhonov;
            ``blocks.rotation_natural_grad``). Pairs of eigenvalues closer than ``rho``
            (relative), whose rotation barely changes ``S`` but whose angle is an
            ill-conditioned ratio of two small numbers, are turned smoothly less; this makes
            the update a continuous (Lipschitz) function of the state and the gradient, so
            results differ by rounding when inputs do (threads, BLAS, DDP). ``0``: the hard
            Moore-Penrose cut at ``sqrt(eps)``.
        momentum: heavy-ball coefficient on the gradient, in ``[0, 1)``. The buffer sums
            gradients (SGD's convention, ``m <- momentum m + g``), so at equal ``lr`` the step
            is about ``1 / (1 - momentum)`` times that of Adam's averaged ``m``.
        nesterov: Nesterov momentum.
        weight_decay: decoupled weight decay.
        clip_rms: if set, the preconditioned update of each layer is rescaled to RMS at most
            this value (paper Sec. 3.4).
        graft: ``None`` or ``"adam"``: use the preconditioned direction with the norm of
            Adam's update (an extra second-moment buffer).
        state_dtype: dtype of factors, ``d``, ``alpha`` and momentum (default: the
            parameter's); ``torch.bfloat16`` works without casts to float32.
        max_factor_dim: matrices with a side above this use the diagonal scheme.
        warm_start: initialise ``S`` from the first gradient, at its scale
            (``tr(S) / (ab) = mean(g^2) + damping``; one float64 ``eigh`` per factor, at
            initialisation only, whose basis inside repeated eigenvalues is fixed by ``S``
            alone: ``linalg.eigh_canonical``; default) instead of the identity (``False``): from the
            identity, ``alpha`` needs hundreds of updates to come down to the gradient's
            scale.
        diagonal: force the diagonal scheme for every parameter of the group.
        batched: update same-shaped Kronecker parameters of a group (same state dtype,
            device and step count, sides up to about 256) together: one set of batched
            products on a ``batch=k`` manifold instead of k separate updates (the same
            formulas; results equal to rounding). Saves the per-parameter overhead that
            dominates small layers; costs one
            transient copy of the bucket's factors.
        nonfinite: ``"raise"`` (default: a ``ValueError`` naming the parameter, nothing
            changed) or ``"skip"`` (the step is skipped, ``skipped_steps`` counts them) for
            a NaN or Inf gradient. A finite gradient never raises: a step whose update
            overflows is skipped and counted in ``skipped_steps`` whatever this option.
        shard: split the preconditioner work over the ranks of ``process_group`` (ZeRO-1
            style, as Distributed Shampoo): each parameter has one owner rank (greedy
            balance of ``a^3 + b^3 + ab(a + b)`` per Kronecker matrix, ``numel`` per diagonal
            one), which alone computes its update and keeps its state; the updates are then
            all-gathered and every rank applies all of them. Needs an initialised
            ``torch.distributed`` and the same gradients on every rank (DDP, FSDP2). The
            parameters equal the unsharded run's bit for bit; compute and state per rank fall
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
        beta2: float = 0.1,
        root: float = 2.0,
        damping: float = 1e-12,
        gamma: float = 1.0,
        update_every: int = 1,
        cayley: str = "neumann",
        exponential: str = "truncated",
        jacobi: bool = True,
        gap_damping: float = GAP_DAMPING,
        eigenvalue_correction: bool | None = None,
        correction_beta: float = 0.95,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_rms: float | None = None,
        graft: str | None = None,
        state_dtype: torch.dtype | None = None,
        max_factor_dim: int = 2048,
        warm_start: bool = True,
        diagonal: bool = False,
        batched: bool = True,
        nonfinite: str = "raise",
        shard: bool = False,
        process_group: Any = None,
        truncated: bool | None = None,
    ) -> None:
        if truncated is not None:
            exponential = checks.legacy_truncated(truncated)
        defaults = dict(
            lr=lr,
            beta2=beta2,
            root=root,
            damping=damping,
            gamma=gamma,
            update_every=update_every,
            cayley=cayley,
            exponential=exponential,
            jacobi=jacobi,
            gap_damping=gap_damping,
            eigenvalue_correction=eigenvalue_correction,
            correction_beta=correction_beta,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clip_rms=clip_rms,
            graft=graft,
            state_dtype=state_dtype,
            max_factor_dim=max_factor_dim,
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
        if shard:
            self._sharding = distributed.Sharding(process_group)
            self._sharding.assign(self.param_groups)

    @staticmethod
    def param_groups(model: torch.nn.Module, **diagonal_options: Any) -> list[dict[str, Any]]:
        """Two parameter groups for ``model``: embedding tables (``nn.Embedding``,
        ``nn.EmbeddingBag``) with ``diagonal=True`` (plus ``diagonal_options``), and the rest.

        Matrices get Kronecker factors and vectors the diagonal scheme automatically; only
        embeddings need marking, since a parameter does not know it is one.
        """
        emb: list[Tensor] = []
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
                emb.extend(mod.parameters(recurse=False))
        emb_ids = {id(p) for p in emb}
        rest = [p for p in model.parameters() if id(p) not in emb_ids]
        groups: list[dict[str, Any]] = [{"params": rest}]
        if emb:
            groups.append({"params": emb, "diagonal": True, **diagonal_options})
        return groups

    @staticmethod
    def _validate(g: dict[str, Any]) -> None:
        validate_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim``'s, with the group's options validated first: a rejected group is
        not registered (its parameters can be added again with valid options)."""
        if isinstance(param_group, dict) and "truncated" in param_group:
            param_group = dict(param_group)
            param_group["exponential"] = checks.legacy_truncated(param_group.pop("truncated"))
        if isinstance(param_group, dict) and hasattr(self, "defaults"):
            self._validate({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])
        if getattr(self, "_sharding", None) is not None:
            self._sharding.assign(self.param_groups)

    # State helpers -----------------------------------------------------------------------

    def _state_dtype(self, group: dict[str, Any], p: Tensor) -> torch.dtype:
        return group["state_dtype"] or p.dtype

    def _preconditioner(self, group: dict[str, Any], p: Tensor) -> Any:
        pre = self._preconditioners.get(p)
        if pre is None:
            pre = make_preconditioner(p, self._state_dtype(group, p), group)
            self._preconditioners[p] = pre
        return pre

    @staticmethod
    def _precond_state(state: dict[str, Any]) -> dict[str, Tensor]:
        n = len(_PRECOND_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(_PRECOND_PREFIX)}

    def _check_grads(self) -> bool:
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise checks.sparse_gradient_error(gi, pi)
                if not bool(torch.isfinite(p.grad).all()):
                    if self.nonfinite == "skip":
                        return False
                    raise checks.nonfinite_gradient_error(gi, pi, tuple(p.shape))
        return True

    # The step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimisation step. All updates are computed before any parameter or state is
        written, so a failure (non-finite gradient, a curvature step that leaves the
        manifold) leaves everything as it was."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._sharding is not None or distributed.has_dtensor(self.param_groups):
            if not distributed.step(self):
                self.skipped_steps += 1
            return loss
        if not self._check_grads():
            self.skipped_steps += 1
            return loss
        pending = []
        try:
            for group in self.param_groups:
                for bucket in self._buckets(group):
                    results = self._compute_many(group, bucket, [p.grad for p in bucket])
                    pending.extend((group, p, r) for p, r in zip(bucket, results, strict=True))
        except NonFiniteUpdate:
            self.skipped_steps += 1
            return loss
        for group, p, (new_state, update) in pending:
            self.apply_update(group, p, new_state, update.reshape(p.shape).to(p.dtype))
        return loss

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

    def _compute_many(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> list[tuple[dict[str, Any], Tensor]]:
        """``compute_update`` for parameters of one group that share a preconditioner shape, state
        dtype, device and step count (a ``_buckets`` bucket). For more than one, the curvature
        updates and the preconditioning run on a ``batch=k`` manifold: the same formulas, one
        set of batched products. Per-parameter state stays per parameter (stacked for the
        update, then sliced and copied back)."""
        k = len(params)
        sd = self._state_dtype(group, params[0])
        singles = [self._preconditioner(group, p) for p in params]
        pre = singles[0] if k == 1 else self._batched_preconditioner(group, params[0], k)
        news: list[dict[str, Any]] = []
        pcs, bufs, steps = [], [], []
        for p, grad, single in zip(params, grads, singles, strict=True):
            state, new = self.state[p], {}
            if not state:
                pcs.append(single.init_state(grad, group["warm_start"]))
                steps.append(1)
                bufs.append(torch.zeros_like(grad, dtype=sd))
                if group["graft"] == "adam":
                    new["exp_avg_sq"] = torch.zeros_like(grad, dtype=torch.float32)
            else:
                pcs.append(self._precond_state(state))
                steps.append(int(state["step"]) + 1)
                bufs.append(state["momentum_buffer"])
            news.append(new)
        step = steps[0]
        gs = [grad.to(sd) for grad in grads]
        pc = pcs[0] if k == 1 else {key: torch.stack([c[key] for c in pcs]) for key in pcs[0]}
        directions = []
        for new, buf, g in zip(news, bufs, gs, strict=True):
            if group["momentum"]:
                buf, direction = transforms.heavy_ball(buf, g, group["momentum"], group["nesterov"])
            else:
                direction = g
            new["momentum_buffer"] = buf
            directions.append(direction)
        D = directions[0] if k == 1 else torch.stack(directions)
        G = gs[0] if k == 1 else torch.stack(gs)
        corrected = checks.corrected(group) and pre.kind == "kronecker"
        rotated = None
        if corrected:
            # In the basis before this step's curvature update (as SOAP): the rotated gradient
            # then serves the curvature step's GOP too.
            vs = [
                self.state[p].get("eig_v", torch.zeros_like(g, dtype=transforms.wide_dtype(sd)))
                for p, g in zip(params, gs, strict=True)
            ]
            U, V, rotated = pre.precondition_corrected(
                pc, D, G, vs[0] if k == 1 else torch.stack(vs), step, group["correction_beta"]
            )
            if not all_finite(V):  # squares of a finite gradient overflowed the buffer's dtype
                raise NonFiniteUpdate(
                    "SpectralKron: the eigenvalue-correction second moment overflowed; the "
                    "step is skipped"
                )
        if (step - 1) % group["update_every"] == 0:
            count = (step - 1) // group["update_every"] + 1
            if k == 1:
                pc = self._curvature_update(
                    pre, pc, G, count, news[0], self.state[params[0]], rotated
                )
            else:
                try:
                    pc = pre.update(pc, G, count=count, rotated=rotated)
                except (FloatingPointError, ValueError):
                    # One element failed: update them one by one (each with its fallbacks),
                    # exactly as unbatched.
                    return [
                        self._compute_many(group, [p], [g])[0]
                        for p, g in zip(params, grads, strict=True)
                    ]
        if not corrected:
            U = pre.precondition(pc, D)
        out = []
        for i, (p, grad, new) in enumerate(zip(params, grads, news, strict=True)):
            pci = pc if k == 1 else {key: v[i].clone() for key, v in pc.items()}
            new.update({_PRECOND_PREFIX + key: v for key, v in pci.items()})
            if corrected:
                new["eig_v"] = (V if k == 1 else V[i].clone()).reshape(p.shape)
            u = U if k == 1 else U[i]
            if group["graft"] == "adam":
                v = self.state[p].get("exp_avg_sq", new.get("exp_avg_sq"))
                v, adam = transforms.adam_direction(v, grad.float(), step)
                new["exp_avg_sq"] = v
                u = transforms.graft_norm(u, adam)
            if group["clip_rms"] is not None:
                u = transforms.clip_by_rms(u, group["clip_rms"])
            if not bool(torch.isfinite(u).all()):
                raise NonFiniteUpdate(
                    f"SpectralKron: non-finite update for a parameter of shape "
                    f"{tuple(p.shape)}; the step is skipped"
                )
            new["step"] = torch.tensor(float(step))
            out.append((new, u))
        return out

    @staticmethod
    def _curvature_update(
        pre: Any,
        pc: dict[str, Tensor],
        g: Tensor,
        count: int,
        new: dict,
        state: dict,
        rotated: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One parameter's curvature step, never raising for a finite gradient: a truncated
        map that leaves the positive reals is redone with the map continued positively below
        ``m = -1/2`` (``blocks.eig_retract``: elementwise, same cost; the exact exponential
        would overflow on the very steps that need this); a step that fails even so keeps
        the previous curvature. Each is counted in ``new`` (the pending state)."""
        counts = {key: state.get(key, 0) for key in COUNTERS}
        try:
            out = pre.update(pc, g, count=count, rotated=rotated)
        except TruncationError:
            counts["curvature_fallbacks"] += 1
            try:
                out = pre.update(pc, g, count=count, continued=True, rotated=rotated)
            except (FloatingPointError, ValueError):
                counts["curvature_rejections"] += 1
                out = pc
        except (FloatingPointError, ValueError):
            counts["curvature_rejections"] += 1
            out = pc
        new.update({key: v for key, v in counts.items() if v or key in state})
        return out

    @property
    def curvature_fallbacks(self) -> int:
        """Curvature steps taken with the continued instead of the truncated map."""
        return sum(st.get("curvature_fallbacks", 0) for st in self.state.values())

    @property
    def curvature_rejections(self) -> int:
        """Curvature steps that failed for a finite gradient (previous curvature kept)."""
        return sum(st.get("curvature_rejections", 0) for st in self.state.values())

    def _buckets(self, group: dict[str, Any]) -> list[list[Tensor]]:
        """The group's parameters with a gradient, in order, bucketed for ``_compute_many``:
        with ``batched``, Kronecker parameters of one preconditioner shape, state dtype,
        device and step count, and cost at most ``BATCH_MAX_COST``, share a bucket; every
        other parameter is alone."""
        buckets: dict[Any, list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            pre = self._preconditioner(group, p)
            key: Any = id(p)
            cost = param_cost(p.shape, group)
            if group["batched"] and pre.kind == "kronecker" and cost <= BATCH_MAX_COST:
                state = self.state[p]
                step = int(state["step"]) if state else 0
                key = (pre.shape, self._state_dtype(group, p), p.device, step)
            buckets.setdefault(key, []).append(p)
        return list(buckets.values())

    def _batched_preconditioner(self, group: dict[str, Any], p: Tensor, k: int) -> Any:
        """The ``batch=k`` preconditioner of ``k`` parameters shaped like ``p`` (cached)."""
        sd = self._state_dtype(group, p)
        key = (self.param_groups.index(group), self._preconditioner(group, p).shape, sd, k)
        pre = self._batched.get(key)
        if pre is None:
            pre = make_preconditioner(p, sd, group, batch=k)
            self._batched[key] = pre
        return pre

    # Serialisation -----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """``torch.optim`` pickles only defaults, state and groups; keep the options and
        counters too (``copy.deepcopy`` and ``pickle`` give a working optimizer). Caches are
        rebuilt. A sharded optimizer holds a process group: save ``consolidated_state_dict``."""
        if self._sharding is not None:
            raise TypeError(
                "SpectralKron(shard=True) cannot be pickled or deep-copied (it holds a process "
                "group); save consolidated_state_dict() and load it into a new optimizer"
            )
        state = super().__getstate__()
        state.update(nonfinite=self.nonfinite, skipped_steps=self.skipped_steps)
        return state

    def _fill_legacy_options(self) -> None:
        """Options missing from groups saved before they existed (``_LEGACY``); the
        ``truncated`` bool of earlier versions becomes ``exponential``."""
        for group in self.param_groups:
            if "truncated" in group:
                group.setdefault("exponential", "truncated" if group["truncated"] else "exact")
                del group["truncated"]
            for key, value in self.defaults.items():
                group.setdefault(key, _LEGACY.get(key, value))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch.optim's load_state_dict calls this too, on a live optimizer: only fill in
        # what an unpickled one lacks.
        super().__setstate__(state)
        for name, value in (
            ("nonfinite", "raise"),
            ("skipped_steps", 0),
            ("_process_group", None),
            ("_sharding", None),
            ("_preconditioners", {}),
            ("_batched", {}),
        ):
            self.__dict__.setdefault(name, value)
        self._fill_legacy_options()

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict; with ``shard=True`` only this rank's parameters have
        state, and ``"shard": {"rank", "world_size"}`` says whose shard it is (save one file
        per rank; ``consolidated_state_dict`` gives the whole state)."""
        sd = super().state_dict()
        sd["counters"] = {"skipped_steps": self.skipped_steps}
        if self._sharding is not None:
            sd["shard"] = {"rank": self._sharding.rank, "world_size": self._sharding.world}
        return sd

    def consolidated_state_dict(self) -> dict[str, Any]:
        """The whole state on every rank (a collective: call it on every rank), on the CPU,
        loadable into an unsharded ``SpectralKron`` or a sharded one of any world size.
        Without ``shard`` it is ``state_dict()``."""
        sd = self.state_dict()
        if self._sharding is None:
            return sd
        return distributed.consolidate(sd, self._sharding)

    def _check_saved(self, state_dict: dict[str, Any]) -> None:
        """Raise ``ValueError`` (nothing loaded) if a saved group has an invalid option, a
        saved parameter state is unsound (``checks.check_param_state``) or a saved
        preconditioner state is not a valid point: the updates check only their results, so
        they must start from one."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            return  # torch.optim reports malformed or mismatched dicts itself
        counters = state_dict.get("counters", {"skipped_steps": 0})
        skipped = counters.get("skipped_steps") if isinstance(counters, dict) else None
        if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
            raise ValueError(
                "state_dict['counters']: expected {'skipped_steps': int >= 0}, got "
                f"{counters!r}; nothing was loaded"
            )
        n = len(_PRECOND_PREFIX)
        index = 0
        for gi, (group, saved_group) in enumerate(zip(self.param_groups, groups, strict=True)):
            opts = {**self.defaults, **saved_group}
            if "truncated" in saved_group and "exponential" not in saved_group:
                opts["exponential"] = "truncated" if saved_group["truncated"] else "exact"
            try:
                self._validate(opts)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"state_dict: param_groups[{gi}] has an invalid option ({exc}); "
                    "nothing was loaded"
                ) from None
            for p, saved_id in zip(group["params"], saved_group.get("params", []), strict=False):
                index += 1
                saved = state_dict.get("state", {}).get(saved_id) or {}
                try:
                    check_param_state(saved, tuple(p.shape), f"state[{saved_id!r}]")
                except ValueError as exc:
                    raise ValueError(
                        f"state_dict: the saved state of parameter {index - 1} (shape "
                        f"{tuple(p.shape)}) is unsound ({exc}); nothing was loaded"
                    ) from None
                pc = {k[n:]: v for k, v in saved.items() if k.startswith(_PRECOND_PREFIX)}
                if not pc:
                    continue
                sd = opts["state_dtype"] or p.dtype
                pre = make_preconditioner(p, sd, opts)
                try:
                    x = pre.point({k: v.to(device=p.device, dtype=sd) for k, v in pc.items()})
                    ok, reason = pre.manifold.check_point(x, fast=True)
                except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                    ok, reason = False, str(exc)
                if not ok:
                    raise ValueError(
                        f"state_dict: the saved state of parameter {index - 1} (shape "
                        f"{tuple(p.shape)}) is not a valid preconditioner ({reason}); "
                        "nothing was loaded"
                    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim`` casts floating state to the parameter dtype on load; restore the
        chosen ``state_dtype`` (bf16 -> fp32 -> bf16 is exact, so resuming is bitwise).

        With ``shard=True`` the dict is this rank's shard (same rank and world size) or a whole
        state (``consolidated_state_dict`` or an unsharded run), of which the parameters this
        rank owns are kept. A shard cannot be loaded elsewhere: it lacks other ranks' state."""
        distributed.check_loadable(state_dict, self._sharding)
        self._check_saved(state_dict)
        super().load_state_dict(state_dict)
        self.skipped_steps = state_dict.get("counters", {}).get("skipped_steps", 0)
        self._fill_legacy_options()
        if self._sharding is not None:
            for p in [p for p in self.state if not self._sharding.owns(p)]:
                del self.state[p]
        self._preconditioners.clear()
        self._batched.clear()
        # torch.optim matched saved and current parameters by position; take the saved tensors
        # themselves (its cast to the parameter dtype rounds a state dtype finer than the
        # parameters', e.g. float64 state on float32 parameters).
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        saved_of = dict(zip(params, saved_ids, strict=True))
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if not st:
                    continue
                saved = state_dict["state"].get(saved_of[p], {})
                sd = self._state_dtype(group, p)
                for k, v in list(st.items()):
                    if k == "step" or not isinstance(v, Tensor):
                        continue
                    src = saved.get(k, v)
                    dtype = {"exp_avg_sq": torch.float32, "eig_v": transforms.wide_dtype(sd)}
                    dtype = dtype.get(k, sd)
                    st[k] = src.to(device=v.device, dtype=dtype, copy=True)
