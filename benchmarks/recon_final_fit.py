"""How hard to fit the finished multi-coil samples to the data: fixed damping against damping scaled by the
samples' noise misfit, on the simulated slices of ``recon_multicoil.py``, ``recon_fov.py`` and ``recon_3d.py`` and
on the twix phantom.

Each case is reconstructed once (8 samples, 20 steps); the inputs of the final fit (the finished samples, their
noisy copies of the data, mask and maps) are captured and every rule is applied to the same samples. A rule sets
the damping of the 30 conjugate-gradient steps as ``sigma^2 / tau^2`` with ``tau`` a relative error ``r`` of the
image (:func:`neurodiff.mri.snr_damping`), either as it is (``fixed r``), or multiplied by ``max(misfit, 1)``, the
samples' residual against the data in units of the noise variance (``misfit r``, :func:`neurodiff.mri.noise_misfit`),
or by ``max(misfit, 1 / misfit^2)`` (``two-sided r``: samples already fitted into the noise are held back too).
Session 21 shipped ``fixed 0.05``. PSNR of the posterior mean (dB) against the fully sampled coil combination
(12 coils, 3D, twix) or the noise-free object (``fov`` cases).

    python benchmarks/recon_final_fit.py /work/shared/data [--slices 70] [--slices-3d 120]
        [--twix tests/data/mri/gre.dat] [--out benchmarks/results/recon_final_fit]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pandas as pd
import recon_3d
import recon_fov
import recon_multicoil
import torch

import neurodiff.tasks.recon as recon
from neurodiff.mri import misfit_damping_factor, multicoil_project, noise_misfit, snr_damping
from neurodiff.mri.metrics import slice_metrics
from neurodiff.mri.raw import write_cfl

RULES = [("fixed", 0.05), ("fixed", 0.1), ("fixed", 0.15), ("misfit", 0.1), ("misfit", 0.15), ("two-sided", 0.1),
         ("two-sided", 0.15)]
TWIX = {"2x random": dict(accel=2.0, center_fraction=0.1), "3x random": dict(accel=3.0, center_fraction=0.08),
        "4x poisson": dict(accel=4.0, mask_type="poisson")}


def captured_run(path: Path, **kw) -> tuple[list[dict], recon.ReconResult]:
    """Reconstruct ``path`` and return the inputs of every final multi-coil fit with the result."""
    calls, project = [], recon.multicoil_project

    def capture(z, y, mask, sens, steps=5, damping=0.0):
        if steps == recon.MULTICOIL_FINAL_CG_STEPS:
            calls.append(dict(z=z, y=y, mask=torch.as_tensor(mask), sens=sens))
        return project(z, y, mask, sens, steps, damping)

    with mock.patch.object(recon, "multicoil_project", capture):
        res = recon.reconstruct(path, samples=8, steps=20, seed=0, device="cpu", **kw)
    return calls, res


def rule_psnr(calls: list[dict], noise_variance: float, reference: np.ndarray) -> dict[str, float]:
    """PSNR of the posterior mean of one slice under each rule of ``RULES``."""
    data = calls[0]["y"].mean(0)  # (1, C, H, W): the copies are centred on the data
    mask, sens = calls[0]["mask"], calls[0]["sens"]
    misfit = noise_misfit(calls[0]["z"], data[0], mask, sens, noise_variance)
    inside = sens.abs().sum(0) > 0
    out = {"misfit": misfit}
    factor = {"fixed": 1.0, "misfit": max(misfit, 1.0), "two-sided": misfit_damping_factor(misfit)}  # (shipped)
    for kind, r in RULES:
        lam = factor[kind] * snr_damping(data[0], mask, r, noise_variance)
        steps = recon.MULTICOIL_FINAL_CG_STEPS
        fitted = torch.cat([multicoil_project(c["z"], c["y"], mask, sens, steps, lam) * inside for c in calls])
        out[f"{kind} {r:g}"] = slice_metrics(reference, fitted.mean(0).abs().numpy())["psnr"]
    return out


def cases(data: Path, slices: list[int], slices_3d: list[int], tmp: Path):
    """``(label, path, reconstruct keywords, reference or None)`` of the simulated cases (one slice each)."""
    volume = nib.load(data / "mri" / "colin27" / "ch2.nii.gz").get_fdata(dtype=np.float32)
    if slices_3d:
        path = tmp / "colin27_3d.h5"
        recon_3d.simulate(volume, 0.005, path)
        for z in slices_3d:
            for mask_kw in recon_3d.MASKS:
                label = f"3D readout position {z}, 8 coils {mask_kw['accel']:g}x {mask_kw['mask_type']}, noise 0.005"
                yield label, path, {**mask_kw, "slices": f"{z}:{z + 1}"}, None
    for z in slices:
        for level in (1e-4, 1e-3, 3e-3):
            path = tmp / f"coils12_{z}_{level:g}.h5"
            recon_multicoil.simulate(volume, [z], level, path)
            yield f"slice {z}, 12 coils 4x equispaced, noise {level:g}", path, recon_multicoil.MASK, None
        for geometry in ("air", "cut"):
            for mask_kw in recon_fov.MASKS:
                for level in (1e-4, 1e-3):
                    ref = recon_fov.objects(volume, [z], geometry)
                    path = tmp / f"{geometry}{z}.cfl"
                    write_cfl(path, recon_fov.kspace(ref, level)[0], force=True)
                    label = f"slice {z}, 8 coils {geometry} {mask_kw['accel']:g}x random, noise {level:g}"
                    yield label, path, mask_kw, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (mri/colin27/ch2.nii.gz)")
    ap.add_argument("--slices", default="70", help="axial Colin27 slices, comma-separated")
    ap.add_argument("--slices-3d", default="120", help="readout positions of recon_3d.py's volume, comma-separated")
    ap.add_argument("--twix", type=Path, default=None, help="also the twix phantom (tests/data/mri/gre.dat)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon_final_fit_") as tmp:
        ints = lambda v: [int(x) for x in v.split(",") if x]  # noqa: E731
        runs = cases(args.data, ints(args.slices), ints(args.slices_3d), Path(tmp))  # (each file written in turn)
        if args.twix is not None:
            runs = itertools.chain(runs, ((f"twix phantom, {name}", args.twix, kw, None) for name, kw in TWIX.items()))
        for label, path, kw, ref in runs:
            calls, res = captured_run(path, **kw)
            assert len(res.params["multicoil_final_misfit"]) == 1  # one slice: every call has its data and maps
            reference = np.moveaxis(res.reference, 2, 0) if ref is None else ref
            rows.append({"case": label, **rule_psnr(calls, res.params["kspace_noise_std"][0] ** 2, reference),
                         # the run's own posterior mean (the shipped rule), where scored against the same reference
                         "run": res.metrics["recon"]["psnr"] if ref is None else np.nan})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    gain = table[[f"{k} {r:g}" for k, r in RULES]].sub(table["fixed 0.05"], axis=0)
    summary = pd.DataFrame({"rule": gain.columns, "mean gain over fixed 0.05 (dB)": gain.mean().values,
                            "worst": gain.min().values, "best": gain.max().values})
    text = table.round(2).to_string(index=False) + "\n\n" + summary.round(2).to_string(index=False)
    print(text)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(text + "\n")
        table.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
