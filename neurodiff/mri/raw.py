"""Readers of measured k-space: Siemens twix, fastMRI and ISMRMRD HDF5, BART cfl, complex NIfTI; a cfl writer.

Every reader returns :class:`KSpace` with data of shape ``(S, C, H, W)`` = (slices, coils, phase-encode,
readout), complex64, centred (DC at ``(H // 2, W // 2)``, see :mod:`neurodiff.mri.fft`).
"""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurodiff.errors import InputError, OutputExistsError
from neurodiff.mri.fft import ifft2c
from neurodiff.mri.masks import centre_half, mask_from_kspace, symmetric_centre_window
from neurodiff.mri.operators import rss

# BART dims: READ, PHS1, PHS2, COIL, MAPS, TE, COEFF, COEFF2, ITER, CSHIFT, TIME, TIME2, LEVEL, SLICE, ...
_BART_SLICE_DIM = 13


@dataclass(frozen=True)
class KSpace:
    """Measured k-space of one acquisition.

    Attributes
    ----------
    data : ndarray, shape (S, C, H, W), complex64
        Slices, coils, phase-encode lines, readout samples; centred; zero where not sampled.
    voxel_size : (float, float, float) or None
        Image voxel size in mm along (phase-encode H, readout W, slice), when the file records it.
    affine : ndarray, shape (4, 4), or None
        Voxel-to-world (RAS+, mm) affine of the image, when the file records one (NIfTI only).
    source : str
        Format read: ``"twix"``, ``"fastmri"``, ``"calgary-campinas"``, ``"ismrmrd"``, ``"bart"`` or ``"nifti"``.
    axes : (str, str, str)
        What the image axes ``(H, W, S)`` are: ``("phase-encode", "readout", "slice")`` for 2D acquisitions,
        ``("phase-encode", "partition", "readout")`` for 3D ones (hybrid space).
    noise : ndarray, shape (C, N), complex64, or None
        Noise-only samples of each coil (Siemens noise adjust scan, ISMRMRD noise measurement), when the file holds
        them: the coil noise covariance for prewhitening (:func:`neurodiff.mri.whitening.prewhiten`).
    notes : tuple of str
        What the reader changed to bring the file to neurodiff's FFT convention (:func:`_recentred`).
    """

    data: np.ndarray
    voxel_size: tuple[float, float, float] | None
    affine: np.ndarray | None
    source: str
    axes: tuple[str, str, str] = ("phase-encode", "readout", "slice")
    noise: np.ndarray | None = None
    notes: tuple[str, ...] = ()


AXES_3D = ("phase-encode", "partition", "readout")


