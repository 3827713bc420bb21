"""Train a small unconditional diffusion model of brain slices on NiChart T1 (subjects 1-16) with
``neurodiff train image`` settings, then write its loss curve and a grid of DDIM samples to ``docs/images/``.

    python benchmarks/unconditional_demo.py ../shared/data --steps 1500 --size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import pandas as pd

from neurodiff.diffusion import sample_ddpm
from neurodiff.plotting import loss_curve, sample_grid
from neurodiff.tasks.train import train
from neurodiff.weights import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("runs/image-t1-64"))
    ap.add_argument("--docs", type=Path, default=Path("docs/images"))
    ap.add_argument("--sample-only", action="store_true", help="reuse the model at --out")
    a = ap.parse_args()
    files = [a.data / "mri" / "nichart" / "t1" / f"Subj{i}_T1.nii.gz" for i in range(1, 17)]
    a.docs.mkdir(parents=True, exist_ok=True)
    if not a.sample_only:
        res = train("image", files, a.out, image_size=(a.size, a.size), steps=a.steps, batch_size=a.batch_size,
                    name="image-t1-64", data_note="NiChart demo T1, Subj1-16, axial slices resized to 4 mm")
        print(f"trained {res.seconds / 60:.1f} min, final smoothed loss {res.losses['loss_smooth'].iloc[-1]:.4f}")
    losses = pd.read_csv(a.out.with_name(a.out.name + "_loss.csv"))
    loss_curve(losses, f"unconditional T1 slices, {a.size}x{a.size}").savefig(a.docs / "unconditional_loss.png", dpi=120)
    model = load_model(a.out.with_suffix(".json"))
    g = torch.Generator().manual_seed(0)
    # x0-hat is clipped to the data range [-1, 1] at every step (as improved-diffusion's clip_denoised): an
    # eps-predicting model divides by sqrt(abar) ~ 5e-5 at the last cosine timestep and diverges otherwise
    x = sample_ddpm(model.denoiser, torch.randn(32, 1, a.size, a.size, generator=g), 250, generator=g,
                    consistency=lambda x0, t: x0.clamp(-1, 1))
    grid = ((x[:, 0].clamp(-1, 1) + 1) / 2).numpy()
    sample_grid(grid, 8, "DDPM samples (250 steps, x0 clipped to the data range)").savefig(
        a.docs / "unconditional_samples.png", dpi=120)
    print(f"figures in {a.docs}")


if __name__ == "__main__":
    main()
