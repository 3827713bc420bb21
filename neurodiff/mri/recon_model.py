"""What the reconstruction diffusion model sees: intensity scaling, padding and the conditioning image.

The model works on 2-channel (real, imaginary) images ``(B, 2, H, W)`` padded to a multiple of the network's
divisor, conditioned on the zero-filled image (2 channels) and the sampling mask (1 channel). Each slice is
scaled so that the 99.5th percentile of its zero-filled magnitude is 1 (only measured data are used, so the
same scaling applies in training and at inference), and the output is rescaled back to the input's units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fft import complex_to_channels

COND_CHANNELS = 3  # zero-filled real, imaginary; mask
IMAGE_CHANNELS = 2
SCALE_PERCENTILE = 99.5


def slice_scale(zf: torch.Tensor) -> torch.Tensor:
    """Per-slice intensity scale ``(B,)`` of zero-filled images ``zf`` ``(B, H, W)`` complex: the 99.5th
    percentile of the magnitude (1 for an all-zero slice)."""
    s = torch.quantile(zf.abs().flatten(1).float(), SCALE_PERCENTILE / 100, dim=1)
    return torch.where(s > 0, s, torch.ones_like(s))


def padding(shape: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """``F.pad`` widths ``(left, right, top, bottom)`` that centre ``shape`` ``(H, W)`` in ``target``."""
    ph, pw = target[0] - shape[0], target[1] - shape[1]
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


def padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``shape`` rounded up to multiples of ``multiple``."""
    return (shape[0] + -shape[0] % multiple, shape[1] + -shape[1] % multiple)


def pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` ``(..., H, W)`` (real or complex)."""
    if x.is_complex():
        return torch.complex(F.pad(x.real, pads), F.pad(x.imag, pads))
    return F.pad(x, pads)


def crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad` on the last two axes."""
    l, r, t, b = pads
    return x[..., t: x.shape[-2] - b, l: x.shape[-1] - r]


def condition(zf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Conditioning image ``(B, 3, H, W)`` from scaled zero-filled images ``zf`` ``(B, H, W)`` complex and the
    sampling masks ``mask`` ``(H, W)`` or ``(B, H, W)`` (1 = sampled; broadcast over the batch)."""
    m = torch.broadcast_to(mask.to(zf.real.dtype), zf.shape).unsqueeze(1)
    return torch.cat([complex_to_channels(zf), m], 1)
