"""DDIM inversion (data -> latent noise) and spherical interpolation between latents."""

from __future__ import annotations

import math

import torch

from .denoiser import Cond, Denoiser
from .samplers import abar_at, timestep_pairs


@torch.no_grad()
def ddim_invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    steps: int = 50,
    *,
    cond: Cond | None = None,
    fixed_point_iters: int = 3,
) -> torch.Tensor:
    """Latent ``x_T`` ``(B, C, ...)`` that deterministic DDIM (``eta = 0``, same ``steps`` and ``cond``) maps back
    to ``x0``.

    Each step solves the DDIM update for its starting point by fixed-point iteration (Pan et al. 2023), so the
    round trip is exact up to the iteration's convergence rather than first-order accurate. The iteration holds
    eps-hat fixed at low noise and x0-hat fixed at high noise (``abar_t < 0.5``), where each is the slowly varying
    one, so it contracts at every step.
    """
    x = x0
    for t, s in reversed(timestep_pairs(denoiser, steps)):
        a_t, a_s = abar_at(denoiser, t), abar_at(denoiser, s)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x_t = x
        for _ in range(1 + fixed_point_iters):
            pred = denoiser(x_t, tt, cond)
            if a_t >= 0.5:  # x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps, x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
                c = math.sqrt(1 - a_s) - math.sqrt(a_s * (1 - a_t) / a_t)
                x_t = math.sqrt(a_t / a_s) * (x - c * pred.eps)
            else:  # the same update solved for eps given x0
                eps = (x - math.sqrt(a_s) * pred.x0) / math.sqrt(1 - a_s)
                x_t = math.sqrt(a_t) * pred.x0 + math.sqrt(1 - a_t) * eps
        x = x_t
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between latents ``z0`` and ``z1`` ``(B, ...)``; ``alpha`` in [0, 1]."""
    norm = z0.flatten(1).norm(dim=1) * z1.flatten(1).norm(dim=1)
    cos = ((z0 * z1).flatten(1).sum(1) / norm).reshape((-1,) + (1,) * (z0.ndim - 1))
    theta = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - alpha) * theta) * z0 + torch.sin(alpha * theta) * z1) / torch.sin(theta)
