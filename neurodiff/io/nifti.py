"""NIfTI in, NIfTI out: load an image as an array plus the record needed to write results like it.

Arrays are in the file's voxel order (or canonical RAS+ when asked, recorded so it is undone on save), float32
(complex64 for complex images). Outputs carry the input's affine and header, so they overlay the input in any
viewer. Every problem with a user's file is raised as one-line :class:`~neurodiff.errors.InputError`.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform
from nibabel.spatialimages import HeaderDataError

from neurodiff.errors import InputError
from neurodiff.io.outputs import atomic_path

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """What is needed to write an output like its input.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-world (scanner RAS+, mm) affine of the input as stored, i.e. before any reorientation.
    header : nibabel.Nifti1Header
        Copy of the input header (``Nifti2Header`` for NIfTI-2 inputs).
    shape : tuple of int
        Shape of the input as stored, e.g. ``(X, Y, Z, 1)``.
    path : Path or None
        File the input was read from; None for an in-memory image.
    orientation : ndarray, shape (3, 2), or None
        nibabel ``ornt`` transform applied to bring the data to canonical RAS+; None if the data are in the
        file's voxel order.
    is_complex : bool
        Whether the input voxels are complex.
    """

    affine: np.ndarray
    header: nib.Nifti1Header
    shape: tuple[int, ...]
    path: Path | None
    orientation: np.ndarray | None
    is_complex: bool


def negative_offset(data: np.ndarray, tolerance: float = 0.05) -> float:
    """The minimum of a real image whose negative values go beyond interpolation ringing (below ``-tolerance``
    times its largest magnitude), else 0; 0 for complex data.

    Such an image (an intensity offset, a z-scored image) is no magnitude image: neurodiff's tasks subtract this
    value first, so that the background is dark again, and add it back to their intensity outputs.
    """
    if np.iscomplexobj(data) or not data.size:
        return 0.0
    low, high = float(np.nanmin(data)), float(np.nanmax(np.abs(data)))
    return low if low < -tolerance * high else 0.0


def check_finite(data: np.ndarray, name: str, allow_partial: bool) -> None:
    """Raise if ``data`` has no finite value, or (unless ``allow_partial``) any NaN/inf.

    Parameters
    ----------
    data : ndarray, any shape, real or complex
        Values to check; a complex value is finite when both parts are.
    name : str
        How to name the data in the message, e.g. a file path.
    allow_partial : bool
        Accept data with some (not all) NaN/inf values.

    Raises
    ------
    InputError
        ``"<name> contains no finite values"`` or ``"<name> contains N NaN/inf voxels ..."``.
    """
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad == data.size:
        raise InputError(f"{name} contains no finite values")
    if n_bad and not allow_partial:
        raise InputError(
            f"{name} contains {n_bad} NaN/inf voxels (of {data.size}); "
            "replace them, e.g. with fslmaths IN -nan OUT"
        )


def load_image(
    src: str | Path | nib.Nifti1Image,
    *,
    ndim: tuple[int, ...] = (2, 3),
    canonical: bool = False,
    name: str = "input",
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, ImageRecord]:
    """Load a NIfTI image as an array and the record needed to write outputs like it.

    Trailing singleton dimensions beyond the third are dropped, so ``(X, Y, Z, 1)`` loads as a 3D volume; a
    single slice stored as ``(X, Y, 1)`` loads as a 3D volume with one slice. Intensities are the stored values
    with the header scaling (``scl_slope``/``scl_inter``) applied, in the file's units.

    Parameters
    ----------
    src : str, Path or nibabel.Nifti1Image
        Path to a ``.nii``/``.nii.gz`` file, or an in-memory NIfTI image ("Niimg-like").
    ndim : tuple of int
        Accepted numbers of dimensions after dropping trailing singletons.
    canonical : bool
        Reorient the data to the closest canonical RAS+ voxel order; :func:`save_like` undoes it.
    name : str
        Role of the image in messages, e.g. ``"input file not found: ..."``.
    allow_nonfinite : bool
        Accept some NaN/inf voxels (an image with no finite voxel is always refused). All-zero images are
        accepted; callers decide whether that is usable.

    Returns
    -------
    data : ndarray, shape (X, Y[, Z, ...]), float32 or complex64
        A new array (never a view of ``src``'s data).
    record : ImageRecord
        Geometry, header and orientation to pass to :func:`save_like`.

    Raises
    ------
    InputError
        If the file is missing, not a readable NIfTI, has the wrong number of dimensions or non-finite values.
    """
    img, path = _open(src, name)
    label = str(path) if path is not None else f"the {name} image"
    stored_dtype = img.get_data_dtype()
    if stored_dtype.kind not in "biufc":
        raise InputError(f"{label} has voxel type {stored_dtype}, which is not supported; convert it to float")
    is_complex = stored_dtype.kind == "c"
    try:
        raw = np.asanyarray(img.dataobj)
    except _READ_ERRORS as error:
        raise InputError(f"{label} is not a readable NIfTI file ({_short(error, path)})") from None
    data = np.array(raw, dtype=np.complex64 if is_complex else np.float32)
    data = data.reshape(_squeezed(data.shape))
    if data.ndim not in ndim:
        raise InputError(_ndim_message(label, data.shape, ndim))
    check_finite(data, label, allow_partial=allow_nonfinite)
    orientation = None
    if canonical:
        ornt = io_orientation(img.affine)
        if np.isnan(ornt).any():
            raise InputError(f"{label} has a degenerate affine (a voxel axis of zero length); fix its header")
        if not np.array_equal(ornt, _RAS):
            orientation = ornt
            data = _reorient(data, ornt, two_d=data.ndim == 2, undo=False)
    record = ImageRecord(
        affine=np.array(img.affine, dtype=float),
        header=img.header.copy(),
        shape=tuple(int(n) for n in img.shape),
        path=path,
        orientation=orientation,
        is_complex=is_complex,
    )
    return data, record


def load_nifti(src: str | Path | nib.Nifti1Image, *, name: str = "input", ndim: tuple[int, ...] = (3,)
               ) -> nib.Nifti1Image:
    """A validated image (as :func:`load_image`) as an in-memory float32 ``Nifti1Image`` with the file's affine.

    For code that resamples between grids (nibabel.processing) rather than writing outputs like the input.
    """
    data, record = load_image(src, ndim=ndim, name=name)
    return nib.Nifti1Image(data, record.affine)


def save_like(
    data: npt.ArrayLike,
    record: ImageRecord,
    path: str | Path,
    *,
    dtype: npt.DTypeLike | None = None,
    extra_dims_ok: bool = True,
) -> Path:
    """Write ``data`` as a NIfTI file with the geometry and header of the image ``record`` describes.

    The canonical reorientation of :func:`load_image` is undone, so the output overlays the input. The header is
    the input's with the data type, shape and display range updated and the scaling reset, so values are stored
    as given; affine, qform/sform and their codes are kept. The write is atomic (temporary sibling, then rename).

    Parameters
    ----------
    data : array_like, shape (X, Y[, Z]) or (X, Y[, Z], N)
        Same spatial shape and voxel order as :func:`load_image` returned; an extra trailing axis of length N
        (e.g. posterior samples) is written as the 4th NIfTI dimension (after a singleton 3rd one for 2D data).
    record : ImageRecord
        From :func:`load_image`.
    path : str or Path
        Output file; must end in ``.nii`` or ``.nii.gz``. Its folder must exist. An existing file is replaced
        (use :class:`~neurodiff.io.outputs.OutputSet` to refuse that).
    dtype : dtype, optional
        Stored voxel type. Default float32, or complex64 for complex data. Data are cast with numpy rules.
    extra_dims_ok : bool
        Accept the extra trailing axis.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the shape of ``data`` does not match the record (a programming error).
    InputError
        If ``path`` has a wrong extension or cannot be written.
    """
    path = Path(path).expanduser()
    if not path.name.endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: a NIfTI output name must end in .nii or .nii.gz")
    arr = np.asarray(data)
    if dtype is None:
        dtype = np.complex64 if np.iscomplexobj(arr) else np.float32
    elif np.iscomplexobj(arr) and not np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"complex data cannot be stored as {np.dtype(dtype)}")
    base = _squeezed(record.shape)
    if record.orientation is not None:
        arr = _reorient(arr, record.orientation, two_d=len(base) == 2, undo=True)
    if arr.shape == base:
        arr = arr.reshape(record.shape)
    elif extra_dims_ok and arr.ndim == len(base) + 1 and arr.shape[:-1] == base:
        arr = arr.reshape(base + (1,) * (3 - len(base)) + arr.shape[-1:])
    else:
        extra = " or (..., N)" if extra_dims_ok else ""
        raise ValueError(f"data shape {np.shape(data)} does not match the input image shape {base}{extra}")
    header = record.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(None, None)
    header["cal_min"] = header["cal_max"] = 0
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(arr.astype(dtype, copy=False), record.affine, header)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def _open(src: str | Path | nib.Nifti1Image, name: str) -> tuple[nib.Nifti1Image, Path | None]:
    """Return the NIfTI image ``src`` names (header only for files) and its path, or raise InputError."""
    if isinstance(src, nib.Nifti1Pair):
        return src, None
    if not isinstance(src, (str, Path)):
        raise InputError(f"the {name} must be a path or a nibabel NIfTI image, not {type(src).__name__}")
    path = Path(src).expanduser()
    if not path.exists():
        raise InputError(f"{name} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; a NIfTI file (.nii or .nii.gz) is expected")
    try:
        img = nib.load(path)
    except _READ_ERRORS as error:
        raise InputError(f"{path} is not a readable NIfTI file ({_short(error, path)})") from None
    if not isinstance(img, nib.Nifti1Pair):
        raise InputError(f"{path} is not a NIfTI file (read as {type(img).__name__}); convert it to .nii.gz")
    return img, path


def _short(error: BaseException, path: Path | None) -> str:
    """A short reason for a read failure, without the path (the message names it already)."""
    if isinstance(error, gzip.BadGzipFile):
        return "not gzip-compressed, although named .gz"
    if isinstance(error, (EOFError, zlib.error)):
        return "truncated or corrupt compressed data"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if path is not None:
        text = re.sub(rf"\s*(File|from|of|:)?\s*[\"']?{re.escape(str(path))}[\"']?", "", text).strip()
    return re.sub(r"^is\s+", "", text)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third: (X, Y, Z, 1) -> (X, Y, Z)."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _ndim_message(label: str, shape: tuple[int, ...], ndim: tuple[int, ...]) -> str:
    expected = " or ".join(f"{n}D" for n in sorted(ndim))
    hint = " — pick a volume, e.g. with fslroi" if len(shape) > max(ndim) else ""
    return f"{label} is {len(shape)}D (shape {shape}); a {expected} image is expected{hint}"


def _reorient(data: np.ndarray, ornt: np.ndarray, *, two_d: bool, undo: bool) -> np.ndarray:
    """Apply the file-to-RAS+ ``ornt`` to the first three axes of ``data``, or undo it.

    For a 2D image (``two_d``), data (X, Y, ...) are treated as (X, Y, 1, ...) and the singleton axis is removed
    again after reorienting.
    """
    transform = ornt_transform(_RAS, ornt) if undo else ornt
    singleton = int(ornt[2, 0]) if undo else 2
    if two_d:
        data = np.expand_dims(data, singleton)
    out = apply_orientation(data, transform)
    if two_d:
        out = np.squeeze(out, axis=2 if undo else int(ornt[2, 0]))
    return np.ascontiguousarray(out)
