"""Training batches for the reconstruction model, simulated from fully sampled magnitude slices.

Each draw: a random slice, random flips, optionally an upsampling (so that the 2 mm training slices also look like
1 mm and sub-millimetre scans, whose brains span 2-3 times the pixels) with white complex noise (a native scan's
k-space periphery holds detail and noise, an interpolated one holds nothing), a random crop to the canvas,
optionally a smooth random phase (real scans are complex), a random sampling mask (kind, acceleration, centre
fraction, phase-encode axis) on the slice's own grid, the zero-filled image, per-slice scaling, and padding to a
common size. Retrospective undersampling of magnitude images flatters results (Shimron et al., PNAS 2022); the phase
augmentation reduces, not removes, that gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from scipy import ndimage

from ..diffusion import Cond
from ..diffusion.training import Batch
from .fft import complex_to_channels, fft2c, ifft2c
from .masks import sampling_mask
from .recon_model import condition, pad, padding, slice_scale


@dataclass(frozen=True)
class MaskPrior:
    """Distribution of training masks: kinds with probabilities, acceleration and centre-fraction ranges."""

    kinds: tuple[tuple[str, float], ...] = (("random", 0.6), ("equispaced", 0.25), ("poisson", 0.15))
    accel: tuple[float, float] = (2.0, 10.0)
    center_fraction: tuple[float, float] = (0.03, 0.1)
    bank_size: int = 32  # Poisson-disc masks are slow to draw: a bank on the canvas is drawn once, centre-cropped


@dataclass(frozen=True)
class ZoomPrior:
    """Resolution augmentation: with probability ``p``, upsample by a factor in ``factor`` (cubic) and add white
    complex Gaussian noise of standard deviation in ``noise`` (units of the slice's 99.5th percentile)."""

    p: float = 0.5
    factor: tuple[float, float] = (1.2, 3.0)
    noise: tuple[float, float] = (0.0, 0.03)


def foreground_slices(volume: np.ndarray, min_fraction: float = 0.08) -> list[np.ndarray]:
    """Axial slices (last axis) of ``volume`` ``(X, Y, Z)`` with at least ``min_fraction`` of voxels above 10% of
    the volume's 99.5th percentile, scaled so that percentile is 1."""
    p = float(np.percentile(volume, 99.5)) or 1.0
    vol = volume.astype(np.float32) / p
    keep = (vol > 0.1).mean(axis=(0, 1)) >= min_fraction
    return [vol[:, :, k] for k in np.flatnonzero(keep)]


def _smooth_phase(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    c = rng.normal(0, 1.0, 6)
    return c[0] * math.pi + c[1] * xx + c[2] * yy + 0.5 * (c[3] * xx * yy + c[4] * xx**2 + c[5] * yy**2)


def _centre_crop(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    i, j = ((n - s) // 2 for n, s in zip(a.shape, shape))
    return a[i : i + shape[0], j : j + shape[1]]


def _random_crop(img: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    i, j = (int(rng.integers(n - s + 1)) if n > s else 0 for n, s in zip(img.shape, size))
    return img[i : i + size[0], j : j + size[1]]


def recon_batches(
    slices: list[np.ndarray],
    *,
    batch_size: int = 8,
    size: tuple[int, int] = (128, 128),
    masks: MaskPrior = MaskPrior(),
    zoom: ZoomPrior = ZoomPrior(),
    p_phase: float = 0.5,
    seed: int = 0,
) -> Iterator[Batch]:
    """Infinite iterator of CPU :class:`Batch`: ``x0`` ``(B, 2, *size)`` scaled complex targets, ``cond.image``
    ``(B, 3, *size)`` zero-filled image and mask. Slices larger than ``size`` are randomly cropped."""
    rng = np.random.default_rng(seed)
    bank: list[np.ndarray] = []
    kinds, probs = zip(*masks.kinds)
    while True:
        xs, cs = [], []
        for _ in range(batch_size):
            img = slices[rng.integers(len(slices))]
            img = img[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            if rng.random() < 0.5:
                img = img.T
            zoomed = rng.random() < zoom.p
            if zoomed:
                img = ndimage.zoom(img, float(rng.uniform(*zoom.factor)), order=3).clip(0)
            img = _random_crop(img, size, rng)
            h, w = img.shape
            x = img.astype(np.complex64)
            if rng.random() < p_phase:
                x = x * np.exp(1j * _smooth_phase(h, w, rng)).astype(np.complex64)
            if zoomed:
                sigma = float(rng.uniform(*zoom.noise))
                x = x + (sigma * (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w)))).astype(np.complex64)
            kind = rng.choice(kinds, p=probs)
            accel = float(rng.uniform(*masks.accel))
            cf = float(rng.uniform(*masks.center_fraction))
            if kind == "poisson":
                if len(bank) < masks.bank_size:
                    bank.append(sampling_mask(size, accel, cf, "poisson", seed=int(rng.integers(2**31))))
                m = _centre_crop(bank[rng.integers(len(bank))], (h, w))
            else:
                m = sampling_mask((h, w), accel, cf, kind, pe_axis=int(rng.integers(2)), seed=int(rng.integers(2**31)))
            xt = torch.from_numpy(x)[None]
            mt = torch.from_numpy(m)
            zf = ifft2c(fft2c(xt) * mt)
            s = slice_scale(zf)[:, None, None]
            pads = padding((h, w), size)
            xs.append(complex_to_channels(pad(xt / s, pads)))
            cs.append(condition(pad(zf / s, pads), pad(mt.float(), pads)))
        yield Batch(torch.cat(xs), Cond(image=torch.cat(cs)))
