"""Samplers: small pure functions sharing one signature.

``sample_x(denoiser, x_T, steps, *, cond, guidance, consistency, generator, callback) -> x0``

- ``x_T`` ``(B, C, *spatial)`` is the starting noise (``torch.randn``); posterior samples are drawn as a batch.
- ``guidance(denoiser, x_t, t, cond) -> Prediction`` replaces the plain denoiser call (see :mod:`.guidance`).
- ``consistency(x0_hat, t) -> x0_hat`` is applied to the x0 estimate at every step (e.g. k-space data
  consistency); eps-hat is recomputed from it, so the trajectory stays on the corrected estimate.
- ``callback(i, t, x_t, prediction)`` is called after each network evaluation (progress bars, snapshots).
- ``generator`` drives every random draw; nothing touches the global RNG.

Timesteps run from ``T-1`` down to ``0`` in ``steps`` evenly spaced values; the final update goes to clean data.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .denoiser import Cond, Denoiser, Prediction

Guide = Callable[[Denoiser, torch.Tensor, torch.Tensor, Optional[Cond]], Prediction]
Consistency = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, Prediction], None]


def predict(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: Cond | None = None,
    guidance: Guide | None = None,
    consistency: Consistency | None = None,
) -> Prediction:
    """One (guided, data-consistent) network evaluation at ``x_t`` ``(B, C, ...)`` and timesteps ``t`` ``(B,)``."""
    pred = guidance(denoiser, x_t, t, cond) if guidance is not None else denoiser(x_t, t, cond)
    if consistency is None:
        return pred
    x0 = consistency(pred.x0, t)
    return Prediction(denoiser.schedule.eps_from_x0(x_t, t, x0), x0)


def timestep_pairs(denoiser: Denoiser, steps: int, start: int | None = None) -> list[tuple[int, int]]:
    """``(t, next t)`` pairs of a ``steps``-step run from ``start`` (default ``T-1``); the last next is -1 (clean
    data)."""
    ts = denoiser.schedule.timesteps(steps, start).tolist()
    return list(zip(ts, ts[1:] + [-1]))


def abar_at(denoiser: Denoiser, t: int) -> float:
    """``abar_t`` as a float; 1 for ``t = -1``."""
    return 1.0 if t < 0 else float(denoiser.schedule.alphas_cumprod[t])


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    steps: int = 50,
    *,
    cond: Cond | None = None,
    eta: float = 0.0,
    guidance: Guide | None = None,
    consistency: Consistency | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    start: int | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021): ``eta = 0`` deterministic, ``eta = 1`` ancestral (DDPM-like) noise.

    ``start`` begins the run at that timestep with ``x_T`` a noised image ``x_start`` (partial denoising, as in
    SDEdit and reconstruction-based anomaly detection) instead of pure noise at ``T-1``.

    Returns the sample ``(B, C, *spatial)`` in the model's normalised units.
    """
    x = x_T
    for i, (t, s) in enumerate(timestep_pairs(denoiser, steps, start)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        pred = predict(denoiser, x, tt, cond, guidance, consistency)
        a_t, a_s = abar_at(denoiser, t), abar_at(denoiser, s)
        sig = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * pred.x0 + math.sqrt(max(1 - a_s - sig**2, 0.0)) * pred.eps
        if sig > 0:
            x = x + sig * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        if callback is not None:
            callback(i, t, x, pred)
    return x


def sample_ddpm(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    steps: int | None = None,
    *,
    cond: Cond | None = None,
    guidance: Guide | None = None,
    consistency: Consistency | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) with the posterior variance; ``steps`` defaults to all ``T``.
    With fewer steps it is the ancestral sampler of the strided chain (DDIM with ``eta = 1``)."""
    return sample_ddim(
        denoiser, x_T, steps or denoiser.schedule.steps, cond=cond, eta=1.0, guidance=guidance,
        consistency=consistency, generator=generator, callback=callback,
    )


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    steps: int = 20,
    *,
    cond: Cond | None = None,
    guidance: Guide | None = None,
    consistency: Consistency | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), a deterministic second-order multistep solver for few steps.
    ``generator`` is accepted for the common signature; the solver draws no noise."""
    x, old_x0, h_last = x_T, None, None
    for i, (t, s) in enumerate(timestep_pairs(denoiser, steps)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        pred = predict(denoiser, x, tt, cond, guidance, consistency)
        a_t, a_s = abar_at(denoiser, t), abar_at(denoiser, s)
        if s < 0:
            x = pred.x0
        else:
            h = 0.5 * math.log(a_s / (1 - a_s)) - 0.5 * math.log(a_t / (1 - a_t))
            d = pred.x0
            if old_x0 is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * pred.x0 - 1 / (2 * r) * old_x0
            x = math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
            h_last = h
        old_x0 = pred.x0
        if callback is not None:
            callback(i, t, x, pred)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
}
