"""Classical reconstruction baselines for neurodiff's benchmarks: zero-filled inverse FFT and BART ``pics``
(l1-wavelet compressed sensing, single coil, sensitivities = 1).

All baselines share one interface: centred k-space ``(S, H, W)`` complex, in neurodiff's convention
``k = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two axes (:mod:`neurodiff.mri.fft`), zero where
not sampled, in; complex images ``(S, H, W)`` in neurodiff's image convention and scale out, so ``|result|``
compares directly with the reference magnitude image.

BART (``apt-get install bart``; checked with 0.8.00) is run as a subprocess on temporary ``.cfl``/``.hdr`` files.
Its ``pics`` forward model is the unitary centred FFT, identical to ours on even-sized axes; ``-S`` undoes its
internal data scaling. On odd-sized axes its centring differs from ours, so an odd axis is padded in k-space by one
unsampled line at the most negative frequency (index 0; our DC at ``N // 2`` then lands on BART's ``(N + 1) // 2``),
reconstructed on the even grid, and the padded frequency is dropped again before the inverse FFT back onto the
original ``N``-point grid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from neurodiff.mri import ifft2c
from neurodiff.mri.metrics import slice_metrics

__all__ = ["bart_available", "bart_pics", "bart_pics_multicoil", "lambda_sweep", "tune_lambda", "zero_filled"]


# ---------------------------------------------------------------------------------------------- cfl I/O
def _write_cfl(base: Path, a: np.ndarray) -> None:
    """Write a C-ordered array as a BART pair; BART dims are the numpy axes reversed (last axis = dim 0)."""
    a = np.ascontiguousarray(a, dtype=np.complex64)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in a.shape[::-1]) + "\n")
    a.tofile(base.with_suffix(".cfl"))


def _read_cfl(base: Path) -> np.ndarray:
    """Read a BART pair as a C-ordered array with axes reversed (trailing singleton BART dims dropped)."""
    lines = [ln for ln in base.with_suffix(".hdr").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    dims = [int(d) for d in lines[0].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64).reshape(dims[::-1])


# ---------------------------------------------------------------------------------------------- helpers
def _ifft2c_np(k: np.ndarray) -> np.ndarray:
    return ifft2c(torch.from_numpy(np.ascontiguousarray(k, dtype=np.complex64))).numpy()


def _fft2c_np(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _check(kspace: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    kspace = np.asarray(kspace)
    if kspace.ndim != 3 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex (S, H, W), got {kspace.dtype} {kspace.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != kspace.shape[-2:]:
            raise ValueError(f"mask shape {mask.shape} does not match k-space (H, W) {kspace.shape[-2:]}")
    return kspace


def bart_available() -> bool:
    """Whether the ``bart`` executable is on ``PATH``."""
    return shutil.which("bart") is not None


# ---------------------------------------------------------------------------------------------- baselines
def zero_filled(kspace: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero-filled reconstruction: ``ifft2c(kspace)`` (``mask``, if given, is applied first).

    Returns
    -------
    ndarray, shape (S, H, W), complex64
    """
    kspace = _check(kspace, mask)
    if mask is not None:
        kspace = kspace * np.asarray(mask, dtype=bool)
    return _ifft2c_np(kspace)


