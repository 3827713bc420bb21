"""Multi-coil partial Fourier: neurodiff against zero-filling and BART (ESPIRiT + l1-wavelet) on simulated raw
files with one side of the phase encoding skipped, as they arrive from scanners that combine partial Fourier with
parallel imaging (for example Siemens GRAPPA 2 + 6/8 partial Fourier).

Two simulations of Colin27 slices:

- ``native``: the 1 mm slices of ``recon_fov.py`` (8 coils, 20 rows of air on either side of the head along the
  phase-encode axis, BART ``.cfl``): image content up to the edge of k-space, as in a scan at its own resolution.
  Scored against the noise-free object (``psnr``, ``coverage90``) and against the fully sampled noisy coil
  combination with the true maps (``psnr_vs_noisy``, ``coverage90_vs_noisy``).
- ``fastmri``: the fastMRI-like files of ``recon_multicoil.py`` (12 coils, 320 x 320 with 2x readout
  oversampling), whose slices are upsampled 1.47x: the outer third of k-space holds almost nothing but noise, so the
  skipped lines cost little. Scored against the fully sampled noisy coil combination (``psnr``, ``coverage90``, as
  in ``recon_multicoil.py``) and the noise-free one (``psnr_vs_clean``, ``coverage90_vs_clean``).

Each case writes the undersampled k-space (zeros where not sampled), which ``neurodiff.tasks.recon.reconstruct``
reads and reconstructs from the data's own sampling (the skipped side flagged by ``partial_fourier_axis``, every
data consistency then phase-constrained; ``flagged``). Masks over the phase-encode lines: the first quarter
skipped (6/8 partial Fourier), alone and with 2x or 3x equispaced lines (centre 24 lines). Where the mask also
undersamples, neurodiff is run a second time with the phase constraint off (``partial_fourier_axis`` patched to
return None). BART's regularisation is tuned, per mask and noise level, on a separate slice. ``misfit`` is the
samples' residual against the data in units of the noise variance before the final fit, per slice.

    python benchmarks/recon_multicoil_partial_fourier.py /work/shared/data [--sim native] [--test-slices 85,100]
        [--tune-slice 70] [--noise 1e-4,1e-3] [--out benchmarks/results/recon_multicoil_partial_fourier]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import recon_fov
import recon_multicoil
import torch
from baselines import bart_available, bart_pics_multicoil

import neurodiff.tasks.recon as recon
from neurodiff.mri import ifft2c, read_kspace
from neurodiff.mri.metrics import foreground, slice_metrics, uncertainty_metrics
from neurodiff.mri.raw import write_cfl

CENTRE = 24
MASKS = {"6/8 partial Fourier": 1, "2x equispaced + 6/8 PF": 2, "3x equispaced + 6/8 PF": 3}
# write(keep, path) -> the undersampled file; the scores' references (S, H, W) as neurodiff outputs them
Simulation = tuple[Callable[[np.ndarray, Path], Path], np.ndarray, np.ndarray]


def line_mask(lines: int, every: int) -> np.ndarray:
    """``(lines,)`` phase-encode lines kept: every ``every``-th line and the central ``CENTRE``, the first
    quarter dropped."""
    keep = np.zeros(lines, bool)
    keep[::every] = True
    keep[lines // 2 - CENTRE // 2:lines // 2 + CENTRE // 2] = True
    keep[:lines // 4] = False
    return keep


def combination(path: Path) -> np.ndarray:
    """The coil combination ``(S, H, W)`` of a fully sampled file, as neurodiff outputs it."""
    return np.moveaxis(recon.reconstruct(path, samples=1, device="cpu").recon, 2, 0)


def fastmri(volume: np.ndarray, slices: list[int], level: float, tmp: Path, name: str, seed: int = 0) -> Simulation:
    """``recon_multicoil.py``'s 12-coil HDF5 (noise drawn with ``seed``); references: the noisy and the noise-free
    coil combination."""
    full, clean = tmp / f"{name}_full.h5", tmp / f"{name}_clean.h5"
    recon_multicoil.simulate(volume, slices, level, full, seed=seed)
    recon_multicoil.simulate(volume, slices, 0.0, clean)
    with h5py.File(full) as f:
        kspace, header = f["kspace"][()], f["ismrmrd_header"][()]

    def write(keep: np.ndarray, path: Path) -> Path:  # (phase-encode lines: the file's last axis)
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            f["kspace"] = kspace * keep
            f["ismrmrd_header"] = header
        return path.with_suffix(".h5")

    return write, combination(full), combination(clean)


def native(volume: np.ndarray, slices: list[int], level: float, tmp: Path, name: str, seed: int = 0) -> Simulation:
    """``recon_fov.py``'s 8-coil 1 mm slices with air (noise drawn with ``seed``); references: the noise-free object
    and the noisy coil combination with the true maps."""
    objects = recon_fov.objects(volume, slices, "air")
    kspace, maps = recon_fov.kspace(objects, level, seed)
    noisy = np.abs((maps.conj()[None] * ifft2c(torch.from_numpy(kspace)).numpy()).sum(1))

    def write(keep: np.ndarray, path: Path) -> Path:  # (phase-encode lines: axis H)
        write_cfl(path.with_suffix(".cfl"), kspace * keep[:, None], force=True)
        return path.with_suffix(".cfl")

    return write, objects, noisy


SIMULATIONS = {"native": native, "fastmri": fastmri}


def neurodiff_row(path: Path, ref: np.ndarray, other: np.ndarray, constrained: bool) -> dict:
    """Scores of neurodiff on ``path`` (8 samples, 20 steps), with or without the partial-Fourier phase constraint;
    ``_zerofilled`` its zero-filled image."""
    off = contextlib.nullcontext() if constrained else mock.patch.object(recon, "partial_fourier_axis",
                                                                         lambda *a, **k: None)
    with off:
        res = recon.reconstruct(path, samples=8, steps=20, seed=0, device="auto")
    mean, std = np.moveaxis(res.recon, 2, 0), np.moveaxis(res.uncertainty, 2, 0)
    u = uncertainty_metrics(ref, mean, std, foreground(ref))
    u_other = uncertainty_metrics(other, mean, std, foreground(ref))
    return {"method": "neurodiff" + ("" if constrained else " (no phase constraint)"), **slice_metrics(ref, mean),
            "other_psnr": slice_metrics(other, mean)["psnr"], "coverage90": u["coverage90"],
            "other_coverage90": u_other["coverage90"], "spearman": u["spearman"],
            "flagged": res.params.get("partial_fourier_axis") is not None,
            "misfit": "/".join(f"{m:.2g}" for m in res.params.get("multicoil_final_misfit", [])),
            "seconds": round(res.seconds, 1), "_zerofilled": np.abs(np.moveaxis(res.zerofilled, 2, 0))}


def case(sim: str, volume: np.ndarray, test: list[int], tune: int, level: float, tmp: Path) -> list[dict]:
    write, ref, other = SIMULATIONS[sim](volume, test, level, tmp, "test")
    if bart_available():
        write_tune, tune_ref, _ = SIMULATIONS[sim](volume, [tune], level, tmp, "tune", seed=1)  # (other noise)
    lines = ref.shape[1] if sim == "native" else ref.shape[2]
    rows = []
    for label, every in MASKS.items():
        keep, start = line_mask(lines, every), len(rows)
        path = write(keep, tmp / "test")
        nd = [neurodiff_row(path, ref, other, c) for c in ((True, False) if every > 1 else (True,))]
        z = nd[0]["_zerofilled"]
        rows.append({"method": "zero-filled", **slice_metrics(ref, z), "other_psnr": slice_metrics(other, z)["psnr"]})
        if bart_available():
            k_tune = read_kspace(write_tune(keep, tmp / "tune")).data
            lam = max((1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03), key=lambda v: slice_metrics(
                tune_ref, np.abs(bart_pics_multicoil(k_tune, v)))["psnr"])
            b = np.abs(bart_pics_multicoil(read_kspace(path).data, lam))
            rows.append({"method": f"BART ecalib + pics l1 (r={lam:g})", **slice_metrics(ref, b),
                         "other_psnr": slice_metrics(other, b)["psnr"]})
        rows += [{k: v for k, v in r.items() if k != "_zerofilled"} for r in nd]
        for r in rows[start:]:
            r.update(sim=sim, noise=level, mask=label)
        print(pd.DataFrame(rows[start:]).round(3).to_string(index=False), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--sim", choices=sorted(SIMULATIONS), default="native")
    ap.add_argument("--test-slices", default="85,100")
    ap.add_argument("--tune-slice", type=int, default=70)
    ap.add_argument("--noise", default="1e-4,1e-3", help="noise std as a fraction of max|k|, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    test = [int(v) for v in args.test_slices.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_mc_pf_") as tmp:
        for level in (float(v) for v in args.noise.split(",")):
            rows += case(args.sim, volume, test, args.tune_slice, level, Path(tmp))
    other = {"native": "noisy", "fastmri": "clean"}[args.sim]
    frame = pd.DataFrame(rows).rename(columns={"other_psnr": f"psnr_vs_{other}",
                                               "other_coverage90": f"coverage90_vs_{other}"})
    table = frame.set_index(["sim", "noise", "mask", "method"]).round(3).to_string()
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")
        frame.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