def read_kspace(path: str | os.PathLike, echo: int | None = None) -> KSpace:
    """Read measured k-space, choosing the reader by file extension.

    Parameters
    ----------
    path : str or PathLike
        ``.dat`` (Siemens twix, needs ``pip install neurodiff[raw]``), ``.h5`` (fastMRI or ISMRMRD), ``.cfl``/``.hdr``
        (BART pair) or ``.nii``/``.nii.gz`` (complex NIfTI with axes ``(H, W[, S][, C])``).
    echo : int, optional
        Which echo (contrast) of a multi-echo twix or ISMRMRD file to read, 1 = the first (as BIDS ``echo-1``);
        required when the file holds several, else an :class:`InputError` says how many there are.

    Returns
    -------
    KSpace
        Data ``(S, C, H, W)`` complex64, centred. 3D (single-slab) acquisitions come in hybrid space: the
        inverse FFT along the readout, whose positions are the slices ``S``, each a 2D k-space over
        ``(H, W)`` = (phase-encode, partition) holding the acquisition's own 2D sampling pattern.

    Notes
    -----
    - twix: the last measurement of the file; image-scan lines, placed by their ``Lin`` (and, for 3D,
      ``Par``) counters (the centre line ``CenterLin`` lands on ``H // 2``, ``CenterPar`` on the partitions'
      middle, so partial-Fourier data are zero-filled); separately acquired reference lines (``PATREFSCAN``,
      GRAPPA calibration) fill only lines the imaging scan skipped; lines sharing ``(Slc, Par, Lin)`` (averages,
      repetitions, segments) averaged, readout oversampling removed (centred inverse FFT along readout, central
      ``1 / flReadoutOSFactor`` kept, FFT back for 2D data); noise adjust scans of any measurement of the file
      kept as ``noise``; the lines of the chosen ``echo`` (``Eco`` counter). Multi-slab, multi-phase and
      multi-set data raise :class:`InputError`.
    - fastMRI stores ``kspace`` as ``(S[, C], readout, phase-encode)``; it is transposed to ``(S, C, PE, RO)``
      (so images are transposed relative to fastMRI's). Its centring is the same as ours (fastMRI's
      ``fft2c`` is ``fftshift(fftn(ifftshift(x), norm="ortho"))`` over the last two axes), so values are kept
      (other conventions: last bullet).
      Readout oversampling is removed when ``ismrmrd_header`` gives a smaller recon than encoded matrix. A real
      ``kspace`` of shape ``(x, ky, kz, 2 C)`` with real and imaginary channels alternating is the
      Calgary-Campinas multi-coil layout (3D, the readout ``x`` already in image space): its ``x`` positions are
      the slices, ``(ky, kz)`` their 2D k-space.
    - ISMRMRD HDF5 (``/dataset/data`` + ``/dataset/xml``, e.g. from ``siemens_to_ismrmrd``): Cartesian 2D or 3D
      imaging lines only (navigator, phase-correction, feedback and dummy scans dropped; noise scans kept as
      ``noise``; reversed lines flipped), placed by ``kspace_encode_step_1`` (and ``_2``) with the header's
      ``encodingLimits`` centres on the middle and ``center_sample`` on ``W // 2``, averages and repetitions
      averaged; separately acquired calibration lines fill only lines the imaging scan skipped; readout
      oversampling removed when ``reconSpace`` is smaller than ``encodedSpace``; the lines of the chosen ``echo``
      (``contrast`` counter). Multi-slab 3D, multi-phase/-set and non-Cartesian data raise.
    - BART: dims ``[RO, PE1, PE2, COIL, ..., SLICE (13)]``; ``PE2 > 1`` is 3D (one slab); other non-singleton
      dims raise.
    - NIfTI, BART and fastMRI-style HDF5 are written by people, under their own FFT convention: k-space whose peak
      lies in a corner is fftshifted, and an image that lands half a field of view off is shifted back
      (:func:`_recentred`; recorded in ``notes``). Scanner formats (twix, ISMRMRD) are placed by their headers.
    """
    p = Path(path)
    name = p.name.lower()
    if echo is not None and echo < 1:
        raise InputError(f"--echo counts from 1 (the first echo), got {echo}")
    if echo is not None and echo > 1 and not name.endswith((".dat", ".h5", ".hdf5")):
        raise InputError(f"--echo {echo}: {p.name} holds one echo (echoes are read from twix and ISMRMRD files)")
    if name.endswith((".cfl", ".hdr")):
        base = p.with_suffix("")
        for part in (base.with_suffix(".cfl"), base.with_suffix(".hdr")):
            if not part.is_file():
                raise InputError(f"BART file {part} not found (a .cfl needs its .hdr and vice versa)")
        return _read_cfl(base)
    if not p.is_file():
        raise InputError(f"k-space file {p} not found")
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(p)
    if name.endswith((".h5", ".hdf5")):
        return _read_h5(p, echo)
    if name.endswith(".dat"):
        return _read_twix(p, echo)
    raise InputError(
        f"unknown k-space format {p.name!r}: use .dat (twix), .h5 (fastMRI, ISMRMRD), .cfl/.hdr (BART) or .nii[.gz]"
    )


