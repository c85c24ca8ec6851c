"""SpectralKron's batched buckets (``batched=True``, split from test_optim.py): same-shaped
parameters updated together equal separate updates, and a bucket splits by step count and
resumes bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from test_optim import OPTS, data, train
from torch import nn

from manifold_spectral.optim import SpectralKron


def deep_mlp(seed: int = 3, dtype=torch.float64) -> nn.Module:
    """Three same-shaped hidden matrices (one bucket) beside two odd-shaped ones."""
    torch.manual_seed(seed)
    layers = [nn.Linear(12, 16), nn.Tanh()]
    for _ in range(3):
        layers += [nn.Linear(16, 16), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(16, 4)).to(dtype)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"cayley": "exact", "exponential": "exact", "update_every": 2},
        {"warm_start": True, "graft": "adam", "clip_rms": 0.5, "root": 1.0},
        {"eigenvalue_correction": True, "update_every": 2},
    ],
    ids=["defaults", "exact", "warm-graft-clip", "eigenvalue-correction"],
)
def test_batched_buckets_equal_separate_updates(kw):
    """``batched=True`` updates the five weights (three 16 x 16, one 16 x 12, one 4 x 16) on
    one ``batch=5`` manifold padded to 16 x 16 and the five biases on one diagonal
    preconditioner over their concatenated entries; every parameter and state entry equals
    the one-by-one run to rounding, through a re-orthogonalisation (step 10)."""
    X, Y = data(5)
    X = X.double()
    runs = []
    for batched in (False, True):
        model = deep_mlp()
        opt = SpectralKron(model.parameters(), **OPTS, **kw, batched=batched)
        train(model, opt, X, Y, 12)
        runs.append((model, opt))
    (m0, o0), (m1, o1) = runs
    buckets = o1._buckets(o1.param_groups[0])
    assert sorted(len(b) for b in buckets) == [5, 5]
    for p, q in zip(m0.parameters(), m1.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        for key, v in o0.state[p].items():
            # Eigenvectors of (nearly) repeated eigenvalues (the warm start's rank-deficient
            # first GOP) amplify 1e-15 differences of the gradients; S and W agree tightly.
            torch.testing.assert_close(v, o1.state[q][key], rtol=1e-6, atol=1e-8)
            assert o1.state[q][key].is_contiguous()


def test_batched_bucket_splits_by_step_count_and_resumes_bitwise():
    """A layer that missed a step (no gradient) has its own step count, hence its own bucket;
    resuming a batched run from its state dict is bitwise."""
    X, Y = data(6)
    X = X.double()
    model = deep_mlp()
    opt = SpectralKron(model.parameters(), **OPTS)
    skip = model[4].weight
    for k in range(6):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        if k == 0:
            skip.grad = None
        opt.step()
    assert int(opt.state[skip]["step"]) == 5 and int(opt.state[model[2].weight]["step"]) == 6
    sizes = sorted(len(b) for b in opt._buckets(opt.param_groups[0]))
    assert sizes == [1, 4, 5]  # the skipped weight alone; the 5 biases together
    snap_opt, snap_model = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    train(model, opt, X, Y, 3)
    resumed = deep_mlp()
    resumed.load_state_dict(snap_model)
    opt2 = SpectralKron(resumed.parameters(), **OPTS)
    opt2.load_state_dict(snap_opt)
    train(resumed, opt2, X, Y, 3)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="batched"):
        SpectralKron(model.parameters(), batched="yes")
