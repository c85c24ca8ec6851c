"""The held-out tasks of ``bench_heldout.py`` (its docstring describes them and the
protocol): real data that ships offline (scikit-learn's tables and digits, standard-library
source text), split by a seeded permutation or by position, each with its own model and
loss, behind the task protocol of ``nn_training.train``."""

from __future__ import annotations

import re
import sysconfig
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

STDLIB = Path(sysconfig.get_paths()["stdlib"])
GRU_FILES = ("optparse.py", "configparser.py", "ftplib.py")
BOW_FILES = ("imaplib.py", "smtplib.py", "ftplib.py", "optparse.py")
TOKEN = re.compile(r"[A-Za-z_]+|[^\sA-Za-z_0-9]")


def _split(n: int, frac: float, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return perm[: int(frac * n)], perm[int(frac * n) :]


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Task:
    """In-memory data ``(tx, ty)`` / ``(ex, ey)`` and a model factory: the protocol of
    ``nn_training.train`` (``batch``, ``make_model``, ``sample``, ``loss``, ``eval_loss``)."""

    floor = None

    def __init__(
        self,
        name: str,
        describe: str,
        tx: Tensor,
        ty: Tensor,
        ex: Tensor,
        ey: Tensor,
        make: Callable[[], nn.Module],
        loss: Callable[[Tensor, Tensor], Tensor],
        batch: int = 32,
    ) -> None:
        self.name, self.describe, self.batch = name, describe, batch
        self.tx, self.ty, self.ex, self.ey = tx, ty, ex, ey
        self._make, self._loss = make, loss

    def make_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return self._make()

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        i = torch.randint(0, self.ty.shape[0], (n,), generator=generator)
        return self.tx[i], self.ty[i]

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self._loss(model(x).float(), y)

    def eval_loss(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float(self.loss(model, self.ex, self.ey))


def _table(name: str, batch: int) -> Task:
    from sklearn import datasets

    load = {"cancer": "load_breast_cancer", "wine": "load_wine", "diabetes": "load_diabetes"}
    d = getattr(datasets, load[name])()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)
    tr, te = _split(len(y), 0.75, seed=0)
    x = (x - x[tr].mean(0)) / (x[tr].std(0) + 1e-8)
    if name == "diabetes":
        y = ((y - y[tr].mean()) / y[tr].std()).float()[:, None]
        k, loss, what = 1, F.mse_loss, "MSE of the standardised target"
    else:
        y = y.long()
        k, loss, what = int(y.max()) + 1, F.cross_entropy, "cross-entropy"
    describe = f"{len(tr)} train / {len(te)} test rows; MLP {x.shape[1]}-64-64-{k}; {what}"
    return Task(
        name, describe, x[tr], y[tr], x[te], y[te], lambda: _mlp(x.shape[1], 64, 64, k), loss, batch
    )


def _digits() -> tuple[Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = torch.tensor(d.images / 16.0, dtype=torch.float32), torch.tensor(d.target).long()
    tr, te = _split(len(y), 0.8, seed=1)
    return x[tr], y[tr], x[te], y[te]


class ViT(nn.Module):
    """16 patches of 2x2 pixels -> width 32, one pre-norm encoder layer, mean pool, head."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed, self.pos = nn.Linear(4, dim), nn.Parameter(0.02 * torch.randn(16, dim))
        layer = nn.TransformerEncoderLayer(
            dim, 2, 2 * dim, 0.0, "gelu", batch_first=True, norm_first=True
        )
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, img: Tensor) -> Tensor:
        p = img.unfold(1, 2, 2).unfold(2, 2, 2).reshape(img.shape[0], 16, 4)
        return self.head(self.ln(self.enc(self.embed(p) + self.pos).mean(1)))


class CharGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.head = (
            nn.Embedding(256, 32),
            nn.GRU(32, 64, batch_first=True),
            nn.Linear(64, 256),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(self.emb(x))[0])


class BagOfTokens(nn.Module):
    """Mean embedding of a padded row of hashed tokens (the pad index is left out)."""

    def __init__(self, buckets: int = 256) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(buckets + 1, 32, mode="mean", padding_idx=buckets)
        self.mlp = _mlp(32, 64, len(BOW_FILES))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.emb(x))


def _windows(text: Tensor, span: int, n: int) -> Tensor:
    starts = np.linspace(0, text.numel() - span, n).round().astype(int)
    return torch.stack([text[s : s + span] for s in starts]).long()


def _next_byte(logits: Tensor, x: Tensor) -> Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))


def _bow(buckets: int = 256, width: int = 48) -> tuple[Tensor, Tensor]:
    rows, labels = [], []
    for k, f in enumerate(BOW_FILES):
        for line in (STDLIB / f).read_text().splitlines():
            toks = TOKEN.findall(line)[:width]
            if len(toks) >= 2:
                ids = [zlib.crc32(t.encode()) % buckets for t in toks]
                rows.append(ids + [buckets] * (width - len(ids)))
                labels.append(k)
    return torch.tensor(rows), torch.tensor(labels)


def make_task(name: str) -> Task:
    """The task ``name`` (module docstring)."""
    if name in ("cancer", "wine", "diabetes"):
        return _table(name, 16 if name == "wine" else 32)
    if name.startswith("digits"):
        tx, ty, ex, ey = _digits()
        if name == "digits-vit":
            return Task(
                name, "ViT on 2x2 patches; cross-entropy", tx, ty, ex, ey, ViT, F.cross_entropy
            )
        tx, ex = tx.flatten(1), ex.flatten(1)
        if name == "digits-mlp":
            return Task(
                name,
                "MLP 64-128-128-10 on raw pixels; cross-entropy",
                tx,
                ty,
                ex,
                ey,
                lambda: _mlp(64, 128, 128, 10),
                F.cross_entropy,
            )
        return Task(
            name,
            "autoencoder 64-32-8-32-64; squared error per image",
            tx,
            tx,
            ex,
            ex,
            lambda: _mlp(64, 32, 8, 32, 64),
            lambda o, y: 64 * F.mse_loss(o, y),
        )
    if name == "stdlib-gru":
        data = b"".join((STDLIB / f).read_bytes() for f in GRU_FILES)
        text = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        cut = int(0.9 * text.numel())
        train, held = text[:cut].unfold(0, 33, 1).long(), _windows(text[cut:], 33, 128)
        describe = (
            f"byte GRU (embedding 32, hidden 64) on {', '.join(GRU_FILES)}, context 32; "
            "the loss reads the window itself (next byte, nats)"
        )
        return Task(name, describe, train, train, held, held, CharGRU, _next_byte, batch=16)
    if name == "stdlib-bow":
        x, y = _bow()
        tr, te = _split(len(y), 0.8, seed=0)
        return Task(
            name,
            f"source line -> module of {', '.join(BOW_FILES)}; cross-entropy",
            x[tr],
            y[tr],
            x[te],
            y[te],
            BagOfTokens,
            F.cross_entropy,
        )
    raise ValueError(f"task: expected one of {TASKS}, got {name!r}")


TASKS = (
    "cancer",
    "wine",
    "diabetes",
    "digits-mlp",
    "digits-ae",
    "digits-vit",
    "stdlib-gru",
    "stdlib-bow",
)
