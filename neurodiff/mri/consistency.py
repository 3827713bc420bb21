"""k-space data consistency: replace or blend the measured k-space samples into an image estimate.

All functions take an image estimate ``x`` (e.g. a diffusion model's x0-hat), complex ``(..., H, W)``, and
measured centred k-space ``y`` with a binary mask ``(H, W)``; they return an image of the shape of ``x``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from neurodiff.errors import InputError
from neurodiff.mri.masks import check_mask
from neurodiff.mri.operators import MultiCoil, SingleCoil

# x (N, S, H, W) complex image estimates in the data's units -> data-consistent estimates
Projection = Callable[[torch.Tensor], torch.Tensor]


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
    x: torch.Tensor,
    y: torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    sens: torch.Tensor,
    steps: int = 5,
    damping: float = 0.0,
) -> torch.Tensor:
    """Multi-coil data consistency: ``steps`` conjugate-gradient iterations on
    ``||M F S z - y||^2 + damping ||z - x||^2``, warm-started at ``z = x``.

    ``damping = 0`` fits the data as closely as the iterations allow (noiseless data); a positive value is the
    ratio of the k-space noise variance to the variance of the image estimate's error (MAP with a Gaussian
    around ``x``), so noisy data are not fitted into noise (see :func:`snr_damping`).

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
        Conjugate-gradient iterations.
    damping : float >= 0
        Weight of staying near ``x``.

    Returns
    -------
    Tensor, shape (..., H, W), complex
    """
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    if not damping >= 0:
        raise InputError(f"damping must be >= 0, got {damping}")
    # The centring shifts are permutations, so A^H A = shift^-1 o [S'^H F^-1 M' F S'] o shift with S', M' the
    # shifted sensitivities and mask: the CG runs on shifted images with plain FFTs (about twice as fast).
    op = MultiCoil(mask, sens)
    shift = lambda v: torch.fft.ifftshift(v, dim=(-2, -1))  # noqa: E731
    m, s = shift(op.mask.to(x.device)), shift(sens.to(x.device))
    s_conj = s.conj().resolve_conj()  # (in-place products below: about 20% faster than fresh tensors)

    def normal(v: torch.Tensor) -> torch.Tensor:
        k = torch.fft.ifft2(torch.fft.fft2(s * v.unsqueeze(-3), norm="ortho").mul_(m), norm="ortho")
        return k.mul_(s_conj).sum(dim=-3).add_(v, alpha=damping)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per image, kept for broadcasting
        return (a.conj() * b).real.sum(dim=(-2, -1), keepdim=True)

    xs, y = shift(x), y.to(x.device)
    d = torch.zeros_like(xs)  # solve (A^H A + damping) d = A^H (y - A x), then z = x + d
    r = (s_conj * torch.fft.ifft2(m * shift(y), norm="ortho")).sum(dim=-3) - normal(xs) + damping * xs
    p, rr = r.clone(), dot(r, r)
    for _ in range(steps):
        q = normal(p)
        alpha = rr / dot(p, q).clamp_min(torch.finfo(rr.dtype).tiny)
        d, r = d + alpha * p, r - alpha * q
        rr_new = dot(r, r)
        p, rr = r + rr_new / rr.clamp_min(torch.finfo(rr.dtype).tiny) * p, rr_new
    return x + torch.fft.fftshift(d, dim=(-2, -1))


def noise_misfit(
    x: torch.Tensor, y: torch.Tensor, mask: np.ndarray | torch.Tensor, sens: torch.Tensor, noise_variance: float
) -> float:
    """How far image estimates are from explaining measured multi-coil data, in units of the noise:
    ``||M F S x - y||^2 / (sigma^2 n)`` over all estimates, with ``n`` their number times the measured samples of all
    coils.

    About 1 when ``x`` explains ``y`` up to its noise, below 1 when ``x`` has been fitted into the noise, and above
    1 by what the estimate, or the sensitivities, leave unexplained (a multiple of the noise variance).

    Parameters
    ----------
    x : Tensor, shape (..., H, W), complex
        Image estimates.
    y : Tensor, shape (C, H, W) or broadcastable to (..., C, H, W), complex
        Measured centred multi-coil k-space.
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.
    sens : Tensor, shape (C, H, W), complex
        Coil sensitivities.
    noise_variance : float
        ``sigma^2`` of one complex k-space sample (:func:`kspace_noise_variance`).

    Returns
    -------
    float
        The ratio; 1.0 when ``noise_variance <= 0`` (noise-free data: nothing to compare with).
    """
    if noise_variance <= 0:
        return 1.0
    op = MultiCoil(mask, sens)
    m = op.mask.to(x.device)
    residual = op.A(x) - m * y.to(x.device)
    n = float(m.sum()) * sens.shape[0] * math.prod(x.shape[:-2])
    return float((residual.abs() ** 2).sum()) / (noise_variance * n)


def misfit_damping_factor(misfit: float) -> float:
    """Multiplier of a final fit's damping from the estimates' :func:`noise_misfit` ``m``: ``m`` above 1 (data that
    the estimates, or the sensitivities, cannot explain are not fitted into), ``1 / m^2`` below 1 (estimates that
    already fit the data closer than its noise are held back); 1 for a non-finite ``m``.

    Parameters
    ----------
    misfit : float
        ``m >= 0``, floored at 1e-3.

    Returns
    -------
    float
        ``max(m, m^-2) >= 1``.
    """
    if not math.isfinite(misfit):
        return 1.0
    m = max(misfit, 1e-3)
    return max(m, m**-2)


def phase_constrained(project: Projection, phase: torch.Tensor) -> Projection:
    """Data consistency with a phase constraint, for partial Fourier: the estimate's magnitude takes ``phase``
    (a low-resolution phase map from the symmetric centre of k-space) before ``project`` puts the measured data
    back, so that the unmeasured side of k-space follows from the measured one by the conjugate symmetry of the
    phase-corrected image (one POCS iteration, Haacke et al. 1991, per call).

    Parameters
    ----------
    project : callable
        Data consistency of ``(..., S, H, W)`` complex image estimates.
    phase : Tensor, shape (S, H, W)
        Phase (radians) of each slice.

    Returns
    -------
    callable
        ``x -> project(|x| exp(i phase))``.
    """
    units: dict[torch.device, torch.Tensor] = {}

    def constrained(x: torch.Tensor) -> torch.Tensor:
        unit = units.setdefault(x.device, torch.polar(torch.ones_like(phase), phase).to(x.device))
        return project(x.abs() * unit)

    return constrained


def noisy_copies(
    y: torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    noise_std: float | torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` copies of measured k-space with fresh noise on the measured samples: ``y + noise_std * eps_i``.

    Fitting each posterior sample to its own copy (randomise-then-optimise) puts the measurement noise into the
    samples' spread instead of having them all fit the same noisy data. The complex Gaussian draws ``eps_i``
    (``E|eps|^2 = 1``) are centred over the copies and rescaled by ``sqrt(n / (n - 1))``: their mean is ``y``
    exactly and each keeps the variance ``noise_std^2``.

    Parameters
    ----------
    y : Tensor, shape (..., H, W), complex
        Measured centred k-space (any leading axes: coils, slices).
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.
    noise_std : float or Tensor broadcastable to ``y``
        Standard deviation of one complex k-space sample's noise (e.g. the root of
        :func:`kspace_noise_variance`), >= 0.
    n : int >= 1
        Number of copies.
    generator : torch.Generator, optional
        Of the draws, on ``y``'s device.

    Returns
    -------
    Tensor, shape (n, ..., H, W), complex
    """
    std = torch.as_tensor(noise_std, device=y.device)
    if not bool((std >= 0).all()):
        raise InputError(f"noise_std must be >= 0, got {noise_std}")
    m = torch.as_tensor(mask).to(y.device)
    eps = torch.randn((n,) + tuple(y.shape), generator=generator, device=y.device, dtype=y.dtype)
    if n > 1:
        eps = (eps - eps.mean(0, keepdim=True)) * (n / (n - 1)) ** 0.5
    return y + std * eps * m