def bart_pics(
    kspace: np.ndarray,
    mask: np.ndarray,
    lam: float,
    iters: int = 100,
    threads: int = 1,
    extra_args: tuple[str, ...] = (),
) -> np.ndarray:
    """BART ``pics -S -l1 -r lam -i iters`` per slice, single coil with sensitivities = 1.

    Parameters
    ----------
    kspace : ndarray, shape (S, H, W), complex
        Centred k-space (neurodiff convention), zero where not sampled.
    mask : ndarray of bool, shape (H, W)
        Sampling pattern; passed to BART with ``-p`` (samples outside it are zeroed).
    lam : float
        l1-wavelet regularisation weight (BART's ``-r``, relative to BART's own data scaling).
    iters : int
        Maximum iterations (``-i``).
    threads : int
        ``OMP_NUM_THREADS`` for the BART processes.
    extra_args : tuple of str
        Further ``pics`` options (e.g. ``("-n",)`` to turn off random wavelet cycle spinning).

    Returns
    -------
    ndarray, shape (S, H, W), complex64
        Images in neurodiff's convention and scale (``|result|`` compares to the reference image).
    """
    if not bart_available():
        raise RuntimeError("bart not found on PATH: apt-get install bart")
    kspace = _check(kspace, mask)
    mask = np.asarray(mask, dtype=bool)
    s, h, w = kspace.shape
    ph, pw = h % 2, w % 2  # one unsampled line at index 0 on each odd axis
    k = np.pad(kspace * mask, ((0, 0), (ph, 0), (pw, 0))).astype(np.complex64)
    m = np.pad(mask, ((ph, 0), (pw, 0))).astype(np.complex64)
    env = {**os.environ, "OMP_NUM_THREADS": str(int(threads))}
    out = np.empty_like(k)
    with tempfile.TemporaryDirectory(prefix="bart_pics_") as tmp:
        d = Path(tmp)
        _write_cfl(d / "sens", np.ones(k.shape[-2:], np.complex64))
        _write_cfl(d / "pat", m)
        for i in range(s):
            _write_cfl(d / "ksp", k[i])
            cmd = ["bart", "pics", "-S", "-l1", "-r", repr(float(lam)), "-i", str(int(iters)), "-p", str(d / "pat"),
                   *extra_args, str(d / "ksp"), str(d / "sens"), str(d / "img")]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
            out[i] = _read_cfl(d / "img").reshape(k.shape[-2:])
    if ph or pw:  # back to k-space on the even grid, drop the padded frequencies, inverse FFT on the original grid
        out = _ifft2c_np(_fft2c_np(out)[:, ph:, pw:])
    return out.astype(np.complex64)


def bart_pics_multicoil(kspace: np.ndarray, lam: float, iters: int = 100, threads: int = 1,
                        calib: int | None = None) -> np.ndarray:
    """BART ``ecalib -m1`` (ESPIRiT sensitivities from the calibration centre) then ``pics -S -l1 -r lam`` per slice.

    Parameters
    ----------
    kspace : ndarray, shape (S, C, H, W), complex
        Centred multi-coil k-space, zero where not sampled; ``H`` and ``W`` even (BART's centring).
    lam, iters, threads
        As in :func:`bart_pics`.
    calib : int, optional
        ``ecalib -r``: the size of the calibration region (default BART's, 24), for centres smaller than that.

    Returns
    -------
    ndarray, shape (S, H, W), complex64
        Coil-combined images (``|result|`` compares with a coil combination of normalised sensitivities).
    """
    if not bart_available():
        raise RuntimeError("bart not found on PATH: apt-get install bart")
    s, c, h, w = kspace.shape
    if h % 2 or w % 2:
        raise ValueError(f"bart_pics_multicoil needs even H and W, got {h} x {w}")
    env = {**os.environ, "OMP_NUM_THREADS": str(int(threads))}
    out = np.empty((s, h, w), np.complex64)
    with tempfile.TemporaryDirectory(prefix="bart_pics_mc_") as tmp:
        d = Path(tmp)
        for i in range(s):
            _write_cfl(d / "ksp", kspace[i][:, None])  # numpy (C, 1, H, W) = BART [W, H, 1, C]
            ecalib = ["bart", "ecalib", "-m1", *(["-r", str(calib)] if calib else []), str(d / "ksp"), str(d / "sens")]
            for cmd in (ecalib,
                        ["bart", "pics", "-S", "-l1", "-r", repr(float(lam)), "-i", str(int(iters)), str(d / "ksp"),
                         str(d / "sens"), str(d / "img")]):
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
            out[i] = _read_cfl(d / "img").reshape(h, w)
    return out


# ---------------------------------------------------------------------------------------------- tuning
def lambda_sweep(
    kspace: np.ndarray, mask: np.ndarray, ref: np.ndarray, lams, iters: int = 100, **kwargs
) -> dict[float, dict[str, float]]:
    """``{lam: slice_metrics(ref, |bart_pics(kspace, mask, lam)|)}`` (mean PSNR/SSIM/NMSE over slices)."""
    ref = np.asarray(ref, dtype=np.float64)
    return {
        float(lam): slice_metrics(ref, np.abs(bart_pics(kspace, mask, lam, iters, **kwargs)).astype(np.float64))
        for lam in lams
    }


def tune_lambda(kspace: np.ndarray, mask: np.ndarray, ref: np.ndarray, lams, iters: int = 100, **kwargs) -> float:
    """The ``lam`` of ``lams`` with the best mean PSNR of ``|bart_pics|`` against the magnitude ``ref`` (S, H, W)."""
    scores = lambda_sweep(kspace, mask, ref, lams, iters, **kwargs)
    return max(scores, key=lambda lam: scores[lam]["psnr"])
