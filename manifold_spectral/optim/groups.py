"""Parameter groups of a model for ``SpectralKron``: which parameters take the diagonal scheme
although their shape says matrix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

__all__ = ["param_groups"]

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