def kspace_echoes(path: str | os.PathLike) -> tuple[int, ...]:
    """The echoes (contrasts) a k-space file holds, 1-based as ``read_kspace``'s ``echo``: those with imaging lines
    of a twix or ISMRMRD file, ``(1,)`` for the single-echo formats. Reads only what it needs (headers for
    ISMRMRD)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".dat") and p.is_file():
        _, image, _ = _twix_lines(p)
        return _echoes_present(np.array([m.cEco for m in image]), np.ones(len(image), bool))
    if name.endswith((".h5", ".hdf5")) and p.is_file():
        with _open_h5(p) as f:
            if "kspace" in f:
                return (1,)
            groups = _ismrmrd_groups(f)
            if not groups:
                raise InputError(f"{p.name} has neither a 'kspace' dataset (fastMRI) nor ISMRMRD acquisitions")
            head = _ismrmrd_heads(groups[0]["data"])
            flag, keep = _ismrmrd_flags(head, p.name)
            return _echoes_present(head["idx"]["contrast"].astype(int), keep & ~flag(_ISMRMRD_CALIBRATION))
    return (1,)


def _open_h5(path: Path):
    """``h5py.File(path, "r")``, with one clear :class:`InputError` where h5py is missing or the file is no HDF5."""
    try:
        import h5py
    except ImportError:
        raise InputError("reading .h5 k-space needs h5py: pip install neurodiff[raw]") from None
    try:
        return h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path.name} could not be read as an HDF5 file") from None


def write_cfl(path: str | os.PathLike, data: np.ndarray, force: bool = False) -> None:
    """Write k-space ``(S, C, H, W)`` as a BART ``.cfl``/``.hdr`` pair with dims ``[W, H, 1, C, 1, ..., S]``.

    Parameters
    ----------
    path : str or PathLike
        Output name, with or without the ``.cfl``/``.hdr`` extension.
    data : ndarray, shape (S, C, H, W), complex
        Centred k-space; stored as complex64.
    force : bool
        Overwrite existing files.
    """
    if data.ndim != 4:
        raise InputError(f"write_cfl expects k-space of shape (S, C, H, W), got {data.shape}")
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in (".cfl", ".hdr") else base
    cfl, hdr = base.with_suffix(".cfl"), base.with_suffix(".hdr")
    if not force and (cfl.exists() or hdr.exists()):
        raise OutputExistsError(f"{cfl} exists; pass force=True to overwrite")
    s, c, h, w = data.shape
    dims = [w, h, 1, c] + [1] * (_BART_SLICE_DIM - 4) + [s]
    bart = np.asarray(data, dtype=np.complex64).transpose(3, 2, 1, 0).reshape(dims, order="F")
    for target, write in (
        (cfl, lambda f: f.write(bart.ravel(order="F").tobytes())),
        (hdr, lambda f: f.write(("# Dimensions\n" + " ".join(map(str, dims)) + "\n").encode())),
    ):
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, target)


def _checked(data: np.ndarray, voxel_size: tuple | None, affine: np.ndarray | None, source: str,
             name: str = "", volumetric: bool = False, noise: np.ndarray | None = None,
             recentre: bool = False, readout_slices: bool = False) -> KSpace:
    """Validate ``(S, C, H, W)`` k-space of format ``source`` (file ``name``, for messages) and wrap it;
    ``volumetric``: the slices are the readout positions of a 3D acquisition (:func:`_to_slices`); ``noise``:
    noise-only samples ``(C, N)``, kept when finite; ``recentre``: the file's FFT convention is its writer's
    choice (:func:`_recentred`, with ``readout_slices``), else a peak in a corner raises."""
    voxel = None if voxel_size is None else tuple(float(v) for v in voxel_size)
    if noise is not None:
        noise = np.ascontiguousarray(noise, dtype=np.complex64) if np.isfinite(noise).all() else None
    data, notes = _recentred(_validated(data, name or source), name or source, recentre, readout_slices)
    return KSpace(data=data, voxel_size=voxel, affine=affine, source=source,
                  **({"axes": AXES_3D} if volumetric else {}), noise=noise, notes=notes)


def _validated(data: np.ndarray, name: str) -> np.ndarray:
    """``(S, C, H, W)`` k-space as complex64, or :class:`InputError` if it holds NaN or is all zero."""
    data = np.ascontiguousarray(data, dtype=np.complex64)
    if not np.isfinite(data).all():
        raise InputError("k-space contains NaN or infinite values")
    if not data.any():
        raise InputError("k-space is all zero")
    return data


def _recentred(data: np.ndarray, name: str, recentre: bool = True,
               readout_slices: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
    """Bring ``(S, C, H, W)`` k-space written under another FFT convention to neurodiff's
    (``fftshift(fft2(ifftshift(x)))``, :mod:`neurodiff.mri.fft`), and say what was done.

    - Peak in a corner (``fft2(x)``, no shifts): fftshifted (with ``recentre`` False: :class:`InputError`).
    - Image half a field of view off (``fftshift(fft2(x))``: the image not ifftshifted first; or the case above):
      shifted back along both in-plane axes, as a writer's convention holds for both. Judged on the object's support
      in the low-resolution image of the sampled symmetric centre (at least 5 lines along the axis judged; up to 8
      slices spread over the data; coil images root-sum-of-squared; above 5% of its 99th percentile, so that coil
      sensitivity fall-off does not count): along each axis, the object's extent across the axis (relative to its
      widest) in the outer eighths at both edges of the field of view minus that in the central quarter. The image
      is taken as shifted when these differences add up to more than 0.5 and none is below -0.3 (an axis clearly
      centred, as an oversampled readout is, vetoes). An object filling the field of view along both axes is left as
      it is. With ``readout_slices`` (3D data whose readout :func:`_to_slices` inverse-transformed, as written) the
      slices are put back in order too (``ifftshift`` along them).
    """
    energy = sum((np.abs(d) ** 2).sum(axis=0) for d in data)  # (slice by slice: small temporaries)
    py, px = np.unravel_index(np.argmax(energy), energy.shape)
    h, w = energy.shape
    notes = []
    if abs(py - h // 2) > h / 4 and abs(px - w // 2) > w / 4:
        if not recentre:
            raise InputError(f"{name}: k-space peak is in a corner, not at the centre; fftshift it first")
        data = np.ascontiguousarray(np.fft.fftshift(data, axes=(-2, -1)))
        notes.append("k-space stored uncentred (peak in a corner): fftshifted")
    if not recentre:
        return data, ()
    mask = mask_from_kspace(data)
    some = data[np.unique(np.linspace(0, len(data) - 1, 8).round().astype(int))]  # up to 8 slices: memory
    shifts = []  # per judged axis: the object's relative extent at the edges minus that at the centre
    for axis in (axis for axis in (0, 1) if centre_half(mask, axis) >= 2):
        window = symmetric_centre_window(mask, axis)
        magnitude = np.stack([rss(ifft2c(torch.from_numpy(d * window))).numpy() for d in some])  # (S, H, W)
        inside = (magnitude > 0.05 * np.percentile(magnitude, 99)).mean(axis=(0, 2 - axis))  # along the axis
        inside = inside / inside.max()  # relative to the object's widest extent across the axis
        n = inside.size
        band = max(1, n // 8)
        edges, centre = np.concatenate([inside[:band], inside[-band:]]), inside[n // 2 - band:n // 2 + band]
        shifts.append(edges.mean() - centre.mean())
    if sum(shifts) > 0.5 and min(shifts, default=0.0) > -0.3:  # one convention for both axes
        h_phase, w_phase = (np.exp(2j * np.pi * (np.arange(n) - n // 2) * (n // 2) / n).astype(np.complex64)
                            for n in (h, w))
        data = data * h_phase[:, None] * w_phase[None, :]
        if readout_slices:  # the readout was inverse-transformed by us under the same (wrong) convention
            data = np.ascontiguousarray(np.fft.ifftshift(data, axes=0))
        notes.append("image half a field of view off (k-space written as fftshift(fft2(x)), without ifftshift of "
                     "the image): shifted back along both in-plane axes")
    return data, tuple(notes)


def _readout_image(k: np.ndarray, n: int) -> np.ndarray:
    """Centred inverse FFT of centred k-space along its last (readout) axis, central ``n`` samples kept."""
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=-1), axis=-1, norm="ortho"), axes=-1)
    start = k.shape[-1] // 2 - n // 2
    return img[..., start : start + n]


def _crop_readout(k: np.ndarray, n: int) -> np.ndarray:
    """Keep the central ``n`` image samples along the last (readout) axis of centred k-space ``(S, C, H, W)``
    (one slice at a time: temporaries of one slice)."""
    if n == k.shape[-1]:
        return k
    out = np.empty(k.shape[:-1] + (n,), np.complex64)
    for s, ks in enumerate(k):
        img = _readout_image(ks, n)
        out[s] = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=-1), axis=-1, norm="ortho"), axes=-1)
    return out


def _centred_index(index: np.ndarray, centre: int) -> tuple[np.ndarray, int]:
    """Rows for encoding counters ``index`` whose k-space centre is ``centre``, and the row count: padded so
    that the centre lands on ``n // 2`` (partial Fourier is zero-filled)."""
    n = 2 * max(centre, int(index.max()) + 1 - centre)
    return index + n // 2 - centre, n


