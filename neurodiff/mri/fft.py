"""Centred, orthonormal 2D FFT over the last two axes, and complex <-> channel conversion.

Convention used throughout :mod:`neurodiff.mri`: ``k = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the
last two axes ``(H, W)``, so the DC sample sits at index ``(H // 2, W // 2)`` and the transform is unitary.
"""

from __future__ import annotations

import torch

from neurodiff.errors import InputError

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT of an image.

    Parameters
    ----------
    x : Tensor, shape (..., H, W)
        Image, complex (or real, promoted to complex); any leading axes.

    Returns
    -------
    Tensor, shape (..., H, W), complex
        Centred k-space (DC at ``(H // 2, W // 2)``), same norm as ``x``.
    """
    x = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_DIMS, norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c`.

    Parameters
    ----------
    k : Tensor, shape (..., H, W), complex
        Centred k-space.

    Returns
    -------
    Tensor, shape (..., H, W), complex
        Image.
    """
    k = torch.fft.ifftshift(k, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=_DIMS, norm="ortho"), dim=_DIMS)


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Stack real and imaginary parts as a channel axis just before ``H``.

    Parameters
    ----------
    x : Tensor, shape (..., H, W), complex

    Returns
    -------
    Tensor, shape (..., 2, H, W), real
        ``[..., 0, :, :]`` is the real part, ``[..., 1, :, :]`` the imaginary part.
    """
    if not torch.is_complex(x):
        raise InputError(f"complex_to_channels expects a complex tensor, got {x.dtype}")
    return torch.stack((x.real, x.imag), dim=-3)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`.

    Parameters
    ----------
    x : Tensor, shape (..., 2, H, W), real

    Returns
    -------
    Tensor, shape (..., H, W), complex
    """
    if x.ndim < 3 or x.shape[-3] != 2 or torch.is_complex(x):
        raise InputError(f"channels_to_complex expects a real tensor of shape (..., 2, H, W), got {tuple(x.shape)}")
    return torch.complex(x.select(-3, 0), x.select(-3, 1))
