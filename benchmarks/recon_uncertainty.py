"""Why are the posterior samples overconfident? A sampler ablation on the calibration subjects (13-14).

For each sampler setting (DDIM steps, eta, data consistency at every step or only on the final sample) the same
slices, masks and seeds are reconstructed with ``--samples`` posterior samples (spread over the 8 symmetric views of
the slice, as the shipped sampler does), and the table reports, over the
object's voxels (above 5% of the slice maximum) of 4x and 8x random 1D masks:

- ``psnr``: of the posterior mean (magnitude), dB;
- ``err/std``: RMS error of the mean over RMS posterior std -- 1 for a calibrated posterior (the mean of N
  samples of a calibrated posterior has error std ``sqrt(1 + 1/N)`` times the posterior std), > 1 overconfident;
- ``coverage90``: raw 90% interval coverage (mean +- 1.645 std), no scale;
- ``spearman``: Spearman(std, |error|), raw and with the std map smoothed as the shipped calibration does;
- ``spearman_ceiling``: the same rank correlation if the truth were drawn from a Gaussian with this very std map
  (truth = mean + std z) -- the best any calibrated posterior with this spread could score;
- ``spearman_heldout``: std of N-1 samples against the error of their mean on the left-out sample: what the
  sampler's own posterior says the correlation should be.

Only subjects 13-14 are used (never the test subjects 15-16), so nothing here tunes on test data.

    python benchmarks/recon_uncertainty.py ../shared/data --samples 16 --slices-per-volume 2

With ``--views 1,2,4,8`` it compares instead how many symmetries of the slice the default sampler spreads its
samples over (``sample_posterior(..., views=k)``), written to ``recon_uncertainty_views.txt``:

    python benchmarks/recon_uncertainty.py ../shared/data --views 1,2,4,8 --samples 8 --slices-per-volume 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from recon_quality import CAL_SUBJECTS, SETTINGS, central_slices, volumes
from neurodiff.mri import fft2c, hard_project, ifft2c, sampling_mask
from neurodiff.mri.metrics import foreground, slice_metrics
from neurodiff.mri.posterior import calibrated_std, sample_posterior
from neurodiff.nets import divisor
from neurodiff.weights import load_model

CONFIGS = {
    "20 steps, eta 1, DC every step (default)": dict(steps=20, eta=1.0, every=True),
    "20 steps, eta 0.5": dict(steps=20, eta=0.5, every=True),
    "20 steps, eta 0 (deterministic DDIM)": dict(steps=20, eta=0.0, every=True),
    "50 steps, eta 1": dict(steps=50, eta=1.0, every=True),
    "20 steps, eta 1, DC on the final sample only": dict(steps=20, eta=1.0, every=False),
}


def draw(model, ref: np.ndarray, accel: float, cf: float, seed: int, cfg: dict, n: int) -> torch.Tensor:
    """``(N, S, H, W)`` magnitude samples of the slices ``ref`` ``(S, H, W)`` under a seeded random mask."""
    mask = torch.from_numpy(sampling_mask(ref.shape[1:], accel, cf, "random", seed=seed))
    y = fft2c(torch.from_numpy(ref).to(torch.complex64)) * mask
    project = lambda z: hard_project(z, y.to(z.device), mask)  # noqa: E731
    canvas = tuple(model.card["training"]["image_size"])
    post = sample_posterior(model.denoiser, ifft2c(y), mask, project if cfg["every"] else (lambda z: z),
                            n_samples=n, steps=cfg["steps"], eta=cfg["eta"], canvas=canvas, views=cfg.get("views", 8),
                            multiple=divisor(model.card["architecture"]["size"]), keep_samples=True,
                            generator=torch.Generator().manual_seed(seed))
    return project(post.samples).abs()


def spearman(std: np.ndarray, err: np.ndarray) -> float:
    return float(spearmanr(std, err).statistic)


def summarise(refs: list[np.ndarray], samples: list[torch.Tensor], smooth: float, rng: np.random.Generator) -> dict:
    """Metrics pooled over the object voxels of all slice stacks (see the module docstring)."""
    cols: dict[str, list] = {k: [] for k in ("ref", "mean", "std", "std_s", "mean_h", "std_h", "held")}
    psnr = []
    for ref, s in zip(refs, samples):
        fg = foreground(ref)
        mean, std = s.mean(0).numpy(), s.std(0).numpy()
        psnr.append(slice_metrics(ref, mean)["psnr"])
        cols["ref"].append(ref[fg])
        cols["mean"].append(mean[fg])
        cols["std"].append(std[fg])
        cols["std_s"].append(calibrated_std(torch.from_numpy(std), 1.0, smooth).numpy()[fg])
        cols["mean_h"].append(s[:-1].mean(0).numpy()[fg])
        cols["std_h"].append(s[:-1].std(0).numpy()[fg])
        cols["held"].append(s[-1].numpy()[fg])
    c = {k: np.concatenate(v) for k, v in cols.items()}
    err = np.abs(c["mean"] - c["ref"])
    synthetic_truth = c["mean"] + c["std"] * rng.standard_normal(len(err))
    return {
        "psnr": float(np.mean(psnr)),
        "err/std": float(np.sqrt((err**2).mean() / (c["std"] ** 2).mean())),
        "coverage90": float((err <= 1.645 * c["std"]).mean()),
        "spearman": spearman(c["std"], err),
        f"spearman_smooth{smooth:g}": spearman(c["std_s"], err),
        "spearman_ceiling": spearman(c["std"], np.abs(synthetic_truth - c["mean"])),
        "spearman_heldout": spearman(c["std_h"], np.abs(c["held"] - c["mean_h"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default="recon-t1-flair-tiny")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--slices-per-volume", type=int, default=2)
    ap.add_argument("--views", default=None, help="compare these numbers of symmetric views (comma-separated) "
                    "with the default sampler instead of the sampler ablation")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    model = load_model(args.model)
    smooth = float(model.card.get("calibration", {}).get("smooth_voxels", 1.5))
    vols = volumes(args.data, CAL_SUBJECTS)
    stacks = [np.moveaxis(central_slices(v, args.slices_per_volume), 2, 0) for _, v, _ in vols]
    configs = CONFIGS if args.views is None else {
        f"{k} views": dict(steps=20, eta=1.0, every=True, views=int(k)) for k in args.views.split(",")}
    rows = []
    for name, cfg in configs.items():
        t0 = time.time()
        for accel, cf in SETTINGS:
            samples = [draw(model, ref, accel, cf, 1000 * i + int(accel), cfg, args.samples)
                       for i, ref in enumerate(stacks)]
            rows.append({"sampler": name, "accel": accel,
                         **summarise(stacks, samples, smooth, np.random.default_rng(0))})
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows).set_index(["sampler", "accel"]).round(3)
    text = (f"model {model.name}; calibration subjects {CAL_SUBJECTS} (T1 + FLAIR, {args.slices_per_volume} slices "
            f"per volume), {args.samples} samples\n" + table.to_string() + "\n")
    args.out.mkdir(exist_ok=True)
    (args.out / f"recon_uncertainty_{'ablation' if args.views is None else 'views'}.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