def _padded_width(ncol: int, centre_col: int) -> int:
    """Readout samples of a line of ``ncol`` whose k-space centre is sample ``centre_col``, once zero-filled so
    that the centre lands on the middle (asymmetric echoes)."""
    return ncol + abs(ncol - 2 * centre_col)


def _assemble(lines: Iterable[np.ndarray], shape: tuple[int, int], slc: np.ndarray, lin: np.ndarray,
              centre_lin: int, centre_col: int, fill: np.ndarray | None = None, par: np.ndarray | None = None,
              centre_par: int = 0, readout: int | None = None) -> np.ndarray:
    """Place readout lines into centred k-space ``(S, C, P, H, W)``.

    Parameters
    ----------
    lines : iterable of ndarray, each of shape ``shape`` (C, n_samples), complex
        The readout lines in the order of ``slc`` and ``lin``, already in forward readout order; consumed one at a
        time, so that a file's data are never held twice.
    slc, lin : ndarray, shape (N,), int
        Slice and phase-encode line index of each line.
    centre_lin, centre_col : int
        Line index and readout sample of k-space centre; padding puts them on ``H // 2`` and ``W // 2``
        (partial Fourier and asymmetric echoes are zero-filled).
    fill : ndarray, shape (N,), bool, optional
        Lines used only where no other line lands (separately acquired calibration lines).
    par : ndarray, shape (N,), int, optional
        Partition (second phase-encode) index of each line of a 3D acquisition; its centre ``centre_par``
        lands on ``P // 2``. Without it ``P`` is 1.
    readout : int, optional
        Keep only the central ``readout`` image samples along the readout (oversampling removed), line by line as
        the lines are placed, so that the oversampled k-space is never held; ``W`` is then ``readout``. None: the
        :func:`_padded_width` samples.

    Returns
    -------
    ndarray, shape (S, C, P, H, W), complex64
        Lines sharing ``(slice, partition, line)`` (averages, repetitions) averaged.
    """
    fill = np.zeros(len(slc), dtype=bool) if fill is None else fill
    rows, nlin = _centred_index(lin, centre_lin)
    parts, npar = (np.zeros_like(lin), 1) if par is None else _centred_index(par, centre_par)
    (ncoil, ncol), nslc = shape, int(slc.max()) + 1
    width = _padded_width(ncol, centre_col)
    before = max(0, ncol - 2 * centre_col)
    keep = width if readout is None else readout
    padded = np.zeros((1, ncoil, width), np.complex64)

    def placed(line: np.ndarray) -> np.ndarray:  # (C, ncol) -> (C, keep): zero-filled, oversampling removed
        padded[0, :, before:before + ncol] = line
        return _crop_readout(padded, keep)[0] if keep != width else padded[0]

    k = np.zeros((nslc, ncoil, npar, nlin, keep), dtype=np.complex64)
    count = np.zeros((nslc, npar, nlin), dtype=np.int64)
    calibration: dict[tuple[int, int, int], list] = {}  # (slice, partition, row) -> [sum, count]
    for i, line in enumerate(lines):
        if line.shape != shape:
            raise InputError(f"raw k-space lines differ in shape: {line.shape} against {shape} (coils, samples)")
        where = (int(slc[i]), int(parts[i]), int(rows[i]))
        if fill[i]:
            total = calibration.setdefault(where, [np.zeros((ncoil, keep), np.complex64), 0])
            total[0] += placed(line)
            total[1] += 1
        else:
            k[where[0], :, where[1], where[2]] += placed(line)
            count[where] += 1
    k /= np.maximum(count, 1)[:, None, :, :, None].astype(np.float32)
    for (s, p, r), (total, n) in calibration.items():
        if not count[s, p, r]:
            k[s, :, p, r] = total / n
    return k


