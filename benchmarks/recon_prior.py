"""Prior-only posterior sampling against the conditional model, on masks inside and outside the training range.

The issue asks for a prior-only mode (an unconditional diffusion model of images + data consistency at every
step, as in score-based MRI) if it helps out-of-distribution masks or contrasts. The shipped unconditional models
are the anomaly models (`anomaly-t1-tiny`, `anomaly-flair-tiny`: healthy NiChart slices, 2 mm, 96 x 96 canvas,
``image / brain median - 1`` inside the brain, -1 outside). This script puts the test subjects' scans (15-16, never
used by either model; T1 with the T1 prior, FLAIR with the FLAIR prior) on that canvas, simulates single-coil
k-space of ``image / brain median`` (the brain median is taken from the reference: a small advantage for the prior
sampler, whose normalisation needs it) and reconstructs ``--slices`` central slices per volume with

- zero-filling;
- neurodiff's conditional model (`recon-t1-flair-tiny`, 8 samples over the 8 symmetric views, 20 DDIM steps, hard
  data consistency at every step; the slice padded to its 128 x 128 canvas);
- prior-only: the anomaly model's DDIM (eta 1) with the same hard projection of x0-hat at every step, ``--steps``
  steps, 8 samples, the real part kept (the images are real).

Masks: 4x and 8x random 1D lines (centre 8% / 4%: inside the conditional model's training range), 16x random 1D
lines (centre 4%) and 16x Poisson-disc (centre 4%), both beyond its range of 2-10x. PSNR / SSIM over the canvas
(each slice's own range), 90% coverage and Spearman over the brain, raw spread (no calibration for either).

``--grid native --prior MODEL`` compares the two reconstruction models the way ``neurodiff recon`` runs them, on the
scans' own grids (2 mm, 91 x 109 slices in their zero frame, no brain mask): the conditional `recon-t1-flair-tiny`
against a prior-only model (kind ``recon-prior``: an unconditional model of the same simulated, scaled complex
slices), both with 8 samples over the 8 symmetric views, 20 DDIM steps, hard data consistency, raw spread (each
card's calibration removed), and their ensemble at the same cost (half the samples from each, every view once:
the spread then holds the two models' disagreement). Volumes: test subjects' T1 + FLAIR, and the unseen contrasts of
``recon_quality.py --test-set contrast`` (T2-like, niivue GRE), ``--slices`` slices spread over 38-62% of each
volume; the same masks as above.

    python benchmarks/recon_prior.py ../shared/data [--slices 4] [--steps 20,100] [--out benchmarks/results/recon_prior]
    python benchmarks/train_recon.py ../shared/data --kind recon-prior --steps 2800 --out runs/recon-prior-t1-flair-tiny
    python benchmarks/recon_prior.py ../shared/data --grid native --prior runs/recon-prior-t1-flair-tiny.json \\
        --slices 2 --out benchmarks/results/recon_prior_native
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from neurodiff.anomaly.preprocess import prepare
from neurodiff.diffusion import sample_ddim
from neurodiff.mri import fft2c, hard_project, ifft2c, sampling_mask
from neurodiff.mri.metrics import slice_metrics, uncertainty_metrics
from neurodiff.mri.posterior import sample_posterior
from neurodiff.nets import divisor
from neurodiff.weights import load_model

TEST_SUBJECTS = (15, 16)
MASKS = (("random", 4.0, 0.08), ("random", 8.0, 0.04), ("random", 16.0, 0.04), ("poisson", 16.0, 0.04))
PRIORS = {"T1": ("t1", "T1", "anomaly-t1-tiny"), "FLAIR": ("flair", "FL", "anomaly-flair-tiny")}


def canvas_slices(data: Path, subject: int, contrast: str, n: int) -> np.ndarray:
    """``(n, 96, 96)`` central axial slices of ``image / brain median`` on the anomaly models' canvas (0 outside
    the brain)."""
    folder, suffix, _ = PRIORS[contrast]
    prep = prepare(nib.load(data / "mri" / "nichart" / folder / f"Subj{subject}_{suffix}.nii.gz"))
    idx = np.linspace(0.3 * len(prep.x), 0.7 * len(prep.x), n).round().astype(int)
    return (prep.x[idx, 0] + 1.0).numpy()


def prior_only(model, zf: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, n: int, steps: int,
               seed: int) -> torch.Tensor:
    """``(n, S, H, W)`` real samples from the unconditional ``model`` with a hard projection of x0-hat onto
    ``y`` at every step (the model's units are ``image - 1``)."""
    s, h, w = zf.shape

    def consistency(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        img = (x0[:, 0].reshape(n, s, h, w) + 1.0).to(torch.complex64)
        return (hard_project(img, y, mask).real - 1.0).reshape(n * s, 1, h, w).to(x0)

    g = torch.Generator().manual_seed(seed)
    x = sample_ddim(model.denoiser, torch.randn(n * s, 1, h, w, generator=g), steps, eta=1.0,
                    consistency=consistency, generator=g)
    return hard_project((x[:, 0].reshape(n, s, h, w) + 1.0).to(torch.complex64), y, mask).real


def conditional(model, zf: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    post = sample_posterior(model.denoiser, zf, mask, lambda z: hard_project(z, y.to(z.device), mask), n_samples=n,
                            steps=20, eta=1.0, canvas=tuple(model.card["training"]["image_size"]), views=8,
                            multiple=divisor(model.card["architecture"]["size"]), keep_samples=True,
                            generator=torch.Generator().manual_seed(seed))
    return post.samples.abs()


def scores(ref: np.ndarray, samples: torch.Tensor) -> dict[str, float]:
    mean, std = samples.mean(0).numpy(), samples.std(0).numpy()
    unc = uncertainty_metrics(ref, mean, std, ref > 0)
    q = slice_metrics(ref, mean)
    return {"psnr": q["psnr"], "ssim": q["ssim"], "coverage90": unc["coverage90"], "spearman": unc["spearman"]}


def native(args) -> tuple[str, pd.DataFrame]:
    """Conditional against prior-only reconstruction on the scans' own grids (``--grid native``)."""
    from recon_quality import central_slices, unseen_contrasts, volumes

    from neurodiff.mri.metrics import foreground, in_slice_spearman
    from neurodiff.tasks.recon import reconstruct

    models = {}
    for name in ("recon-t1-flair-tiny", args.prior):
        m = load_model(name)
        m.card.pop("calibration", None)  # raw spread for both
        models[f"{m.card['task']} ({m.name})"] = m
    vols = [(n, "test subjects") for n in volumes(args.data, TEST_SUBJECTS)]
    vols += [(n, "unseen contrasts") for n in unseen_contrasts(args.data)]
    rows = []
    for vi, ((name, vol), group) in enumerate(vols):
        z = vol.shape[2]
        stack = central_slices(vol[:, :, int(0.3 * z): int(0.7 * z)], args.slices)  # 38-62% of the volume
        ref = np.moveaxis(stack, 2, 0)
        fg = foreground(ref)
        for i, (kind, accel, cf) in enumerate(MASKS):
            case = dict(set=group, volume=name, mask=f"{accel:g}x {kind}")
            results = {label: reconstruct(nib.Nifti1Image(stack, np.eye(4)), accel=accel, mask_type=kind,
                                          center_fraction=cf, seed=100 * vi + i, samples=args.samples, steps=20,
                                          model=m, save_samples=True) for label, m in models.items()}
            q = slice_metrics(ref, np.abs(np.moveaxis(next(iter(results.values())).zerofilled, 2, 0)))
            rows.append({**case, "method": "zero-filled", "psnr": q["psnr"], "ssim": q["ssim"]})
            cond, prior = (np.moveaxis(r.samples, (2, 3), (1, 0)) for r in results.values())  # (N, S, H, W) each
            half = args.samples // 2  # the conditional's first views, the prior's last: every view once
            mix = np.concatenate([cond[:half], prior[half:]])
            estimates = {label: (np.moveaxis(r.recon, 2, 0), np.moveaxis(r.uncertainty, 2, 0), r.seconds)
                         for label, r in results.items()}
            estimates["ensemble (half the samples from each)"] = (
                mix.mean(0), mix.std(0, ddof=1), sum(r.seconds for r in results.values()) / 2)
            for label, (mean, std, seconds) in estimates.items():  # (the same seed: the same mask for all)
                unc = uncertainty_metrics(ref, mean, std, fg)
                q = slice_metrics(ref, mean)
                rows.append({**case, "method": label, "psnr": q["psnr"], "ssim": q["ssim"],
                             "coverage90": unc["coverage90"], "spearman": unc["spearman"],
                             "spearman_in_slice": in_slice_spearman(ref, mean, std, fg), "seconds": seconds})
            print(pd.DataFrame(rows[-4:]).round(3).to_string(), flush=True)
    df = pd.DataFrame(rows)
    cols = ["psnr", "ssim", "coverage90", "spearman", "spearman_in_slice", "seconds"]
    table = df.groupby(["set", "mask", "method"], sort=False)[cols].mean().round(3).to_string()
    return (f"native grids (2 mm NiChart {TEST_SUBJECTS} T1 + FLAIR; T2-like + niivue GRE), {args.slices} slices per "
            f"volume, {args.samples} samples over 8 views, 20 steps, raw spread; mean over volumes\n{table}"), df


def canvas(args) -> tuple[str, pd.DataFrame]:
    """Conditional against prior-only sampling with the anomaly models, on their canvas (``--grid canvas``)."""
    recon = load_model("recon-t1-flair-tiny")
    priors = {c: load_model(p[2]) for c, p in PRIORS.items()}
    rows = []
    for contrast in PRIORS:
        for subject in TEST_SUBJECTS:
            ref = canvas_slices(args.data, subject, contrast, args.slices)
            for i, (kind, accel, cf) in enumerate(MASKS):
                seed = 100 * subject + i
                mask = torch.from_numpy(sampling_mask(ref.shape[1:], accel, cf, kind, seed=seed))
                y = fft2c(torch.from_numpy(ref).to(torch.complex64)) * mask
                zf = ifft2c(y)
                case = dict(contrast=contrast, subject=subject, mask=f"{accel:g}x {kind}")
                q = slice_metrics(ref, zf.abs().numpy())
                rows.append({**case, "method": "zero-filled", "psnr": q["psnr"], "ssim": q["ssim"], "seconds": 0.0})
                t0 = time.time()
                rows.append({**case, "method": "conditional (recon-t1-flair-tiny, 20 steps)",
                             **scores(ref, conditional(recon, zf, y, mask, args.samples, seed)),
                             "seconds": time.time() - t0})
                for steps in (int(s) for s in args.steps.split(",")):
                    t0 = time.time()
                    rows.append({**case, "method": f"prior-only ({PRIORS[contrast][2]}, {steps} steps)",
                                 **scores(ref, prior_only(priors[contrast], zf, y, mask, args.samples, steps, seed)),
                                 "seconds": time.time() - t0})
                print(pd.DataFrame(rows[-2 - len(args.steps.split(",")):]).round(3).to_string(), flush=True)
    df = pd.DataFrame(rows)
    df["method"] = df["method"].str.replace(r" \(anomaly-(t1|flair)-tiny,", " (anomaly model,", regex=True)
    table = (df.groupby(["mask", "method"], sort=False)[["psnr", "ssim", "coverage90", "spearman", "seconds"]]
             .mean().round(3).to_string())
    return (f"test subjects {TEST_SUBJECTS}, T1 + FLAIR, {args.slices} slices each on the anomaly models' 96 x 96 "
            f"2 mm canvas, {args.samples} samples; mean over volumes\n{table}"), df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--slices", type=int, default=4, help="central slices per volume")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", default="20,100", help="--grid canvas: prior-only DDIM steps to try, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.csv")
    ap.add_argument("--grid", choices=("canvas", "native"), default="canvas",
                    help="canvas: the anomaly models' brain canvas; native: the scans' own grids with --prior")
    ap.add_argument("--prior", default="runs/recon-prior-t1-flair-tiny.json",
                    help="--grid native: the recon-prior model (from train_recon.py --kind recon-prior)")
    args = ap.parse_args()
    text, df = (native if args.grid == "native" else canvas)(args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".txt").write_text(text + "\n")
        df.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
