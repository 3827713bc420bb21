"""ESPIRiT coil sensitivities (Uecker et al., MRM 2014) from the fully sampled calibration centre of k-space.

The calibration matrix of all ``k x k`` multi-coil patches of the centre spans the signal subspace of k-space
patches; its projection, turned into an image-domain ``(C, C)`` operator per voxel, has an eigenvalue of 1 where
the object is and the coil sensitivities as that eigenvector. Unlike maps from low-resolution coil images, the
maps stay exact at sharp object edges, and the eigenvalue marks the object's support (where
:func:`neurodiff.mri.operators.estimate_sensitivities` crops them).
"""

from __future__ import annotations

import itertools
import math

import torch

from neurodiff.errors import InputError


def espirit_maps(
    calibration: torch.Tensor,
    shape: tuple[int, int],
    kernel: int = 6,
    threshold: float = 0.02,
    noise_std: float = 0.0,
    rows: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant eigenvector and the two largest eigenvalues of the ESPIRiT operator at every voxel.

    Parameters
    ----------
    calibration : Tensor, shape (C, h, w), complex
        Fully sampled centre of k-space (``h, w >= kernel``).
    shape : (H, W)
        Image grid of the maps (centred like :func:`neurodiff.mri.fft.ifft2c`).
    kernel : int
        Side of the k-space kernel (patch).
    threshold, noise_std : float
        Singular values of the calibration matrix (``R`` patches x ``N = C k^2``) of at least ``threshold x``
        the largest, and above the largest a matrix of complex noise of std ``noise_std`` (one k-space sample's)
        would have, ``noise_std (sqrt(R) + sqrt(N))``, span the signal subspace.
    rows : int
        Image rows per batch of eigen-decompositions (memory: ``rows x W x C^2`` complex values).

    Returns
    -------
    maps : Tensor, shape (C, H, W), complex64
        Unit-norm sensitivities over the coils, phase arbitrary per voxel.
    eigenvalues : Tensor, shape (2, H, W), float
        The largest and the second largest, in [0, 1]. The largest is near 1 inside the object and lower
        outside; where the second is near 1 too, the voxel holds two sets of sensitivities (an object wrapping
        over the edges of the field of view) or the calibration has too small a null space to tell.
    """
    c, h, w = calibration.shape
    if c < 2:
        raise InputError(f"ESPIRiT needs at least 2 coils, got {c}")
    if min(h, w) < kernel:
        raise InputError(f"ESPIRiT needs a calibration region of at least {kernel} x {kernel}, got {h} x {w}")
    patches = calibration.to(torch.complex128).unfold(1, kernel, 1).unfold(2, kernel, 1)  # (C, ny, nx, k, k)
    a = patches.permute(1, 2, 0, 3, 4).reshape(-1, c * kernel**2)
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    keep = (s >= threshold * s[0]) & (s > noise_std * (a.shape[0] ** 0.5 + a.shape[1] ** 0.5))
    v = vh[: max(int(keep.sum()), 1)]  # (n, C k k): rows span the signal subspace
    p = (v.conj().T @ v).reshape(c, kernel, kernel, c, kernel, kernel)  # projection onto it
    # The operator at voxel r: (1 / k^2) sum_{p, q} P[:, p, :, q] exp(-2 pi i (p - q) . r), gathered by lag p - q
    lags = torch.zeros(c, c, 2 * kernel - 1, 2 * kernel - 1, dtype=p.dtype, device=p.device)
    for py, qy in itertools.product(range(kernel), repeat=2):
        for dx in range(-(kernel - 1), kernel):  # the entries with px - qx = dx
            lags[:, :, py - qy + kernel - 1, dx + kernel - 1] += p[:, py, :, :, qy, :].diagonal(-dx, 1, 3).sum(-1)
    dev = calibration.device
    d = torch.arange(-(kernel - 1), kernel, dtype=torch.float64, device=dev)
    ey, ex = (torch.exp(-2j * math.pi * torch.outer(torch.arange(n, dtype=torch.float64, device=dev) - n // 2, d) / n)
              for n in (shape[0], shape[1]))
    half = (torch.einsum("abyx,jx->abyj", lags, ex) / kernel**2).to(torch.complex64)  # (C, C, 2k - 1, W)
    maps = torch.empty((shape[0], shape[1], c), dtype=torch.complex64, device=dev)
    eig = torch.empty((2, *shape), dtype=torch.float32, device=dev)
    for r0 in range(0, shape[0], rows):
        op = torch.einsum("abyj,iy->ijab", half, ey[r0 : r0 + rows].to(half.dtype))
        values, vectors = torch.linalg.eigh(op)
        eig[:, r0 : r0 + rows], maps[r0 : r0 + rows] = values[..., [-1, -2]].movedim(-1, 0), vectors[..., -1].conj()
    return maps.permute(2, 0, 1).contiguous(), eig.clamp(0, 1)