def _to_slices(k: np.ndarray, n_readout: int, name: str) -> np.ndarray:
    """Assembled k-space ``(S, C, P, H, W)`` as 2D problems ``(S', C, H', W')``, readout oversampling removed
    (the central ``n_readout`` image samples along W kept).

    2D data (``P == 1``) stay slices of ``(phase-encode, readout)`` k-space. 3D data (one slab, ``P > 1``) are
    taken to hybrid space: inverse FFT along the always fully sampled readout, whose ``n_readout`` positions become
    the slices, each a 2D ``(phase-encode, partition)`` k-space that holds the acquisition's own 2D sampling pattern.
    """
    if k.shape[2] == 1:
        return _crop_readout(k[:, :, 0], n_readout)
    if k.shape[0] > 1:
        raise InputError(f"{name}: multi-slab 3D data ({k.shape[0]} slabs) are not supported")
    _, c, p, h, _ = k.shape
    out = np.empty((n_readout, c, h, p), np.complex64)
    for i in range(c):  # one coil at a time: temporaries of one coil
        out[:, i] = _readout_image(k[0, i], n_readout).transpose(2, 1, 0)  # (P, H, X) -> (X, H, P)
    return out


# twix flags of lines that are neither image nor reference (GRAPPA calibration) k-space
_TWIX_NOT_REFERENCE = ("ACQEND", "RTFEEDBACK", "HPFEEDBACK", "SYNCDATA", "REFPHASESTABSCAN", "PHASESTABSCAN",
                       "PHASCOR", "NOISEADJSCAN")


def _echoes_present(counter: np.ndarray, imaging: np.ndarray) -> tuple[int, ...]:
    """The echoes (1-based, ascending) of 0-based echo counters ``counter`` ``(N,)`` that have imaging lines
    (``imaging`` ``(N,)`` bool)."""
    return tuple(int(e) + 1 for e in np.unique(counter[imaging]))


def _echo_lines(counter: np.ndarray, echo: int | None, name: str, imaging: np.ndarray) -> np.ndarray:
    """Which lines, of 0-based echo counters ``counter`` ``(N,)``, belong to ``echo`` (1-based; None: the file must
    hold one echo, whichever): ``(N,)`` bool. ``imaging`` ``(N,)`` bool marks the imaging lines; the chosen echo
    must have some."""
    present = _echoes_present(counter, imaging)
    listed = ", ".join(str(e) for e in present)
    if echo is None and len(present) > 1:
        raise InputError(f"{name} holds {len(present)} echoes (contrasts): choose one with --echo ({listed}) "
                         "or --echo all")
    chosen = counter == (present[0] - 1 if echo is None else echo - 1)
    if not (chosen & imaging).any():
        raise InputError(f"--echo {echo}: {name} has no imaging lines of that echo (echoes present: {listed})")
    return chosen


def _twix_lines(path: Path) -> tuple[list, list, list]:
    """``(measurements, imaging lines, reference lines)`` of a twix file: all its measurements, and the image scan's
    and separately acquired (GRAPPA) reference lines of the last one."""
    try:
        import twixtools
    except ImportError:
        raise InputError("reading Siemens .dat files needs twixtools: pip install neurodiff[raw]") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            scans = twixtools.read_twix(str(path), parse_pmu=False, verbose=False)
    except Exception as e:  # twixtools fails in many ways on files that are not twix
        raise InputError(f"{path.name} could not be read as a Siemens twix file ({type(e).__name__})") from None
    image = [m for m in scans[-1]["mdb"] if m.is_image_scan()]
    if not image:
        raise InputError(f"{path.name} holds no imaging k-space lines")
    reference = [m for m in scans[-1]["mdb"] if m.is_flag_set("PATREFSCAN") and not m.is_image_scan()
                 and not any(m.is_flag_set(f) for f in _TWIX_NOT_REFERENCE) and m.data.shape == image[0].data.shape]
    return scans, image, reference


