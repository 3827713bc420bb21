"""Reading and writing users' files: NIfTI images, BIDS-derivative names and sidecars, safe output sets."""

from neurodiff.io.bids import derivative_path, split_extension, write_sidecar
from neurodiff.io.nifti import ImageRecord, check_finite, load_image, load_nifti, negative_offset, save_like
from neurodiff.io.outputs import OutputSet, atomic_path

__all__ = [
    "ImageRecord",
    "OutputSet",
    "atomic_path",
    "check_finite",
    "derivative_path",
    "load_image",
    "load_nifti",
    "negative_offset",
    "save_like",
    "split_extension",
    "write_sidecar",
]
