"""Multi-coil reconstruction when the object fills the phase-encode field of view: neurodiff, zero-filling,
CG-SENSE and BART (ESPIRiT + l1-wavelet), with estimated and with the true coil sensitivities.

Axial Colin27 slices (1 mm, with skull) get 8 smooth complex coil sensitivities and complex Gaussian noise of
``level x max|k|`` and are written as BART ``.cfl`` k-space, in two fields of view along the phase-encode axis
(anterior-posterior): ``air`` leaves 20 rows of air on either side of the head, ``cut`` ends the field of view 4 rows
inside the head on either side (the object touches both edges, as with a tight phase field of view). ``neurodiff
recon`` reads the file and undersamples it (random lines). The reference is the noise-free object magnitude; every
method is scored against it. ``neurodiff, true sensitivities`` is a diagnostic: the same run with the simulation's
sensitivities in place of the ones estimated from the calibration centre. BART's ``-r`` is tuned on another slice of
the same geometry and noise, together with ``ecalib``'s calibration size (the mask's fully sampled centre, or
BART's default 24 lines: with the 9-line centre of the 8x masks ``ecalib -r 9`` returns empty maps).

    python benchmarks/recon_fov.py /work/shared/data [--test-slices 85,100] [--tune-slice 70]
        [--noise 1e-4,1e-3] [--out benchmarks/results/recon_fov]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from baselines import bart_available, bart_pics_multicoil
from recon_multicoil import cg_sense

from neurodiff.mri import read_kspace
from neurodiff.mri.fft import fft2c
from neurodiff.mri.metrics import slice_metrics
from neurodiff.mri.masks import calibration_size
from neurodiff.mri.raw import write_cfl
from neurodiff.tasks.recon import reconstruct

MASKS = [dict(accel=4.0, mask_type="random", center_fraction=0.08),
         dict(accel=8.0, mask_type="random", center_fraction=0.04)]
COILS, AIR, CUT = 8, 20, 4


def coil_maps(h: int, w: int) -> np.ndarray:
    """``(COILS, h, w)`` complex sensitivities of coils on a ring around the field of view, ``sum |S|^2 = 1``."""
    yy, xx = np.mgrid[-1:1:complex(0, h), -1:1:complex(0, w)]
    maps = []
    for i in range(COILS):
        a = 2 * np.pi * i / COILS
        maps.append(np.exp(-((yy - 1.1 * np.sin(a)) ** 2 + (xx - 1.1 * np.cos(a)) ** 2) / 0.8)
                    * np.exp(1j * (a + 2 * xx * np.sin(a))))
    maps = np.stack(maps)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(0))).astype(np.complex64)


def objects(volume: np.ndarray, slices: list[int], geometry: str) -> np.ndarray:
    """``(S, H, W)`` axial slices, rows anterior-posterior (the phase-encode axis), cropped to ``geometry``."""
    imgs = np.stack([volume[:, :, z].T[::-1] for z in slices])  # (S, 217, 181)
    rows = np.nonzero(volume.max(axis=(0, 2))[::-1] > 0.05 * volume.max())[0]  # the head's extent over the volume
    if geometry == "air":
        out = np.pad(imgs[:, rows.min():rows.max() + 1], ((0, 0), (AIR, AIR), (0, 0)))
    else:
        out = imgs[:, rows.min() + CUT:rows.max() + 1 - CUT]
    return out[:, : out.shape[1] // 2 * 2, : out.shape[2] // 2 * 2]


def kspace(imgs: np.ndarray, level: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centred multi-coil k-space ``(S, C, H, W)`` of ``imgs`` with a smooth background phase, and the maps."""
    s, h, w = imgs.shape
    maps = coil_maps(h, w)
    phase = np.exp(1j * 0.5 * np.mgrid[-1:1:complex(0, h), -1:1:complex(0, w)][0])
    coil = imgs[:, None] * phase * maps[None]
    k = fft2c(torch.from_numpy(coil.astype(np.complex64))).numpy()
    rng = np.random.default_rng(seed)
    k += level * np.abs(k).max() * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    return k.astype(np.complex64), maps


def case(volume: np.ndarray, test: list[int], tune: int, geometry: str, level: float, mask_kw: dict,
         tmp: Path) -> list[dict]:
    ref = objects(volume, test, geometry)
    k, maps = kspace(ref, level)
    path = tmp / f"{geometry}.cfl"  # (no dot in the stem: BART names are base names)
    write_cfl(path, k, force=True)
    res = reconstruct(path, samples=8, steps=20, seed=0, device="auto", **mask_kw)
    true_maps = torch.from_numpy(maps)
    with mock.patch("neurodiff.tasks.recon.estimate_sensitivities", side_effect=lambda d, **kw: true_maps):
        oracle = reconstruct(path, samples=8, steps=20, seed=0, device="auto", **mask_kw)
    mask = res.mask[:, :, 0].astype(bool)
    measured = read_kspace(path).data * mask
    label = dict(geometry=geometry, noise=f"{level:g}", mask=f"{mask_kw['accel']:g}x random")
    ours = lambda r: np.moveaxis(r.recon, 2, 0)  # noqa: E731
    rows = [{**label, "method": "zero-filled", **slice_metrics(ref, np.moveaxis(res.zerofilled, 2, 0))},
            {**label, "method": "CG-SENSE (30 it., damped)", **slice_metrics(ref, np.abs(cg_sense(measured, mask)))}]
    if bart_available():
        r_tune = objects(volume, [tune], geometry)
        k_tune = kspace(r_tune, level, seed=1)[0] * mask
        grid = [(lam, calib) for lam in (1e-3, 3e-3, 0.01, 0.03) for calib in (calibration_size(mask)[0], None)]
        lam, calib = max(grid, key=lambda v: slice_metrics(
            r_tune, np.abs(bart_pics_multicoil(k_tune, v[0], calib=v[1])))["psnr"])
        rows.append({**label, "method": f"BART ecalib + pics l1 (r={lam:g}, calib {calib or 24})",
                     **slice_metrics(ref, np.abs(bart_pics_multicoil(measured, lam, calib=calib)))})
    for name, r in (("neurodiff", res), ("neurodiff, true sensitivities", oracle)):
        rows.append({**label, "method": name, **slice_metrics(ref, ours(r)),
                     "coverage90": r.metrics["uncertainty"]["coverage90"],
                     "damping": "/".join(f"{d:.2g}" for d in r.params["multicoil_damping"])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--test-slices", default="85,100")
    ap.add_argument("--tune-slice", type=int, default=70)
    ap.add_argument("--noise", default="1e-4,1e-3", help="noise std as a fraction of max|k|, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    test = [int(v) for v in args.test_slices.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_fov_") as tmp:
        for geometry in ("air", "cut"):
            for level in (float(v) for v in args.noise.split(",")):
                for mask_kw in MASKS:
                    rows += case(volume, test, args.tune_slice, geometry, level, mask_kw, Path(tmp))
                    print(pd.DataFrame(rows[-5:]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows).round(3).to_string(index=False)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")
        pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
