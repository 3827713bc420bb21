"""MONAI-style transforms (array + dictionary pairs) for undersampling and diffusion reconstruction."""

from .array import DiffusionReconstruct, RandKSpaceUndersample
from .dictionary import DiffusionReconstructd, RandKSpaceUndersampled

__all__ = ["DiffusionReconstruct", "DiffusionReconstructd", "RandKSpaceUndersample", "RandKSpaceUndersampled"]
