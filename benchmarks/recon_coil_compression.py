"""Coil compression: neurodiff on a 32-coil fastMRI-like simulation with every coil against the virtual coils
``--virtual-coils auto`` keeps (those whose signal stands above the noise), and against fixed counts.

The files are those of ``recon_multicoil.py`` with 32 coils (Colin27 with skull, 4x equispaced + 8% centre,
320 x 320 at ~0.69 mm). Every row is scored against the same two references: the noise-free image (the
fully sampled noise-free k-space combined with its own ESPIRiT maps), and as ``recon_multicoil.py`` does, the
noisy fully sampled combination of all coils, whose noise in the measured samples the reconstruction from all coils
shares (``reconstruct`` would compare each with the combination of its own virtual coils). Seconds are wall-clock
on the machine it runs on.

    python benchmarks/recon_coil_compression.py /work/shared/data [--slices 85,100] [--coils 32]
        [--noise 1e-4,1e-3,3e-3] [--fixed 8] [--out benchmarks/results/recon_coil_compression]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from recon_multicoil import MASK, simulate

from neurodiff.mri import MultiCoil, estimate_sensitivities, read_kspace
from neurodiff.mri.metrics import foreground, slice_metrics, uncertainty_metrics
from neurodiff.tasks.recon import reconstruct


def noise_free(kspace: torch.Tensor) -> np.ndarray:
    """Magnitude ``(H, W)`` of noise-free fully sampled k-space ``(C, H, W)`` combined with its own ESPIRiT maps."""
    sens = estimate_sensitivities(kspace)
    return MultiCoil(torch.ones(kspace.shape[-2:], dtype=torch.bool), sens).A_adjoint(kspace).abs().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--slices", default="85,100")
    ap.add_argument("--coils", type=int, default=32)
    ap.add_argument("--noise", default="1e-4,1e-3,3e-3", help="noise std as a fraction of max|k|, comma-separated")
    ap.add_argument("--fixed", default="8", help="fixed virtual-coil counts to run too, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    volume = nib.load(args.data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    slices, rows = [int(v) for v in args.slices.split(",")], []
    with tempfile.TemporaryDirectory(prefix="recon_cc_") as tmp:
        simulate(volume, slices, 0.0, Path(tmp) / "clean.h5", coils=args.coils)
        clean = np.stack([noise_free(torch.from_numpy(k)) for k in read_kspace(Path(tmp) / "clean.h5").data])
        for level in (float(v) for v in args.noise.split(",")):
            path = Path(tmp) / f"coils_{level:g}.h5"
            simulate(volume, slices, level, path, coils=args.coils)
            noisy = None
            for k in [None, "auto"] + [int(v) for v in args.fixed.split(",") if v]:
                res = reconstruct(path, virtual_coils=k, samples=8, steps=20, seed=0, device="auto", **MASK)
                mean, std = (np.moveaxis(a, 2, 0) for a in (res.recon, res.uncertainty))
                if noisy is None:  # the first run keeps every coil
                    noisy = np.moveaxis(res.reference, 2, 0)
                u = uncertainty_metrics(clean, mean, std, foreground(clean))
                cc = res.params.get("coil_compression", {"virtual_coils": args.coils, "signal_kept": 1.0})
                rows.append({"noise": level, "virtual coils": "all (default)" if k is None else k,
                             "kept": cc["virtual_coils"], "signal kept": cc["signal_kept"],
                             **slice_metrics(clean, mean), "psnr (noisy ref.)": slice_metrics(noisy, mean)["psnr"],
                             "coverage90": u["coverage90"], "spearman": u["spearman"],
                             "seconds": round(res.seconds, 1)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).round(4).to_string(index=False)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")
        pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
