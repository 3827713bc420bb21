"""The diffusion engine: schedules, denoiser, samplers, guidance, likelihood, inversion, training.

It never reads files, never prints, and knows nothing of MRI or microscopy.
"""

from .denoiser import Cond, Denoiser, Prediction
from .guidance import classifier_free, gradient
from .inversion import ddim_invert, slerp
from .likelihood import ELBO, bits_per_dim, elbo, ode_nll, voxel_terms
from .samplers import SAMPLERS, predict, sample_ddim, sample_ddpm, sample_dpmpp_2m
from .schedules import NoiseSchedule

__all__ = [
    "Cond", "Denoiser", "Prediction", "classifier_free", "gradient", "ddim_invert", "slerp", "ELBO",
    "bits_per_dim", "elbo", "ode_nll", "voxel_terms", "SAMPLERS", "predict", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m",
    "NoiseSchedule",
]