def _read_twix(path: Path, echo: int | None = None) -> KSpace:
    scans, image, reference = _twix_lines(path)
    meas = scans[-1]
    lines = image + reference
    chosen = _echo_lines(np.array([m.cEco for m in lines]), echo, path.name, np.arange(len(lines)) < len(image))
    image, reference = ([m for m, keep in zip(part, chosen[offset:]) if keep]
                        for part, offset in ((image, 0), (reference, len(image))))
    lines = image + reference
    for counter in ("cPhs", "cSet"):
        if any(getattr(m, counter) for m in lines):
            raise InputError(f"{path.name}: multi-phase or -set twix data ({counter} > 0) not supported yet")
    par = np.array([m.cPar for m in lines])
    hdr = meas["hdr"]
    oversampling = float(hdr["Meas"].get("flReadoutOSFactor", 1.0) or 1.0)
    shape, centre_col = image[0].data.shape, int(image[0].mdh.CenterCol)
    n = int(round(_padded_width(shape[1], centre_col) / oversampling))
    data = (m.data[:, ::-1] if m.is_flag_set("REFLECT") else m.data for m in lines)  # read as placed
    k = _assemble(data, shape, np.array([m.cSlc for m in lines]), np.array([m.cLin for m in lines]),
                  int(image[0].mdh.CenterLin), centre_col, fill=np.arange(len(lines)) >= len(image),
                  par=par if par.any() else None, centre_par=int(image[0].mdh.CenterPar), readout=n)
    data, (_, _, partitions, lines_pe, _) = _to_slices(k, n, path.name), k.shape
    del k  # (the assembled k-space is not needed twice)
    try:
        sl = hdr["MeasYaps"]["sSliceArray"]["asSlice"][0]
        pe = sl["dPhaseFOV"] / lines_pe
        if partitions == 1:
            voxel = (pe, sl["dReadoutFOV"] / n, sl["dThickness"])
        else:  # partitions span the slab and its oversampling
            slab = sl["dThickness"] * (1 + hdr["MeasYaps"]["sKSpace"].get("dSliceOversamplingForDialog", 0.0))
            voxel = (pe, slab / partitions, sl["dReadoutFOV"] / n)
    except (KeyError, IndexError, TypeError):
        voxel = None
    ncoil = image[0].data.shape[0]
    noise = [m.data for scan in scans for m in scan["mdb"]  # multi-raid files keep it in the first measurement
             if m.is_flag_set("NOISEADJSCAN") and m.data.ndim == 2 and m.data.shape[0] == ncoil]
    return _checked(data, voxel, None, "twix", path.name, volumetric=partitions > 1,
                    noise=np.concatenate(noise, axis=1) if noise else None)


def _read_h5(path: Path, echo: int | None = None) -> KSpace:
    with _open_h5(path) as f:
        if "kspace" not in f:
            groups = _ismrmrd_groups(f)
            if groups:
                return _read_ismrmrd(groups[0], path.name, echo)
            raise InputError(f"{path.name} has neither a 'kspace' dataset (fastMRI) nor ISMRMRD acquisitions")
        if echo not in (None, 1):
            raise InputError(f"--echo {echo}: {path.name} holds one echo (a fastMRI-style 'kspace' dataset)")
        ds = f["kspace"]
        header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
        cplx, shape = np.issubdtype(ds.dtype, np.complexfloating), ds.shape
        if not cplx and len(shape) >= 3 and shape[-1] == 2:
            raise InputError(f"{path.name}: real 'kspace' {shape} with a last axis of 2 is ambiguous (real and "
                             "imaginary parts, or two coils of Calgary-Campinas data?); store it as complex")
        calgary = len(shape) == 4 and header is None and shape[-1] % 2 == 0 and 4 <= shape[-1] < min(shape[1:3])
        if calgary and not cplx:  # Calgary-Campinas (x, ky, kz, 2 C)
            k = ds[()]
            k = (k[..., ::2] + 1j * k[..., 1::2]).transpose(0, 3, 1, 2)
            return _checked(k, None, None, "calgary-campinas", path.name, volumetric=True, recentre=True)
        if len(shape) not in (3, 4) or not cplx:
            raise InputError(f"fastMRI 'kspace' must be complex (S[, C], H, W), or real (x, ky, kz, 2 x coils) "
                             f"with real and imaginary channels alternating (Calgary-Campinas); got {ds.dtype} "
                             f"{shape}")
        # (S, C, readout, PE) -> (S, C, PE, readout), read slice by slice: the file's data are held once
        k = np.empty((shape[0], shape[1] if len(shape) == 4 else 1, shape[-1], shape[-2]), np.complex64)
        step = ds.chunks[0] if ds.chunks else 1  # (whole chunks: a compressed chunk is decompressed once)
        for i in range(0, shape[0], step):
            part = ds[i:i + step]
            k[i:i + len(part)] = np.swapaxes(part if len(shape) == 4 else part[:, None], -1, -2)
    k, notes = _recentred(_validated(k, path.name), path.name)  # before any cropping
    voxel = None
    if header is not None:
        k, voxel = _to_recon_space(k[:, :, None], header, path.name, _recon_readout(header, k.shape[-1]))
    return KSpace(data=np.ascontiguousarray(k, dtype=np.complex64), voxel_size=voxel, affine=None, source="fastmri",
                  notes=notes)


