"""3D multi-coil raw k-space: neurodiff against zero-filling, CG-SENSE and BART (ESPIRiT + l1-wavelet) on a 3D
acquisition simulated from Colin27.

A fully sampled 3D ISMRMRD file is written from Colin27 with skull (1 mm; 8 coils with smooth complex sensitivities
around the head; readout along x with 2x oversampling, phase-encode y, partitions z; elliptical scanning of the
(y, z) plane; complex Gaussian noise of ``level x`` the largest coil-image magnitude). ``neurodiff recon`` reads it as
hybrid space (one slice per readout position, each a (phase-encode, partition) k-space), undersamples that plane
retrospectively with each mask below and reconstructs a few readout positions (sagittal slices). The reference is
the fully sampled coil combination; neurodiff is also scored against the noise-free object (the same acquisition
simulated without noise), which its posterior describes: the noisy reference also holds noise in the k-space that
was not measured, which no reconstruction can know. BART's ``-r`` (and ``ecalib``'s calibration size: the mask's
fully sampled centre) is tuned on a separate readout position.

    python benchmarks/recon_3d.py /work/shared/data [--test-slices 60:63] [--tune-slice 120] [--noise 0.005]
        [--out benchmarks/results/recon_3d]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from baselines import bart_available, bart_pics_multicoil
from recon_multicoil import cg_sense

from neurodiff.mri import estimate_sensitivities, read_kspace
from neurodiff.mri.metrics import foreground, slice_metrics, uncertainty_metrics
from neurodiff.mri.operators import MultiCoil
from neurodiff.tasks.recon import reconstruct

MASKS = [dict(accel=4.0, mask_type="random", center_fraction=0.08),
         dict(accel=4.0, mask_type="poisson", center_fraction=0.08),
         dict(accel=8.0, mask_type="poisson", center_fraction=0.06)]


def header(readout: int, lines: int, partitions: int) -> str:
    """ISMRMRD XML header of a 3D Cartesian acquisition: encoded matrix with 2x readout oversampling, recon matrix
    without, 1 mm voxels, k-space centres in the middle."""
    space = ("<{0}><matrixSize><x>{1}</x><y>{2}</y><z>{3}</z></matrixSize><fieldOfView_mm><x>{1}</x><y>{2}</y>"
             "<z>{3}</z></fieldOfView_mm></{0}>")
    limits = "".join(f"<kspace_encoding_step_{i}><minimum>0</minimum><maximum>{n - 1}</maximum><center>{n // 2}"
                     f"</center></kspace_encoding_step_{i}>" for i, n in ((1, lines), (2, partitions)))
    return ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
            + space.format("encodedSpace", 2 * readout, lines, partitions)
            + space.format("reconSpace", readout, lines, partitions)
            + f"<encodingLimits>{limits}</encodingLimits><trajectory>cartesian</trajectory></encoding>"
            "</ismrmrdHeader>")


def simulate(volume: np.ndarray, level: float, path: Path, coils: int = 8, seed: int = 0) -> None:
    """Write ``volume`` ``(X, Y, Z)`` (1 mm) as a fully sampled, elliptically scanned 3D ISMRMRD acquisition."""
    import ismrmrd

    vol = np.pad(volume, [(0, n % 2) for n in volume.shape])
    x, y, z = vol.shape
    yy, zz = np.meshgrid(np.linspace(-1, 1, y), np.linspace(-1, 1, z), indexing="ij")
    xx = np.linspace(-1, 1, 2 * x)[:, None, None]
    coil = np.zeros((coils, 2 * x, y, z), np.complex64)  # 2x readout oversampling: the object fills the middle
    for c in range(coils):
        a = 2 * np.pi * c / coils
        sens = np.exp(-((yy - 1.3 * np.cos(a)) ** 2 + (zz - 1.3 * np.sin(a)) ** 2 + 0.3 * xx**2) / 1.5)
        coil[c] = sens * np.exp(1j * (a + 0.5 * yy + 0.3 * xx)) * np.pad(vol, [(x // 2, x // 2), (0, 0), (0, 0)])
    noise = level * np.abs(coil).max()
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(coil, axes=(1, 2, 3)), axes=(1, 2, 3), norm="ortho"),
                        axes=(1, 2, 3))
    rng = np.random.default_rng(seed)
    k += noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)).astype(np.complex64) / np.sqrt(2)
    ds = ismrmrd.Dataset(str(path), "/dataset", create_if_needed=True)
    ds.write_xml_header(header(x, y, z))
    for j, i in zip(*np.nonzero(yy**2 + zz**2 <= 1)):  # elliptical scanning
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[:, :, j, i]))
        acq.idx.kspace_encode_step_1, acq.idx.kspace_encode_step_2 = j, i
        acq.center_sample = x
        ds.append_acquisition(acq)
    ds.close()


def reference(kspace: np.ndarray) -> np.ndarray:
    """Fully sampled coil combinations ``(S, H, W)`` of ``kspace`` ``(S, C, H, W)``, as neurodiff forms them."""
    out = []
    for k in kspace:
        full = torch.from_numpy(k)
        ones = torch.ones(k.shape[-2:], dtype=torch.bool)
        out.append(MultiCoil(ones, estimate_sensitivities(full)).A_adjoint(full).abs().numpy())
    return np.stack(out)


def case(path: Path, full: np.ndarray, clean: np.ndarray, test: str, tune: int, mask_kw: dict) -> list[dict]:
    """One mask: neurodiff on the file at ``path`` against the baselines on its k-space ``full`` ``(S, C, H, W)``;
    ``clean``: the same acquisition without noise, whose coil combination is the noise-free object."""
    res = reconstruct(path, slices=test, samples=8, steps=20, seed=0, device="auto", **mask_kw)
    ref, mask = np.moveaxis(res.reference, 2, 0), res.mask[:, :, 0].astype(bool)
    a, b = res.params["slice_range"]
    kspace = full[a:b] * mask
    name = f"{mask_kw['accel']:g}x {mask_kw['mask_type']}"
    rows = [{"mask": name, "method": "zero-filled", **res.metrics["zerofilled"]},
            {"mask": name, "method": "CG-SENSE (30 it., damped)", **slice_metrics(ref, np.abs(cg_sense(kspace, mask)))}]
    if bart_available():
        calib = int(round(mask_kw["center_fraction"] * mask.shape[0]))
        k_tune, r_tune = full[tune:tune + 1] * mask, reference(full[tune:tune + 1])
        lam = max((1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1), key=lambda v: slice_metrics(
            r_tune, np.abs(bart_pics_multicoil(k_tune, v, calib=calib)))["psnr"])
        rows.append({"mask": name, "method": f"BART ecalib + pics l1 (r={lam:g})",
                     **slice_metrics(ref, np.abs(bart_pics_multicoil(kspace, lam, calib=calib)))})
    u = res.metrics["uncertainty"]
    truth = reference(clean[a:b])
    mean, std = (np.moveaxis(v, 2, 0) for v in (res.recon, res.uncertainty))
    u_truth = uncertainty_metrics(truth, mean, std, foreground(truth))
    rows.append({"mask": name, "method": "neurodiff (8 samples, 20 steps)", **res.metrics["recon"],
                 "coverage90": u["coverage90"], "spearman": u["spearman"],
                 "seconds_per_slice": round(res.seconds / (b - a), 1),
                 "psnr_vs_noise_free": slice_metrics(truth, mean)["psnr"],
                 "coverage90_vs_noise_free": u_truth["coverage90"], "spearman_vs_noise_free": u_truth["spearman"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--test-slices", default="60:63", help="readout positions to reconstruct, A:B")
    ap.add_argument("--tune-slice", type=int, default=120, help="readout position BART's -r is tuned on")
    ap.add_argument("--noise", type=float, default=0.005, help="noise std as a fraction of the largest coil image")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_3d_") as tmp:
        path, clean = Path(tmp) / "colin27_3d.h5", Path(tmp) / "colin27_3d_noise_free.h5"
        simulate(volume, args.noise, path)
        simulate(volume, 0.0, clean)
        full = read_kspace(path).data
        for mask_kw in MASKS:
            rows += case(path, full, read_kspace(clean).data, args.test_slices, args.tune_slice, mask_kw)
    table = pd.DataFrame(rows).round(3).to_string(index=False)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")
        pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
