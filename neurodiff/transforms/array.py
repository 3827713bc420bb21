"""Array transforms on channel-first images ``(C, H, W)`` or volumes ``(C, H, W, D)`` (slices along the last
axis; k-space is 2D over ``H, W``, centred, orthonormal)."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

from ..mri import fft2c, hard_project, ifft2c, sampling_mask
from ..mri.posterior import calibrated_std, calibration_scale, in_plane_voxel_mm, sample_posterior_slices
from ..nets import divisor
from ..weights import Model, load_model


def _slices(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(C, H, W[, D])`` -> ``(C*D, H, W)`` and the shape to restore."""
    x = torch.as_tensor(img)
    if x.ndim == 3:
        return x, tuple(x.shape)
    if x.ndim == 4:
        return x.permute(0, 3, 1, 2).reshape(-1, *x.shape[1:3]), tuple(x.shape)
    raise ValueError(f"expected a channel-first (C, H, W) or (C, H, W, D) image, got shape {tuple(x.shape)}")


def _unslice(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if len(shape) == 3:
        return x
    c, h, w, d = shape
    return x.reshape(c, d, h, w).permute(0, 2, 3, 1)


class RandKSpaceUndersample(Randomizable, Transform):
    """Simulate undersampled acquisition: a random sampling mask per call (drawn from the transform's random
    state, see ``set_random_state``), applied to the k-space of every slice. Returns the complex zero-filled
    image (same shape as the input); the mask used is in ``self.mask`` ``(H, W)`` bool."""

    def __init__(self, accel: float = 4.0, center_fraction: float = 0.08, mask_type: str = "random", pe_axis: int = 0):
        self.accel, self.center_fraction, self.mask_type, self.pe_axis = accel, center_fraction, mask_type, pe_axis
        self.mask: np.ndarray | None = None

    def randomize(self, shape: tuple[int, int]) -> None:
        self.mask = sampling_mask(shape, self.accel, self.center_fraction, self.mask_type, pe_axis=self.pe_axis,
                                  seed=int(self.R.randint(2**31)))

    def __call__(self, img) -> torch.Tensor:
        x, shape = _slices(img)
        self.randomize(tuple(x.shape[-2:]))
        zf = ifft2c(fft2c(x.to(torch.complex64)) * torch.from_numpy(self.mask))
        return _unslice(zf, shape)


class DiffusionReconstruct(Transform):
    """Posterior-mean reconstruction and per-voxel posterior std from a complex zero-filled image and its mask.

    ``__call__(zerofilled, mask) -> (recon, std)``: magnitude images of the input's shape.
    """

    def __init__(self, model: str | Model = "recon-t1-flair-tiny", samples: int = 8, steps: int = 20,
                 eta: float = 1.0, seed: int = 0, device: str = "cpu"):
        self.model = model if isinstance(model, Model) else load_model(model, device)
        self.samples, self.steps, self.eta, self.seed = samples, steps, eta, seed

    def __call__(self, zerofilled, mask) -> tuple[torch.Tensor, torch.Tensor]:
        zf, shape = _slices(zerofilled)
        zf = zf.to(torch.complex64)
        m = torch.as_tensor(np.asarray(mask)).bool().reshape(zf.shape[-2:])
        y = fft2c(zf) * m
        den = self.model.denoiser
        gen = torch.Generator(device=next(den.parameters()).device).manual_seed(self.seed)
        post = sample_posterior_slices(
            den, zf, m, lambda a, b: lambda z: hard_project(z, y[a:b], m), n_samples=self.samples, steps=self.steps,
            eta=self.eta, multiple=divisor(self.model.card["architecture"]["size"]), generator=gen,
            canvas=tuple(self.model.card.get("training", {}).get("image_size", (0, 0))),
        )
        cal = self.model.card.get("calibration", {})
        affine = getattr(zerofilled, "affine", None)  # a MetaTensor's geometry picks the calibration scale
        voxel = None if affine is None else in_plane_voxel_mm(affine)
        std = calibrated_std(post.mag_std, calibration_scale(cal, voxel), float(cal.get("smooth_voxels", 0.0)))
        return _unslice(post.mag_mean, shape), _unslice(std, shape)


class AnomalyScore(Transform):
    """Per-voxel anomaly score of a channel-first brain volume ``(1, X, Y, Z)`` under a healthy-anatomy model.

    The volume's geometry comes from its ``affine`` (a MONAI ``MetaTensor`` from ``LoadImage``) or the ``affine``
    argument (required for a plain tensor); a brain mask ``(1, ...)`` may be on its own grid (its ``affine``). ``__call__(img, brain=None) -> score``: ``(1, X, Y, Z)`` in healthy-reference standard deviations,
    a ``MetaTensor`` carrying the input's metadata when the input is one.
    """

    def __init__(self, contrast: str | None = "flair", model: str | None = None, fpr: float = 0.01,
                 method: str | None = None, seed: int = 0, device: str = "cpu"):
        self.kwargs = dict(contrast=contrast, model=model, fpr=fpr, method=method, seed=seed, device=device)

    def __call__(self, img, brain=None, affine=None) -> torch.Tensor:
        import nibabel as nib
        from monai.data import MetaTensor

        from ..tasks.anomaly import detect

        x = torch.as_tensor(img)
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"expected a channel-first (1, X, Y, Z) volume, got shape {tuple(x.shape)}")
        if affine is None and not hasattr(img, "affine"):
            raise ValueError("a plain tensor has no geometry: pass affine= (voxel to world, mm)")
        aff = np.asarray(affine if affine is not None else img.affine, dtype=float)
        vol = nib.Nifti1Image(x[0].detach().float().cpu().numpy(), aff)
        b_aff = np.asarray(getattr(brain, "affine", aff), dtype=float)
        mask = None if brain is None else nib.Nifti1Image(torch.as_tensor(brain)[0].float().cpu().numpy(), b_aff)
        score = torch.from_numpy(detect(vol, brain_mask=mask, **self.kwargs).score)[None]
        return MetaTensor(score, meta=dict(img.meta)) if isinstance(img, MetaTensor) else score
