"""Defaults and option edges found by an outside tester: float16 parameters keep a float32
state, the step count survives 2^24 steps, constructor-only options in a parameter group
and a deprecated ``truncated`` that contradicts ``exponential`` are named."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron


def test_float16_parameters_keep_a_float32_state_and_train_like_it():
    def run(state_dtype):
        torch.manual_seed(0)
        layer = nn.Linear(32, 8).half()
        opt = SpectralKron(layer.parameters(), lr=1e-2, state_dtype=state_dtype)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            layer.weight.grad = (torch.randn(8, 32, generator=g) * 0.05).half()
            layer.bias.grad = (torch.randn(8, generator=g) * 0.05).half()
            opt.step()
        return layer.weight.detach().clone(), opt

    w, opt = run(None)
    st = opt.state[next(iter(opt.state))]
    assert {v.dtype for k, v in st.items() if k.startswith("pc_") and v.ndim} == {torch.float32}
    assert torch.equal(w, run(torch.float32)[0])  # the default is the float32 state


def test_step_count_is_exact_beyond_two_to_the_24():
    p = nn.Parameter(torch.randn(4, 3))
    opt = SpectralKron([p], lr=1e-3, update_every=2)
    p.grad = torch.randn(4, 3)
    opt.step()
    assert opt.state[p]["step"].dtype == torch.float64
    sd = opt.state_dict()
    sd["state"][0]["step"] = torch.tensor(2.0**24 - 2, dtype=torch.float64)
    opt.load_state_dict(sd)
    seen = []
    for _ in range(4):
        opt.step()
        seen.append(int(opt.state[p]["step"]))
    assert seen == [2**24 - 1, 2**24, 2**24 + 1, 2**24 + 2]


@pytest.mark.parametrize(
    "key, value", [("shard", True), ("process_group", "a group"), ("nonfinite", "skip")]
)
def test_constructor_only_options_in_a_group_are_named(key, value):
    p, q = nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match=f"^{key}: an option of the whole optimizer"):
        SpectralKron([{"params": [p], key: value}])
    opt = SpectralKron([p])
    with pytest.raises(ValueError, match=f"^{key}: an option of the whole optimizer"):
        opt.add_param_group({"params": [q], key: value})
    assert len(opt.param_groups) == 1


def test_truncated_that_contradicts_exponential_is_named():
    p = nn.Parameter(torch.randn(3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="truncated=True and exponential='exact' disagree"):
            SpectralKron([p], truncated=True, exponential="exact")
        with pytest.raises(ValueError, match="disagree"):
            SpectralKron([p]).add_param_group(
                {
                    "params": [nn.Parameter(torch.randn(2))],
                    "truncated": True,
                    "exponential": "exact",
                }
            )
        assert SpectralKron([p], truncated=False).defaults["exponential"] == "exact"


def _mlp_steps(opt, m, x, inside: list[bool]) -> None:
    for flag in inside:
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        if flag:
            with torch.inference_mode():
                opt.step()
        else:
            opt.step()


def test_a_step_under_inference_mode_takes_the_same_step():
    def run(inside):
        torch.manual_seed(0)
        m = nn.Sequential(
            nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
        )
        opt = SpectralKron(m.parameters(), lr=1e-3)
        _mlp_steps(opt, m, torch.randn(8, 12, generator=torch.Generator().manual_seed(1)), inside)
        return [p.detach().clone() for p in m.parameters()]

    ref = run([False, False, False, False])
    got = run([False, False, True, False])
    assert all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))


def test_a_state_without_its_preconditioner_is_refused_on_load():
    torch.manual_seed(0)
    m = nn.Linear(4, 3)
    opt = SpectralKron(m.parameters(), lr=1e-3)
    _mlp_steps(opt, m, torch.randn(8, 4), [False, False])
    sd = opt.state_dict()
    del sd["state"][1]["pc_d"]  # the bias (diagonal scheme)
    fresh = SpectralKron(m.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="parameter 1 .* no preconditioner entries"):
        fresh.load_state_dict(sd)
    assert not fresh.state


def test_a_parameter_whose_dtype_changed_under_its_state_is_named_and_the_remedy_works():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(8, 12)
    opt = SpectralKron(m.parameters(), lr=1e-3)
    _mlp_steps(opt, m, x, [False, False])
    m.double()
    opt.zero_grad()
    m(x.double()).pow(2).mean().backward()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match="dtype changed after its state was made"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    opt.load_state_dict(opt.state_dict())  # the remedy the message names
    opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_param_groups_marks_norm_gains_of_any_shape_diagonal():
    """A LayerNorm gain over (C, H, W) scales each entry on its own: ``param_groups`` puts it
    (and every norm layer's parameters, embeddings as before) in the diagonal group, so it
    gets no Kronecker factors; the linear layer keeps them."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.LayerNorm([4, 5, 5]),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(100, 3),
    )
    groups = SpectralKron.param_groups(model)
    diag = {id(p) for g in groups if g.get("diagonal") for p in g["params"]}
    norms = [*model[1].parameters(), *model[2].parameters()]
    assert diag == {id(p) for p in norms}
    opt = SpectralKron(groups, lr=1e-2)
    model(torch.randn(2, 3, 5, 5)).square().sum().backward()
    opt.step()
    assert "pc_B_L" not in opt.state[model[1].weight]  # diagonal: no Kronecker factors
    assert "pc_B_L" in opt.state[model[4].weight]
