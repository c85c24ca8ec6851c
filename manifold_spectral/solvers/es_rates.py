"""Step-size control of the evolution strategies (``NESBase``): the fixed xNES rates and the
DX-NES movement-dependent rates and distance scale (``DXSchedule``).

The driver keeps an evolution path of the rank-weighted whitened mean shift; its length says
whether the distribution is *moving*, *stagnating* or *converging*, and each phase has its
own scale rate ``eta_sigma`` and shape rate ``eta_B``. With ``adaptive_rates=False`` the
rates are the xNES values (``xnes_rate``) or the numbers the caller fixed.
"""

from __future__ import annotations

import dataclasses
import math

from .es_defaults import default_popsize
from .es_utilities import utility_weights

__all__ = [
    "xnes_rate",
    "DXSchedule",
    "rank_one_rates",
    "csa_rates",
    "RANK_MOVING_SHAPE",
    "rank_moving_shape",
]


def xnes_rate(n: int) -> float:
    """xNES default ``eta_sigma = eta_B = 0.6 (3 + ln n) / (n sqrt(n))`` (Glasmachers 2010)."""
    return 0.6 * (3.0 + math.log(n)) / (n * math.sqrt(n))


def _h_inv(n: int) -> float:
    """Root ``a > 0`` of ``(1 + a^2) exp(a^2/2) / 0.24 - 10 - n`` (DX-NES-IC distance scale)."""
    a = 1.0
    for _ in range(100):
        e = math.exp(a * a / 2)
        fa = (1 + a * a) * e / 0.24 - 10 - n
        a_new = a - fa / (a * e * (3 + a * a) / 0.24)
        if abs(a_new - a) < 1e-12:
            return a_new
        a = a_new
    return a


@dataclasses.dataclass(frozen=True)
class DXSchedule:
    """DX-NES movement detection and rates (Fukushima et al. 2011; the DX-NES-IC constants of
    Nomura & Ono 2021, without its eigendecomposition-based "emphasis of expansion").

    The evolution path ``p <- (1 - c) p + sqrt(c (2 - c) mu_eff) sum_i u_i y_i`` (rank
    utilities, whitened samples ``y``) is compared with ``chi = E||N(0, I)||``: *moving*
    when ``||p|| >= m chi``, *stagnating* when ``||p|| >= 0.1 chi``, else *converging*.

    The moving threshold ``m`` (``moving``) is DX-NES's ``1`` up to the default population
    ``4 + floor(3 ln n)`` (rounded up to even) and ``1.5`` above it. Under random selection
    (a rugged landscape seen through a wide distribution, where the large populations of
    IPOP restarts spend most of their generations) ``||p||`` fluctuates around
    ``chi sqrt(1 - mu_eff / lam)`` and crosses ``chi`` in about one generation in five; each
    such false *moving* generation applies ``eta_sigma = 1`` to distance-weighted utilities,
    which favour the far samples, so the scale random-walks upwards instead of staying put
    (n = 10, pure-noise values: log-scale drift ``+3.5`` per 100 generations at lam = 80,
    ``+4.8`` at lam = 320; with ``m = 1.5`` it is ``0.0``), and a restart with a large
    population stagnates at a wide scale for hundreds of generations. ``1.5 chi`` is about
    never crossed under random selection and is still far below the path of a genuinely
    moving distribution (``||p|| ~ sqrt(mu_eff / c)`` on a linear slope). At the default
    population ``m = 1`` is kept: there detecting a genuine movement a few generations
    sooner pays more than the drift costs (the no-restart BBOB results).

    * ``eta_sigma``: 1 (moving), ``tanh((0.024 lam + 0.7 n + 20)/(n + 12))`` (stagnating),
      ``2 tanh((0.025 lam + 0.75 n + 10)/(n + 4))`` (converging);
    * ``eta_B``: ``(1.5, s, 0.1) x 120 n / (47 n^2 + 6400) x tanh(0.02 lam)`` with the
      stagnating factor ``s = 1.4`` (DX-NES-IC; the baselines) or, for spectral NES,
      ``s = 4.2`` (``NES.STAGNATING_SHAPE``: the shape is learned faster on ill-conditioned
      and ridge-like problems, where the path stagnates for most of the run; see
      docs/nes.md); the moving factor ``1.5`` is ``RANK_MOVING_SHAPE = 3`` with
      ``moving_shape="rank"`` (``NESBase``);
    * distance weights (moving only): ``w_hat_i exp(alpha ||z_i||)``, normalised, ``- 1/lam``,
      ``alpha = h^-1(n) min(1, sqrt(lam / n))``.
    """

    n: int
    popsize: int
    mu_eff: float
    c_sigma: float
    chi: float
    alpha: float
    eta_sigma: tuple[float, float, float]
    eta_B: tuple[float, float, float]
    moving: float = 1.0

    STATES = ("moving", "stagnating", "converging")

    @classmethod
    def make(
        cls, n: int, popsize: int, stagnating_shape: float = 1.4, moving_shape: float = 1.5
    ) -> DXSchedule:
        w_hat, _ = utility_weights(popsize)
        p = w_hat / w_hat.sum()
        mu_eff = 1.0 / float((p * p).sum())
        c_sigma = (mu_eff + 2.0) / (n + mu_eff + 5.0) / (2.0 * math.log(n + 1.0))
        chi = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))
        alpha = _h_inv(n) * min(1.0, math.sqrt(popsize / n))
        lam = popsize
        eta_sigma = (
            1.0,
            math.tanh((0.024 * lam + 0.7 * n + 20.0) / (n + 12.0)),
            2.0 * math.tanh((0.025 * lam + 0.75 * n + 10.0) / (n + 4.0)),
        )
        base = 120.0 * n / (47.0 * n * n + 6400.0) * math.tanh(0.02 * lam)
        eta_B = (moving_shape * base, stagnating_shape * base, 0.1 * base)
        moving = 1.0 if popsize <= default_popsize(n, mirrored=True) else 1.5
        return cls(n, popsize, mu_eff, c_sigma, chi, alpha, eta_sigma, eta_B, moving)

    def state(self, path_norm: float) -> int:
        """0 moving, 1 stagnating, 2 converging."""
        if path_norm >= self.moving * self.chi:
            return 0
        return 1 if path_norm >= 0.1 * self.chi else 2


