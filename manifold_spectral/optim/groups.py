"""Parameter groups of a model for ``SpectralKron``: which parameters take the diagonal scheme
although their shape says matrix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

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
    LayerNorm, RMSNorm, GroupNorm, batch and instance norms) with ``diagonal=True`` (plus
    ``diagonal_options``), and the rest.

    Matrices get Kronecker factors and vectors the diagonal scheme automatically; these
    need marking because a parameter does not know what it is: an embedding table is a
    lookup, not a linear map, and a norm layer's gain over a multi-dimensional shape
    (``LayerNorm([C, H, W])``) scales each entry on its own, so factors across its
    dimensions would precondition couplings the layer does not have.
    """
    elementwise = (torch.nn.Embedding, torch.nn.EmbeddingBag, *_ELEMENTWISE)
    diag: list[Tensor] = []
    for mod in model.modules():
        if isinstance(mod, elementwise):
            diag.extend(mod.parameters(recurse=False))
    diag_ids = {id(p) for p in diag}
    rest = [p for p in model.parameters() if id(p) not in diag_ids]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if diag:
        groups.append({"params": diag, "diagonal": True, **diagonal_options})
    return groups
