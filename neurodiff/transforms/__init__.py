"""MONAI-style transforms (array + dictionary pairs): k-space undersampling, diffusion reconstruction, anomaly
scoring."""

from .array import AnomalyScore, DiffusionReconstruct, RandKSpaceUndersample
from .dictionary import AnomalyScored, DiffusionReconstructd, RandKSpaceUndersampled

__all__ = ["AnomalyScore", "AnomalyScored", "DiffusionReconstruct", "DiffusionReconstructd", "RandKSpaceUndersample",
           "RandKSpaceUndersampled"]
