"""Bring a brain scan to an anomaly model's grid and back.

A scan from any scanner is resampled to the model's isotropic voxel size on a RAS+ grid, its intensities are
divided by the median inside the brain (so tissue sits near 0 after subtracting 1, background at -1), and its axial
slices are placed on the model's canvas, centred on the brain. Maps computed on the canvas are put back on the
model grid and resampled to the input's grid, so every output overlays the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from nibabel.processing import resample_from_to, resample_to_output
from scipy import ndimage
from skimage.filters import threshold_otsu

from ..errors import InputError


@dataclass
class Prepared:
    """A scan on the model's canvas.

    Attributes
    ----------
    x
        ``(N, 1, H, W)`` float32 axial slices, ``image / brain median - 1`` inside the brain, -1 outside.
    brain
        ``(N, 1, H, W)`` bool brain mask on the canvas.
    depth
        ``(N, 1, H, W)`` float32 distance in mm from each brain voxel to the nearest voxel outside the brain, in 3D
        on the model grid (0 outside): healthy statistics differ near the brain's edge, so the reference is kept per
        depth.
    slices
        ``(N,)`` indices of these slices along the third (superior) axis of ``grid``.
    grid
        The model-grid image (RAS+, isotropic ``voxel_mm``) that canvas maps are pasted back into.
    corner
        ``(2,)`` position of the canvas's first voxel on the grid's first two axes (may be negative: padding).
    scale
        The brain median intensity that was divided out (input units).
    """

    x: torch.Tensor
    brain: torch.Tensor
    depth: torch.Tensor
    slices: np.ndarray
    grid: nib.Nifti1Image
    corner: tuple[int, int]
    scale: float


def is_skull_stripped(vol: np.ndarray) -> bool:
    """Whether a scan looks brain-extracted: exact zeros over more than a quarter of the volume."""
    return bool(np.mean(np.nan_to_num(vol) == 0) > 0.25)


def compute_brain_mask(vol: np.ndarray, zooms: tuple[float, ...], skull_stripped: bool | None = None) -> np.ndarray:
    """A brain mask ``(X, Y, Z)`` bool for a 3D scan with or without skull.

    A scan whose background is exactly zero over more than a quarter of the volume is taken as skull-stripped:
    the mask is its non-zero region with holes filled. Otherwise the head is thresholded (Otsu), eroded by 6 mm to
    cut the brain from the skull and scalp, the largest component kept, dilated back and filled. This is a
    heuristic (Dice 0.3-0.7 against DLMUSE brain masks on NiChart FLAIR scans with skull); pass a mask from a
    dedicated tool (e.g. SynthStrip, HD-BET) for such scans. ``skull_stripped`` overrides the zero-fraction test
    (decide it on the scan as acquired: resampling an oblique scan adds zeros outside its field of view).
    """
    finite = np.nan_to_num(vol)
    if is_skull_stripped(finite) if skull_stripped is None else skull_stripped:
        mask = finite > 0
    else:
        head = finite > threshold_otsu(finite)
        radius = np.maximum(1, np.round(6.0 / np.asarray(zooms[:3], float))).astype(int)
        ball = _ellipsoid(radius)
        core = ndimage.binary_erosion(head, ball)
        labels, n = ndimage.label(core)
        if n == 0:
            raise InputError("could not find the brain in the image; give a brain mask with --brain-mask")
        sizes = ndimage.sum(core, labels, range(1, n + 1))
        mask = ndimage.binary_dilation(labels == 1 + int(np.argmax(sizes)), ball) & head
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("the image has no non-zero voxels to find a brain in")
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def _ellipsoid(radius: np.ndarray) -> np.ndarray:
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius)) <= 1


def mask_on_grid(mask: nib.Nifti1Image, grid: nib.Nifti1Image) -> np.ndarray:
    """A mask (non-zero = inside; labels and 0-255 masks too) on another image's grid: bool ``grid.shape``, by
    linear interpolation of the binary mask and a 0.5 threshold."""
    m = nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.float32), mask.affine)
    return np.asarray(resample_from_to(m, grid, order=1).dataobj) > 0.5


def prepare(
    img: nib.Nifti1Image,
    brain: nib.Nifti1Image | None = None,
    *,
    voxel_mm: float = 2.0,
    canvas: tuple[int, int] = (96, 96),
    min_brain_voxels: int = 50,
) -> Prepared:
    """Resample, brain-mask, normalise and slice a 3D scan for a model of ``canvas`` slices at ``voxel_mm``.

    Parameters
    ----------
    img
        3D scan (any orientation and voxel size), finite values.
    brain
        Brain mask (non-zero = brain) on any grid overlapping the scan (resampled with linear interpolation,
        threshold 0.5); computed with :func:`compute_brain_mask` when None.
    min_brain_voxels
        Axial slices with fewer brain voxels on the model grid are left out (their maps are zero).

    Raises
    ------
    InputError
        If the brain mask is empty or has a different field of view, or the brain is not brighter than zero.
    """
    grid = resample_to_output(img, voxel_sizes=voxel_mm, order=1)
    vol = np.asarray(grid.dataobj, dtype=np.float32)
    if brain is None:
        mask = compute_brain_mask(vol, grid.header.get_zooms(), is_skull_stripped(np.asarray(img.dataobj)))
    else:
        mask = mask_on_grid(brain, grid)
    if mask.sum() < min_brain_voxels:
        raise InputError("the brain mask is empty on the image's grid (does it belong to this scan?)")
    scale = float(np.median(vol[mask]))
    if not scale > 0:
        raise InputError("the median intensity inside the brain mask is not positive; is this a magnitude image?")
    x = np.where(mask, vol / scale - 1.0, -1.0).astype(np.float32)
    keep = np.flatnonzero(mask.sum((0, 1)) >= min_brain_voxels)
    if not len(keep):
        raise InputError(f"no axial slice has {min_brain_voxels} brain voxels at {voxel_mm} mm; is the brain mask "
                         "(or the image) too small?")
    ij = np.argwhere(mask.any(2))
    centre = (ij.min(0) + ij.max(0)) // 2
    corner = (int(centre[0] - canvas[0] // 2), int(centre[1] - canvas[1] // 2))
    xs = to_canvas(x[..., keep], corner, canvas, fill=-1.0)
    ms = to_canvas(mask[..., keep].astype(np.float32), corner, canvas, fill=0.0) > 0.5
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=voxel_mm)[1:-1, 1:-1, 1:-1]
    ds = to_canvas(depth[..., keep].astype(np.float32), corner, canvas, fill=0.0)
    return Prepared(torch.from_numpy(xs)[:, None], torch.from_numpy(ms)[:, None], torch.from_numpy(ds)[:, None], keep,
                    grid, corner, scale)


def to_canvas(vol: np.ndarray, corner: tuple[int, int], canvas: tuple[int, int], fill: float) -> np.ndarray:
    """``(X, Y, N)`` -> ``(N, H, W)``: the canvas window at ``corner``, padded with ``fill`` outside the volume."""
    out = np.full((vol.shape[2],) + tuple(canvas), fill, np.float32)
    src, dst = _overlap(vol.shape[:2], corner, canvas)
    out[(slice(None),) + dst] = np.moveaxis(vol[src], 2, 0)
    return out


def _overlap(shape: tuple[int, ...], corner: tuple[int, int], canvas: tuple[int, int]):
    src, dst = [], []
    for n, c, w in zip(shape, corner, canvas):
        lo, hi = max(c, 0), min(c + w, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - c, hi - c))
    return tuple(src), tuple(dst)


def to_grid(maps: np.ndarray, prep: Prepared) -> np.ndarray:
    """Canvas maps ``(N, H, W)`` pasted into a zero volume on the model grid ``(X, Y, Z)``."""
    out = np.zeros(prep.grid.shape[:3], np.float32)
    src, dst = _overlap(out.shape[:2], prep.corner, maps.shape[1:])
    out[src + (prep.slices,)] = np.moveaxis(maps[(slice(None),) + dst], 0, 2)
    return out


def to_input(maps: np.ndarray, prep: Prepared, img: nib.Nifti1Image, *, order: int = 1) -> np.ndarray:
    """Canvas maps ``(N, H, W)`` on the input scan's grid ``img.shape`` (linear, or nearest with ``order=0``)."""
    vol = nib.Nifti1Image(to_grid(maps, prep), prep.grid.affine)
    return np.asarray(resample_from_to(vol, (img.shape[:3], img.affine), order=order).dataobj, dtype=np.float32)
