"""Saving, loading, pickling and consolidating the state of ``SpectralKron``.

A state dict is checked whole before anything is loaded (``state_checks.check_param_state``
and a point check of every saved preconditioner); the chosen ``state_dtype`` is restored
after ``torch.optim`` casts the state to the parameter dtype, so resuming is bitwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from . import consensus, distributed, transforms
from .checks import state_dtype_of
from .option_defaults import exponential_of_truncated
from .preconditioners import kronecker_shape, make_preconditioner
from .state_checks import check_param_state
from .updates import PRECOND_PREFIX

__all__ = ["StateDictMixin", "LEGACY"]

#: Values of options missing from a state dict saved before they existed: the behaviour of
#: that version (the current defaults for the others).
LEGACY = {
    "jacobi": False,
    "gap_damping": 0.0,
    "gap_floor": 0.0,
    "diagonal_every": None,
    "accumulate_gop": False,
    "updated_gaps": False,
    "neumann_squarings": 0,
    "basis_scale": 1.0,
    "max_aspect": None,
}


class StateDictMixin:
    """``state_dict`` / ``load_state_dict`` / pickling of ``SpectralKron``."""

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
        """Options missing from groups saved before they existed (``LEGACY``); the
        ``truncated`` bool of earlier versions becomes ``exponential``."""
        for group in self.param_groups:
            group.pop("differentiable", None)  # see __setstate__
            if "truncated" in group:
                truncated = group.pop("truncated")
                group.setdefault("exponential", exponential_of_truncated(truncated))
            for key, value in self.defaults.items():
                group.setdefault(key, LEGACY.get(key, value))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch.optim's load_state_dict calls this too, on a live optimizer: only fill in
        # what an unpickled one lacks.
        super().__setstate__(state)
        # torch adds a "differentiable" default, read only by its own optimizers' steps (this
        # one runs under no_grad); copied into the groups, it made a resumed optimizer's
        # state_dict differ from an uninterrupted one's.
        self.defaults.pop("differentiable", None)
        for name, value in (
            ("nonfinite", "raise"),
            ("skipped_steps", 0),
            ("_process_group", None),
            ("_sharding", None),
            ("_preconditioners", {}),
            ("_batched", {}),
            ("_packed", {}),
            ("_signatures", {}),
        ):
            self.__dict__.setdefault(name, value)
        self._fill_legacy_options()

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict; with ``shard=True`` only this rank's parameters have
        state, and ``"shard": {"rank", "world_size"}`` says whose shard it is (save one file
        per rank; ``consolidated_state_dict`` gives the whole state)."""
        out = super().state_dict()
        out["counters"] = {"skipped_steps": self.skipped_steps}
        if self._sharding is not None:
            out["shard"] = {"rank": self._sharding.rank, "world_size": self._sharding.world}
        return out

    def consolidated_state_dict(self) -> dict[str, Any]:
        """The whole state on every rank (a collective: call it on every rank), on the CPU,
        loadable into an unsharded ``SpectralKron`` or a sharded one of any world size.
        Without ``shard`` it is ``state_dict()``."""
        out = self.state_dict()
        if self._sharding is None:
            return out
        return _consolidate(out, self._sharding, self._sharding.known(self.param_groups))

    def _check_saved(self, state_dict: dict[str, Any]) -> None:
        """Raise ``ValueError`` (nothing loaded) if a saved group has an invalid option, a
        saved parameter state is unsound (``state_checks.check_param_state``) or a saved
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
        n = len(PRECOND_PREFIX)
        index = 0
        for gi, (group, saved_group) in enumerate(zip(self.param_groups, groups, strict=True)):
            opts = {**self.defaults, **saved_group}
            if "truncated" in saved_group and "exponential" not in saved_group:
                opts["exponential"] = exponential_of_truncated(saved_group["truncated"])
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
                    kron = kronecker_shape(tuple(p.shape), opts)
                    check_param_state(saved, tuple(p.shape), f"state[{saved_id!r}]", kron)
                except ValueError as exc:
                    raise ValueError(
                        f"state_dict: the saved state of parameter {index - 1} (shape "
                        f"{tuple(p.shape)}) is unsound ({exc}); nothing was loaded"
                    ) from None
                pc = {k[n:]: v for k, v in saved.items() if k.startswith(PRECOND_PREFIX)}
                if not pc:
                    if saved:  # a step was taken: its preconditioner must be there
                        raise ValueError(
                            f"state_dict: the saved state of parameter {index - 1} (shape "
                            f"{tuple(p.shape)}) has no preconditioner entries "
                            f"('{PRECOND_PREFIX}...'); nothing was loaded"
                        )
                    continue
                # A state saved in a coarser dtype (a model upcast after saving) is checked at
                # its own precision; load_state_dict then lifts it (_lift).
                state_dtype = _checked_dtype(state_dtype_of(opts, p), pc)
                pre = make_preconditioner(p, state_dtype, opts)
                try:
                    x = pre.point(
                        {k: v.to(device=p.device, dtype=state_dtype) for k, v in pc.items()}
                    )
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
        rank owns are kept. A shard cannot be loaded elsewhere: it lacks other ranks' state.
        Then a collective: every rank loads, or every rank raises with nothing loaded
        (``_agree_to_load``)."""
        # torch.optim's hooks, run here rather than inside its load_state_dict: a pre-hook may
        # rewrite the dict (a migration), which the checks below and the exact tensors taken
        # after loading must see; a post-hook must see (and may change) the final state.
        pre_hooks = getattr(self, "_optimizer_load_state_dict_pre_hooks", {})
        post_hooks = getattr(self, "_optimizer_load_state_dict_post_hooks", {})
        state_dict = state_dict.copy()
        rejected: Exception | None = None
        try:
            for hook in list(pre_hooks.values()):
                result = hook(self, state_dict)
                if result is not None:
                    state_dict = result
            _check_loadable(state_dict, self._sharding)
            if self._sharding is not None:
                _check_layout(state_dict, self.param_groups)
            self._check_saved(state_dict)
        except Exception as e:
            if self._sharding is None:
                raise
            rejected = e  # re-raised once every rank knows (_agree_to_load)
        if self._sharding is not None:
            _agree_to_load(self._sharding, self.param_groups, state_dict, rejected)
        hooks = (dict(pre_hooks), dict(post_hooks))
        pre_hooks.clear()
        post_hooks.clear()
        try:
            super().load_state_dict(state_dict)
        finally:
            pre_hooks.update(hooks[0])
            post_hooks.update(hooks[1])
        self._loaded(state_dict)
        for hook in list(post_hooks.values()):
            hook(self)

    def _loaded(self, state_dict: dict[str, Any]) -> None:
        """What ``load_state_dict`` does after torch.optim's load (see there)."""
        self.skipped_steps = state_dict.get("counters", {}).get("skipped_steps", 0)
        self._fill_legacy_options()
        if self._sharding is not None:
            for p in [p for p in self.state if not self._sharding.owns(p)]:
                del self.state[p]
        self._preconditioners.clear()
        self._batched.clear()
        self._packed.clear()
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
                state_dtype = self._state_dtype(group, p)
                for k, v in list(st.items()):
                    if k == "step" or not isinstance(v, Tensor):
                        continue
                    src = saved.get(k, v)
                    dtype = {
                        "exp_avg_sq": torch.float32,
                        "eig_v": transforms.wide_dtype(state_dtype),
                        "gop_count": torch.float64,
                    }
                    dtype = dtype.get(k, state_dtype)
                    st[k] = src.to(device=v.device, dtype=dtype, copy=True)
                self._lift(group, p, st, saved)

    def _lift(self, group: dict[str, Any], p: Tensor, st: dict[str, Any], saved: dict) -> None:
        """Kronecker factors saved in a coarser dtype than the state's (float32 factors for a
        model made float64 after saving): orthogonal and of unit determinant only to the
        coarse precision, which the finer dtype's checks refuse. Two Newton-Schulz polar steps
        (quadratic: 1e-7 -> 1e-28) and the determinant moved into ``alpha`` make them a point
        of the finer dtype; ``S`` changes only by the coarse rounding."""
        key = PRECOND_PREFIX + "B_L"
        if key not in st or key not in saved:
            return
        state_dtype = self._state_dtype(group, p)
        if _checked_dtype(state_dtype, {"B_L": saved[key]}) == state_dtype:
            return  # saved at least as finely as the state keeps it
        pre = make_preconditioner(p, state_dtype, group)
        n = len(PRECOND_PREFIX)
        x = pre.point({k[n:]: v for k, v in st.items() if k.startswith(PRECOND_PREFIX)})
        x = pre.manifold.reorthogonalize(x, steps=2)
        x = pre.manifold.normalize(x.alpha, x.left, x.right)
        st.update({PRECOND_PREFIX + k: v for k, v in pre.to_state(x).items()})


