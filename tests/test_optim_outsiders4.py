"""An outside tester's findings on ``SpectralKron`` (session 21): options a scheduler or a user
writes in ways the constructor's validation did not see (a tensor ``lr`` written in place, a
value of another type, a shaped one-element tensor).

Each test failed on the code before its fix (see the commit messages)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from test_optim_outsiders2 import _set_grads

from manifold_spectral.optim import SpectralKron

# A padded bucket of Kronecker layers, a vector and a 0-d parameter (whose momentum buffer a
# shaped momentum would broadcast to another shape).
SHAPES = [(6, 5), (4, 3), (9,), ()]


def _params(shapes: list[tuple[int, ...]]) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _trained(lr: Any = 1e-2, steps: int = 2) -> tuple[list[torch.nn.Parameter], SpectralKron]:
    ps = _params(SHAPES)
    opt = SpectralKron(ps, lr=lr)
    for i in range(steps):
        _set_grads(ps, i)
        opt.step()
    _set_grads(ps, steps)
    return ps, opt


def _snapshot(ps: list[torch.nn.Parameter], opt: SpectralKron) -> tuple[Any, ...]:
    state = copy.deepcopy(opt.state_dict()["state"])
    return [p.detach().clone() for p in ps], state, opt.skipped_steps


def _assert_unchanged(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    (p0, s0, k0), (p1, s1, k1) = before, after
    assert k0 == k1
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))
    assert s0.keys() == s1.keys()
    for i in s0:
        assert s0[i].keys() == s1[i].keys()
        for key, v in s0[i].items():
            w = s1[i][key]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w, key


@pytest.mark.parametrize("key, value", [("lr", 1e-2), ("weight_decay", 0.1), ("momentum", 0.9)])
def test_a_shaped_one_element_tensor_option_is_named_and_changes_nothing(key, value) -> None:
    # A (1,)-shaped tensor passed the scalar checks; the step then wrote the new state and
    # failed in torch._foreach_add_ (lr: a raw TypeError) or in mul_ (weight_decay: a raw
    # RuntimeError), leaving a state one step ahead of the parameters; a shaped momentum
    # broadcast the 0-d parameter's buffer to shape (1,).
    with pytest.raises(ValueError, match=rf"^{key}: expected a number or a 0-d tensor"):
        SpectralKron(_params(SHAPES), **{key: torch.tensor([value])})
    ps, opt = _trained()
    opt.param_groups[0][key] = torch.tensor([value])
    before = _snapshot(ps, opt)
    with pytest.raises(ValueError, match=rf"^{key}: expected a number or a 0-d tensor"):
        opt.step()
    _assert_unchanged(before, _snapshot(ps, opt))
    opt.param_groups[0][key] = torch.tensor(value)  # the 0-d tensor trains
    opt.step()
    assert opt.state[ps[3]]["momentum_buffer"].shape == ()


@pytest.mark.parametrize("bad", [-1e-3, float("nan")])
def test_a_tensor_lr_written_in_place_is_validated_at_the_next_step(bad) -> None:
    # torch's schedulers write a tensor lr in place (fill_); the step compared tensor options
    # by identity only, so a negative lr trained as gradient ascent without an error, where
    # the same float lr is a ValueError.
    ps, opt = _trained(lr=torch.tensor(1e-2))
    before = _snapshot(ps, opt)
    opt.param_groups[0]["lr"].fill_(bad)
    with pytest.raises(ValueError, match="^lr: expected a finite number >= 0"):
        opt.step()
    _assert_unchanged(before, _snapshot(ps, opt))


def test_a_scheduler_driving_a_tensor_lr_negative_stops_where_a_float_lr_stops() -> None:
    # LambdaLR whose factor crosses zero: with a float lr the step that would use -0.2 lr
    # raises; a tensor lr (written in place by the scheduler) trained on with negative lrs.
    raised_at = []
    for lr in (1e-2, torch.tensor(1e-2)):
        ps = _params(SHAPES)
        opt = SpectralKron(ps, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / 5)
        with pytest.raises(ValueError, match="^lr: expected a finite number >= 0"):
            for i in range(10):
                _set_grads(ps, i)
                opt.step()
                sched.step()
        raised_at.append(i)
    assert raised_at == [6, 6]


def test_an_inference_tensor_lr_is_validated_at_every_step() -> None:
    # An inference tensor has no version counter: it is read at every step instead.
    with torch.inference_mode():
        lr = torch.tensor(1e-2)
    ps, opt = _trained(lr=lr)
    opt.step()
    with torch.inference_mode():
        lr.fill_(-1e-3)
    _set_grads(ps, 5)
    before = _snapshot(ps, opt)
    with pytest.raises(ValueError, match="^lr: expected a finite number >= 0"):
        opt.step()
    _assert_unchanged(before, _snapshot(ps, opt))


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("nesterov", 1, TypeError),
        ("warm_start", 1, TypeError),
        ("update_every", True, ValueError),
        ("diagonal_every", True, ValueError),
        ("update_every", 1.0, ValueError),
    ],
)
@pytest.mark.parametrize("lr", [1e-2, torch.tensor(1e-2)])
def test_an_option_set_mid_run_to_an_equal_value_of_another_type_is_validated(
    key, value, error, lr
) -> None:
    # True == 1 == 1.0: the change compared equal to the old option and escaped the
    # validation that the constructor gives the same value (with a float or a tensor lr).
    with pytest.raises(error, match=f"^{key}: expected"):
        SpectralKron(_params(SHAPES), **{key: value})
    ps, opt = _trained(lr=lr)
    opt.param_groups[0][key] = value
    before = _snapshot(ps, opt)
    with pytest.raises(error, match=f"^{key}: expected"):
        opt.step()
    _assert_unchanged(before, _snapshot(ps, opt))


@pytest.mark.parametrize(
    "parametrization",
    [
        torch.nn.utils.parametrizations.weight_norm,
        torch.nn.utils.parametrizations.spectral_norm,
    ],
)
def test_param_groups_marks_a_parametrized_embedding_and_norm_gain_diagonal(
    parametrization,
) -> None:
    # A parametrization moves the tensor to mod.parametrizations.weight.original (weight_norm:
    # original0, original1), which mod.parameters(recurse=False) does not list: the embedding
    # table silently got Kronecker factors.
    model = torch.nn.Sequential(
        torch.nn.Embedding(12, 5), torch.nn.LayerNorm([3, 5]), torch.nn.Linear(5, 4)
    )
    parametrization(model[0])
    parametrization(model[1])
    parametrization(model[2])
    groups = SpectralKron.param_groups(model)
    diag = [p for g in groups if g.get("diagonal") for p in g["params"]]
    lookups_and_gains = [*model[0].parameters(), *model[1].parameters()]
    assert {id(p) for p in diag} == {id(p) for p in lookups_and_gains}
    assert len(diag) == len({id(p) for p in diag})
    opt = SpectralKron(groups, lr=1e-2)
    model(torch.tensor([[1, 2, 3]])).square().sum().backward()
    opt.step()
    assert all("pc_B_L" not in opt.state[p] for p in diag)  # diagonal: no Kronecker factors
    (weight,) = [p for p in model[2].parameters() if p.shape == (4, 5)]
    assert "pc_B_L" in opt.state[weight]


def test_param_groups_lists_a_table_shared_by_two_embeddings_once() -> None:
    # Two nn.Embedding modules sharing one weight (tied input tables): the table was listed
    # twice, which torch only warns about, and the step then moved it twice.
    def build() -> torch.nn.ModuleList:
        torch.manual_seed(0)
        first, second = torch.nn.Embedding(10, 4), torch.nn.Embedding(10, 4)
        second.weight = first.weight
        return torch.nn.ModuleList([first, second, torch.nn.Linear(4, 3)])

    def step(model: torch.nn.ModuleList, opt: SpectralKron) -> None:
        first, second, head = model
        head(first(torch.tensor([1, 2])) + second(torch.tensor([3, 4]))).square().sum().backward()
        opt.step()

    model, reference = build(), build()
    groups = SpectralKron.param_groups(model)
    assert [len(g["params"]) for g in groups] == [2, 1]
    step(model, SpectralKron(groups, lr=1e-2))
    table, head = reference[0].weight, reference[2]
    by_hand = [{"params": list(head.parameters())}, {"params": [table], "diagonal": True}]
    step(reference, SpectralKron(by_hand, lr=1e-2))
    pairs = zip(model.parameters(), reference.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("shape", [(5, 4), (4,)])
@pytest.mark.parametrize("how", ["constructor", "add_param_group"])
def test_a_parameter_listed_twice_in_one_group_is_named_and_registers_nothing(shape, how) -> None:
    # Session 25's outside tester: SpectralKron([p, p]) stepped p twice (its displacement
    # 2.0x a single listing's) with one state; torch.optim only warns.
    p = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    q = torch.nn.Parameter(torch.zeros(3))
    if how == "constructor":
        with pytest.raises(
            ValueError, match=r"params\[0\]\[2\]: the same tensor as params\[0\]\[0\]"
        ):
            SpectralKron([p, q, p], lr=1e-2)
        return
    opt = SpectralKron([q], lr=1e-2)
    with pytest.raises(ValueError, match=r"params\[1\]\[1\]: the same tensor as params\[1\]\[0\]"):
        opt.add_param_group({"params": [p, p]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [p]})  # the same parameter listed once is accepted
    p.grad = torch.ones_like(p)
    before = p.detach().clone()
    opt.step()
    assert not torch.equal(p, before)


def test_a_step_the_exact_exponential_cannot_take_says_so_and_changes_nothing() -> None:
    # Session 25's outside tester: on a small tanh MLP the exact map's exp(beta2 h / d)
    # overflows in the first steps (a bias whose squared gradient is ~1e4 times its
    # curvature); the warning blamed "lr too large?" alone.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh()
    )
    opt = SpectralKron(model.parameters(), lr=3e-3, exponential="exact")
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        x = torch.randn(4, 10, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        before = [p.detach().clone() for p in model.parameters()]
        state = copy.deepcopy(opt.state_dict())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.step()
        skipped = [w for w in caught if "step skipped" in str(w.message)]
        if skipped:
            message = str(skipped[0].message)
            assert "exponential='exact' overflows" in message
            # the curvature step's size is beta2 (the RGD's lr), not the optimizer's lr
            assert "beta2 too large?" in message and "lr too large" not in message, message
            after = list(model.parameters())
            assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
            new = opt.state_dict()["state"]
            assert new.keys() == state["state"].keys()
            for i, entries in state["state"].items():
                assert new[i].keys() == entries.keys()
                assert all(
                    torch.equal(torch.as_tensor(v), torch.as_tensor(new[i][k]))
                    for k, v in entries.items()
                )
            return
    pytest.fail("no step was skipped: the test no longer reaches the exact map's overflow")


def _last_step(state_dtype: torch.dtype, scale: float) -> float:
    """Largest entry of the third step of a 6 x 5 layer on gradients of size ``scale``."""
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(6, 5))
    opt = SpectralKron([p], lr=1e-2, state_dtype=state_dtype)
    for _ in range(3):
        p.grad = scale * torch.randn(6, 5, generator=gen)
        before = p.detach().clone()
        opt.step()
    return float((p.detach() - before).abs().max())


def test_an_explicit_float16_state_warns_what_it_does_to_small_gradients() -> None:
    """Another outside tester's finding: a float16 state stepped gradients of 1e-6 by 1.1e-6
    instead of about 0.05 (its damping floor sqrt(tiny)), silently. Now a warning at the
    group's registration says so; float16 parameters default to a float32 state."""
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.warns(UserWarning, match=r"state_dtype=torch.float16.*below 0\.088"):
        SpectralKron([p], state_dtype=torch.float16)
    with pytest.warns(UserWarning, match="state_dtype=torch.float16"):
        SpectralKron([p]).add_param_group(
            {"params": [torch.nn.Parameter(torch.zeros(2))], "state_dtype": torch.float16}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpectralKron([p], state_dtype=torch.bfloat16)
        SpectralKron([torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float16))])
    # what the warning says: below its bound the step shrinks with the gradient, above it not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scale, shrink in ((1e-4, 1e-2), (1e-2, 0.2), (1.0, 1.2)):
            ratio = _last_step(torch.float16, scale) / _last_step(torch.float32, scale)
            assert (ratio < shrink) if shrink < 1 else (1 / shrink < ratio < shrink), scale
