"""``accumulate_gop``'s kept means under what users do to an optimizer's state (an outside
tester's probes): options toggled mid-run, buckets whose members kept different histories,
malformed state dicts, resumes in mid-period, and gradients large enough to overflow a sum."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from test_gop_sums import DT, _run, gen, rel
from torch import nn

from manifold_spectral.optim import SpectralKron


def _toggled(schedule, drop_at=None, n=8):
    """``_run``'s parameter, with ``schedule`` {step index: group options} applied before
    those steps; ``drop_at``: the step index before which the kept sums are removed by
    hand (what a state that never kept them looks like)."""
    p = nn.Parameter(torch.zeros(5, 3, dtype=DT))
    opt = SpectralKron([p], lr=1e-2, update_every=2)
    for t in range(n):
        opt.param_groups[0].update(schedule.get(t, {}))
        if t == drop_at:
            for key in ("gop_W_L", "gop_W_R", "gop_count"):
                opt.state[p].pop(key)
        p.grad = torch.randn(5, 3, generator=gen(40 + t), dtype=DT)
        opt.step()
    return opt, p


@pytest.mark.parametrize(
    "off, on",
    [
        ({"accumulate_gop": False}, {"accumulate_gop": True}),
        ({"update_every": 1}, {"update_every": 2}),
    ],
)
def test_sums_of_an_earlier_point_are_not_taken_after_a_toggle(off, on):
    """Sums kept mid-period (step 2, at the point of step 1), then accumulation off across
    curvature steps (3 and 5 move the point), on again at step 6: every curvature step
    equals that of a state whose sums were dropped when the option went off, so the steps
    taken while off read their own gradient alone, and the step of step 7 the gradients of
    steps 6 and 7 at the point of step 5 only."""
    opt, p = _toggled({2: off, 5: on})
    ref, q = _toggled({2: off, 5: on}, drop_at=2)
    assert opt.state[p]["gop_count"] == ref.state[q]["gop_count"] == 1  # step 8 kept
    for key in ("pc_B_L", "pc_d_L", "pc_alpha", "gop_W_L", "gop_W_R"):
        assert torch.equal(opt.state[p][key], ref.state[q][key]), key
    assert torch.equal(p, q)


def test_a_bucket_whose_members_kept_sums_differently_takes_none():
    """Two same-shaped parameters with equal step counts in one bucket, one with kept sums
    and one without (it started while the option was off): no KeyError, and no member
    reads the other's history; the bucket starts its sums afresh, as each one alone does
    after sums of its own were dropped."""
    a, b = (nn.Parameter(torch.zeros(5, 3, dtype=DT)) for _ in range(2))
    opt = SpectralKron([a, b], lr=1e-2, update_every=3)

    def grads(t, which):
        for i, p in enumerate((a, b)):
            on = any(p is q for q in which)
            p.grad = torch.randn(5, 3, generator=gen(60 + 2 * t + i), dtype=DT) if on else None

    grads(0, [a])  # a: step 1
    opt.step()
    grads(1, [a])  # a: step 2, sums of one gradient
    opt.step()
    opt.param_groups[0]["accumulate_gop"] = False
    grads(2, [b])  # b: step 1, no sums
    opt.step()
    grads(3, [b])  # b: step 2
    opt.step()
    opt.param_groups[0]["accumulate_gop"] = True
    grads(4, [a, b])  # both: step 3, one bucket; a keeps sums, b has none
    opt.step()
    for p in (a, b):
        assert opt.state[p]["gop_count"] == 1
        pre = opt._preconditioner(opt.param_groups[0], p)
        pc = {k[3:]: v for k, v in opt.state[p].items() if k.startswith("pc_")}
        want = pre.side_sums(pc, p.grad)  # this step's gradient alone, at the unchanged point
        for got, w in zip((opt.state[p]["gop_W_L"], opt.state[p]["gop_W_R"]), want, strict=True):
            assert rel(got, w) < 1e-12


def _malformed(edit):
    """A state dict saved mid-period (sums of one gradient), edited by ``edit``."""
    grads = [torch.randn(5, 3, generator=gen(70 + i), dtype=DT) for i in range(2)]
    opt, p, _ = _run(grads)
    sd = opt.state_dict()
    st = sd["state"][0]
    assert st["gop_count"] == 1 and st["gop_W_L"].shape == (5, 5)
    edit(st)
    return sd


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda st: st.update(gop_W_L=torch.ones(1, 1, dtype=DT)), "shape"),  # broadcasts
        (lambda st: st.update(gop_W_L=torch.ones(5, dtype=DT)), "shape"),  # broadcasts
        (lambda st: st.update(gop_W_R=torch.eye(5, dtype=DT)), "shape"),  # W_L's shape
        (lambda st: st.pop("gop_W_R"), "gop_W_R"),
        (lambda st: st.pop("gop_count"), "gop_count"),
        (lambda st: st.update(gop_W_L=-st["gop_W_L"]), "diagonal"),
        (lambda st: st.update(gop_count=torch.zeros((), dtype=DT)), "not zero"),
        (lambda st: st.update(gop_count=torch.full((), 2.0, dtype=DT)), "step - 1"),
    ],
)
def test_malformed_kept_sums_are_refused_on_load(edit, match):
    """Sums the step would read wrongly (a shape that broadcasts, a negative diagonal, a
    count that does not match them) or not at all (an entry missing) are refused when
    loaded, naming the entry, and nothing is loaded."""
    sd = _malformed(edit)
    q = nn.Parameter(torch.zeros(5, 3, dtype=DT))
    fresh = SpectralKron([q], lr=1e-2, update_every=2)
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)
    assert not fresh.state


def test_kept_sums_on_a_diagonal_parameter_are_refused_on_load():
    sd = _malformed(lambda st: None)
    q = nn.Parameter(torch.zeros(5, 3, dtype=DT))
    fresh = SpectralKron([q], lr=1e-2, update_every=2, diagonal=True)
    sd["param_groups"][0]["diagonal"] = True
    for key in [k for k in sd["state"][0] if k.startswith("pc_")]:
        del sd["state"][0][key]
    sd["state"][0]["pc_d"] = torch.ones(15, dtype=DT)
    with pytest.raises(ValueError, match="diagonal"):
        fresh.load_state_dict(sd)


def test_bucket_members_that_kept_different_counts_divide_by_their_own():
    """update_every=3: a keeps the sums of one gradient (step 2) while b, one step behind,
    takes its step 2 with the option off (its sums stay those of no gradient). At their
    step 3 they share a bucket with counts 1 and 0: each mean must divide by its own
    count, as each parameter's unbatched update does (the curvature step of step 4 reads
    them)."""

    def run(batched):
        a, b = (nn.Parameter(torch.zeros(5, 3, dtype=DT)) for _ in range(2))
        opt = SpectralKron([a, b], lr=1e-2, update_every=3, batched=batched)
        plan = [([a, b], True), ([a], True), ([b], False), ([a, b], True), ([a, b], True)]
        counts = []
        for t, (which, on) in enumerate(plan):
            opt.param_groups[0]["accumulate_gop"] = on
            for i, p in enumerate((a, b)):
                stepped = any(p is q for q in which)
                g = torch.randn(5, 3, generator=gen(80 + 2 * t + i), dtype=DT)
                p.grad = g if stepped else None
            opt.step()
            counts.append([float(opt.state[p]["gop_count"]) for p in (a, b)])
        return counts, [opt.state[p] for p in (a, b)]

    counts, bucket = run(True)
    assert counts[3] == [2.0, 1.0]  # gradients of steps 2 and 3 for a, of step 3 for b
    single_counts, single = run(False)
    assert counts == single_counts
    for st_b, st_s in zip(bucket, single, strict=True):
        for key in ("pc_B_L", "pc_B_R", "pc_d_L", "pc_d_R", "pc_alpha"):
            assert rel(st_b[key], st_s[key]) < 1e-12, key


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float32])
def test_a_bucket_resumed_mid_period_continues_bit_for_bit(state_dtype):
    """A loaded bucket's members hold separate counts (stacked, one per member) where the
    uninterrupted run shares one 0-d count: the curvature step must divide by them in the
    same arithmetic (the state dtype's, float32 for bfloat16), bit for bit."""
    shapes = [(6, 4), (6, 4), (5, 3)]

    def grads(ps, t):
        for i, p in enumerate(ps):
            p.grad = torch.randn(*p.shape, generator=gen(90 + 10 * t + i))

    def make(ps):
        return SpectralKron(ps, lr=1e-2, update_every=3, state_dtype=state_dtype)

    ps = [nn.Parameter(torch.zeros(*s)) for s in shapes]
    opt = make(ps)
    for t in range(6):
        grads(ps, t)
        opt.step()
        if t == 4:  # after step 5: sums of one gradient, the curvature step at step 7
            saved = copy.deepcopy(opt.state_dict())
            qs = [nn.Parameter(p.detach().clone()) for p in ps]
    resumed = make(qs)
    resumed.load_state_dict(saved)
    assert resumed.state[qs[0]]["gop_count"] is not resumed.state[qs[1]]["gop_count"]
    for t in range(5, 8):
        grads(qs, t)
        resumed.step()
        if t == 5:
            continue
        grads(ps, t)
        opt.step()
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
        for key, v in opt.state[p].items():
            if torch.is_tensor(v):
                assert torch.equal(resumed.state[q][key], v), key


def test_kept_means_overflow_only_where_one_gradients_gop_does():
    """float32, gradient entries 1e18: one gradient's one-sided sums fit the dtype, four of
    them summed do not. Kept as sums, every step after the fourth of a period of 10 was
    skipped (35 of 40, stuck at step 5, an outside tester's probe) while the paper's scheme
    (``accumulate_gop=False``) skipped none; the running means skip none either."""

    skipped = {}
    for acc in (True, False):
        p = torch.nn.Parameter(torch.zeros(64, 32))
        opt = SpectralKron([p], lr=1e-2, update_every=10, accumulate_gop=acc,
                           eigenvalue_correction=False)  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(40):
                p.grad = torch.randn(64, 32, generator=gen) * 1e18
                opt.step()
        assert bool(torch.isfinite(p).all())
        skipped[acc] = (opt.skipped_steps, int(opt.state[p]["step"]))
    assert skipped[True] == skipped[False] == (0, 40)


def test_buckets_of_one_step_share_one_count_of_each_value():
    """The kept counts of a step's buckets (separate here: ``batched=False``) are one
    float64 CPU tensor of each value, as the step counts are (one to make, read once by
    the next step); each still holds its own number of gradients, and a curvature step
    restarts them at 0."""
    a, b, c = (nn.Parameter(torch.zeros(*s, dtype=DT)) for s in ((5, 3), (4, 6), (5, 3)))
    opt = SpectralKron([a, b], lr=1e-2, update_every=4, batched=False)
    opt.add_param_group({"params": [c], "update_every": 2})
    seen = []
    for t in range(6):
        for i, p in enumerate((a, b, c)):
            p.grad = torch.randn(*p.shape, generator=gen(120 + 3 * t + i), dtype=DT)
        opt.step()
        counts = [opt.state[p]["gop_count"] for p in (a, b, c)]
        assert counts[0] is counts[1], t
        assert all(n.dtype == torch.float64 and n.device.type == "cpu" for n in counts)
        seen.append([float(n) for n in counts])
    # update_every 4: steps 1 and 5 are curvature steps; 2: steps 1, 3 and 5
    assert seen == [[0, 0, 0], [1, 1, 1], [2, 2, 0], [3, 3, 1], [0, 0, 0], [1, 1, 1]]
    assert opt.state[c]["gop_count"] is opt.state[a]["gop_count"]  # both 1 at step 6
