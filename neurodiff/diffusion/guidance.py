"""Guidance: functions that replace the plain denoiser call inside a sampler (``guidance=`` argument).

Each factory returns ``guide(denoiser, x_t, t, cond) -> Prediction``.
"""

from __future__ import annotations

from typing import Callable

import torch

from .denoiser import Cond, Denoiser, Prediction
from .samplers import Guide


def classifier_free(scale: float) -> Guide:
    """Classifier-free guidance (Ho & Salimans 2022): ``eps = eps_u + scale (eps_c - eps_u)``.

    ``scale = 0`` is the unconditional model, ``1`` the conditional one, ``> 1`` guided. The conditional and
    unconditional evaluations run as one batch.
    """

    def guide(denoiser: Denoiser, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None) -> Prediction:
        if cond is None or scale == 1:
            return denoiser(x_t, t, cond)
        null = denoiser.null_cond(cond)
        if scale == 0:
            return denoiser(x_t, t, null)
        both = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), Cond.concat(cond, null))
        eps_c, eps_u = both.eps.chunk(2)
        eps = eps_u + scale * (eps_c - eps_u)
        return Prediction(eps, denoiser.schedule.x0_from_eps(x_t, t, eps))

    return guide


def gradient(
    critic: Callable[[torch.Tensor], torch.Tensor],
    scale: float,
    *,
    through_network: bool = True,
    inner: Guide | None = None,
) -> Guide:
    """Guidance by the gradient of a differentiable critic evaluated on x0-hat.

    Parameters
    ----------
    critic
        ``critic(x0_hat) -> (B,)`` log-score to increase (a classifier's log-probability of the wanted class, a
        negative penalty, a data-fit term ...).
    scale
        Guidance strength; 0 leaves the sampler unchanged.
    through_network
        True: "universal guidance" (Bansal et al. 2023) — the gradient with respect to ``x_t`` is taken through
        the network and shifts eps-hat by ``-scale sqrt(1 - abar_t) grad``, as in classifier guidance.
        False: the cheaper "late-bound critic" — a gradient step of size ``scale`` on x0-hat itself.
    inner
        Guidance to wrap (e.g. :func:`classifier_free`); default the plain denoiser call.
    """

    def guide(denoiser: Denoiser, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None) -> Prediction:
        call = inner or (lambda d, x, tt, c: d(x, tt, c))
        sched = denoiser.schedule
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(through_network)
            pred = call(denoiser, x_in, t, cond)
            wrt = x_in if through_network else pred.x0.detach().requires_grad_(True)
            grad = torch.autograd.grad(critic(pred.x0 if through_network else wrt).sum(), wrt)[0]
        if through_network:
            eps = pred.eps.detach() - scale * (1 - sched.abar(t, x_t)).sqrt() * grad
            return Prediction(eps, sched.x0_from_eps(x_t, t, eps))
        x0 = pred.x0.detach() + scale * grad
        return Prediction(sched.eps_from_x0(x_t, t, x0), x0)

    return guide