def rank_one_rates(n: int, mu_eff: float) -> tuple[float, float]:
    """CMA-ES's constants of the rank-one evolution-path term: the cumulation rate
    ``c_c = (4 + mu_eff/n) / (n + 4 + 2 mu_eff/n)`` of the path ``p_c`` of the mean shift and
    the rank-one rate ``c1 = 2 / ((n + 1.3)^2 + mu_eff)``."""
    c_c = (4.0 + mu_eff / n) / (n + 4.0 + 2.0 * mu_eff / n)
    c1 = 2.0 / ((n + 1.3) ** 2 + mu_eff)
    return c_c, c1


#: Moving-phase factor of the DX-NES shape rate with ``moving_shape="rank"`` up to n = 10
#: (``rank_moving_shape``), twice DX-NES's 1.5: the shape's traceless part then comes from
#: the rank utilities, whose estimate is less noisy than that of the distance weights (a few
#: far samples carry most of their weight), so it takes the higher rate. With the distance
#: weights the factor alone slows BBOB f6, and the rank utilities alone at 1.5 slow f14.
RANK_MOVING_SHAPE = 3.0


def rank_moving_shape(n: int) -> float:
    """Moving-phase factor of the shape rate with ``moving_shape="rank"``:
    ``max(1.5, RANK_MOVING_SHAPE min(1, 10 / n))``: 3 up to n = 10, 1.5 from n = 20.

    The DX-NES base rate falls only like ``1/n`` (CMA-ES's rank-mu rate like
    ``mu_eff / n^2``), so the factor that suits n = 10 overshoots in larger dimensions (a
    rotated ellipsoid at n = 60 needs far more evaluations); scaled down like ``10 / n``
    without a floor, or like CMA-ES's ``c_mu``, it learns the shape too slowly there (the
    Rosenbrock valley most). The floor is DX-NES's own moving factor."""
    return max(1.5, RANK_MOVING_SHAPE * min(1.0, 10.0 / n))


#: Factor on CMA-ES's step-size damping ``d_sigma`` in ``csa_rates`` (``step_size="csa"``):
#: slower than CMA-ES's own value, which shrinks the scale too fast on a sharp ridge (BBOB f13)
#: for the shape to follow; faster ones slow the smooth functions (f1, f10, f11).
CSA_DAMPING_FACTOR = 1.0 / 0.85


def csa_rates(n: int, mu_eff: float, popsize: int) -> tuple[float, float, float]:
    """Cumulative step-size adaptation for ``step_size="csa"``: CMA-ES's cumulation rate
    ``c_s = (mu_eff + 2) / (n + mu_eff + 5)``, its damping
    ``d_s = (1 + 2 max(0, sqrt((mu_eff - 1)/(n + 1)) - 1) + c_s) * CSA_DAMPING_FACTOR`` and
    the expected path length under random selection, ``chi sqrt(1 - mu_eff / lam)`` (the
    zero-sum rank utilities: see ``DXSchedule``). Returns ``(c_s, d_s, expected)``."""
    c_s = (mu_eff + 2.0) / (n + mu_eff + 5.0)
    d_s = 1.0 + 2.0 * max(0.0, math.sqrt((mu_eff - 1.0) / (n + 1.0)) - 1.0) + c_s
    chi = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))
    return c_s, d_s * CSA_DAMPING_FACTOR, chi * math.sqrt(max(0.0, 1.0 - mu_eff / popsize))
