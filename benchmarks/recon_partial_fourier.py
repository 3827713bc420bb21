"""Partial Fourier: neurodiff against zero-filling and POCS on k-space with one side of the phase encoding missing.

Scanners skip up to 3/8 of the phase-encode lines on one side of k-space (partial Fourier) and rely on the
conjugate symmetry of a nearly real image; raw files then reach ``neurodiff recon`` with that side zero, which the
readers keep unsampled and the model (never trained on such masks) has to fill. Central slices of the test subjects
(T1 + FLAIR, 2 mm) are given a smooth random phase (up to about pi across the slice, as MR images carry) and
complex white noise as strong as the slice's own (read from its outermost k-space: the phase-free magnitude would
be exactly conjugate-symmetric, which flatters POCS), and reconstructed as complex images from: partial Fourier
alone (6/8, 5/8), 4x random lines, and both together. The classical baseline for partial Fourier is POCS
(Haacke 1991): the phase of the symmetric centre imposed on the magnitude, then the measured lines put back,
iterated; neurodiff does one such iteration in every data consistency where the mask skips one side of k-space
(``phase_constrained``: the fraction of volumes where it did), given the image and the mask (the reference-free
spread only) or, as raw data arrive, the undersampled k-space as a complex NIfTI (whose uncertainty adds the
noise a full scan holds in the k-space left out, read from the data). PSNR, SSIM, NMSE are against the fully
sampled noisy complex image's magnitude; ``psnr_vs_clean`` against the magnitude before the added noise.

    python benchmarks/recon_partial_fourier.py /work/shared/data [--slices-per-volume 3]
        [--out benchmarks/results/recon_partial_fourier]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from recon_quality import TEST_SUBJECTS, central_slices, volumes

from neurodiff.mri import fft2c, ifft2c, kspace_noise_variance, sampling_mask
from neurodiff.mri.metrics import foreground, slice_metrics, uncertainty_metrics
from neurodiff.tasks.recon import reconstruct

MASKS = {"6/8 partial Fourier": (0.75, None), "5/8 partial Fourier": (0.625, None),
         "4x random lines": (1.0, 4.0), "4x random + 6/8 partial Fourier": (0.75, 4.0)}


def partial_fourier_mask(shape: tuple[int, int], fraction: float, accel: float | None, seed: int) -> np.ndarray:
    """``(H, W)`` mask: the first ``1 - fraction`` of the phase-encode lines (axis 0) dropped, times a random
    line mask of ``accel`` (centre 8%) when given."""
    mask = np.ones(shape, bool) if accel is None else sampling_mask(shape, accel, 0.08, "random", seed=seed)
    mask[: int(round((1 - fraction) * shape[0]))] = False
    return mask


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random phase map ``(H, W)``: a plane plus a quadratic term, up to about pi across the slice."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    a = rng.uniform(-1, 1, 5) * np.array([np.pi / 2, np.pi / 2, np.pi / 4, np.pi / 4, np.pi / 4])
    return a[0] * y + a[1] * x + a[2] * y**2 + a[3] * x**2 + a[4] * x * y


def pocs(kspace: torch.Tensor, mask: np.ndarray, iterations: int = 30) -> torch.Tensor:
    """POCS partial-Fourier reconstruction ``(S, H, W)`` complex of centred k-space ``(S, H, W)`` whose lines
    (axis -2) are sampled on one side only: the phase of the symmetric centre (Hann-windowed), imposed on the
    magnitude, then the measured samples put back."""
    rows = np.flatnonzero(mask.any(1))
    h = mask.shape[0]
    half = min(h // 2 - rows.min(), rows.max() - h // 2)  # the symmetric centre's half width
    window = torch.zeros(h)
    window[h // 2 - half:h // 2 + half + 1] = torch.hann_window(2 * half + 3, periodic=False)[1:-1]
    phase = torch.angle(ifft2c(kspace * window[:, None]))
    m = torch.from_numpy(mask)
    x = ifft2c(kspace)
    for _ in range(iterations):
        x = x.abs() * torch.exp(1j * phase)
        x = ifft2c(torch.where(m, kspace, fft2c(x)))
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the shared data folder (mri/nichart)")
    ap.add_argument("--slices-per-volume", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    tmp = tempfile.TemporaryDirectory()  # the mask files reconstruct() reads
    for name, vol, voxel in volumes(args.data, TEST_SUBJECTS):
        stack = central_slices(vol, args.slices_per_volume)  # (H, W, S)
        phase = np.stack([smooth_phase(stack.shape[:2], rng) for _ in range(stack.shape[2])], -1)
        image = stack * np.exp(1j * phase)
        for i in range(image.shape[2]):  # complex noise as much again as the slice's own (read from k-space)
            sigma = kspace_noise_variance(fft2c(torch.from_numpy(stack[None, :, :, i]).to(torch.complex64)),
                                          np.ones(stack.shape[:2], bool)) ** 0.5
            image[:, :, i] += sigma * (rng.standard_normal(stack.shape[:2])
                                       + 1j * rng.standard_normal(stack.shape[:2])) / np.sqrt(2)
        image = image.astype(np.complex64)
        nii = nib.Nifti1Image(image, np.diag([voxel, voxel, 1.0, 1.0]))
        ref = np.abs(np.moveaxis(image, 2, 0))
        k = fft2c(torch.from_numpy(np.moveaxis(image, 2, 0)))
        for mask_name, (fraction, accel) in MASKS.items():
            mask = partial_fourier_mask(stack.shape[:2], fraction, accel, seed=0)
            with_mask = Path(tmp.name) / "mask.nii.gz"
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), nii.affine), with_mask)
            res = reconstruct(nii, mask=with_mask, samples=8, steps=20, seed=0)
            base = {"volume": name, "mask": mask_name, "sampled": float(mask.mean())}
            clean = lambda est: {"psnr_vs_clean": slice_metrics(np.moveaxis(stack, 2, 0), est)["psnr"]}  # noqa: E731
            rows.append({**base, "method": "zero-filled", **res.metrics["zerofilled"],
                         **clean(np.abs(np.moveaxis(res.zerofilled, 2, 0)))})
            if accel is None:
                est = pocs(k * torch.from_numpy(mask), mask).abs().numpy()
                rows.append({**base, "method": "POCS (30 it.)", **slice_metrics(ref, est), **clean(est)})
            u = res.metrics["uncertainty"]
            rows.append({**base, "method": "neurodiff (image + mask)", **res.metrics["recon"],
                         **clean(np.abs(np.moveaxis(res.recon, 2, 0))), "coverage90": u["coverage90"],
                         "spearman": u["spearman"],
                         "phase_constrained": res.params.get("partial_fourier_axis") is not None})
            # as raw data arrive: the undersampled k-space, its own sampling read from its zeros
            kspace = Path(tmp.name) / "kspace.nii.gz"
            nib.save(nib.Nifti1Image(np.moveaxis((k * torch.from_numpy(mask)).numpy(), 0, 2), nii.affine), kspace)
            kres = reconstruct(kspace, kspace=True, samples=8, steps=20, seed=0)
            est, std = (np.moveaxis(a, 2, 0) for a in (kres.recon, kres.uncertainty))
            u = uncertainty_metrics(ref, est, std, foreground(ref))
            rows.append({**base, "method": "neurodiff (k-space)", **slice_metrics(ref, est), **clean(est),
                         "coverage90": u["coverage90"], "spearman": u["spearman"],
                         "phase_constrained": kres.params.get("partial_fourier_axis") is not None})
            print(name, mask_name, f"{res.metrics['recon']['psnr']:.2f}", flush=True)
    tmp.cleanup()
    df = pd.DataFrame(rows)
    columns = ["psnr", "ssim", "nmse", "psnr_vs_clean", "coverage90", "spearman", "phase_constrained"]
    table = df.groupby(["mask", "method"], sort=False)[columns].mean().round(3)
    text = (f"== Partial Fourier, test subjects {TEST_SUBJECTS} (T1 + FLAIR, 2 mm), {args.slices_per_volume} "
            "central slices per volume with a smooth random phase, 8 samples, 20 steps ==\n"
            + table.to_string() + "\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".txt").write_text(text)
        df.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
