"""MRI reconstruction with posterior uncertainty: load -> undersample or read k-space -> sample -> result.

Two kinds of input:

- an image (2D/3D NIfTI, magnitude or complex): k-space is simulated per slice over two voxel axes
  (retrospective undersampling), and the image is the reference for quality metrics;
- measured k-space (``.dat`` twix, ``.h5`` fastMRI or ISMRMRD, ``.cfl`` BART, complex NIfTI with ``kspace=True``):
  the sampling pattern is read from the data (zeros) unless an acceleration is given for fully sampled data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch

from ..errors import InputError, ModelError
from ..io import ImageRecord, load_image, negative_offset
from ..io.bids import split_extension
from ..mri import (
    MultiCoil, check_mask, compress_coils, estimate_sensitivities, fft2c, ifft2c, kspace_echoes,
    kspace_noise_variance, mask_from_kspace, misfit_damping_factor, multicoil_project, noise_misfit, noisy_copies,
    read_kspace, sampling_mask, snr_damping, soft_project,
)
from ..mri.consistency import phase_constrained
from ..mri.masks import (
    calibration_size, is_full_block, is_uncentred, mirrored, partial_fourier_axis, support_fraction,
    symmetric_centre_window,
)
from ..mri.metrics import foreground, in_slice_spearman, slice_metrics, uncertainty_metrics
from ..mri.posterior import (
    Posterior, Projection, calibrated_std, calibration_scale, in_plane_voxel_mm, kspace_share_noise_std,
    measured_kspace_std, sample_posterior_slices, sample_views,
)
from ..mri.whitening import prewhiten
from ..nets import divisor
from ..weights import Model, load_model
from .common import resolve_device

DEFAULT_MODEL = "recon-t1-flair-tiny"
# card tasks of reconstruction models: conditioned on the zero-filled image and mask, or an unconditional prior
RECON_TASKS = ("recon", "recon-prior")
KSPACE_EXTENSIONS = (".dat", ".h5", ".hdf5", ".cfl", ".hdr")
Progress = Callable[[int, int], None]  # (done, total) network evaluations
# Multi-coil data consistency: CG iterations per sampling step and the relative error of x0-hat that sets the
# noise-adaptive damping; the same for the finished samples, fitted further, their damping multiplied by
# misfit_damping_factor of what they leave of the data unexplained in units of the noise (noise_misfit). Chosen on
# the twix phantom and simulated multi-coil brains (benchmarks/recon_final_fit.py; docs/recon.md, "How hard to fit
# the finished samples").
MULTICOIL_CG_STEPS, MULTICOIL_REL_ERROR = 5, 0.15
MULTICOIL_FINAL_CG_STEPS, MULTICOIL_FINAL_REL_ERROR = 30, 0.1


@dataclass
class ReconResult:
    """Outputs of :func:`reconstruct`, arrays in the output voxel order ``(X, Y, Z)`` and the input's units.

    Attributes
    ----------
    recon
        Posterior mean (magnitude float32 for magnitude/raw input, complex64 for complex image input).
    uncertainty
        Per-voxel posterior standard deviation of the magnitude (calibrated as the model card says).
    zerofilled
        Zero-filled reconstruction (same kind as ``recon``).
    mask
        ``(X, Y, Z)`` uint8 k-space sampling mask used, centred like the k-space, broadcast over slices.
    samples
        ``(X, Y, Z, N)`` posterior samples (magnitude) when requested.
    record
        Geometry to write the outputs with.
    metrics
        Against the fully sampled reference when there is one: ``{"recon": {...}, "zerofilled": {...},
        "uncertainty": {...}}``.
    reference
        The fully sampled magnitude image the metrics compare with, when there is one.
    """

    recon: np.ndarray
    uncertainty: np.ndarray
    zerofilled: np.ndarray
    mask: np.ndarray
    samples: np.ndarray | None
    record: ImageRecord
    metrics: dict | None
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    reference: np.ndarray | None = None


def is_kspace_file(path: Path) -> bool:
    """Whether ``path`` names a raw k-space format (by extension)."""
    return split_extension(path.name)[1].lower() in KSPACE_EXTENSIONS


def echoes_to_reconstruct(path: Path, spec: str | None, kspace: bool = False) -> list[int | None]:
    """The echoes an ``--echo`` value asks for: ``None`` -> ``[None]`` (the file's only echo); ``"N"`` -> ``[N]``;
    ``"all"`` -> every echo of a multi-echo twix or ISMRMRD file (1-based), ``[None]`` when it holds one (its outputs
    then carry no ``echo-`` entity, as without ``--echo``). ``kspace``: the input is k-space whatever its extension
    (a complex NIfTI, one echo)."""
    if spec is None:
        return [None]
    if spec.strip().lower() == "all":
        if not (kspace or is_kspace_file(path)):
            raise InputError("--echo all reconstructs each echo of multi-echo raw k-space (twix, ISMRMRD); the "
                             "input is an image")
        echoes = list(kspace_echoes(path))
        return echoes if len(echoes) > 1 else [None]
    try:
        echo = int(spec)
    except ValueError:
        echo = 0
    if echo < 1:
        raise InputError(f"--echo takes an echo number (1 = the first) or all, got {spec!r}")
    return [echo]


def parse_slices(spec: str | None, n: int) -> slice:
    """``"A:B"`` (Python-style, either end optional, negative counts from the end) -> a slice within ``n``
    slices; None -> all. Bounds beyond the ``n`` slices raise :class:`InputError`."""
    if not spec:
        return slice(0, n)
    try:
        a, b = (int(v) if v.strip() else None for v in spec.split(":"))
    except ValueError:
        raise InputError(f"--slices must look like A:B (e.g. 40:48), got {spec!r}") from None
    if any(v is not None and not -n <= v <= n for v in (a, b)):
        raise InputError(f"--slices {spec} reaches beyond the {n} slices (0:{n})")
    sl = slice(*slice(a, b).indices(n)[:2])
    if sl.stop <= sl.start:
        raise InputError(f"--slices {spec} selects no slice of {n}")
    return sl


def slices_per_batch(shape: tuple[int, int], device: torch.device) -> int:
    """Default number of slices per network batch for slices of ``shape`` ``(H, W)`` on ``device``."""
    budget = (128 if device.type == "cuda" else 1) * 128 * 128  # on a CPU small batches run fastest per sample
    return max(1, budget // (shape[0] * shape[1]))


MASK_LAYOUTS = ("auto", "centred", "corner")


def _load_mask(path: Path, shape: tuple[int, int], slice_axis: int, layout: str = "auto"
               ) -> tuple[np.ndarray, list[str]]:
    """A ``--mask`` file as one ``(H, W)`` bool plane, centred, and notes on what was changed. ``layout``: where the
    file has k-space's centre: ``"centred"`` (in the middle, kept), ``"corner"`` (plain ``fft2`` order, fftshifted)
    or ``"auto"`` (fftshifted where :func:`~neurodiff.mri.masks.is_uncentred` says it is in the corners)."""
    data, _ = load_image(path, ndim=(2, 3), name="mask")
    if data.ndim == 3 and data.shape[slice_axis] != 1:
        planes = np.moveaxis(data, slice_axis, -1)
        if not (planes == planes[..., :1]).all():
            raise InputError(f"mask {path} differs between slices; give one plane (one mask for every slice)")
        data = planes[..., 0]
    elif data.ndim == 3:
        data = np.moveaxis(data, slice_axis, -1)[..., 0]
    if not np.isin(data, (0, 1)).all():
        raise InputError(f"mask {path} is not binary (values other than 0 and 1)")
    check_mask(data, shape)
    if layout == "corner" or (layout == "auto" and is_uncentred(data)):
        how = "as --mask-layout corner says" if layout == "corner" else \
            "judged by its density; --mask-layout centred keeps it as it is"
        return np.fft.fftshift(data.astype(bool)), [f"the mask {path.name} has k-space's centre in its corners: it "
                                                     f"was fftshifted to centre it ({how})"]
    return data.astype(bool), []


@dataclass(frozen=True)
class Undersampling:
    """Retrospective undersampling of a fully sampled input: a ``--mask`` file, or a mask drawn by
    :func:`~neurodiff.mri.masks.sampling_mask` (``accel``, ``mask_type``, ``center_fraction``, ``pe_axis``,
    ``seed``). ``layout`` says where a mask file has k-space's centre (:func:`_load_mask`)."""

    accel: float | None = None
    mask_type: str = "random"
    center_fraction: float = 0.08
    pe_axis: int = 0
    seed: int = 0
    mask_file: Path | None = None
    layout: str = "auto"

    @property
    def requested(self) -> bool:
        """Whether a mask file or an acceleration was given."""
        return self.mask_file is not None or self.accel is not None

    def mask(self, hw: tuple[int, int], slice_axis: int = 2) -> tuple[np.ndarray, list[str]]:
        """The ``(H, W)`` bool mask for slices of shape ``hw`` taken along ``slice_axis`` of the mask file, and
        notes on what was changed to it."""
        if self.mask_file is not None:
            return _load_mask(self.mask_file, hw, slice_axis, self.layout)
        return sampling_mask(hw, self.accel, self.center_fraction, self.mask_type, pe_axis=self.pe_axis,
                             seed=self.seed), []


@dataclass
class _Problem:
    """A reconstruction problem in (S, H, W) slice order."""

    zf: torch.Tensor  # (S, H, W) complex
    mask: np.ndarray  # (H, W) bool
    project_for: Callable[[int, int], Projection]  # slices a:b -> their data consistency
    group: int | None  # slices per batch the projection allows (None: any)
    reference: np.ndarray | None  # (S, H, W) magnitude, fully sampled
    record: ImageRecord
    complex_output: bool
    slice_axis: int
    fully_sampled: bool = False  # nothing to infer: the output is the (coil-combined) inverse FFT
    info: dict = field(default_factory=dict)  # recorded in the parameters
    # slices a:b -> the data consistency of the final samples, when it differs (measured k-space: each sample
    # fits its own noisy copy of the data; the reconstruction is then the magnitude of the complex mean)
    final_for: Callable[[int, int], Projection] | None = None
    offset: float = 0.0  # added back to magnitude outputs (a real image with negative values was shifted by -offset)
    # measured k-space, (S,) image units: the magnitude noise a fully sampled scan holds in the measured and in the
    # unmeasured k-space (see mri.posterior.measured_kspace_std)
    measured_std: np.ndarray | None = None
    unmeasured_std: np.ndarray | None = None
    voxel_mm: float | None = None  # in-plane voxel size (geometric mean), when known: picks the calibration scale


def _image_problem(src: Path | nib.Nifti1Image, slice_axis: int, slices: str | None, how: Undersampling,
                   dc_weight: float) -> _Problem:
    data, record = load_image(src, ndim=(2, 3))
    if data.ndim == 2:
        data, slice_axis = data[:, :, None], 2
    if slice_axis not in (0, 1, 2):
        raise InputError(f"--slice-axis must be 0, 1 or 2, got {slice_axis}")
    sl = parse_slices(slices, data.shape[slice_axis])
    if (sl.start, sl.stop) != (0, data.shape[slice_axis]):
        index = [slice(None)] * 3
        index[slice_axis] = sl
        data, record = load_image(record_image(data, record).slicer[tuple(index)], ndim=(3,))
    if not np.any(data):
        raise InputError("the input image is all zero: there is nothing to reconstruct")
    hw = tuple(int(n) for n in np.delete(data.shape, slice_axis))
    mask, notes = how.mask(hw, slice_axis)
    info: dict = {"slice_range": [sl.start, sl.stop]}
    if notes:
        info["mask_notes"] = notes
    offset = _negative_offset(data, mask)
    if offset:
        data = data - offset
        info["intensity_offset"] = offset
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(data, slice_axis, 0))).to(torch.complex64)
    y = fft2c(x) * torch.from_numpy(mask)
    project_for = _single_coil(y, mask, dc_weight)
    pf = partial_fourier_axis(mask) if how.mask_file is not None else None  # (drawn masks are never one-sided)
    if pf is not None:
        project_for = _phase_constrained_for(project_for, ifft2c(y * _window(mask, pf)).angle())
        info["partial_fourier_axis"] = pf
    return _Problem(ifft2c(y), mask, project_for, None, x.abs().numpy(), record,
                    bool(np.iscomplexobj(data)), slice_axis, bool(mask.all()), info, offset=offset,
                    voxel_mm=in_plane_voxel_mm(record.affine, slice_axis))


