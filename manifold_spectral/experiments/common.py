"""Helpers shared by the experiment modules (public, so no experiment imports another's
private names)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (restored afterwards); ``None``: unchanged."""
    if num is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)
