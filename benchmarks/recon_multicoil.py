"""Multi-coil raw k-space: neurodiff against zero-filling, CG-SENSE and BART (ESPIRiT + l1-wavelet) on
fastMRI-like files simulated from Colin27.

Each case writes a fully sampled fastMRI-style HDF5 (12 coils with smooth complex sensitivities, 640 x 320 with 2x
readout oversampling and an ISMRMRD header, a smooth background phase, complex Gaussian noise of ``level x max|k|``),
which ``neurodiff.tasks.recon.reconstruct`` reads, crops and undersamples (4x equispaced lines + 8% centre). The
reference is the fully sampled (noisy) coil combination. BART's regularisation is tuned on a separate slice.

    python benchmarks/recon_multicoil.py /work/shared/data [--test-slices 85,100] [--tune-slice 70]
        [--noise 1e-4,1e-3,3e-3] [--out benchmarks/results/recon_multicoil]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from baselines import bart_available, bart_pics_multicoil
from scipy.ndimage import zoom

from neurodiff.mri import estimate_sensitivities, multicoil_project, read_kspace, snr_damping
from neurodiff.mri.metrics import slice_metrics
from neurodiff.mri.operators import MultiCoil
from neurodiff.tasks.recon import reconstruct

HEADER = ('<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><encodedSpace><matrixSize><x>640</x>'
          '<y>320</y><z>1</z></matrixSize><fieldOfView_mm><x>440</x><y>220</y><z>5</z></fieldOfView_mm>'
          '</encodedSpace><reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize><fieldOfView_mm><x>220</x>'
          '<y>220</y><z>5</z></fieldOfView_mm></reconSpace></encoding></ismrmrdHeader>')
MASK = dict(accel=4.0, mask_type="equispaced", center_fraction=0.08)


def coil_kspace(volume: np.ndarray, slices: list[int], coils: int = 12) -> np.ndarray:
    """Noise-free fully sampled centred k-space ``(S, C, 640, 320)`` (fastMRI's (readout, phase-encode) order) of
    axial ``slices`` of ``volume`` (1 mm) seen by ``coils`` smooth complex sensitivities."""
    imgs = []
    for z in slices:
        s = zoom(volume[:, :, z], 320 / 217, order=3)  # ~0.69 mm pixels on a 220 mm field of view
        c = np.zeros((320, 320), np.float32)
        h, w = min(320, s.shape[0]), min(320, s.shape[1])
        c[(320 - h) // 2:(320 - h) // 2 + h, (320 - w) // 2:(320 - w) // 2 + w] = s[:h, :w]
        imgs.append(np.rot90(c))
    yy, xx = np.mgrid[-1:1:640j, -1:1:320j]
    sens = []
    for i in range(coils):
        a = 2 * np.pi * i / coils
        cy, cx = 0.5 * np.sin(a), 1.1 * np.cos(a)
        sens.append(np.exp(-((yy - cy) ** 2 * 4 + (xx - cx) ** 2) / 0.8) * np.exp(1j * (a + 2 * xx * np.sin(a))))
    big = np.zeros((len(imgs), 640, 320), np.complex64)
    big[:, 160:480] = np.stack(imgs) * np.exp(1j * 0.8 * (yy + 0.3 * xx))[160:480]
    coil = big[:, None] * np.stack(sens)[None]
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def simulate(volume: np.ndarray, slices: list[int], level: float, path: Path, coils: int = 12, seed: int = 0) -> None:
    """Write a fully sampled fastMRI-style file of :func:`coil_kspace` with white complex noise of ``level x
    max|k|``."""
    k = coil_kspace(volume, slices, coils)
    rng = np.random.default_rng(seed)
    k += level * np.abs(k).max() * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    with h5py.File(path, "w") as f:
        f["kspace"] = k.astype(np.complex64)
        f["ismrmrd_header"] = HEADER


def cg_sense(kspace: np.ndarray, mask: np.ndarray, iters: int = 30) -> np.ndarray:
    """SENSE by conjugate gradients from zero-filling, with neurodiff's sensitivities and its noise-read Tikhonov
    damping towards zero (:func:`neurodiff.mri.snr_damping`)."""
    out = []
    for k in kspace:
        y = torch.from_numpy(k * mask)
        sens = estimate_sensitivities(y)
        zero = torch.zeros(y.shape[-2:], dtype=y.dtype)
        out.append(multicoil_project(zero, y, mask, sens, steps=iters, damping=snr_damping(y, mask)).numpy())
    return np.stack(out)


def case(volume: np.ndarray, test: list[int], tune: int, level: float, tmp: Path) -> list[dict]:
    full = tmp / f"full_{level:g}.h5"
    simulate(volume, test, level, full)
    res = reconstruct(full, samples=8, steps=20, seed=0, device="auto", **MASK)
    ref, mask = np.moveaxis(res.reference, 2, 0), res.mask[:, :, 0].astype(bool)
    kspace = read_kspace(full).data * mask
    rows = [{"method": "zero-filled", **res.metrics["zerofilled"]},
            {"method": "CG-SENSE (30 it., damped)", **slice_metrics(ref, np.abs(cg_sense(kspace, mask)))}]
    if bart_available():
        simulate(volume, [tune], level, tmp / "tune.h5", seed=1)  # (noise other than the test slices')
        k_tune = read_kspace(tmp / "tune.h5").data * mask
        r_tune = np.abs(np.stack([MultiCoil(np.ones_like(mask), estimate_sensitivities(torch.from_numpy(k)))
                                  .A_adjoint(torch.from_numpy(f)).numpy()
                                  for k, f in zip(k_tune, read_kspace(tmp / "tune.h5").data)]))
        lams = (1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1)
        lam = max(lams, key=lambda v: slice_metrics(r_tune, np.abs(bart_pics_multicoil(k_tune, v)))["psnr"])
        rows.append({"method": f"BART ecalib + pics l1 (r={lam:g})",
                     **slice_metrics(ref, np.abs(bart_pics_multicoil(kspace, lam)))})
    u = res.metrics["uncertainty"]
    rows.append({"method": "neurodiff (8 samples, 20 steps)", **res.metrics["recon"], "coverage90": u["coverage90"],
                 "spearman": u["spearman"], "seconds": round(res.seconds, 1),
                 "damping": "/".join(f"{d:.2g}" for d in res.params["multicoil_damping"])})
    for r in rows:
        r["noise"] = level
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--test-slices", default="85,100")
    ap.add_argument("--tune-slice", type=int, default=70)
    ap.add_argument("--noise", default="1e-4,1e-3,3e-3", help="noise std as a fraction of max|k|, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    test = [int(v) for v in args.test_slices.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_multicoil_") as tmp:
        for level in (float(v) for v in args.noise.split(",")):
            rows += case(volume, test, args.tune_slice, level, Path(tmp))
    table = pd.DataFrame(rows).round(3).to_string(index=False)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")
        pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
