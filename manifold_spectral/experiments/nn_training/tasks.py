"""The tasks of the NN comparison, generated on the fly (nothing downloaded; every minibatch
is fresh, so the training loss is an unbiased estimate of the test loss and a held-out
evaluation set measures it):

* ``transformer`` (``MarkovTask``): next-token prediction on an order-2 Markov chain
  (``vocab`` tokens, each of the ``vocab^2`` contexts has its own Dirichlet(0.2) next-token
  law) with a small pre-LayerNorm causal transformer (``TinyGPT``). A model must attend to the
  previous token to beat the unigram loss; the Bayes loss (the chain's conditional entropy on
  the evaluation set) is the floor.
* ``mlp`` (``TeacherTask``): classification of Gaussian inputs whose labels are drawn from a
  random teacher network's softmax, learned by a wider MLP; the floor is the teacher's
  conditional entropy.

A task is any object with ``name``, ``batch``, ``floor``, ``describe``, ``make_model(seed)``,
``sample(n, generator)``, ``loss(model, x, y)`` and ``eval_loss(model)``; ``make_task`` also
builds the real-data tasks of ``real_tasks``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import MLP, TinyGPT

__all__ = ["MarkovTask", "TeacherTask", "TASKS", "make_task"]


class MarkovTask:
    """Next-token prediction on an order-2 Markov chain (see the module docstring).

    The loss is the cross-entropy of positions ``1 .. T-2`` predicting tokens ``2 .. T-1``
    (where the full two-token context is visible); ``floor`` is the Bayes loss on the
    evaluation set.
    """

    name = "transformer"

    def __init__(
        self,
        vocab: int = 16,
        seq_len: int = 32,
        batch: int = 32,
        model: dict[str, int] | None = None,
        eval_size: int = 256,
        seed: int = 1234,
    ) -> None:
        self.vocab, self.seq_len, self.batch = vocab, seq_len, batch
        self.model_kw = dict(dim=64, heads=4, ff=128, layers=1) | (model or {})
        rng = np.random.default_rng(seed)
        law = rng.dirichlet(np.full(vocab, 0.2), size=(vocab, vocab))
        self.P = torch.from_numpy(law).float()  # P[a, b]: law of the token after (a, b)
        self.eval_x = self.sample(eval_size, torch.Generator().manual_seed(seed + 1))[0]
        x = self.eval_x
        p = self.P[x[:, :-2], x[:, 1:-1], x[:, 2:]]
        self.floor = float(-torch.log(p).mean())
        self.describe = (
            f"transformer: order-2 Markov chain, vocab {vocab}, length {seq_len}, batch {batch}; "
            f"TinyGPT({', '.join(f'{k}={v}' for k, v in self.model_kw.items())})"
        )

    def make_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return TinyGPT(self.vocab, self.seq_len, **self.model_kw)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, None]:
        x = torch.empty(n, self.seq_len, dtype=torch.long)
        x[:, :2] = torch.randint(0, self.vocab, (n, 2), generator=generator)
        for t in range(2, self.seq_len):
            probs = self.P[x[:, t - 2], x[:, t - 1]]
            x[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return x, None

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        logits = model(x)[:, 1:-1]
        return F.cross_entropy(logits.reshape(-1, self.vocab).float(), x[:, 2:].reshape(-1))

    def eval_loss(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float(self.loss(model, self.eval_x))


class TeacherTask:
    """Labels drawn from a random teacher MLP's softmax; a wider student MLP learns them."""

    name = "mlp"

    def __init__(
        self,
        d_in: int = 32,
        classes: int = 10,
        width: int = 128,
        batch: int = 64,
        eval_size: int = 2048,
        seed: int = 4321,
    ) -> None:
        self.d_in, self.classes, self.width, self.batch = d_in, classes, width, batch
        torch.manual_seed(seed)
        self.teacher = MLP(d_in, 64, classes, depth=1)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # teacher logits scaled to std 3: a Bayes loss near 1 nat
            self.scale = 3.0 / float(self.teacher(torch.randn(4096, d_in, generator=g)).std())
        self.eval_x, self.eval_y = self.sample(eval_size, g)
        with torch.no_grad():
            logp = F.log_softmax(self._logits(self.eval_x), -1)
        self.floor = float(-(logp.exp() * logp).sum(-1).mean())
        self.describe = (
            f"mlp: teacher-student classification, {d_in} inputs, {classes} classes, batch "
            f"{batch}; MLP({d_in}-{width}-{width}-{classes})"
        )

    def _logits(self, x: Tensor) -> Tensor:
        return self.scale * self.teacher(x)

    def make_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return MLP(self.d_in, self.width, self.classes, depth=2)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, self.d_in, generator=generator)
        with torch.no_grad():
            probs = F.softmax(self._logits(x), -1)
        return x, torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        return F.cross_entropy(model(x).float(), y)

    def eval_loss(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float(self.loss(model, self.eval_x, self.eval_y))


#: Every task name ``make_task`` knows: the synthetic ones here and the real-data ones of
#: ``real_tasks`` (``stdlib``: byte-level GPT on standard-library source; ``digits``: a conv
#: net on scikit-learn's digits).
TASKS = ("transformer", "mlp", "stdlib", "digits")


def make_task(name: str, **kw: Any) -> Any:
    """``"transformer"`` (``MarkovTask``), ``"mlp"`` (``TeacherTask``), or a real-data task of
    ``real_tasks``: ``"stdlib"`` (``StdlibBytesTask``), ``"digits"`` (``DigitsTask``)."""
    if name == "transformer":
        return MarkovTask(**kw)
    if name == "mlp":
        return TeacherTask(**kw)
    if name in TASKS:
        from ..real_tasks import make_real_task

        return make_real_task(name, **kw)
    raise ValueError(f"task: expected one of {list(TASKS)}, got {name!r}")
