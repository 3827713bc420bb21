"""Noise schedules of the discrete-time variance-preserving diffusion and the conversions between
the quantities a network may predict.

The forward process is ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for ``t = 0 .. T-1`` (0-based: ``t = 0``
is the first, least noisy step). A committed schedule is never changed: shipped weights depend on it; add new
names instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SCHEDULES = ("linear", "cosine")


def _betas(name: str, steps: int) -> torch.Tensor:
    if name == "linear":  # Ho et al. 2020, scaled to the number of steps
        scale = 1000.0 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    if name == "cosine":  # Nichol & Dhariwal 2021
        s = 0.008
        u = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-batch vector ``(B,)`` to broadcast over ``like`` ``(B, ...)``."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)).to(like.dtype)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving noise schedule.

    Parameters
    ----------
    name
        ``"linear"`` or ``"cosine"``.
    steps
        Number of training timesteps ``T``.

    Attributes
    ----------
    betas, alphas_cumprod
        Float64 tensors of shape ``(T,)``.
    """

    name: str = "cosine"
    steps: int = 1000

    betas: torch.Tensor = field(init=False, repr=False, compare=False)
    alphas_cumprod: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        betas = _betas(self.name, self.steps)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1 - betas, 0))

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar_t`` for integer timesteps ``t`` ``(B,)``, shaped to broadcast over ``like`` ``(B, ...)``.
        ``t = -1`` means clean data (``abar = 1``)."""
        ac = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod]).to(t.device)
        return _expand(ac[t.long() + 1], like)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise-to-signal ratio ``sqrt((1 - abar_t) / abar_t)`` of timesteps ``t`` (float64)."""
        a = self.alphas_cumprod.to(t.device)[t.long()]
        return ((1 - a) / a).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Noise clean data ``x0`` ``(B, ...)`` to timestep ``t`` ``(B,)`` with the given noise ``eps``."""
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    # --- conversions between predictions (x_t and t fixed) -----------------------------------
    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho 2022)."""
        a = self.abar(t, x0)
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    def x0_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.abar(t, x_t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        return sa * x_t - sb * v, sb * x_t + sa * v

    def timesteps(self, n: int, start: int | None = None) -> torch.Tensor:
        """``n`` evenly spaced timesteps from ``start`` (default ``T-1``) down to ``0`` (int64), for few-step
        samplers."""
        start = self.steps - 1 if start is None else start
        if not 0 <= start < self.steps:
            raise ValueError(f"start must be in 0..{self.steps - 1}, got {start}")
        if not 1 <= n <= start + 1:
            raise ValueError(f"steps must be in 1..{start + 1}, got {n}")
        return torch.linspace(start, 0, n, dtype=torch.float64).round().long()
