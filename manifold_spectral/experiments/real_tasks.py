"""Real-data tasks for the NN comparison, shipped offline.

Two tasks with the protocol of ``nn_training`` (``name``, ``batch``, ``floor``, ``describe``,
``make_model(seed)``, ``sample(n, generator)``, ``loss(model, x, y)``, ``eval_loss(model)``),
so ``nn_training.run_quality`` and ``manifold-spectral reproduce nn --task ...`` run them
beside the synthetic tasks:

* ``stdlib`` (``StdlibBytesTask``): a byte-level language model (``TinyGPT``, vocabulary 256)
  on the Python standard library's own source text. The corpus is the files of
  ``STDLIB_FILES``, in that order, read from ``sysconfig.get_paths()["stdlib"]`` and
  concatenated; the first 90% of its bytes are the training text, the last 10% the
  validation text (a split by position, so no validation byte is ever trained on). Training
  minibatches are windows of ``seq_len + 1`` bytes at uniformly random training positions;
  the validation sample is ``eval_size`` windows at evenly spaced, fixed positions of the
  validation text. ``eval_loss`` is in bits per byte (the training loss is the usual
  cross-entropy in nats). The text differs slightly between Python versions;
  ``describe`` names the version and the corpus size.
* ``digits`` (``DigitsTask``): a small convolutional net (two 3x3 convolutions, GELU, a 2x2
  max-pool and a linear head, ``DigitsNet``) on scikit-learn's 8x8 digits
  (``sklearn.datasets.load_digits``, 1797 images shipped inside scikit-learn). A seeded
  permutation fixes the split: its first ``train_fraction`` of the images train, the rest
  test. Minibatches are drawn with replacement from the training images; ``eval_loss`` is
  the cross-entropy (nats) on the whole test set.

Neither task has a known Bayes loss: ``floor`` is ``None``. scikit-learn is imported only
when a ``DigitsTask`` is built (``pip install 'manifold_spectral[baselines]'``).
"""

from __future__ import annotations

import math
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn_training.models import TinyGPT

__all__ = [
    "STDLIB_FILES",
    "stdlib_corpus",
    "StdlibBytesTask",
    "DigitsNet",
    "DigitsTask",
    "REAL_TASKS",
    "make_real_task",
]

#: The corpus of ``StdlibBytesTask``, in order: large pure-Python modules that every
#: CPython 3.10+ installation has (paths relative to the standard library directory).
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py",
    "typing.py",
    "inspect.py",
    "subprocess.py",
    "tarfile.py",
    "pydoc.py",
    "doctest.py",
    "difflib.py",
    "enum.py",
    "dataclasses.py",
    "logging/__init__.py",
    "unittest/mock.py",
)


def stdlib_corpus(root: str | os.PathLike[str] | None = None) -> bytes:
    """The bytes of ``STDLIB_FILES`` concatenated in order, read from ``root`` (default: this
    interpreter's ``sysconfig.get_paths()["stdlib"]``). Raises ``FileNotFoundError`` naming
    every missing file."""
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    missing = [f for f in STDLIB_FILES if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the stdlib byte-level task needs {len(STDLIB_FILES)} standard-library source "
            f"files; missing under {base}: {', '.join(missing)} (a Python installation "
            "without its .py sources, e.g. a stripped or zipped stdlib, cannot run it)"
        )
    return b"".join((base / f).read_bytes() for f in STDLIB_FILES)


