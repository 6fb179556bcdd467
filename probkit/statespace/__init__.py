r"""Matern Gaussian processes as linear stochastic differential equations (state-space GPs).

A stationary GP :math:`f(t)` with a Matern-:math:`\nu` kernel, :math:`\nu = p + 1/2`, is the
first coordinate of a :math:`(p+1)`-dimensional linear SDE (Hartikainen & Särkkä, "Kalman
filtering and smoothing solutions to temporal Gaussian process regression models", MLSP 2010;
Särkkä & Solin, *Applied Stochastic Differential Equations*, 2019, ch. 12)

.. math::

    \mathrm d x = F x\,\mathrm dt + L\,\mathrm d\beta, \quad
    \mathbb E[\mathrm d\beta\,\mathrm d\beta^\top] = Q_c\,\mathrm dt, \quad
    f(t) = H x(t), \quad
    F P_\infty + P_\infty F^\top + L Q_c L^\top = 0,

with :math:`\lambda = \sqrt{2\nu}/\ell`, output variance :math:`\sigma^2`,
:math:`L = e_{p+1}`, :math:`H = e_1^\top`:

* :math:`\nu = 1/2`: :math:`F = [-\lambda]`, :math:`Q_c = 2\sigma^2\lambda`,
  :math:`P_\infty = [\sigma^2]`;
* :math:`\nu = 3/2`: :math:`F = [[0, 1], [-\lambda^2, -2\lambda]]`,
  :math:`Q_c = 4\sigma^2\lambda^3`, :math:`P_\infty = \mathrm{diag}(\sigma^2, \lambda^2\sigma^2)`;
* :math:`\nu = 5/2`: :math:`F = [[0,1,0],[0,0,1],[-\lambda^3,-3\lambda^2,-3\lambda]]`,
  :math:`Q_c = \tfrac{16}{3}\sigma^2\lambda^5`,
  :math:`P_\infty = [[\sigma^2,0,-\kappa],[0,\kappa,0],[-\kappa,0,\sigma^2\lambda^4]]`,
  :math:`\kappa = \sigma^2\lambda^2/3`.

Between sorted inputs the exact discretisation is

.. math::

    A_k = e^{F \Delta_k}, \qquad Q_k = P_\infty - A_k P_\infty A_k^\top, \qquad
    \Delta_k = t_k - t_{k-1},

and since :math:`F + \lambda I` is nilpotent for these companion matrices,
:math:`e^{F\Delta} = e^{-\lambda\Delta}\sum_{j\le p} (F+\lambda I)^j\Delta^j/j!` in closed form.
For small :math:`\lambda\Delta` the difference :math:`P_\infty - A P_\infty A^\top` cancels (in
float32 its error, about :math:`10^{-7} P_\infty`, exceeds :math:`Q` itself for small steps
and makes :math:`Q` indefinite), so :meth:`MaternSDE.process_cov` evaluates the integral
:math:`Q = \int_0^\Delta e^{Fs} L Q_c L^\top e^{F^\top s}\,ds` term by term: with
:math:`x = \lambda\Delta`, :math:`D = \mathrm{diag}(1, \lambda, \dots, \lambda^p)` and
:math:`c_j = (F_1 + I)^j e_{p+1}/j!` of the unit-rate companion matrix :math:`F_1`,

.. math::

    Q = \sigma^2 D \Big(q_1 \sum_{j,k} c_j c_k^\top G_{j+k}(x)\Big) D, \qquad
    G_n(x) = \int_0^x u^n e^{-2u}\,du,

(:math:`q_1 = 2, 4, 16/3`), where :math:`G_n` comes from its Taylor series
:math:`x^{n+1}\sum_m (-2x)^m/(m!\,(n+m+1))` and the downward recurrence
:math:`G_{n-1} = (2G_n + x^n e^{-2x})/n` for :math:`x < 1`, and from
:math:`G_0 = -\tfrac12\operatorname{expm1}(-2x)` and the upward recurrence
:math:`G_n = (nG_{n-1} - x^n e^{-2x})/2` for :math:`x \ge 1`. Every entry of :math:`Q` so
computed is within :math:`2\cdot10^{-6}` (float32) or :math:`10^{-14}` (float64) of its scale
:math:`\sqrt{Q_{ii}Q_{jj}}` (measured for :math:`10^{-8} \le \lambda\Delta \le 300`; for
smaller steps the smallest entries of :math:`Q` underflow to 0 in float32), and its gradient
uses :math:`G_n' = x^n e^{-2x}`.

Sums of kernels are block-diagonal SDEs, products are Kronecker-sum SDEs
(:math:`F = F_1 \otimes I + I \otimes F_2`, :math:`A = A_1 \otimes A_2`,
:math:`P_\infty = P_{\infty,1} \otimes P_{\infty,2}`).

Oscillatory kernels, for seasonal series: :class:`CosineSDE` (an undamped rotation),
:class:`PeriodicSDE` (the exp-sine-squared kernel as Solin & Särkkä's truncated series of
:math:`J` rotations, with its truncation error bounded), :class:`SHOSDE` and
:class:`CeleriteSDE` (celerite's damped oscillator terms, Foreman-Mackey et al. 2017). The
rotations have :math:`Q = 0` exactly, so a quasi-periodic ``PeriodicSDE * MaternSDE`` keeps
the Matern factor's cancellation-free :math:`Q`; SHO and celerite terms compute
:math:`Q = \int_0^\Delta e^{Fs}LQ_cL^\top e^{F^\top s}ds` by halving the step, a Taylor
series and doubling back (sums of PSD matrices only). :func:`as_sde` maps the dense kernels of
:mod:`probkit.kernels` (and their ``+`` and ``*``) to these SDEs.

:func:`to_lgssm` turns (kernel, sorted times, noise variance) into the :class:`LGSSM` run by
:func:`probkit.inference.kalman.kalman_filter`: initial state ``(0, Pinf)`` and
``dt_0 = 0`` (so :math:`A_0 = I`, :math:`Q_0 = 0`, predict-then-update at every step).

This package is on floor 1: it imports nothing of probkit except ``_checks`` and ``kernels``.

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.statespace import matern_sde, to_lgssm
>>> sde = matern_sde(1.5, lengthscale=0.5, variance=2.0)
>>> params = to_lgssm(sde, jnp.array([0.0, 0.1, 0.7]), noise=0.01)
>>> params.transition_matrix.shape
(3, 2, 2)
>>> sum_sde = sde + matern_sde(0.5, 2.0, 1.0)   # block-diagonal sum, state dimension 3
>>> sum_sde.state_dim
3
"""

from probkit.statespace.base import SDE, ProductSDE, SumSDE
from probkit.statespace.convert import as_sde
from probkit.statespace.lgssm import LGSSM, check_times, discretise, sample_lgssm, to_lgssm
from probkit.statespace.matern import MaternSDE, matern_sde
from probkit.statespace.oscillatory import SHOSDE, CeleriteSDE, CosineSDE
from probkit.statespace.periodic import TRACED_PERIODIC_ORDER, PeriodicSDE, periodic_order

__all__ = [
    "LGSSM",
    "SDE",
    "MaternSDE",
    "SumSDE",
    "ProductSDE",
    "CosineSDE",
    "PeriodicSDE",
    "SHOSDE",
    "CeleriteSDE",
    "TRACED_PERIODIC_ORDER",
    "periodic_order",
    "matern_sde",
    "as_sde",
    "discretise",
    "to_lgssm",
    "sample_lgssm",
    "check_times",
]
