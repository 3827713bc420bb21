"""k-space data consistency: replace or blend the measured k-space samples into an image estimate.

All functions take an image estimate ``x`` (e.g. a diffusion model's x0-hat), complex ``(..., H, W)``, and
measured centred k-space ``y`` with a binary mask ``(H, W)``; they return an image of the shape of ``x``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neurodiff.errors import InputError
from neurodiff.mri.operators import MultiCoil, SingleCoil


def hard_project(x: torch.Tensor, y: torch.Tensor, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Exact projection onto the measured data (single coil): measured k-space locations take the data.

    Parameters
    ----------
    x : Tensor, shape (..., H, W), complex
        Image estimate.
    y : Tensor, shape (..., H, W), complex
        Measured centred k-space (broadcastable to ``x``); values outside ``mask`` are ignored.
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.

    Returns
    -------
    Tensor, shape (..., H, W), complex
        ``F^H (M y + (1 - M) F x)``.
    """
    return soft_project(x, y, mask, math.inf)


def soft_project(x: torch.Tensor, y: torch.Tensor, mask: np.ndarray | torch.Tensor, weight: float) -> torch.Tensor:
    """Weighted data consistency (single coil): ``k = (F x + w y) / (1 + w)`` on measured locations.

    Parameters
    ----------
    x, y, mask
        As in :func:`hard_project`.
    weight : float >= 0
        Data weight ``w``: 0 returns ``x`` unchanged, ``math.inf`` is :func:`hard_project`.

    Returns
    -------
    Tensor, shape (..., H, W), complex
    """
    if not weight >= 0:
        raise InputError(f"data-consistency weight must be >= 0, got {weight}")
    op = SingleCoil(mask)
    step = 1.0 if math.isinf(weight) else weight / (1.0 + weight)
    return x + step * op.A_adjoint(y - op.A(x))


def multicoil_project(
    x: torch.Tensor, y: torch.Tensor, mask: np.ndarray | torch.Tensor, sens: torch.Tensor, steps: int = 1
) -> torch.Tensor:
    """Multi-coil data consistency by unit-step gradient descent on ``||M F S x - y||^2 / 2``.

    Each step is ``x <- x + S^H F^H M (y - M F S x)``. With ``sum_c |S_c|^2 <= 1`` the step is stable (the
    residual never grows); with ``sum_c |S_c|^2 = 1`` and a fully sampled mask one step is exact.

    Parameters
    ----------
    x : Tensor, shape (..., H, W), complex
        Image estimate.
    y : Tensor, shape (..., C, H, W), complex
        Measured centred multi-coil k-space.
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.
    sens : Tensor, shape (C, H, W), complex
        Coil sensitivities, e.g. from :func:`neurodiff.mri.operators.estimate_sensitivities`.
    steps : int >= 0
        Number of gradient steps.

    Returns
    -------
    Tensor, shape (..., H, W), complex
    """
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    op = MultiCoil(mask, sens)
    for _ in range(steps):
        x = x + op.A_adjoint(y - op.A(x))
    return x
