"""Supervised U-Net baseline for the reconstruction benchmark: the same network as the diffusion model
(MONAI DiffusionModelUNet "tiny", called at a fixed timestep, i.e. a plain U-Net), the same simulated training data
(NiChart T1 + FLAIR, Subj1-12, same mask distribution and per-slice scaling), zero-filled image + mask in,
residual image out, L1 loss. At test time with or without a hard data-consistency projection.

    python benchmarks/unet_baseline.py ../shared/data --steps 3000 --out runs/unet-baseline-3000.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from neurodiff.io import load_image
from neurodiff.mri import channels_to_complex, fft2c, hard_project
from neurodiff.mri.recon_data import foreground_slices, recon_batches
from neurodiff.mri.recon_model import condition, crop, pad, padded_shape, padding, slice_scale
from neurodiff.nets import ResidualOnInput, build_unet


def build() -> torch.nn.Module:
    return ResidualOnInput(build_unet("tiny", in_channels=3, out_channels=2), (0, 1))


def predict(net: torch.nn.Module, zf: torch.Tensor, mask: torch.Tensor, dc: bool) -> torch.Tensor:
    """Reconstruction ``(S, H, W)`` complex from zero-filled slices ``zf`` ``(S, H, W)`` and the mask ``(H, W)``."""
    s, h, w = zf.shape
    pads = padding((h, w), padded_shape((h, w), 8))
    scale = slice_scale(zf)[:, None, None]
    with torch.no_grad():
        out = net(condition(pad(zf / scale, pads), pad(mask.float(), pads)), torch.zeros(s, dtype=torch.long))
    x = crop(channels_to_complex(out), pads) * scale
    return hard_project(x, fft2c(zf) * mask, mask) if dc else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--out", type=Path, default=Path("runs/unet-baseline.pt"))
    a = ap.parse_args()
    nichart = a.data / "mri" / "nichart"
    files = [nichart / "t1" / f"Subj{i}_T1.nii.gz" for i in range(1, 13)] + [
        nichart / "flair" / f"Subj{i}_FL.nii.gz" for i in range(1, 13)]
    slices = [s for p in files for s in foreground_slices(load_image(p, ndim=(3,))[0])]
    batches = recon_batches(slices, batch_size=a.batch_size, seed=1)
    net = build()
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr)
    t0, losses = time.time(), []
    for step in range(a.steps):
        b = next(batches)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / a.steps)))
        out = net(b.cond.image, torch.zeros(len(b.x0), dtype=torch.long))
        loss = (out - b.x0).abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} loss {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
