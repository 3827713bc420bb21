"""neurodiff: denoising diffusion models for neuroimaging."""

__version__ = "0.1.0"
