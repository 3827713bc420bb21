"""Coil noise prewhitening: multi-coil raw data with correlated coil noise, read with and without a noise scan.

The 12-coil Colin27 slices of ``recon_multicoil.py`` (0.69 mm, 640 x 320 with 2x readout oversampling) get complex
noise whose coil covariance is ``D R D``: correlation ``R_ij = rho^d(i, j)`` between coils ``d`` apart around the
ring (``--rho``, default 0.35, in the range receive arrays show) and noise powers ``D^2`` spread log-uniformly
over 0.5-2x, scaled so that the average coil noise std is ``level x max|k|``. Each case is written twice as
ISMRMRD HDF5: once with 32 noise-only lines (flag 19, as ``siemens_to_ismrmrd`` writes the noise adjust scan), so
that ``neurodiff recon`` prewhitens, and once without. Every method is scored against the same pipeline's
noise-free image (the fully sampled coil combination of the noise-free data, whitened alike), so the two readings
are compared by their errors, not by their references: the fully sampled coil combination, zero-filling, CG-SENSE
(30 iterations, noise-read damping) and neurodiff (8 samples, 20 steps), 4x equispaced lines + 8% centre. PSNR
depends on the reference's peak, which the whitened combination weights differently; ``object snr`` (mean over
the std of the error inside the object) is the fairer comparison.

    python benchmarks/recon_whitening.py /work/shared/data [--test-slices 85] [--noise 1e-3,3e-3] [--rho 0.35]
        [--out benchmarks/results/recon_whitening]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from recon_multicoil import MASK, cg_sense, coil_kspace

from neurodiff.mri import read_kspace
from neurodiff.mri.metrics import slice_metrics
from neurodiff.mri.whitening import prewhiten
from neurodiff.tasks.recon import reconstruct

NOISE_LINES = 32


def coil_covariance(coils: int, rho: float, seed: int = 0) -> np.ndarray:
    """``(C, C)`` noise covariance ``D R D`` with ``R_ij = rho^d`` (``d``: ring distance) and log-uniform powers
    over 0.5-2, scaled to unit mean variance."""
    i = np.arange(coils)
    d = np.abs(i[:, None] - i[None])
    r = rho ** np.minimum(d, coils - d)
    power = np.exp(np.random.default_rng(seed).uniform(np.log(0.5), np.log(2.0), coils))
    cov = np.sqrt(power)[:, None] * r * np.sqrt(power)[None]
    return cov / np.trace(cov) * coils


def coloured(shape: tuple[int, ...], chol: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Complex noise ``(C, *shape)`` with covariance ``chol chol^H``."""
    white = (rng.standard_normal((len(chol),) + shape) + 1j * rng.standard_normal((len(chol),) + shape)) / np.sqrt(2)
    return np.tensordot(chol, white, axes=1)


def write_ismrmrd(path: Path, k: np.ndarray, noise: np.ndarray | None) -> None:
    """Fully sampled k-space ``(S, C, 640, 320)`` (readout, phase-encode) as ISMRMRD HDF5 lines, after the noise
    lines ``(NOISE_LINES, C, 640)`` when given."""
    import ismrmrd

    path.unlink(missing_ok=True)  # ismrmrd appends to an existing file
    s, c, nx, ny = k.shape
    space = ("<{0}><matrixSize><x>{1}</x><y>320</y><z>1</z></matrixSize><fieldOfView_mm><x>{2}</x><y>220</y>"
             "<z>5</z></fieldOfView_mm></{0}>")
    xml = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
           + space.format("encodedSpace", nx, 440) + space.format("reconSpace", nx // 2, 220)
           + f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{ny - 1}</maximum><center>"
           f"{ny // 2}</center></kspace_encoding_step_1></encodingLimits><trajectory>cartesian</trajectory>"
           "</encoding></ismrmrdHeader>")
    ds = ismrmrd.Dataset(str(path), "/dataset", create_if_needed=True)
    ds.write_xml_header(xml)
    lines = [(n, 0, 0, True) for n in (noise if noise is not None else [])]
    lines += [(k[z, :, :, j], j, z, False) for z in range(s) for j in range(ny)]
    for data, lin, slc, is_noise in lines:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
        acq.idx.kspace_encode_step_1, acq.idx.slice, acq.center_sample = lin, slc, nx // 2
        if is_noise:
            acq.set_flag(19)  # ISMRMRD_ACQ_IS_NOISE_MEASUREMENT
        ds.append_acquisition(acq)
    ds.close()


def object_snr(ref: np.ndarray, est: np.ndarray) -> float:
    """Mean of ``ref`` over the std of ``est - ref`` inside the object (``ref`` above 20% of its maximum), slices
    ``(S, H, W)`` pooled: unlike PSNR (peak) and NMSE (whole field of view, mostly noisy air), insensitive to how
    the coil combination weights the image and to the background."""
    obj = ref > 0.2 * ref.max()
    return float(ref[obj].mean() / (est - ref)[obj].std())


def case(clean: np.ndarray, level: float, rho: float, tmp: Path) -> list[dict]:
    coils = clean.shape[1]
    chol = np.linalg.cholesky(coil_covariance(coils, rho))
    rng = np.random.default_rng(0)
    std = level * np.abs(clean).max()
    noisy = clean + std * np.moveaxis(coloured(clean.shape[:1] + clean.shape[2:], chol, rng), 0, 1)
    scan = std * np.moveaxis(coloured((NOISE_LINES, clean.shape[2]), chol, rng), 0, 1)  # (lines, C, 640)
    rows = []
    for name, noise in (("no noise scan", None), ("prewhitened", scan)):
        write_ismrmrd(tmp / "clean.h5", clean, noise)
        write_ismrmrd(tmp / "noisy.h5", noisy, noise)
        ref = np.moveaxis(reconstruct(tmp / "clean.h5", model="none", device="cpu").recon, 2, 0)
        full = reconstruct(tmp / "noisy.h5", model="none", device="cpu")
        res = reconstruct(tmp / "noisy.h5", samples=8, steps=20, seed=0, device="auto", **MASK)
        mask = res.mask[:, :, 0].astype(bool)
        kspace, _ = prewhiten(read_kspace(tmp / "noisy.h5"))
        estimates = {"fully sampled": full.recon, "zero-filled": res.zerofilled, "neurodiff": res.recon}
        estimates = {k: np.moveaxis(v, 2, 0) for k, v in estimates.items()}
        estimates["CG-SENSE (30 it., damped)"] = np.abs(cg_sense(kspace.data * mask, mask))
        for method, est in estimates.items():
            rows.append({"noise": level, "coil noise": name, "method": method, **slice_metrics(ref, est),
                         "object snr": object_snr(ref, est)})
        print(f"noise {level:g}, {name}: {res.params['coil_noise']}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--test-slices", default="85")
    ap.add_argument("--noise", default="1e-3,3e-3", help="average coil noise std as a fraction of max|k|")
    ap.add_argument("--rho", type=float, default=0.35, help="noise correlation of neighbouring coils")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    clean = coil_kspace(volume, [int(v) for v in args.test_slices.split(",")])
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_whitening_") as tmp:
        for level in (float(v) for v in args.noise.split(",")):
            rows += case(clean, level, args.rho, Path(tmp))
    table = pd.DataFrame(rows)
    text = table.pivot_table(index=["noise", "method"], columns="coil noise", values=["psnr", "ssim", "object snr"],
                             sort=False).round(3).to_string()
    print(text)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(text + "\n")
        table.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
