"""Train a model from NIfTI files: ``kind="recon"`` (k-space reconstruction model, conditioned on simulated
undersampling) or ``kind="image"`` (unconditional model of slices)."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..diffusion.training import Batch, TrainConfig, TrainState, fit
from ..errors import InputError
from ..io import load_image
from ..nets import divisor
from ..weights import build_denoiser, save_model

KINDS = ("recon", "image")


@dataclass
class TrainResult:
    """Where the model went and how training went."""

    weights: Path
    card: Path
    losses: pd.DataFrame  # columns: step, loss, loss_smooth
    seconds: float


def image_slices(paths: Sequence[Path], size: tuple[int, int], min_fraction: float = 0.08) -> list[np.ndarray]:
    """Axial slices (last voxel axis) of 3D NIfTI files as float32 arrays in [0, ~1], with MONAI transforms:
    intensity scaled by the volume's 0.5-99.5 percentiles, cropped to the foreground, resized so the longer
    in-plane side fits ``size`` and padded to ``size``; slices with less than ``min_fraction`` foreground are
    dropped."""
    from monai.transforms import CropForeground, Resize, ResizeWithPadOrCrop, ScaleIntensityRangePercentiles

    scale = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)
    crop = CropForeground(select_fn=lambda x: x > 0.05, allow_smaller=True)
    shrink = Resize(max(size), size_mode="longest", mode="area")
    fit_size = ResizeWithPadOrCrop(size)
    out = []
    for p in paths:
        vol, _ = load_image(p, ndim=(3,))
        v = crop(scale(torch.from_numpy(vol)[None]))[0]
        for k in range(v.shape[-1]):
            s = v[..., k]
            if float((s > 0.1).float().mean()) >= min_fraction:
                out.append(fit_size(shrink(s[None]))[0].numpy().astype(np.float32))
    return out


def _image_batches(slices: list[np.ndarray], batch_size: int, seed: int, device: str) -> Iterator[Batch]:
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.stack(slices))[:, None] * 2 - 1  # [-1, 1]
    while True:
        idx = torch.from_numpy(rng.integers(len(data), size=batch_size))
        x = data[idx]
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)  # left-right flip
        yield Batch(x.to(device))


def train(
    kind: str,
    inputs: Sequence[Path],
    out: Path,
    *,
    net_size: str = "tiny",
    image_size: tuple[int, int] = (128, 128),
    steps: int = 5000,
    batch_size: int = 8,
    lr: float = 5e-4,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    name: str | None = None,
    data_note: str = "",
    callback: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train a ``kind`` model on ``inputs`` and write ``out.safetensors`` + ``out.json`` (+ ``out_loss.csv``).

    A checkpoint ``out.ckpt`` is written during training; ``resume=True`` continues from it.
    """
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not inputs:
        raise InputError("no training images given")
    if any(s % divisor(net_size) for s in image_size):
        raise InputError(f"image size {image_size} must be a multiple of {divisor(net_size)} for a {net_size} net")
    t0 = time.time()
    slices = image_slices(inputs, image_size) if kind == "image" else None
    if kind == "recon":
        from ..mri.recon_data import foreground_slices, recon_batches

        slices = [s for p in inputs for s in foreground_slices(load_image(p, ndim=(3,))[0])]
        batches = recon_batches(slices, batch_size=batch_size, size=image_size, seed=seed, device=device)
        arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=5,
                    out_channels=2, residual_channels=[2, 3])
        prediction = "x0"
        norm = {"method": "per-slice: divide by the 99.5th percentile of the zero-filled magnitude",
                "channels": ["real", "imaginary"], "condition": ["zero-filled real", "zero-filled imaginary", "mask"]}
    else:
        batches = _image_batches(slices, batch_size, seed, device)
        arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=1, out_channels=1)
        prediction = "eps"
        norm = {"method": "per-volume 0.5-99.5 percentile range to [-1, 1], foreground-cropped, padded",
                "image_size": list(image_size)}
    if not slices:
        raise InputError("the training images contain no slices with enough foreground")
    card = {
        "name": name or out.name,
        "version": "0.1.0",
        "task": kind,
        "architecture": arch,
        "schedule": {"name": "cosine", "steps": 1000},
        "prediction": prediction,
        "normalisation": norm,
        "training": {
            "data": data_note or [str(p) for p in inputs],
            "slices": len(slices),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "steps": steps, "batch_size": batch_size, "lr": lr, "image_size": list(image_size), "seed": seed,
        },
        "metrics": {},
    }
    torch.manual_seed(seed)
    den = build_denoiser(card).to(device)
    cfg = TrainConfig(steps=steps, lr=lr, seed=seed)
    ema, state = fit(den, batches, cfg, checkpoint=out.with_suffix(".ckpt"), resume=resume, callback=callback)
    card["training"]["seconds"] = round(state.seconds, 1)
    card["training"]["device"] = str(device)
    weights, card_path = save_model(ema, card, out)
    losses = pd.DataFrame({"step": np.arange(1, len(state.losses) + 1), "loss": state.losses})
    losses["loss_smooth"] = losses["loss"].ewm(alpha=0.02).mean()
    losses.to_csv(out.with_name(out.name + "_loss.csv"), index=False)
    return TrainResult(weights, card_path, losses, time.time() - t0)