def _checked_dtype(state_dtype: torch.dtype, pc: dict[str, Any]) -> torch.dtype:
    """The dtype a saved preconditioner state is checked in: ``state_dtype``, or the saved
    factors' own dtype where it is coarser (``StateDictMixin._lift`` then makes the point
    one of ``state_dtype``)."""
    B = pc.get("B_L")
    if isinstance(B, Tensor) and B.is_floating_point():
        if torch.finfo(B.dtype).eps > torch.finfo(state_dtype).eps:
            return B.dtype
    return state_dtype


def _consolidate(shard: dict[str, Any], sharding: distributed.Sharding, n: int) -> dict[str, Any]:
    """Merge every rank's ``state_dict`` shard (``all_gather_object``; the state goes through
    the CPU, so no accelerator holds the whole state at once); ``n``: the parameters with an
    owner (``Sharding.known``)."""
    local = consensus.on_cpu(shard["state"])
    # Every rank is here, not in another call of this optimizer: all_gather_object's
    # collectives would otherwise meet another call's all-reduce (consensus.call).
    consensus.call(consensus.CONSOLIDATE, consensus.blank(n), sharding.group, sharding.device)
    parts: list[Any] = [None] * sharding.world
    dist.all_gather_object(parts, local, group=sharding.group)
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part)
    return {"state": dict(sorted(merged.items())), "param_groups": shard["param_groups"]}