def _window(mask: np.ndarray, axis: int) -> torch.Tensor:
    """:func:`~neurodiff.mri.masks.symmetric_centre_window` as a tensor."""
    return torch.from_numpy(symmetric_centre_window(mask, axis))


def _phase_constrained_for(project_for: Callable[[int, int], Projection], phase: torch.Tensor
                           ) -> Callable[[int, int], Projection]:
    """Partial Fourier: slices ``a:b``'s data consistency with their ``phase`` ``(S, H, W)`` imposed first
    (:func:`~neurodiff.mri.consistency.phase_constrained`)."""
    return lambda a, b: phase_constrained(project_for(a, b), phase[a:b])


def _negative_offset(data: np.ndarray, mask: np.ndarray) -> float:
    """:func:`~neurodiff.io.negative_offset` of an image to undersample with ``mask``: the shift is exact only
    because a constant changes nothing but the k-space centre, so the mask must sample it."""
    low = negative_offset(data)
    h, w = mask.shape
    if low and not mask[h // 2, w // 2]:
        raise InputError(f"the image has negative values (down to {low:.4g}) and the mask does not sample the "
                         "k-space centre: give a magnitude image, or a mask that samples the centre")
    return low


def _single_coil(y: torch.Tensor, mask: np.ndarray, dc_weight: float) -> Callable[[int, int], Projection]:
    """Data consistency of slices ``a:b`` of single-coil k-space ``y`` ``(S, H, W)``."""
    mt = torch.from_numpy(mask)
    return lambda a, b: lambda z: soft_project(z, y[a:b].to(z.device), mt, dc_weight)


def record_image(data: np.ndarray, record: ImageRecord) -> nib.Nifti1Image:
    """An in-memory NIfTI image of ``data`` with ``record``'s geometry (for slicing with nibabel)."""
    return nib.Nifti1Image(data, record.affine, record.header)


def _kspace_problem(path: Path, how: Undersampling, slices: str | None, dc_weight: float, echo: int | None = None,
                    virtual_coils: int | str | None = None) -> _Problem:
    ks = read_kspace(path, echo)
    sl = parse_slices(slices, ks.data.shape[0])
    measured = mask_from_kspace(ks.data)  # (over every slice)
    # only the slices asked for are whitened and compressed (the compression's components are theirs); a copy of
    # them, so that the other slices' memory is freed
    selected = ks.data if (sl.start, sl.stop) == (0, len(ks.data)) else ks.data[sl].copy()
    ks, whitening = prewhiten(replace(ks, data=selected))
    compression = None
    if virtual_coils is not None:
        ks, compression = compress_coils(ks, None if virtual_coils == "auto" else virtual_coils)
    data = torch.from_numpy(ks.data)  # (S, C, H, W)
    hw = tuple(data.shape[-2:])
    reference, full, fully_sampled, mask_notes = None, None, False, []
    if how.requested:
        if not is_full_block(measured):
            raise InputError("the k-space is already undersampled: drop --accel/--mask to use its own sampling")
        full = data  # (zero-padded edges or partial Fourier stay unsampled)
        drawn, mask_notes = how.mask(hw)
        mask = measured & drawn
        data = data * torch.from_numpy(mask)
    pf = partial_fourier_axis(measured if how.mask_file is None else mask)  # (drawn masks are never one-sided)
    if full is None:  # zero-padded edges count as full; partial Fourier data are reconstructed
        mask, fully_sampled = measured, is_full_block(measured) and pf is None
    mt = torch.from_numpy(mask)
    c = data.shape[1]
    noise_var = [kspace_noise_variance(d, mask) for d in data]
    if c == 1:
        zf, group = ifft2c(data[:, 0]), None
        combine = lambda k: ifft2c(k[:, 0])  # noqa: E731

        def fit(z: torch.Tensor, y: torch.Tensor, a: int, final: bool) -> torch.Tensor:  # y ([N,] S, 1, H, W)
            return soft_project(z, y[..., 0, :, :], mt, dc_weight)

        if full is not None:
            reference = ifft2c(full[:, 0]).abs().numpy()
    else:
        try:
            calibration_size(mask)
        except InputError:
            hint = (" (the --mask file must sample it)" if how.mask_file is not None
                    else " (raise --center-fraction)" if how.accel is not None else "")
            raise InputError("multi-coil k-space needs a fully sampled centre (3 x 3 samples or more) to estimate "
                             f"coil sensitivities from; this sampling has none{hint}") from None
        # from each slice's calibration centre, ESPIRiT's subspace above the noise
        sens = [estimate_sensitivities(d, noise_std=v**0.5) for d, v in zip(data, noise_var)]
        combine = lambda k: torch.stack([MultiCoil(mt, s).A_adjoint(d) for s, d in zip(sens, k)])  # noqa: E731
        zf = combine(data)
        group = 1  # one slice per batch: each has its own sensitivities

        damping = [snr_damping(d, mask, MULTICOIL_REL_ERROR, v) for d, v in zip(data, noise_var)]
        final_damping = [snr_damping(d, mask, MULTICOIL_FINAL_REL_ERROR, v) for d, v in zip(data, noise_var)]
        # where ESPIRiT cropped the maps (outside the object) no coil sees anything: the image is 0 there
        inside = [s.abs().sum(0) > 0 for s in sens]

        # each slice's finished samples' noise misfit, from the first batch of them (None: noise-free data)
        misfit: list[float | None] = [None] * len(data)

        def fit(z: torch.Tensor, y: torch.Tensor, a: int, final: bool) -> torch.Tensor:  # y ([N,] 1, C, H, W)
            steps, lam = MULTICOIL_CG_STEPS, damping[a]
            if final:  # (see MULTICOIL_FINAL_REL_ERROR)
                if misfit[a] is None and noise_var[a] > 0:
                    (misfit[a],) = _rounded([noise_misfit(z, data[a], mt, sens[a], noise_var[a])])
                factor = 1.0 if misfit[a] is None else misfit_damping_factor(misfit[a])
                steps, lam = MULTICOIL_FINAL_CG_STEPS, final_damping[a] * factor
            return multicoil_project(z, y, mt, sens[a], steps, lam) * inside[a].to(z.device)

        if full is not None:
            ones = torch.ones(hw, dtype=torch.bool)
            reference = torch.stack([MultiCoil(ones, s).A_adjoint(f) for s, f in zip(sens, full)]).abs().numpy()
    noise_std = [v**0.5 for v in noise_var]
    # the fully sampled scan measures what a retrospective mask was drawn from, else the sampling's extent
    # (zero-padded edges and elliptical corners hold no noise)
    f = float(mask.mean())
    support = float(mirrored(measured, pf).mean()) if full is not None else support_fraction(mirrored(mask, pf))
    sigma = torch.tensor(noise_std)[:, None, None, None]  # (S, 1, 1, 1)

    def project_for(a: int, b: int) -> Projection:
        return lambda z: fit(z, data[a:b].to(z.device), a, False)

    def final_for(a: int, b: int) -> Projection:  # each sample fits its own noisy copy of the data (seeded by --seed)
        gens: dict[torch.device, torch.Generator] = {}

        def project(z: torch.Tensor) -> torch.Tensor:  # z (N, b - a, H, W)
            g = gens.setdefault(z.device, torch.Generator(device=z.device).manual_seed(how.seed + a))
            noisy = noisy_copies(data[a:b].to(z.device), mt, sigma[a:b].to(z.device), z.shape[0], g)
            return fit(z, noisy, a, True)

        return project

    vox = ks.voxel_size or (1.0, 1.0, 1.0)
    affine = ks.affine if ks.affine is not None else np.diag([*vox, 1.0])
    shape = (hw[0], hw[1], data.shape[0])
    _, record = load_image(nib.Nifti1Image(np.zeros(shape, np.float32), affine), ndim=(3,))
    record = ImageRecord(record.affine, record.header, shape, path, None, False)
    info = {"slice_range": [sl.start, sl.stop], "kspace_noise_std": _rounded(noise_std),
            "axes": list(ks.axes)}
    if ks.notes:
        info["kspace_reader_notes"] = list(ks.notes)
    if mask_notes:
        info["mask_notes"] = mask_notes
    if ks.voxel_size is None:
        info["geometry"] = "unknown (the file has no header): 1 mm voxels assumed, readout oversampling kept"
    if c > 1:
        info["multicoil_damping"] = [round(d, 5) for d in damping]
        if not fully_sampled:  # (filled in as the slices finish)
            info["multicoil_final_misfit"] = misfit
        info["coil_maps_outside_object"] = [round(1 - float(m.float().mean()), 4) for m in inside]
        info["coil_noise"] = whitening
    if compression is not None and compression["coils"] > 1:
        info["coil_compression"] = compression
    if pf is not None:
        phase = combine(data * _window(mask, pf)).angle()
        project_for, final_for = (_phase_constrained_for(p, phase) for p in (project_for, final_for))
        info["partial_fourier_axis"] = pf
        if full is not None:
            info["reference"] = "the fully sampled data as measured: the skipped side of partial Fourier zero-filled"
    return _Problem(zf, mask, project_for, group, reference, record, False, 2, fully_sampled, info, final_for,
                    measured_std=kspace_share_noise_std(noise_std, f),
                    unmeasured_std=kspace_share_noise_std(noise_std, max(support - f, 0.0)),
                    voxel_mm=None if ks.voxel_size is None else in_plane_voxel_mm(np.diag([*vox, 1.0])))


def reconstruct(
    src: str | Path | nib.Nifti1Image,
    *,
    kspace: bool | None = None,
    accel: float | None = None,
    mask_type: str = "random",
    center_fraction: float = 0.08,
    mask: str | Path | None = None,
    mask_layout: str = "auto",
    pe_axis: int = 0,
    slice_axis: int = 2,
    slices: str | None = None,
    echo: int | None = None,
    virtual_coils: int | str | None = None,
    samples: int = 8,
    steps: int = 20,
    eta: float = 1.0,
    views: int = 8,
    dc_weight: float = math.inf,
    model: str | Path | Model = DEFAULT_MODEL,
    device: str = "auto",
    seed: int = 0,
    save_samples: bool = False,
    batch_slices: int | None = None,
    progress: Progress | None = None,
) -> ReconResult:
    """Reconstruct an image from undersampled k-space with a diffusion model and data consistency at every step.

    Parameters
    ----------
    src
        Image NIfTI (path or nibabel image) or k-space file.
    kspace
        Treat a NIfTI input as complex k-space ``(H, W[, S][, C])``; default: by extension.
    accel, mask_type, center_fraction, pe_axis, seed
        Retrospective undersampling: acceleration (image default 4; for k-space only when fully sampled, where
        a filled rectangle of k-space, zero-padded or partial Fourier, counts as fully sampled and the padding stays
        unsampled; fully sampled k-space without ``accel``/``mask`` is returned as its coil combination, with zero
        uncertainty and no sampling, unless one side of it is skipped: partial Fourier is reconstructed),
        ``random``/``equispaced`` 1D lines along ``pe_axis`` (0 = first in-plane axis) or 2D ``poisson``, the fully
        sampled centre fraction, and the seed of the mask and of the sampler.
    mask
        NIfTI sampling mask in the image's voxel order, centred like the k-space (one written with DC in its corners
        is fftshifted, :func:`~neurodiff.mri.masks.is_uncentred`, noted in ``mask_notes``); one plane or identical
        planes.
    mask_layout
        Where the mask file has k-space's centre: ``"auto"`` (judged as above), ``"centred"`` or ``"corner"``.
    slice_axis
        Voxel axis along which slices are taken (k-space is 2D over the other two).
    slices
        ``"A:B"`` subset of slices (outputs cover only these; the affine is shifted to match).
    echo
        Echo (contrast) of a multi-echo twix or ISMRMRD file, 1 = the first; required when there are several.
    virtual_coils
        Multi-coil k-space is compressed to this many virtual coils after prewhitening
        (:func:`~neurodiff.mri.compression.compress_coils`, the components of the ``slices`` reconstructed);
        ``"auto"``: to the coil combinations whose signal stands above the noise; None (default): every coil is
        kept.
    samples, steps, eta
        Number of posterior samples (drawn as one batch per group of slices), DDIM steps and stochasticity.
    views
        Spread the samples over this many symmetries of each slice (:func:`~neurodiff.mri.posterior.sample_posterior`;
        8, one sample on each mirror image and rotation of the slice, as the shipped calibration was fitted; 2:
        half of them on the transposed slice; 1: all on the slice as given).
    dc_weight
        Data-consistency weight on measured k-space (single coil): ``inf`` replaces it by the data (noiseless
        data), a finite ``w`` blends ``(F x + w y) / (1 + w)`` for noisy data. Multi-coil data use conjugate
        gradients damped by the noise level read from the outermost k-space samples
        (:func:`~neurodiff.mri.snr_damping`).
        Where the data's own sampling or the mask file skips one side of k-space (partial Fourier,
        :func:`~neurodiff.mri.masks.partial_fourier_axis`), each estimate first takes the phase of the symmetric
        centre (:func:`~neurodiff.mri.consistency.phase_constrained`).
    model
        Shipped model name, a user model path, or a loaded :class:`~neurodiff.weights.Model`: a conditional model
        (card task ``recon``) or an unconditional prior (``recon-prior``: prior-only sampling).
    batch_slices
        Slices per network batch (each with ``samples`` samples); default: one slice of 128 x 128 on a CPU,
        128 on a GPU, fewer for larger slices.
    progress
        Called with ``(done, total)`` network evaluations.
    """
    t0 = time.time()
    if samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    if steps < 1 or steps > 1000:
        raise InputError(f"--steps must be in 1..1000, got {steps}")
    if not dc_weight > 0:
        raise InputError(f"--dc-weight must be > 0 (inf for hard data consistency), got {dc_weight}")
    if accel is not None and accel < 1:
        raise InputError(f"--accel must be >= 1, got {accel}")
    count = isinstance(virtual_coils, (int, np.integer)) and not isinstance(virtual_coils, bool)
    if not (virtual_coils in (None, "auto") or (count and virtual_coils >= 2)):
        raise InputError(f"--virtual-coils must be auto or a number of coils >= 2, got {virtual_coils!r}")
    path = Path(src) if isinstance(src, (str, Path)) else None
    if path is not None and not path.exists():
        raise InputError(f"input file not found: {path}")
    mask_path = Path(mask) if mask is not None else None
    if mask_path is not None and not mask_path.exists():
        raise InputError(f"mask file not found: {mask_path}")
    if mask_layout not in MASK_LAYOUTS:
        raise InputError(f"--mask-layout must be one of {', '.join(MASK_LAYOUTS)}, got {mask_layout!r}")
    if mask_path is not None and accel is not None:
        raise InputError("give --mask or --accel, not both (the mask sets the acceleration)")
    how = Undersampling(accel, mask_type, center_fraction, pe_axis, seed, mask_path, mask_layout)
    use_kspace = kspace if kspace is not None else (path is not None and is_kspace_file(path))
    if use_kspace:
        if path is None:
            raise InputError("k-space input must be a file")
        prob = _kspace_problem(path, how, slices, dc_weight, echo, virtual_coils)
    else:
        if echo is not None:
            raise InputError("--echo picks an echo of multi-echo raw k-space (twix, ISMRMRD); the input is an image")
        if virtual_coils is not None:
            raise InputError("--virtual-coils compresses multi-coil raw k-space; the input is an image")
        image_how = how if accel is not None else replace(how, accel=4.0)
        prob = _image_problem(src if path is None else path, slice_axis, slices, image_how, dc_weight)
    if not prob.mask.any():
        raise InputError("the sampling mask samples nothing")
    if not torch.any(prob.zf.abs() > 0):
        raise InputError("the measured k-space is all zero: there is nothing to reconstruct")
    if prob.fully_sampled:
        post = Posterior(prob.zf, prob.zf.abs(), torch.zeros(prob.zf.shape),
                         prob.zf[None].expand(samples, -1, -1, -1) if save_samples else None,
                         torch.zeros(prob.zf.shape))
        dev, sampler, model_name, version, std_scale, std_smooth = torch.device("cpu"), "none", None, None, 1.0, 0.0
    else:
        dev = resolve_device(device)
        m = model if isinstance(model, Model) else load_model(model, dev)
        if m.card.get("task") not in RECON_TASKS:
            raise ModelError(f"model {m.name} is not a reconstruction model (its card's task is "
                             f"{m.card.get('task')!r}; expected one of {', '.join(RECON_TASKS)})")
        conditioned = m.card["task"] == "recon"
        cal = m.card.get("calibration", {})
        std_scale, std_smooth = calibration_scale(cal, prob.voxel_mm), float(cal.get("smooth_voxels", 0.0))
        canvas = tuple(m.card.get("training", {}).get("image_size", (0, 0)))
        work = tuple(max(a, b) for a, b in zip(prob.zf.shape[-2:], canvas))
        post = sample_posterior_slices(
            m.denoiser.to(dev), prob.zf, torch.from_numpy(prob.mask), prob.project_for,
            group=prob.group or batch_slices or slices_per_batch(work, dev), final_for=prob.final_for,
            progress=progress, n_samples=samples, views=views,
            steps=steps, eta=eta, multiple=divisor(m.card["architecture"]["size"]), canvas=canvas,
            keep_samples=save_samples, generator=torch.Generator(device=dev).manual_seed(seed),
            conditioned=conditioned,
        )
        sampler = "ddim" if conditioned else "ddim, prior-only"
        model_name, version = m.name, m.card.get("version")
    mean = post.mean.numpy()
    mag = np.abs(mean) if prob.final_for is not None else post.mag_mean.numpy()  # (perturbed samples: unbiased)
    mag = mag + prob.offset  # back to the input's intensities (0 unless a real image was shifted)
    noisy = prob.unmeasured_std is not None and not prob.fully_sampled and samples > 1  # (one sample: no spread)
    if noisy:
        std = measured_kspace_std(post.mag_std, post.fit_std, prob.measured_std, prob.unmeasured_std, std_scale,
                                  std_smooth).numpy()
    else:
        std = calibrated_std(post.mag_std, std_scale, std_smooth).numpy()
    zf = prob.zf.numpy()
    zf_mag = np.abs(zf) + prob.offset
    recon = mean.astype(np.complex64) if prob.complex_output else mag.astype(np.float32)
    zfo = zf.astype(np.complex64) if prob.complex_output else zf_mag.astype(np.float32)
    reference = None if prob.reference is None else prob.reference + prob.offset
    metrics = None
    if reference is not None and not prob.fully_sampled:  # (a fully sampled input is its own reference)
        fg = foreground(reference)
        metrics = {
            "recon": slice_metrics(reference, mag),
            "zerofilled": slice_metrics(reference, zf_mag),
            "uncertainty": ({**uncertainty_metrics(reference, mag, std, fg),
                             "spearman_in_slice": in_slice_spearman(reference, mag, std, fg)}
                            if samples > 1 else None),
        }

    def out(a: np.ndarray) -> np.ndarray:  # (S, H, W[, N]) -> voxel order
        return np.moveaxis(a, 0, prob.slice_axis)

    samples_out = None
    if save_samples:
        smp = post.samples.abs().numpy() + prob.offset  # (N, S, H, W)
        samples_out = np.stack([out(s) for s in smp], -1).astype(np.float32)
    mask_vol = np.broadcast_to(prob.mask[None], zf.shape).astype(np.uint8)
    drawn = mask_path is None and (accel is not None or not use_kspace)  # a mask was drawn from these
    params = dict(accel=(4.0 if accel is None else accel) if drawn else None,
                  mask_type=mask_type if drawn else None, center_fraction=center_fraction if drawn else None,
                  mask=str(mask_path) if mask_path else None,
                  mask_layout=mask_layout if mask_path else None, pe_axis=pe_axis, echo=echo,
                  slice_axis=prob.slice_axis, slices=slices, samples=samples, steps=steps, eta=eta, seed=seed,
                  sample_views=dict(sample_views(samples, views)) if sampler != "none" else {},
                  dc_weight=None if math.isinf(dc_weight) else dc_weight,
                  sampler=sampler, device=str(dev), model=model_name, model_version=version,
                  uncertainty_scale=round(std_scale, 4), uncertainty_smoothing_voxels=std_smooth,
                  voxel_mm_in_plane=None if prob.voxel_mm is None else round(prob.voxel_mm, 4),
                  uncertainty_unmeasured_noise_std=_rounded(prob.unmeasured_std) if noisy else None,
                  input_kind="kspace" if use_kspace else "image",
                  sampled_fraction=float(prob.mask.mean()), **prob.info)
    return ReconResult(out(recon), out(std.astype(np.float32)), out(zfo), out(mask_vol), samples_out, prob.record,
                       metrics, params, time.time() - t0,
                       None if metrics is None else out(reference.astype(np.float32)))


def _rounded(values: np.ndarray | None) -> list[float] | None:
    """Per-slice values for the sidecar, 4 significant digits."""
    return None if values is None else [float(f"{v:.4g}") for v in values]


OUTPUTS = ("recon", "uncertainty", "zerofilled", "mask")


def _figure(result: ReconResult, path: Path) -> None:
    """PNG summary: the central reconstructed slice (and the calibration curve when there is a reference)."""
    import matplotlib.pyplot as plt

    from ..plotting import recon_summary

    stack = lambda a: None if a is None else np.moveaxis(a, result.params["slice_axis"], 0)  # noqa: E731
    k = result.recon.shape[result.params["slice_axis"]] // 2  # outputs cover only the reconstructed slices
    fig = recon_summary(stack(result.zerofilled), stack(result.recon), stack(result.uncertainty), k,
                        stack(result.reference), title=f"slice {k} (axis {result.params['slice_axis']})")
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def output_paths(src: Path, out_dir: Path | None = None, save_samples: bool = False,
                 echo: int | None = None) -> dict[str, Path]:
    """BIDS-derivative output paths of a reconstruction of ``src`` (of its ``echo``, named ``echo-<n>``): NIfTI per
    output, the JSON sidecar and the figure."""
    from ..io import derivative_path

    names = OUTPUTS + (("samples",) if save_samples else ())
    entities = None if echo is None else {"echo": str(echo)}
    paths = {d: derivative_path(src, d, out_dir, entities=entities) for d in names}
    paths["sidecar"] = derivative_path(src, "recon", out_dir, ext=".json", entities=entities)
    paths["figure"] = derivative_path(src, "recon", out_dir, ext=".png", entities=entities)
    return paths


def write(result: ReconResult, src: Path, paths: dict[str, Path], tmp: Callable[[Path], Path] = lambda p: p) -> None:
    """Write a :class:`ReconResult` to ``paths`` (from :func:`output_paths`), each through ``tmp(path)``."""
    from ..io import save_like, write_sidecar

    arrays = {"recon": result.recon, "uncertainty": result.uncertainty, "zerofilled": result.zerofilled,
              "mask": result.mask, "samples": result.samples}
    two_d = len(result.record.shape) == 2  # a 2D input: drop the slice axis the reconstruction added
    for key, path in paths.items():
        if key in arrays:
            a = arrays[key][:, :, 0] if two_d else arrays[key]
            save_like(a, result.record, tmp(path), dtype=np.uint8 if key == "mask" else None)
    _figure(result, tmp(paths["figure"]))
    write_sidecar(tmp(paths["sidecar"]), {
        "Description": "Posterior-mean MRI reconstruction by a diffusion model (conditional, or a prior when the "
                       "sampler says prior-only) with k-space data consistency; the uncertainty map is the per-voxel "
                       "posterior standard deviation.",
        "Sources": [str(src)],
        "GeneratedBy": [{"Name": "neurodiff", "Version": __import__("neurodiff").__version__}],
        "Model": result.params["model"],
        "Parameters": result.params,
        "Units": "same as the input",
        "Metrics": result.metrics,
        "MetricsNote": None if result.metrics is None else
            "against the input as fully sampled reference; k-space simulated from the image (retrospective "
            "undersampling of magnitude data flatters results; Shimron et al., PNAS 2022). Uncertainty metrics over "
            "voxels above 5% of each slice's maximum.",
        "Outputs": {k: p.name for k, p in paths.items()},
        "ElapsedSeconds": round(result.seconds, 2),
    })
