"""Parameter groups of a model for ``SpectralKron``: which parameters take the diagonal scheme
although their shape says matrix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from . import checks, option_defaults

__all__ = ["param_groups", "GroupsMixin"]

#: Normalisation layers whose parameters ``param_groups`` marks diagonal (elementwise gains
#: and shifts); ``nn.RMSNorm`` from torch 2.4.
_ELEMENTWISE: tuple[type, ...] = (
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.batchnorm._NormBase,
    *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()),
)


def param_groups(model: torch.nn.Module, **diagonal_options: Any) -> list[dict[str, Any]]:
    """Two parameter groups for ``model``: the parameters of embedding tables
    (``nn.Embedding``, ``nn.EmbeddingBag``) and of normalisation layers (``_ELEMENTWISE``:
    LayerNorm, RMSNorm, GroupNorm, batch and instance norms), also where a parametrization
    (``torch.nn.utils.parametrizations.weight_norm``, ...) holds them, with ``diagonal=True``
    (plus ``diagonal_options``), and the rest.

    Matrices get Kronecker factors and vectors the diagonal scheme automatically; these
    need marking because a parameter does not know what it is: an embedding table is a
    lookup, not a linear map, and a norm layer's gain over a multi-dimensional shape
    (``LayerNorm([C, H, W])``) scales each entry on its own, so factors across its
    dimensions would precondition couplings the layer does not have.
    """
    elementwise = (torch.nn.Embedding, torch.nn.EmbeddingBag, *_ELEMENTWISE)
    marked: dict[int, Tensor] = {}  # by id, in order: a table tied to two layers is one entry
    for mod in model.modules():
        if isinstance(mod, elementwise):
            marked.update((id(p), p) for p in mod.parameters(recurse=False))
            if parametrize.is_parametrized(mod):
                # a parametrized table or gain (weight_norm, spectral_norm, ...) is held, with
                # the parametrization's own parameters, by mod.parametrizations, not by mod
                marked.update((id(p), p) for p in mod.parametrizations.parameters())
    diag = list(marked.values())
    diag_ids = set(marked)
    rest = [p for p in model.parameters() if id(p) not in diag_ids]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if diag:
        groups.append({"params": diag, "diagonal": True, **diagonal_options})
    return groups


class GroupsMixin:
    """``SpectralKron``'s parameter groups: each group's options are validated before the
    group is registered, and (``shard=True``) every rank registers it or none does."""

    @staticmethod
    def _validate(g: dict[str, Any]) -> None:
        checks.validate_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim``'s, with the group's options validated first: a rejected group is
        not registered (its parameters can be added again with valid options). With
        ``shard=True`` a collective: a group rejected on one rank is rejected on every rank."""
        sharding = getattr(self, "_sharding", None)
        try:
            self._add_group(param_group)
        except Exception as e:
            if sharding is not None:  # the others wait in assign's collective: reject there
                sharding.check_params(self.param_groups, error=e)
            raise
        if sharding is not None:
            try:  # a collective: every rank adds its group, or every rank raises
                sharding.assign(self.param_groups, self._owner_units)
            except ValueError:
                self.param_groups.pop()  # not registered: this group's parameters differ
                raise

    def _add_group(self, param_group: dict[str, Any]) -> None:
        """``add_param_group`` on this rank alone: validate and register the group."""
        if isinstance(param_group, dict):
            checks.check_group_keys(param_group)
        if isinstance(param_group, dict) and "truncated" in param_group:
            param_group = dict(param_group)
            given = param_group.get("exponential", option_defaults.DEFAULT_EXPONENTIAL)
            param_group["exponential"] = option_defaults.legacy_truncated(
                param_group.pop("truncated"), given
            )
        if isinstance(param_group, dict) and hasattr(self, "defaults"):
            self._validate({**self.defaults, **param_group})
        if isinstance(param_group, dict):
            param_group = checks.listed_params(param_group, len(self.param_groups))
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])
        checks.warn_float16_state(self.param_groups[-1])
