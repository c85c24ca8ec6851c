"""A step of parameters with state reads its gradients' check together with its results'
checks (one host read of values a step), and a bad gradient still decides the step as when
it is read first: the same error or skip, nothing written."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from manifold_spectral.optim import SpectralKron, preconditioners

SHAPES = [(8, 6), (8, 6), (5, 4), (7,)]


def _params() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]


def _grads(params: list[torch.nn.Parameter], i: int) -> None:
    g = torch.Generator().manual_seed(100 + i)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def _optimizer(params: list[torch.nn.Parameter], **kw) -> SpectralKron:
    # update_every 10: steps 2 to 10 only precondition (the diagonal scheme's own period 10
    # too: its curvature step reads its point check at once)
    return SpectralKron(params, lr=1e-2, update_every=10, diagonal_every=None, **kw)


def _snapshot(opt: SpectralKron, params: list[torch.nn.Parameter]) -> tuple:
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()["state"])


def _assert_same(a: tuple, b: tuple) -> None:
    for x, y in zip(a[0], b[0], strict=True):
        assert torch.equal(x, y)
    assert a[1].keys() == b[1].keys()
    for i in a[1]:
        assert a[1][i].keys() == b[1][i].keys()
        for k in a[1][i]:
            assert torch.equal(torch.as_tensor(a[1][i][k]), torch.as_tensor(b[1][i][k])), (i, k)


def test_a_precondition_only_step_reads_values_once(monkeypatch) -> None:
    params = _params()
    opt = _optimizer(params)
    for i in range(3):
        _grads(params, i)
        opt.step()
    reads: list[str] = []
    base = torch._C.TensorBase

    def counted(name: str):
        original = getattr(base, name)

        def read(t, *args):
            # the step counters are float64 counts on the CPU (no device synchronisation);
            # every value the step computes from float32 parameters is float32
            if t.dtype != torch.float64:
                reads.append(name)
            return original(t, *args)

        return read

    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(name), raising=False)
    _grads(params, 3)
    opt.step()
    monkeypatch.undo()
    assert reads == ["tolist"]  # the gradients' check read with the results' checks
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("bad", ["nan", "inf", "square_overflow"])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_bad_gradient_at_a_later_step_changes_nothing(bad, nonfinite) -> None:
    params, reference = _params(), _params()
    opt, ref = _optimizer(params, nonfinite=nonfinite), _optimizer(reference)
    for i in range(3):
        for ps, o in ((params, opt), (reference, ref)):
            _grads(ps, i)
            o.step()
    before = _snapshot(opt, params)
    _grads(params, 3)
    params[2].grad[1, 2] = {"nan": float("nan"), "inf": float("inf"), "square_overflow": 1e30}[bad]
    if bad == "square_overflow":  # finite: skipped with a warning, whatever ``nonfinite``
        with pytest.warns(RuntimeWarning, match=r"params\[0\]\[2\]"):
            opt.step()
        assert opt.skipped_steps == 1
    elif nonfinite == "raise":
        with pytest.raises(ValueError, match=r"params\[0\]\[2\].*NaN or Inf"):
            opt.step()
        assert opt.skipped_steps == 0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a non-finite gradient is skipped silently
            opt.step()
        assert opt.skipped_steps == 1
    _assert_same(_snapshot(opt, params), before)
    # the next steps are those of a run that never saw the bad gradient
    for i in range(3, 12):
        for ps, o in ((params, opt), (reference, ref)):
            _grads(ps, i)
            o.step()
    _assert_same(_snapshot(opt, params), _snapshot(ref, reference))


@pytest.mark.parametrize("kind", ["KroneckerPreconditioner", "DiagonalPreconditioner"])
def test_a_first_step_checks_its_gradients_before_the_initialisation_reads_them(
    kind, monkeypatch
) -> None:
    # The warm start's float64 eigh of a NaN matrix may raise (LinAlgError) where LAPACK
    # reports it: a first step reads the gradients' check before anything reads them.
    seen = []
    cls = getattr(preconditioners, kind)
    original = cls.init_state

    def init_state(self, grad, warm_start):
        seen.append(bool(torch.isfinite(grad).all()))
        return original(self, grad, warm_start)

    monkeypatch.setattr(cls, "init_state", init_state)
    params = _params()
    opt = _optimizer(params)
    _grads(params, 0)
    params[2 if kind.startswith("Kronecker") else 3].grad[1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        opt.step()
    assert all(seen)
    assert not opt.state