def _ismrmrd_groups(f) -> list:
    """The groups of an open HDF5 file ``f`` that hold ISMRMRD acquisitions (a ``data`` table with ``head``)."""
    import h5py

    return [g for g in f.values() if isinstance(g, h5py.Group) and "data" in g
            and g["data"].dtype.names is not None and "head" in g["data"].dtype.names]


def _xml_find(header: bytes | str, path: str) -> ET.Element | None:
    """Element at ``path`` ("encoding/encodedSpace", namespace-free) of an ISMRMRD XML header."""
    root = ET.fromstring(header)
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    return root.find("/".join(ns + part for part in path.split("/")))


def _recon_readout(header: bytes | str, width: int) -> int:
    """Readout samples to keep of ``width``: fewer when the ISMRMRD header's ``reconSpace`` is narrower than its
    ``encodedSpace`` (readout oversampling)."""
    ex, mx = _ismrmrd_matrix(header, "encodedSpace")[0][0], _ismrmrd_matrix(header, "reconSpace")[0][0]
    return int(round(width * mx / ex)) if mx < ex <= width else width


def _to_recon_space(k: np.ndarray, header: bytes | str, name: str, n: int
                    ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Assembled k-space ``(S, C, P, H, W)`` as 2D problems (:func:`_to_slices`) keeping the central ``n`` readout
    samples (:func:`_recon_readout`; all of them when the lines were cropped as they were assembled), and the voxel
    size in mm along the problems' axes: (phase-encode, readout, slice) for 2D data, (phase-encode, partition,
    readout) for 3D."""
    (_, _, ez), (_, _, efz) = _ismrmrd_matrix(header, "encodedSpace")
    (mx, my, mz), (fx, fy, fz) = _ismrmrd_matrix(header, "reconSpace")
    voxel = (fy / my, fx / mx, fz / mz) if k.shape[2] == 1 else (fy / my, efz / ez, fx / mx)
    return _to_slices(k, n, name), voxel


def _ismrmrd_matrix(header: bytes | str, space: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``(matrix (x, y, z), field of view mm (x, y, z))`` of ``space`` in an ISMRMRD XML header."""
    matrix = [_xml_find(header, f"encoding/{space}/matrixSize/{a}") for a in "xyz"]
    fov = [_xml_find(header, f"encoding/{space}/fieldOfView_mm/{a}") for a in "xyz"]
    if None in matrix + fov:
        raise InputError(f"ISMRMRD header has no encoding/{space} matrix size and field of view")
    return tuple(int(m.text) for m in matrix), tuple(float(v.text) for v in fov)


# ISMRMRD acquisition flag bits (ismrmrd.h): lines that are not image k-space
_ISMRMRD_NOT_IMAGE = (19, 23, 24, 26, 27, 28, 29, 30, 31)  # noise, navigator, phase corr., feedback, dummy, ...
_ISMRMRD_NOISE, _ISMRMRD_CALIBRATION, _ISMRMRD_REVERSE = 19, 20, 22


def _ismrmrd_flags(head: np.ndarray, name: str) -> tuple[Callable[[int], np.ndarray], np.ndarray]:
    """``(flag, keep)`` of ISMRMRD acquisition headers ``head`` ``(N,)``: ``flag(bit)`` ``(N,)`` bool for a flag bit
    (1-based, as in ismrmrd.h) and ``keep`` ``(N,)`` bool, the image k-space lines (calibration lines included)."""
    flags = head["flags"].astype(np.uint64)

    def flag(bit: int) -> np.ndarray:
        return ((flags >> np.uint64(bit - 1)) & np.uint64(1)).astype(bool)

    keep = ~np.any([flag(b) for b in _ISMRMRD_NOT_IMAGE], axis=0)
    if not keep.any():
        raise InputError(f"{name} holds no imaging k-space lines")
    return flag, keep


