"""k-space measurement operators (deepinv-style ``A`` / ``A_adjoint``) and coil sensitivity estimation.

Images are complex tensors ``(..., H, W)``; k-space is centred, orthonormal (:mod:`neurodiff.mri.fft`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from neurodiff.errors import InputError
from neurodiff.mri.espirit import espirit_maps
from neurodiff.mri.fft import fft2c, ifft2c
from neurodiff.mri.masks import calibration_size, centred_block, check_mask, mask_from_kspace

# ESPIRiT kernel side and eigenvalue crop (Uecker et al. 2014's demo values; crop 0.8, BART's default, gave
# 42.2 against 44.3 dB with BART pics on the 12-coil simulation)
ESPIRIT_KERNEL, ESPIRIT_CROP = 6, 0.95
# ESPIRiT's map is used where the second eigenvalue is at most ESPIRIT_SECOND; voxels whose low-resolution
# root-sum-of-squares reaches ESPIRIT_SUPPORT of its peak are inside the object
ESPIRIT_SECOND, ESPIRIT_SUPPORT = 0.5, 0.05


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares coil combination.

    Parameters
    ----------
    coil_images : Tensor, shape (..., C, H, W) for the default ``dim``
        Complex or real coil images.
    dim : int
        Coil axis.

    Returns
    -------
    Tensor, real, ``coil_images`` without ``dim``
        ``sqrt(sum_c |x_c|^2)``.
    """
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim))


