"""The packed bucket state that ``SpectralKron`` keeps between steps (``optim/pack_cache.py``).

Reusing a packed tensor must change no bit: the run with the cache equals the run that
packs every entry afresh (the cache emptied before each step), for padded, stacked and
diagonal buckets, on steps with and without a curvature update; an entry that the caller
writes into or replaces between steps is packed afresh; and the cache does save the packing
(a stacked bucket packs only the gradient on a step without a curvature update).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron
from manifold_spectral.optim.preconditioners import KroneckerPreconditioner

torch.set_num_threads(1)


def model() -> nn.Module:
    """Conv kernels and a rank-deficient linear layer (a padded bucket), two equal-shaped
    layers and the biases (the diagonal bucket)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.Conv2d(4, 3, 3),
        nn.Flatten(),
        nn.Linear(48, 5),
        nn.Tanh(),
        nn.Linear(5, 5),
        nn.Tanh(),
        nn.Linear(5, 5),
    ).double()


def groups(net: nn.Module) -> list[dict]:
    """The two 5 x 5 weights in a group of their own (a stacked bucket), the rest in another."""
    stacked = [net[6].weight, net[8].weight]
    rest = [p for p in net.parameters() if all(p is not q for q in stacked)]
    return [{"params": stacked}, {"params": rest}]


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 5, (4,), generator=g
    )


def train(kw: dict, fresh: bool, steps: int = 9, edit=None) -> tuple[nn.Module, SpectralKron]:
    """``steps`` steps; ``fresh``: empty the cache before each; ``edit(opt)`` after step 4."""
    net, (X, Y) = model(), data()
    opt = SpectralKron(groups(net), lr=0.01, **kw)
    for t in range(steps):
        if fresh:
            opt._packed.clear()
        if edit is not None and t == 4:
            edit(opt)
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), Y).backward()
        opt.step()
    return net, opt


def assert_same_bits(a: tuple[nn.Module, SpectralKron], b: tuple[nn.Module, SpectralKron]):
    (na, oa), (nb, ob) = a, b
    for p, q in zip(na.parameters(), nb.parameters(), strict=True):
        assert torch.equal(p, q)
        sa, sb = oa.state[p], ob.state[q]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


KWS = [
    {},
    {"update_every": 3},
    {"momentum": 0.9, "nesterov": True, "update_every": 2},
    {"eigenvalue_correction": False, "root": 1.0},
    {"state_dtype": torch.float32, "update_every": 2},
    {"state_dtype": torch.bfloat16},
]
IDS = ["defaults", "every-3", "nesterov", "paper", "float32-state", "bfloat16-state"]


@pytest.mark.parametrize("kw", KWS, ids=IDS)
def test_cache_changes_no_bit(kw):
    cached = train(kw, fresh=False)
    opt = cached[1]
    buckets = [[tuple(p.shape) for p in b] for g in opt.param_groups for b in opt._buckets(g)]
    assert buckets == [
        [(5, 5), (5, 5)],  # stacked
        [(4,), (3,), (5,), (5,), (5,)],  # diagonal scheme, concatenated
        [(4, 1, 3, 3), (3, 4, 3, 3), (5, 48)],  # padded
    ]
    assert len(opt._packed) == 3
    assert_same_bits(cached, train(kw, fresh=True))


def edit_in_place(opt: SpectralKron) -> None:
    for st in opt.state.values():
        st["momentum_buffer"].mul_(-0.5)
        if "eig_v" in st:
            st["eig_v"].mul_(3.0)


def edit_replace(opt: SpectralKron) -> None:
    for st in opt.state.values():
        st["momentum_buffer"] = st["momentum_buffer"] * -0.5


def edit_load(opt: SpectralKron) -> None:
    sd = copy.deepcopy(opt.state_dict())
    for st in sd["state"].values():
        st["momentum_buffer"].mul_(-0.5)
    opt.load_state_dict(sd)