def _read_ismrmrd(group, name: str, echo: int | None = None) -> KSpace:
    """Cartesian 2D k-space from an ISMRMRD HDF5 group (``/dataset``) holding ``data`` and ``xml``."""
    table = group["data"]
    head = _ismrmrd_heads(table)  # (the samples are read in blocks as they are placed)
    flag, keep = _ismrmrd_flags(head, name)
    keep[keep] = _echo_lines(head["idx"]["contrast"][keep].astype(int), echo, name,
                             ~flag(_ISMRMRD_CALIBRATION)[keep])
    noise_lines = flag(_ISMRMRD_NOISE) & (head["active_channels"] == head["active_channels"][keep][0])
    noise = list(_ismrmrd_samples(table, np.flatnonzero(noise_lines), (int(head["active_channels"][keep][0]), -1)))
    rows, head = np.flatnonzero(keep), head[keep]
    if (head["trajectory_dimensions"] > 0).any():
        raise InputError(f"{name}: non-Cartesian ISMRMRD data (a trajectory is stored) are not supported")
    idx = head["idx"]
    for counter in ("phase", "set"):
        if idx[counter].any():
            raise InputError(f"{name}: multi-phase or -set ISMRMRD data ({counter} > 0) not supported yet")
    n, c = np.unique(head["number_of_samples"]), np.unique(head["active_channels"])
    if len(n) > 1 or len(c) > 1:
        raise InputError(f"{name}: imaging lines differ in samples ({n.tolist()}) or channels ({c.tolist()})")
    reverse = flag(_ISMRMRD_REVERSE)[keep]
    shape = (int(c[0]), int(n[0]))
    data = (line[:, ::-1] if r else line for line, r in zip(_ismrmrd_samples(table, rows, shape), reverse))
    header = group["xml"][0] if "xml" in group else None
    if header is None:
        raise InputError(f"{name} has no ISMRMRD XML header (dataset 'xml')")
    enc = _ismrmrd_matrix(header, "encodedSpace")

    def centre(step: int) -> int:
        c = _xml_find(header, f"encoding/encodingLimits/kspace_encoding_step_{step}/center")
        return int(c.text) if c is not None else enc[0][step] // 2

    par = idx["kspace_encode_step_2"].astype(int)
    centre_col = int(head["center_sample"][0])
    k = _assemble(data, shape, idx["slice"].astype(int), idx["kspace_encode_step_1"].astype(int), centre(1),
                  centre_col, fill=flag(_ISMRMRD_CALIBRATION)[keep], par=par if par.any() else None,
                  centre_par=centre(2), readout=_recon_readout(header, _padded_width(shape[1], centre_col)))
    volumetric = k.shape[2] > 1
    data, voxel = _to_recon_space(k, header, name, k.shape[-1])  # (cropped as assembled)
    del k  # (the assembled k-space is not needed twice)
    return _checked(data, voxel, None, "ismrmrd", name, volumetric=volumetric,
                    noise=np.concatenate(noise, axis=1) if noise else None)


def _ismrmrd_heads(table, block: int = 4096) -> np.ndarray:
    """The acquisition headers ``(N,)`` of an ISMRMRD ``data`` table, read in blocks of ``block`` whole
    acquisitions (``table.fields("head")`` keeps the memory of every acquisition's samples, never freed: +170 MB per
    4096 acquisitions of 8 coils x 640 samples with h5py 3.16; whole rows are freed block by block)."""
    blocks = [table[i:i + block]["head"].copy() for i in range(0, len(table), block)]
    return np.concatenate([table[:0]["head"], *blocks])


def _ismrmrd_samples(table, rows: np.ndarray, shape: tuple[int, int], block: int = 4096) -> Iterator[np.ndarray]:
    """The samples of ISMRMRD acquisitions ``rows`` (increasing indices into the ``data`` table), each as a
    complex64 ``shape`` (channels, samples; -1 for as many as it has) array, read from the file in contiguous
    runs of fewer than ``block`` acquisitions."""
    field = table.fields("data")
    i = 0
    while i < len(rows):
        j = int(np.searchsorted(rows, rows[i] + block))
        first = int(rows[i])
        data = field[first:int(rows[j - 1]) + 1]
        for r in rows[i:j]:
            yield data[r - first].view(np.complex64).reshape(shape)
        i = j


def _read_cfl(base: Path) -> KSpace:
    text = [ln for ln in base.with_suffix(".hdr").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        dims = [int(d) for d in text[0].split()]
    except (IndexError, ValueError):
        raise InputError(f"{base.with_suffix('.hdr')} is not a BART header (no line of dimensions)") from None
    dims += [1] * (16 - len(dims))
    raw = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if raw.size != np.prod(dims):
        raise InputError(f"{base.with_suffix('.cfl')} holds {raw.size} values but its header says {dims}")
    other = [i for i, d in enumerate(dims) if d > 1 and i not in (0, 1, 2, 3, _BART_SLICE_DIM)]
    if other:
        raise InputError(f"BART dims {other} are > 1; only READ, PHS1, PHS2, COIL and SLICE (0-3, 13) are supported")
    k = raw.reshape(dims, order="F").reshape(*dims[:4], dims[_BART_SLICE_DIM], order="F")
    k = _to_slices(k.transpose(4, 3, 2, 1, 0), dims[0], base.name)  # (S, C, PHS2, PHS1, READ)
    return _checked(k, None, None, "bart", base.name, volumetric=dims[2] > 1, recentre=True,
                    readout_slices=dims[2] > 1)


def _read_nifti(path: Path) -> KSpace:
    import nibabel as nib

    img = nib.load(path)
    k = np.asanyarray(img.dataobj)
    if not np.iscomplexobj(k):
        raise InputError(f"{path.name} holds real values; k-space NIfTI must be complex")
    if not 2 <= k.ndim <= 4:
        raise InputError(f"{path.name}: k-space NIfTI must have axes (H, W[, S][, C]), got shape {k.shape}")
    k = k.reshape(k.shape + (1,) * (4 - k.ndim)).transpose(2, 3, 0, 1)
    zooms = tuple(img.header.get_zooms()[:3]) + (1.0,) * 3
    return _checked(k, zooms[:3], np.asarray(img.affine, dtype=float), "nifti", path.name, recentre=True)
