"""MRI physics: centred orthonormal FFT, sampling masks, k-space operators, data consistency, raw k-space readers."""

from neurodiff.mri.compression import compress_coils
from neurodiff.mri.consistency import (
    hard_project, kspace_noise_variance, misfit_damping_factor, multicoil_project, noise_misfit, noisy_copies,
    snr_damping, soft_project,
)
from neurodiff.mri.fft import channels_to_complex, complex_to_channels, fft2c, ifft2c
from neurodiff.mri.masks import check_mask, mask_from_kspace, sampling_mask
from neurodiff.mri.operators import MultiCoil, SingleCoil, estimate_sensitivities, rss
from neurodiff.mri.raw import KSpace, kspace_echoes, read_kspace, write_cfl

__all__ = [
    "KSpace",
    "MultiCoil",
    "SingleCoil",
    "channels_to_complex",
    "check_mask",
    "complex_to_channels",
    "compress_coils",
    "estimate_sensitivities",
    "fft2c",
    "hard_project",
    "ifft2c",
    "kspace_echoes",
    "kspace_noise_variance",
    "mask_from_kspace",
    "misfit_damping_factor",
    "multicoil_project",
    "noise_misfit",
    "noisy_copies",
    "read_kspace",
    "rss",
    "sampling_mask",
    "snr_damping",
    "soft_project",
    "write_cfl",
]