def kspace_noise_variance(kspace: torch.Tensor, mask: np.ndarray | torch.Tensor) -> float:
    """Variance ``sigma^2`` of one complex k-space sample's noise, from the outermost sampled k-space.

    In each quadrant of k-space the sampled values farthest from the centre (elliptical radius ``sqrt((2 ky / H)^2 +
    (2 kx / W)^2)``; the outer 1/64 of the quadrant's samples, at least 64), where a brain's signal has died out,
    give ``sigma^2 = median^2 / ln 2`` (``|n|^2`` of complex Gaussian noise is exponential); the quietest quadrant is
    taken, as an object's edges can still put signal into the others. Only samples beyond half the radius count
    (a fully sampled calibration centre alone says nothing about the noise). On a full rectangular grid these are
    the corners; on elliptical or zero-padded (interpolated) k-space, whose corners hold nothing, the rim of what
    was measured.

    Parameters
    ----------
    kspace : Tensor, shape (C, H, W), complex
        Measured centred k-space, zero where not sampled.
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.

    Returns
    -------
    float
        ``sigma^2`` in the k-space's units squared; 0 when no quadrant holds 64 sampled values beyond half the
        radius.
    """
    h, w = kspace.shape[-2:]
    m = torch.as_tensor(mask).bool().cpu()
    check_mask(m, tuple(kspace.shape))
    ky = (torch.arange(h) - h // 2).float()[:, None] / (h / 2)
    kx = (torch.arange(w) - w // 2).float()[None, :] / (w / 2)
    radius = ky**2 + kx**2  # squared
    values = kspace.abs().cpu()
    medians = []
    for quadrant in ((ky < 0) & (kx < 0), (ky < 0) & (kx >= 0), (ky >= 0) & (kx < 0), (ky >= 0) & (kx >= 0)):
        sel = quadrant & m & (radius >= 0.25)  # beyond half-way out: a calibration block alone holds signal
        n = int(sel.sum())
        if n < 64:
            continue
        outer = radius[sel].topk(max(64, n // 64)).indices
        medians.append(float(values[:, sel][:, outer].median()))
    return min(medians) ** 2 / math.log(2) if medians else 0.0


def snr_damping(kspace: torch.Tensor, mask: np.ndarray | torch.Tensor, rel_error: float = 0.15,
                noise_variance: float | None = None) -> float:
    """Damping of :func:`multicoil_project` for noisy data: ``sigma^2 / tau^2``.

    ``sigma^2`` is the k-space noise variance (``noise_variance``, default :func:`kspace_noise_variance`);
    ``tau^2 = rel_error^2 ||y||^2 / (H W)`` is the assumed variance of the image estimate's error per voxel, a
    fraction ``rel_error`` of the mean image energy (with orthonormal FFT and ``sum_c |S_c|^2 = 1``, ``||x||^2
    ~ ||y||^2``).

    Parameters
    ----------
    kspace : Tensor, shape (C, H, W), complex
        Measured centred k-space, zero where not sampled.
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask.
    rel_error : float > 0
        Relative error of the image estimate (neurodiff's recon uses 0.15, chosen on raw and simulated data).
    noise_variance : float, optional
        ``sigma^2`` when already known.

    Returns
    -------
    float
        0 when the noise cannot be read (see :func:`kspace_noise_variance`).
    """
    h, w = kspace.shape[-2:]
    energy = float((kspace.abs() ** 2).sum())
    sigma2 = kspace_noise_variance(kspace, mask) if noise_variance is None else noise_variance
    return sigma2 * h * w / (rel_error**2 * energy)
