"""``optim.pending.PendingChecks``: the checks of a step's buckets read in one synchronisation
must decide as if each were read at once (the first failure in bucket order wins, a later
bucket's error is raised only when every earlier check passed), with the values read exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron
from manifold_spectral.optim.pending import PendingChecks

torch.set_num_threads(1)


def test_flush_reads_values_exactly_and_decides_in_order():
    """Values of mixed dtypes arrive as the floats ``float(t)`` gives; verdicts run in the order
    added, and the first failure is the one raised (a later one never runs)."""
    seen: list[list[float]] = []
    checks = PendingChecks()
    values = [
        torch.tensor(1.0 + 2**-7, dtype=torch.bfloat16),
        torch.tensor(3.0e38),
        torch.tensor(1e300, dtype=torch.float64),
        torch.tensor(float("nan"), dtype=torch.float16),
    ]

    def fail(tag: str):
        def verdict(v: list[float]) -> None:
            seen.append(v)
            raise ValueError(tag)

        return verdict

    checks.add(values[:2], seen.append)
    checks.add(values[2:3], fail("second"))
    checks.add(values[3:], fail("third"))
    with pytest.raises(ValueError, match="second"):
        checks.flush()
    assert seen[0] == [float(values[0]), float(values[1])]
    assert seen[1] == [1e300]
    assert len(seen) == 2  # the third verdict never ran
    checks.flush()  # cleared: nothing left to decide
    assert len(seen) == 2


def test_an_earlier_buckets_failed_check_wins_over_a_later_buckets_error():
    """Group 0's update cannot be written (``lr`` beyond float32: a skipped step with a
    warning naming its shape); group 1's parameter changed shape under its state (a
    ``ValueError``). Checked one by one, group 0's bucket fails first: the step is skipped,
    nothing written, no ``ValueError``, however the checks are read."""
    torch.manual_seed(0)
    big, small = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5, 2))
    opt = SpectralKron([{"params": [big], "lr": 1e39}, {"params": [small]}])
    small.grad = torch.randn(5, 2)
    opt.step()  # small gets its state
    small.grad = None
    small.data = torch.randn(2, 5)
    big.grad, small.grad = torch.full((3, 4), 1e3), torch.randn(2, 5)
    before = [big.detach().clone(), small.detach().clone()]
    with pytest.warns(RuntimeWarning, match=r"shape \(3, 4\)"):
        opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(big, before[0]) and torch.equal(small, before[1])
    # and the later error itself still surfaces once the earlier bucket is fine
    opt.param_groups[0]["lr"] = 1e-3
    with pytest.raises(ValueError, match="shape changed"):
        opt.step()
