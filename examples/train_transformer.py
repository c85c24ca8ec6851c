"""Train a small transformer with ``SpectralKron`` in place of AdamW (paper Sec. 4.4).

A one-block GPT learns an order-2 Markov chain (data generated on the fly, Bayes loss known)
in bfloat16 autocast. The same loop runs AdamW and ``SpectralKron``; only the constructor line
differs. The optimizer computes no decomposition after the first step, updates the
same-shaped matrices of the model in one batched set of products, and (its default) runs the
eigenvalue correction: Adam's per-entry scaling in the eigenbasis it learns. Its state is
float32 here; ``state_dtype=torch.bfloat16`` keeps all of it (Kronecker factors ``B_L, B_R``,
eigenvalues, ``alpha``, momentum) in bfloat16, which halves its memory on an accelerator but
runs slowly on CPUs without bfloat16 matrix units.

Run:  python examples/train_transformer.py   (exits 1 if training does not bring the loss
      well below its start)
"""

from __future__ import annotations

import sys

import torch

from manifold_spectral.experiments.nn_training import make_task
from manifold_spectral.optim import SpectralKron

STEPS = 120


def train(make_optimizer, seed: int = 1) -> float:
    """``STEPS`` steps on fresh batches; the final evaluation loss."""
    task = make_task("transformer")
    model = task.make_model(seed)
    opt = make_optimizer(model)
    gen = torch.Generator().manual_seed(10_000 + seed)
    for _ in range(STEPS):
        x, y = task.sample(32, gen)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = task.loss(model, x, y)
        loss.backward()
        opt.step()
    return task.eval_loss(model)


def main() -> int:
    torch.set_num_threads(1)
    task = make_task("transformer")
    runs = {
        "AdamW": lambda m: torch.optim.AdamW(m.parameters(), lr=1.5e-2, betas=(0.9, 0.998)),
        # The defaults, lr a tenth of AdamW's (the momentum buffer sums gradients).
        "SpectralKron": lambda m: SpectralKron(m.parameters(), lr=1.5e-3),
    }
    initial = task.eval_loss(task.make_model(1))
    print(f"eval loss at start {initial:.3f}; Bayes loss {task.floor:.3f}")
    finals = {}
    for name, make in runs.items():
        finals[name] = train(make)
        print(f"{name:>12}: eval loss after {STEPS} steps {finals[name]:.3f}")
    ok = finals["SpectralKron"] < initial - 0.5 * (initial - task.floor)
    if not ok:
        print("SpectralKron did not halve the gap to the Bayes loss", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
