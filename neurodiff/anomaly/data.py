"""Training slices for a model of healthy anatomy: scans on the model's canvas, with known lesions left out of the
loss so that they do not count as healthy."""

from __future__ import annotations

from typing import Iterator

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from ..diffusion.training import Batch
from .preprocess import Prepared, mask_on_grid, prepare, to_canvas


def lesion_on_canvas(lesion: nib.Nifti1Image, prep: Prepared, *, dilate_mm: float = 2.0) -> torch.Tensor:
    """A lesion mask (non-zero = lesion; any grid, see :func:`mask_on_grid`) as ``(N, 1, H, W)`` bool on ``prep``'s
    canvas, dilated by ``dilate_mm``."""
    vol = mask_on_grid(lesion, prep.grid)
    vox = float(prep.grid.header.get_zooms()[0])
    if dilate_mm >= vox:
        vol = ndimage.binary_dilation(vol, iterations=int(dilate_mm // vox))
    return torch.from_numpy(to_canvas(vol[..., prep.slices].astype(np.float32), prep.corner, prep.x.shape[-2:], 0.0)
                            > 0.5)[:, None]


def anomaly_batches(
    x: torch.Tensor,
    healthy: torch.Tensor,
    *,
    batch_size: int = 16,
    seed: int = 0,
) -> Iterator[Batch]:
    """Infinite iterator of CPU :class:`Batch` from canvas slices ``x`` ``(N, 1, H, W)`` and loss weights ``healthy``
    (same shape, bool: False on known lesions). Augmentation: left-right flips and a global intensity factor in
    [0.9, 1.1] (the brain-median normalisation of another scanner is never exact)."""
    rng = np.random.default_rng(seed)
    while True:
        idx = torch.from_numpy(rng.integers(len(x), size=batch_size))
        xb, mb = x[idx], healthy[idx].float()
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)[:, None, None, None]
        xb, mb = torch.where(flip, xb.flip(-2), xb), torch.where(flip, mb.flip(-2), mb)
        gain = torch.from_numpy(rng.uniform(0.9, 1.1, (batch_size, 1, 1, 1)).astype(np.float32))
        xb = torch.where(xb > -1, (xb + 1) * gain - 1, xb)
        yield Batch(xb, None, mb)


def training_slices(
    images: list[nib.Nifti1Image],
    brains: list[nib.Nifti1Image | None],
    lesions: list[nib.Nifti1Image | None],
    *,
    voxel_mm: float,
    canvas: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """All usable slices of the scans as ``x`` ``(N, 1, H, W)`` and the loss weights ``healthy`` (bool)."""
    xs, ms = [], []
    for img, brain, lesion in zip(images, brains, lesions):
        prep = prepare(img, brain, voxel_mm=voxel_mm, canvas=canvas)
        xs.append(prep.x)
        ms.append(torch.ones_like(prep.brain) if lesion is None else ~lesion_on_canvas(lesion, prep))
    return torch.cat(xs), torch.cat(ms)
