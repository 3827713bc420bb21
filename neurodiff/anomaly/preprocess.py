"""Bring a brain scan to an anomaly model's grid and back.

A scan from any scanner is resampled to the model's isotropic voxel size on a RAS+ grid, its intensities are
divided by the median inside the brain (so tissue sits near 0 after subtracting 1, background at -1), and its axial
slices are placed on the model's canvas, centred on the brain. Maps computed on the canvas are put back on the
model grid and resampled to the input's grid, so every output overlays the input.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from nibabel.processing import resample_from_to, resample_to_output
from scipy import ndimage

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


def is_skull_stripped(img: nib.Nifti1Image, max_brain_cm3: float = 2500.0) -> bool:
    """Whether a 3D scan looks brain-extracted: exact zeros over more than a quarter of the volume and a non-zero
    region no larger than a brain (``max_brain_cm3``; a head with skull is 3500 cm3 or more, a brain with its CSF
    under 2000), so that a scan with skull padded with zeros (e.g. registered to MNI space) is not taken for one."""
    vol = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    voxel_cm3 = float(np.prod(img.header.get_zooms()[:3])) / 1000
    return bool(np.mean(vol == 0) > 0.25 and np.count_nonzero(vol) * voxel_cm3 <= max_brain_cm3)


def compute_brain_mask(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A brain mask of a 3D scan with or without skull, on the scan's grid (uint8, 1 = brain).

    A skull-stripped scan (:func:`is_skull_stripped`) gives its non-zero region, largest component, holes filled.
    A scan with skull goes through deepbet (Fisch et al. 2024, MIT; a 3D U-Net trained on T1w scans, weights
    shipped in its wheel; on NiChart it matched DLMUSE brain masks with Dice 0.94-0.98 on T1 and 0.81-0.97 on
    FLAIR, ``benchmarks/brain_mask.py``); it runs on a GPU when torch sees one, else in about 5 s on a CPU core.

    Raises
    ------
    InputError
        If no brain is found (an empty or constant image).
    """
    vol = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    if is_skull_stripped(img):
        mask = vol > 0
    else:
        try:
            mask = np.asarray(_deepbet().run(nib.Nifti1Image(vol, img.affine))[1].dataobj) > 0
        except (ValueError, AssertionError):  # deepbet fails on images with nothing brain-like in them
            mask = np.zeros(vol.shape, bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("could not find a brain in the image; give a brain mask with --brain-mask")
    mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    return nib.Nifti1Image(ndimage.binary_fill_holes(mask).astype(np.uint8), img.affine)


@functools.lru_cache(maxsize=1)
def _deepbet():
    from deepbet.bet import BrainExtraction

    with warnings.catch_warnings():  # its TorchScript weights: "torch.jit.load is deprecated"
        warnings.simplefilter("ignore", DeprecationWarning)
        return BrainExtraction(no_gpu=not torch.cuda.is_available())


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
    mask = mask_on_grid(compute_brain_mask(img) if brain is None else brain, grid)
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