class StdlibBytesTask:
    """Byte-level language modelling of the standard library's source (module docstring).

    ``train_bytes`` / ``val_bytes``: the first ``train_fraction`` of the corpus and the rest,
    as ``uint8`` tensors; ``eval_x``: the fixed validation windows.
    """

    name = "stdlib"
    floor = None

    def __init__(
        self,
        seq_len: int = 64,
        batch: int = 16,
        model: dict[str, int] | None = None,
        eval_size: int = 128,
        train_fraction: float = 0.9,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction: expected in (0, 1), got {train_fraction}")
        self.seq_len, self.batch = int(seq_len), int(batch)
        self.model_kw = dict(dim=64, heads=4, ff=128, layers=2) | (model or {})
        data = torch.frombuffer(bytearray(stdlib_corpus(root)), dtype=torch.uint8)
        cut = int(train_fraction * data.numel())
        self.train_bytes, self.val_bytes = data[:cut], data[cut:]
        span = self.seq_len + 1
        if self.val_bytes.numel() < span or self.train_bytes.numel() < span:
            raise ValueError(f"seq_len {seq_len}: longer than the validation text")
        starts = np.linspace(0, self.val_bytes.numel() - span, eval_size).round().astype(int)
        self.eval_x = torch.stack([self.val_bytes[s : s + span] for s in starts]).long()
        ver = sys.version_info
        self.describe = (
            f"stdlib: byte-level LM on {len(STDLIB_FILES)} standard-library files of Python "
            f"{ver.major}.{ver.minor} ({data.numel() / 1e6:.2f} MB, first "
            f"{train_fraction:.0%} train, last {1 - train_fraction:.0%} validation), context "
            f"{seq_len}, batch {batch}; TinyGPT("
            f"{', '.join(f'{k}={v}' for k, v in self.model_kw.items())}); bits/byte"
        )

    def make_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return TinyGPT(256, self.seq_len, **self.model_kw)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, None]:
        """``n`` windows of ``seq_len + 1`` training bytes at random positions."""
        span = self.seq_len + 1
        starts = torch.randint(0, self.train_bytes.numel() - span + 1, (n,), generator=generator)
        idx = starts[:, None] + torch.arange(span)
        return self.train_bytes[idx].long(), None

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Next-byte cross-entropy (nats) of every position."""
        logits = model(x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 256).float(), x[:, 1:].reshape(-1))

    def eval_loss(self, model: nn.Module) -> float:
        """Bits per byte on the fixed validation windows."""
        with torch.no_grad():
            total = sum(
                float(self.loss(model, chunk)) * chunk.shape[0] for chunk in self.eval_x.split(64)
            )
        return total / self.eval_x.shape[0] / math.log(2)


class DigitsNet(nn.Sequential):
    """``conv3x3(1 -> c1), GELU, conv3x3(c1 -> c2), GELU, maxpool 2x2, linear(16 c2 -> 10)``
    on 1 x 8 x 8 images."""

    def __init__(self, channels: tuple[int, int] = (32, 64)) -> None:
        c1, c2 = channels
        super().__init__(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * c2, 10),
        )


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits task needs scikit-learn: pip install scikit-learn "
            "(or 'manifold_spectral[baselines]')"
        ) from None
    d = load_digits()
    return d.images, d.target


class DigitsTask:
    """scikit-learn digits with ``DigitsNet`` (module docstring). Pixels are scaled to
    ``[0, 1]`` (``/ 16``); ``split_seed`` seeds the permutation that fixes the split."""

    name = "digits"
    floor = None

    def __init__(
        self,
        batch: int = 64,
        channels: tuple[int, int] = (32, 64),
        train_fraction: float = 0.8,
        split_seed: int = 0,
    ) -> None:
        images, target = _load_digits()
        x = torch.from_numpy(images / 16.0).float().unsqueeze(1)
        y = torch.from_numpy(target).long()
        perm = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(y)))
        cut = int(train_fraction * len(y))
        self.train_idx, self.test_idx = perm[:cut], perm[cut:]
        self.train_x, self.train_y = x[self.train_idx], y[self.train_idx]
        self.eval_x, self.eval_y = x[self.test_idx], y[self.test_idx]
        self.batch, self.channels = int(batch), tuple(channels)
        self.describe = (
            f"digits: scikit-learn 8x8 digits, {cut} train / {len(y) - cut} test images "
            f"(permutation seed {split_seed}), batch {batch}; conv3x3 {channels[0]}/"
            f"{channels[1]} + linear; test cross-entropy"
        )

    def make_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return DigitsNet(self.channels)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` training images and labels, drawn with replacement."""
        i = torch.randint(0, self.train_y.numel(), (n,), generator=generator)
        return self.train_x[i], self.train_y[i]

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        return F.cross_entropy(model(x).float(), y)

    def eval_loss(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float(self.loss(model, self.eval_x, self.eval_y))

    def accuracy(self, model: nn.Module) -> float:
        """Test accuracy (a diagnostic; the comparison reports ``eval_loss``)."""
        with torch.no_grad():
            return float((model(self.eval_x).argmax(-1) == self.eval_y).float().mean())


REAL_TASKS: dict[str, type] = {"stdlib": StdlibBytesTask, "digits": DigitsTask}


def make_real_task(name: str, **kw: Any) -> StdlibBytesTask | DigitsTask:
    """``"stdlib"`` (``StdlibBytesTask``) or ``"digits"`` (``DigitsTask``)."""
    if name not in REAL_TASKS:
        raise ValueError(f"task: expected one of {list(REAL_TASKS)}, got {name!r}")
    return REAL_TASKS[name](**kw)
