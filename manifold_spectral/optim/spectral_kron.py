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

from ..manifolds.base import check_cayley, check_positive, check_size
from . import distributed, transforms
from .preconditioners import make_preconditioner, param_cost

__all__ = ["SpectralKron"]

_PRECOND_PREFIX = "pc_"
#: ``batched`` buckets only parameters whose preconditioner cost ``a^3 + b^3 + ab(a + b)``
#: is at most that of a 256 x 256 matrix: above it the products dominate the per-parameter
#: overhead, and batched elementwise work on large factors falls out of cache (a stack of
#: 384 x 128 and 512 x 128 layers ran 1.18x slower batched in float32; bench_optim_batched).
BATCH_MAX_COST = 4 * 256**3


class SpectralKron(torch.optim.Optimizer):
    """Kronecker spectral preconditioning, a drop-in ``torch.optim.Optimizer``.

    Args:
        params: parameters or parameter groups (every option may be set per group).
        lr: step size.
        beta2: curvature step size (the RGD step of the precision).
        root: ``p`` of the preconditioner ``S^(-1/p)`` (paper: 1 and 2).
        damping: ``lambda`` added to the curvature (``H + lambda I``); keeps ``d > 0``.
        gamma: entropy weight: 1 = moving average of the GOP, 0 = AdaGrad-like sum.
        update_every: curvature update period (paper: 2).
        cayley: ``"neumann"`` (products only, bf16-friendly) or ``"exact"``.
        truncated: truncated-exponential (practical, Fig. 6 right) or exact eigenvalue map.
        eigenvalue_correction: precondition Kronecker parameters with the diagonal of the
            gradient outer product in the learned eigenbasis (an EMA of
            ``(B_L^T g B_R)^2``, bias-corrected, power ``-1/p``) instead of the product of the
            factors' eigenvalues: EKFAC's correction, where SOAP runs Adam, with the basis
            still learned by the spectral RGD (no decomposition). One buffer of the
            parameter's size (float32 for 16-bit states) and two more products per step.
            Meant for ``root=2`` (Adam's scaling); with ``root=1`` the elementwise
            ``1 / v`` scaling is unstable at the learning rates of ``root=2``.
        correction_beta: EMA coefficient of that diagonal (Adam's ``beta2``).
        jacobi: turn each eigenvector pair of a factor by its exact 2 x 2 Jacobi angle
            (``blocks.jacobi_angles``): the same first-order step, with rotations bounded
            where a factor's eigenvalues are close (e.g. right after the identity start).
        momentum: heavy-ball coefficient on the gradient, in ``[0, 1)``.
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
            initialisation only; default) instead of the identity (``False``): from the
            identity, ``alpha`` needs hundreds of updates to come down to the gradient's
            scale.
        diagonal: force the diagonal scheme for every parameter of the group.
        batched: update same-shaped Kronecker parameters of a group (same state dtype,
            device and step count, sides up to about 256) together: one set of batched
            products on a ``batch=k`` manifold instead of k separate updates (the same
            formulas; results equal to rounding). Saves the per-parameter overhead that
            dominates small layers (12 layers of 32 x 32: 5x faster steps); costs one
            transient copy of the bucket's factors.
        nonfinite: ``"raise"`` (default: a ``ValueError`` naming the parameter, nothing
            changed) or ``"skip"`` (the step is skipped, ``skipped_steps`` counts them).
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
        beta2: float = 0.01,
        root: float = 2.0,
        damping: float = 1e-6,
        gamma: float = 1.0,
        update_every: int = 1,
        cayley: str = "neumann",
        truncated: bool = True,
        jacobi: bool = False,
        eigenvalue_correction: bool = False,
        correction_beta: float = 0.99,
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
    ) -> None:
        defaults = dict(
            lr=lr,
            beta2=beta2,
            root=root,
            damping=damping,
            gamma=gamma,
            update_every=update_every,
            cayley=cayley,
            truncated=truncated,
            jacobi=jacobi,
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
        check_positive(g["lr"], "lr", allow_zero=True)
        check_positive(g["beta2"], "beta2")
        check_positive(g["root"], "root")
        check_positive(g["damping"], "damping", allow_zero=True)
        check_positive(g["gamma"], "gamma", allow_zero=True)
        check_positive(g["weight_decay"], "weight_decay", allow_zero=True)
        if not 0.0 <= float(g["momentum"]) < 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1), got {g['momentum']!r}")
        if g["truncated"] and float(g["gamma"]) * float(g["beta2"]) >= 1.0:
            raise ValueError("beta2: the truncated scheme needs gamma * beta2 < 1")
        check_size(g["update_every"], "update_every")
        check_size(g["max_factor_dim"], "max_factor_dim")
        check_cayley(g["cayley"])
        if g["clip_rms"] is not None:
            check_positive(g["clip_rms"], "clip_rms")
        if g["graft"] not in (None, "adam"):
            raise ValueError(f"graft: expected None or 'adam', got {g['graft']!r}")
        sd = g["state_dtype"]
        if sd is not None and (not isinstance(sd, torch.dtype) or not sd.is_floating_point):
            raise TypeError(f"state_dtype: expected a floating torch.dtype, got {sd!r}")
        if not check_positive(g["correction_beta"], "correction_beta") < 1.0:
            raise ValueError(
                f"correction_beta: expected a value in (0, 1), got {g['correction_beta']!r}"
            )
        flags = ("truncated", "jacobi", "eigenvalue_correction", "nesterov", "warm_start")
        for flag in (*flags, "diagonal", "batched"):
            if not isinstance(g[flag], bool):
                raise TypeError(f"{flag}: expected a bool, got {g[flag]!r}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
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
                    raise ValueError(f"params[{gi}][{pi}]: sparse gradients are not supported")
                if not bool(torch.isfinite(p.grad).all()):
                    if self.nonfinite == "skip":
                        return False
                    raise ValueError(
                        f"params[{gi}][{pi}] (shape {tuple(p.shape)}): gradient contains NaN or "
                        "Inf; nothing was changed (pass nonfinite='skip' to skip such steps)"
                    )
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
        for group in self.param_groups:
            for bucket in self._buckets(group):
                results = self._compute_many(group, bucket, [p.grad for p in bucket])
                pending.extend((group, p, r) for p, r in zip(bucket, results, strict=True))
        for group, p, (new_state, update) in pending:
            self.state[p].update(new_state)
            transforms.weight_decay(p, group["lr"], group["weight_decay"])
            p.add_(update.reshape(p.shape).to(p.dtype), alpha=-group["lr"])
        return loss

    def _compute(
        self, group: dict[str, Any], p: Tensor, grad: Tensor | None = None
    ) -> tuple[dict[str, Any], Tensor]:
        """The new state entries and the update direction of one parameter (no writes);
        ``grad`` (default ``p.grad``) is the whole gradient, gathered for a ``DTensor``."""
        return self._compute_many(group, [p], [p.grad if grad is None else grad])[0]

    def _compute_many(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> list[tuple[dict[str, Any], Tensor]]:
        """``_compute`` for parameters of one group that share a preconditioner shape, state
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
        if (step - 1) % group["update_every"] == 0:
            count = (step - 1) // group["update_every"] + 1
            pc = pre.update(pc, gs[0] if k == 1 else torch.stack(gs), count=count)
        directions = []
        for new, buf, g in zip(news, bufs, gs, strict=True):
            if group["momentum"]:
                buf, direction = transforms.heavy_ball(buf, g, group["momentum"], group["nesterov"])
            else:
                direction = g
            new["momentum_buffer"] = buf
            directions.append(direction)
        D = directions[0] if k == 1 else torch.stack(directions)
        corrected = group["eigenvalue_correction"] and pre.kind == "kronecker"
        if corrected:
            vs = [
                self.state[p].get("eig_v", torch.zeros_like(g, dtype=transforms.wide_dtype(sd)))
                for p, g in zip(params, gs, strict=True)
            ]
            G = gs[0] if k == 1 else torch.stack(gs)
            U, V = pre.precondition_corrected(
                pc, D, G, vs[0] if k == 1 else torch.stack(vs), step, group["correction_beta"]
            )
        else:
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
                raise FloatingPointError(
                    f"SpectralKron: non-finite update for a parameter of shape "
                    f"{tuple(p.shape)}; nothing was changed"
                )
            new["step"] = torch.tensor(float(step))
            out.append((new, u))
        return out

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

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict; with ``shard=True`` only this rank's parameters have
        state, and ``"shard": {"rank", "world_size"}`` says whose shard it is (save one file
        per rank; ``consolidated_state_dict`` gives the whole state)."""
        sd = super().state_dict()
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

    def _check_saved_points(self, state_dict: dict[str, Any]) -> None:
        """Raise ``ValueError`` (nothing loaded) if a saved preconditioner state is not a
        valid point: the updates check only their results, so they must start from one."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            return  # torch.optim reports malformed or mismatched dicts itself
        n = len(_PRECOND_PREFIX)
        index = 0
        for group, saved_group in zip(self.param_groups, groups, strict=True):
            opts = {**self.defaults, **saved_group}
            for p, saved_id in zip(group["params"], saved_group.get("params", []), strict=False):
                index += 1
                saved = state_dict.get("state", {}).get(saved_id) or {}
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
        self._check_saved_points(state_dict)
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a dict saved before an option existed lacks it
            for key, value in self.defaults.items():
                group.setdefault(key, value)
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