def _mask_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validated float32 tensor (H, W) of a binary mask."""
    m = torch.as_tensor(mask)
    check_mask(m, tuple(m.shape))
    return m.to(torch.float32)


class SingleCoil:
    """Single-coil Cartesian MRI: ``y = M F x``.

    Parameters
    ----------
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask, 1 = sampled.

    Notes
    -----
    ``A``: image ``(..., H, W)`` complex -> k-space ``(..., H, W)`` complex, zero outside the mask.
    ``A_adjoint``: k-space ``(..., H, W)`` -> image ``(..., H, W)``.
    """

    def __init__(self, mask: np.ndarray | torch.Tensor) -> None:
        self.mask = _mask_tensor(mask)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward operator: masked centred k-space of ``x``."""
        return self.mask.to(x.device) * fft2c(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint operator: zero-filled image of ``y``."""
        return ifft2c(self.mask.to(y.device) * y)


class MultiCoil:
    """Multi-coil Cartesian MRI with known sensitivities: ``y_c = M F (S_c x)``.

    Parameters
    ----------
    mask : ndarray or Tensor, shape (H, W)
        Binary sampling mask, 1 = sampled.
    sens : Tensor, shape (C, H, W), complex
        Coil sensitivity maps; with ``sum_c |S_c|^2 = 1`` and a full mask, ``A_adjoint(A(x)) == x``.

    Notes
    -----
    ``A``: image ``(..., H, W)`` -> k-space ``(..., C, H, W)``. ``A_adjoint``: ``(..., C, H, W)`` -> ``(..., H, W)``.
    """

    def __init__(self, mask: np.ndarray | torch.Tensor, sens: torch.Tensor) -> None:
        self.mask = _mask_tensor(mask)
        if sens.ndim != 3 or tuple(sens.shape[-2:]) != tuple(self.mask.shape):
            h, w = self.mask.shape
            raise InputError(f"sens must have shape (C, {h}, {w}), got {tuple(sens.shape)}")
        self.sens = sens

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward operator: masked centred k-space of each coil image ``S_c x``."""
        return self.mask.to(x.device) * fft2c(self.sens.to(x.device) * x.unsqueeze(-3))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint operator: ``sum_c conj(S_c) F^H M y_c``."""
        return (self.sens.to(y.device).conj() * ifft2c(self.mask.to(y.device) * y)).sum(dim=-3)


def estimate_sensitivities(kspace: torch.Tensor, calib: int | None = None, method: str = "espirit",
                           noise_std: float = 0.0) -> torch.Tensor:
    """Coil sensitivity maps from the fully sampled calibration centre of k-space.

    ``"espirit"`` (default): ESPIRiT maps (:func:`neurodiff.mri.espirit.espirit_maps`, from at most 32 x 32 of the
    centre), with the per-voxel phase of the low-resolution maps below, so that the coil combination keeps the
    phase it had with them. They are used where one map is determined: the largest eigenvalue of the ESPIRiT
    operator at least :data:`ESPIRIT_CROP` and the second at most :data:`ESPIRIT_SECOND`. Where the second is
    large too (an object wrapping over the edges of the field of view; so few coils that the calibration has
    hardly a null space) or the first drops inside the object, the low-resolution maps take over. The maps are 0
    outside the object: where the first eigenvalue is below :data:`ESPIRIT_CROP` and the low-resolution
    root-sum-of-squares below :data:`ESPIRIT_SUPPORT` of its peak, holes enclosed by the object excepted (a dark
    ventricle keeps its maps). On the 12-coil simulation of ``benchmarks/recon_multicoil.py`` (noise 1e-4) they
    raised BART ``pics`` from 39.1 to 43.8 dB and CG-SENSE from 36.4 to 38.6 dB. One coil, or a calibration
    centre narrower than ``ESPIRIT_KERNEL + 2`` lines, falls back to ``"lowres"``.

    ``"lowres"``: low-resolution coil images are reconstructed from the Hann-windowed calibration region and
    divided by their root-sum-of-squares, so ``sum_c |S_c|^2 = 1`` wherever the low-resolution images are non-zero
    (0 elsewhere). Along an axis whose calibration covers at most half of k-space, the maps within
    ``ceil(n / calibration)`` voxels of either edge of the field of view are extrapolated linearly from the next
    as many voxels inwards where the opposite edge holds signal (:func:`_extrapolate_edges`): there the circular
    low-pass mixes in the opposite edge, which is wrong when the object reaches the edges (a tight phase-encode
    field of view) and made reconstructions 5 dB worse (``benchmarks/recon_fov.py``).

    Parameters
    ----------
    kspace : Tensor, shape (C, H, W), complex
        Centred multi-coil k-space, zero where not sampled.
    calib : int or None
        Side of the central square calibration region (clipped to ``H`` and ``W``). None: the largest fully
        sampled rectangle centred on DC, found from the non-zero pattern of ``kspace``.
    method : {"espirit", "lowres"}
        As above.
    noise_std : float
        Std of one complex k-space sample's noise (e.g. the root of
        :func:`neurodiff.mri.consistency.kspace_noise_variance`): ESPIRiT's signal subspace stays above the
        noise (:func:`~neurodiff.mri.espirit.espirit_maps`); 0 when unknown.

    Returns
    -------
    Tensor, shape (C, H, W), complex
        ``sum_c |S_c|^2`` is 1 inside the object, 0 where the maps are cropped.
    """
    if kspace.ndim != 3:
        raise InputError(f"kspace must have shape (C, H, W), got {tuple(kspace.shape)}")
    if method not in ("espirit", "lowres"):
        raise InputError(f"method must be 'espirit' or 'lowres', got {method!r}")
    h, w = kspace.shape[-2:]
    if calib is None:
        ch, cw = calibration_size(mask_from_kspace(kspace))
    elif calib >= 2:
        ch, cw = min(calib, h), min(calib, w)
    else:
        raise InputError(f"calib must be >= 2 k-space lines, got {calib}")
    lowres, energy = _lowres_maps(kspace, ch, cw)
    if method == "lowres" or min(ch, cw) < ESPIRIT_KERNEL + 2 or kspace.shape[0] < 2:
        return lowres
    ch, cw = min(ch, 32), min(cw, 32)
    centre = kspace[(slice(None), *centred_block((h, w), (ch, cw)))]
    maps, (first, second) = espirit_maps(centre, (h, w), ESPIRIT_KERNEL, noise_std=noise_std)
    maps = maps * torch.exp(-1j * torch.angle((lowres.conj() * maps).sum(0)))
    single = (first >= ESPIRIT_CROP) & (second <= ESPIRIT_SECOND)
    support = (first >= ESPIRIT_CROP) | (energy >= ESPIRIT_SUPPORT**2 * energy.max())
    support = torch.from_numpy(binary_fill_holes(support.cpu().numpy())).to(kspace.device)
    return torch.where(single, maps, torch.where(support, lowres, 0)).to(kspace.dtype)


def _lowres_maps(kspace: torch.Tensor, ch: int, cw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"lowres"`` maps ``(C, H, W)`` of :func:`estimate_sensitivities` from a ``ch x cw`` calibration centre,
    and the low-resolution coil images' energy ``rss^2`` ``(H, W)``."""
    h, w = kspace.shape[-2:]
    window = torch.zeros(h, w, dtype=torch.float32)
    window[centred_block((h, w), (ch, cw))] = torch.outer(
        torch.hann_window(ch + 2, periodic=False)[1:-1], torch.hann_window(cw + 2, periodic=False)[1:-1]
    )
    low = ifft2c(window.to(kspace.device) * kspace)
    maps, energy = _normalised(low), rss(low) ** 2
    for axis, c, n in ((-2, ch, h), (-1, cw, w)):
        if 2 * c <= n:
            maps = _normalised(_extrapolate_edges(maps, energy, axis, -(-n // c)))
    return maps, energy


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    """``maps`` ``(C, H, W)`` divided by their root-sum-of-squares (0 where that is 0)."""
    norm = rss(maps)
    return torch.where(norm > 0, maps / torch.where(norm > 0, norm, 1), 0)


def _extrapolate_edges(maps: torch.Tensor, energy: torch.Tensor, axis: int, band: int) -> torch.Tensor:
    """``maps`` ``(C, H, W)`` with the ``band`` voxels at either end of ``axis`` moved towards a straight line
    fitted (least squares, per coil and line) to the next ``band`` voxels inwards; unchanged when the axis is
    shorter than ``3 band``.

    The weight of the line in a band is ``16 x`` the mean low-resolution ``energy`` ``(H, W)`` (``rss^2``) of the
    opposite band over the image's largest, at most 1: the opposite edge is what the circular low-pass mixes in,
    and where it is air the ratio maps are right (full extrapolation there cost CG-SENSE 0.3 dB on the 12-coil
    simulation of ``benchmarks/recon_multicoil.py``, whose object ends 30 voxels from the edges).
    """
    n = maps.shape[axis]
    if 3 * band > n:
        return maps
    out = maps.movedim(axis, 1).clone()  # (C, n, L)
    e = energy.movedim(axis, 0)  # (n, L); axis is -2 or -1
    peak = e.max().clamp_min(torch.finfo(e.dtype).tiny)
    pos = torch.arange(n, dtype=torch.float32, device=maps.device)
    top, bottom = slice(0, band), slice(n - band, n)
    for fit, edge, opposite in ((slice(band, 2 * band), top, bottom), (slice(n - 2 * band, n - band), bottom, top)):
        r, v = pos[fit], out[:, fit]
        rc = (r - r.mean())[None, :, None]
        slope = (rc * v).sum(1, keepdim=True) / (rc**2).sum()
        line = v.mean(1, keepdim=True) + slope * (pos[edge] - r.mean())[None, :, None]
        weight = (16 * e[opposite].mean(0) / peak).clamp(0, 1)  # (L,)
        out[:, edge] = weight * line + (1 - weight) * out[:, edge]
    return out.movedim(1, axis)