def _check_loadable(state_dict: dict[str, Any], sharding: distributed.Sharding | None) -> None:
    """A rank's shard holds the state of that rank's parameters only: load it into the same
    rank of the same world size, never into an unsharded optimizer."""
    saved = state_dict.get("shard")
    if saved is None:
        return
    where = f"rank {saved['rank']} of {saved['world_size']}"
    if sharding is None:
        raise ValueError(
            f"state_dict: this is the shard of {where} of a sharded SpectralKron; load its "
            "consolidated_state_dict() into an unsharded optimizer"
        )
    if saved["world_size"] == sharding.world and saved["rank"] != sharding.rank:
        raise ValueError(
            f"state_dict: this is the shard of {where}, but this optimizer is rank "
            f"{sharding.rank}: each rank loads the state_dict() it saved itself (a file saved "
            "on one rank only holds that rank's shard, and torch.distributed.checkpoint keeps "
            "one rank's copy of a non-tensor entry); save and load consolidated_state_dict() "
            "instead"
        )
    if (saved["rank"], saved["world_size"]) != (sharding.rank, sharding.world):
        raise ValueError(
            f"state_dict: this is the shard of {where}, but this optimizer is rank "
            f"{sharding.rank} of {sharding.world}; resume with the same world size, or load a "
            "consolidated_state_dict()"
        )


def _check_layout(state_dict: dict[str, Any], param_groups: list[dict[str, Any]]) -> None:
    """torch.optim's own checks of a dict's layout (a ``"state"`` dict; as many groups of as
    many parameters as ``param_groups``), made before ``_agree_to_load``: a rank that raised
    after it would be the only one not to load."""
    groups = state_dict.get("param_groups")
    sizes = [len(g["params"]) for g in param_groups]
    saved = None
    if isinstance(groups, list):
        saved = [len(g["params"]) if isinstance(g, dict) else None for g in groups]
    if not isinstance(state_dict.get("state"), dict) or saved != sizes:
        raise ValueError(
            f"state_dict: expected a 'state' dict and 'param_groups' of {sizes} parameters, as "
            f"this optimizer's; got {saved}; nothing was loaded"
        )


def _agree_to_load(
    sharding: distributed.Sharding,
    param_groups: list[dict[str, Any]],
    state_dict: dict[str, Any],
    error: Exception | None,
) -> None:
    """Every rank loads or none does, with ``shard=True``: one all-reduce of whether this
    rank rejected its dict (``error``, re-raised here; the others raise naming how many
    did), and of which parameters have a saved state in the whole dicts (those without a
    ``"shard"`` entry). A load is local, but a rank that raised alone would leave the ranks
    with different states, and the others waiting in their next collective for the rank
    that stopped; a sharded optimizer is loaded on every rank anyway (each needs the state
    of the parameters it owns), so ``load_state_dict`` is a collective
    (``consensus.call``). A whole state is the same on every rank (``consolidated_state_dict``
    is): a parameter with a saved state in some whole dicts only means that each rank holds
    a part (``torch.distributed.checkpoint``'s ``get_state_dict`` of a sharded optimizer
    drops the ``"shard"`` entry), of which the owners would keep what they find, silently
    restarting the others' state at another world size."""
    params = [p for g in param_groups for p in g["params"]]
    n = sharding.known(param_groups)
    body = consensus.blank(n)
    body[0] = int(error is not None)
    if error is None and "shard" not in state_dict:
        body[1] = 1
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        owned = [i for p, i in zip(params, saved_ids, strict=True) if p in sharding.owners]
        body[3 : 3 + n] = [int(bool(state_dict["state"].get(i))) for i in owned]
    summed = consensus.call(consensus.LOAD, body, sharding.group, sharding.device)
    rejected, whole, saved = summed[0], summed[1], summed[3 : 3 + n]
    if error is not None:
        raise error
    if rejected:
        raise ValueError(
            f"state_dict: rejected on {rejected} of {sharding.world} ranks (their error says "
            "why); with shard=True every rank loads the state_dict() it saved itself, or every "
            "rank one consolidated_state_dict(); nothing was loaded"
        )
    part = next((k for k, c in enumerate(saved) if 0 < c < whole), None)
    if part is not None:
        raise ValueError(
            f"state_dict: parameter {part} has a saved state in {saved[part]} of the {whole} "
            "whole dicts (without a 'shard' entry) that the ranks load: each holds a part "
            "of the state (torch.distributed.checkpoint's get_state_dict returns each rank's "
            "part of a sharded optimizer); load one consolidated_state_dict() on every rank; "
            "nothing was loaded"
        )