def edit_swap(opt: SpectralKron) -> None:
    """``.data = other``: a new storage under the same tensor, no version counter bumped."""
    for st in opt.state.values():
        st["momentum_buffer"].data = st["momentum_buffer"] * -0.5
        if "pc_B_R" in st:  # its columns permuted: another orthonormal basis
            st["pc_B_R"].data = st["pc_B_R"].flip(-1)


@pytest.mark.parametrize("edit", [edit_in_place, edit_replace, edit_load, edit_swap])
@pytest.mark.parametrize("kw", KWS[:3], ids=IDS[:3])
def test_edited_state_is_packed_afresh(kw, edit):
    """The caller writes into, replaces (also under the same tensor: ``.data =``) or loads
    state entries between steps: the cached run
    uses the edited values, as the run without a cache does (and differs from no edit)."""
    cached = train(kw, fresh=False, edit=edit)
    assert_same_bits(cached, train(kw, fresh=True, edit=edit))
    unedited = train(kw, fresh=False)
    assert not all(
        torch.equal(p, q)
        for p, q in zip(cached[0].parameters(), unedited[0].parameters(), strict=True)
    )


@pytest.fixture
def packs(monkeypatch) -> list[tuple[str, str]]:
    """The ``KroneckerPreconditioner.pack`` calls, as they happen: (bucket kind, entry)."""
    calls: list[tuple[str, str]] = []
    pack = KroneckerPreconditioner.pack

    def counted(self, tensors, key=None):
        calls.append(("padded" if self.padding is not None else "stacked", key or "matrix"))
        return pack(self, tensors, key)

    monkeypatch.setattr(KroneckerPreconditioner, "pack", counted)
    return calls


#: Every entry a Kronecker bucket packs on a step with a cold cache: the gradient, the
#: momentum and the eigenvalue-correction second moment ("matrix"), and the factors.
#: (the sums of ``accumulate_gop`` packed as "W_L", "W_R")
ALL_ENTRIES = ["B_L", "B_R", "W_L", "W_R", "alpha", "d_L", "d_R", "matrix", "matrix", "matrix"]


def test_cache_saves_the_packing(packs):
    """On a step without a curvature update a bucket packs only its gradient. A stacked
    bucket's state entries are views of the kept tensors. A padded bucket's smaller members'
    factors, momentum and second moment are views of one copy of the true blocks, which a
    write that bumps no version counter (``.data``, NumPy, a collective) could change
    unseen (tests/test_optim_outsiders2.py): that copy is written into the kept padded
    tensor (``refill``), not packed. Without a cache every entry is packed."""
    counts = {}
    for fresh in (False, True):
        net, (X, Y) = model(), data()
        opt = SpectralKron(groups(net), lr=0.01, update_every=3)
        for _ in range(5):
            if fresh:
                opt._packed.clear()
            packs.clear()
            opt.zero_grad()
            nn.functional.cross_entropy(net(X), Y).backward()
            opt.step()
        counts[fresh] = {
            kind: sorted(key for k, key in packs if k == kind) for kind in ("stacked", "padded")
        }  # step 5: no curvature update (updates at 1, 4, 7)
    assert counts[False] == {
        "stacked": ["matrix"],
        "padded": ["matrix"],
    }
    assert counts[True] == {"stacked": ALL_ENTRIES, "padded": ALL_ENTRIES}


def test_a_reload_is_packed_until_the_next_curvature_update(packs):
    """After ``load_state_dict`` the loaded entries are not views of any packed tensor: the
    stacked bucket packs them all at the first step, which unpacks its momentum and second
    moment as views; its factors at every step until its next curvature update unpacks
    them too (step 11 with ``update_every=10``); then only its gradient again."""
    net, (X, Y) = model(), data()
    opt = SpectralKron(groups(net), lr=0.01, update_every=10)
    per_step = []
    for t in range(13):
        if t == 2:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        packs.clear()
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), Y).backward()
        opt.step()
        per_step.append(sorted(key for kind, key in packs if kind == "stacked"))
    assert per_step[1] == ["matrix"], per_step  # cached before the reload
    assert per_step[2] == ALL_ENTRIES, per_step
    factors = ["B_L", "B_R", "alpha", "d_L", "d_R", "matrix"]
    assert all(s == factors for s in per_step[3:10]), per_step
    assert per_step[11:] == [["matrix"], ["matrix"]], per_step


def test_skipped_step_leaves_cached_state_untouched():
    """A step skipped after the cache is filled (squares of a 1e30 gradient overflow the
    float32 second moment) writes into no state entry: the packed tensors the cache hands
    back are the state's own storage, so an update computed in place would show here."""
    net, opt = train({"state_dtype": torch.float32}, fresh=False, steps=5)
    before = {
        p: {k: torch.as_tensor(v).clone() for k, v in st.items()} for p, st in opt.state.items()
    }
    params = [p.detach().clone() for p in net.parameters()]
    X, Y = data()
    opt.zero_grad()
    nn.functional.cross_entropy(net(X), Y).backward()
    for p in net.parameters():
        p.grad.mul_(1e30)
    opt.step()
    assert opt.skipped_steps == 1
    for p, q in zip(net.parameters(), params, strict=True):
        assert torch.equal(p, q)
    for p, st in opt.state.items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), before[p][k]), k


#: Every update path of a padded bucket: the Neumann and the exact Cayley map, bf16 and
#: float32 state, without eigenvalue correction, with Nesterov momentum.
PATHS = [
    {"momentum": 0.9},
    {"cayley": "exact"},
    {"state_dtype": torch.bfloat16, "momentum": 0.9, "update_every": 2},
    {"state_dtype": torch.float32, "cayley": "exact"},
    {"eigenvalue_correction": False, "root": 1.0, "momentum": 0.9, "nesterov": True},
]


@pytest.mark.parametrize("kw", PATHS, ids=["neumann", "exact", "bf16", "float32", "paper"])
def test_padding_of_kept_tensors_stays_the_embeddings(kw):
    """A padded bucket's kept factors, eigenvalues and matrices are reused with only their
    true blocks written (``refill``): their padding must stay exactly the embedding's
    (identity, ones, zeros) through every update. Checked bitwise after each of 40 steps
    against the layout built here from the members' sizes; and the run equals the one that
    packs afresh at every step."""
    sizes = [(4, 9), (3, 36), (5, 48)]  # the padded bucket's (a_i, b_i); a, b = 5, 48
    net, (X, Y) = model(), data()
    opt = SpectralKron(groups(net), lr=0.01, **kw)
    padded = tuple(id(p) for p in (net[0].weight, net[2].weight, net[4].weight))
    kept = set()
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), Y).backward()
        opt.step()
        for name, (t, _, _) in opt._packed[padded].items():
            kept.add(name)
            for i, (ai, bi) in enumerate(sizes):
                if name in ("pc_B_L", "pc_B_R"):
                    n = ai if name == "pc_B_L" else bi
                    want = torch.eye(t.shape[-1], dtype=t.dtype)
                    block = t[i].clone()
                    block[:n, :n] = want[:n, :n]
                elif name in ("pc_d_L", "pc_d_R"):
                    n = ai if name == "pc_d_L" else bi
                    want, block = torch.ones_like(t[i]), t[i].clone()
                    block[:n] = 1
                elif name == "pc_alpha":
                    continue
                elif name in ("gop_W_L", "gop_W_R"):  # zero outside the true (n, n) block
                    n = ai if name == "gop_W_L" else bi
                    want, block = torch.zeros_like(t[i]), t[i].clone()
                    block[:n, :n] = 0
                else:
                    want, block = torch.zeros_like(t[i]), t[i].clone()
                    block[:ai, :bi] = 0
                assert torch.equal(block, want), (name, i)
    refilled = {"pc_B_L", "pc_B_R", "momentum_buffer"}
    if kw.get("eigenvalue_correction", True):
        refilled.add("eig_v")
    assert refilled <= kept
    assert_same_bits((net, opt), train(kw, fresh=True, steps=40))
