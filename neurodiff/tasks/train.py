"""Train a model from NIfTI files: ``kind="recon"`` (k-space reconstruction model, conditioned on simulated
undersampling), ``kind="recon-prior"`` (unconditional model of complex slices in the reconstruction's units, for
prior-only posterior sampling), ``kind="image"`` (unconditional model of slices) or ``kind="anomaly"``
(unconditional model of healthy brain slices on a fixed voxel grid, known lesions left out of the loss)."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..diffusion import Cond
from ..diffusion.training import Batch, TrainConfig, TrainState, fit, prefetched
from ..errors import InputError
from ..io import load_image, load_nifti
from ..nets import divisor
from ..weights import build_denoiser, save_model

KINDS = ("recon", "recon-prior", "image", "anomaly")


@dataclass
class TrainResult:
    """Where the model went and how training went."""

    weights: Path
    card: Path
    losses: pd.DataFrame  # columns: step, loss, loss_smooth
    seconds: float


def image_slices(
    paths: Sequence[Path], size: tuple[int, int], cond_paths: Sequence[Path] | None = None, min_fraction: float = 0.08
) -> list[np.ndarray]:
    """Axial slices (last voxel axis) of 3D NIfTI files, with MONAI dictionary transforms: intensity scaled by the
    volume's 0.5-99.5 percentiles to [0, ~1], cropped to the image's foreground, resized so the longer in-plane side
    fits ``size`` and padded to ``size``; slices with less than ``min_fraction`` foreground are dropped.

    Returns ``(C, *size)`` float32 arrays: channel 0 the image, then (if ``cond_paths``, one per image, same grid)
    the conditioning image with the same crop, resized with nearest neighbours and not rescaled (e.g. a mask).
    """
    from monai.transforms import Compose, CropForegroundd, Resized, ResizeWithPadOrCropd, ScaleIntensityRangePercentilesd

    keys = ["image", "cond"] if cond_paths else ["image"]
    prep = Compose([
        ScaleIntensityRangePercentilesd("image", 0.5, 99.5, 0.0, 1.0, clip=True),
        CropForegroundd(keys, source_key="image", select_fn=lambda x: x > 0.05, allow_smaller=True),
    ])
    fit = Compose([
        Resized(keys, max(size), size_mode="longest", mode=["area", "nearest"][: len(keys)]),
        ResizeWithPadOrCropd(keys, size),
    ])
    out = []
    for i, p in enumerate(paths):
        vol, _ = load_image(p, ndim=(3,))
        d = {"image": torch.from_numpy(vol)[None]}
        if cond_paths:
            c, _ = load_image(cond_paths[i], ndim=(3,), name="conditioning image")
            if c.shape != vol.shape:
                raise InputError(f"conditioning image {cond_paths[i]} has shape {c.shape}, its image {p} {vol.shape}")
            d["cond"] = torch.from_numpy(c)[None]
        d = prep(d)
        for k in range(d["image"].shape[-1]):
            s = {key: d[key][..., k] for key in keys}
            if float((s["image"] > 0.1).float().mean()) >= min_fraction:
                s = fit(s)
                out.append(torch.cat([s[key] for key in keys]).numpy().astype(np.float32))
    return out


def _without_condition(make: Callable[..., Iterator[Batch]], **kw) -> Iterator[Batch]:
    return (Batch(b.x0, None, b.mask) for b in make(**kw))


def _image_batches(slices: list[np.ndarray], batch_size: int, seed: int) -> Iterator[Batch]:
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.stack(slices))  # (N, C, H, W): image, then conditioning channels
    while True:
        idx = torch.from_numpy(rng.integers(len(data), size=batch_size))
        x = data[idx]
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)  # left-right flip
        cond = Cond(image=x[:, 1:]) if x.shape[1] > 1 else None
        yield Batch(x[:, :1] * 2 - 1, cond)  # image in [-1, 1]


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
    cond_inputs: Sequence[Path] | None = None,
    brain_masks: Sequence[Path | None] | None = None,
    lesion_masks: Sequence[Path | None] | None = None,
    contrast: str | None = None,
    voxel_mm: float = 2.0,
    workers: int = 0,
    callback: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train a ``kind`` model on ``inputs`` and write ``out.safetensors`` + ``out.json`` (+ ``out_loss.csv``).

    A checkpoint ``out.ckpt`` is written during training; ``resume=True`` continues from it. ``cond_inputs`` (kind
    ``image`` only): one conditioning image per input, on its grid, concatenated to the network input.
    ``brain_masks`` / ``lesion_masks`` (kind ``anomaly`` only): one per input, any grid overlapping it; brain masks
    are computed when absent, lesions are excluded from the loss. ``workers`` > 0 simulates the batches in that
    many background processes (each its own random stream), to keep a GPU fed.
    """
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not inputs:
        raise InputError("no training images given")
    if any(s % divisor(net_size) for s in image_size):
        raise InputError(f"image size {image_size} must be a multiple of {divisor(net_size)} for a {net_size} net")
    t0 = time.time()
    if cond_inputs and (kind != "image" or len(cond_inputs) != len(inputs)):
        raise InputError("conditioning images need kind 'image' and exactly one per training image")
    slices = image_slices(inputs, image_size, cond_inputs) if kind == "image" else None
    for extra, label in ((brain_masks, "brain masks"), (lesion_masks, "lesion masks")):
        if extra and (kind != "anomaly" or len(extra) != len(inputs)):
            raise InputError(f"{label} need kind 'anomaly' and exactly one per training image")
    if kind == "anomaly":
        from ..anomaly.data import anomaly_batches, training_slices

        def masks(paths: Sequence[Path | None] | None) -> list:
            return [None if p is None else load_nifti(p, name="mask") for p in paths] if paths else [None] * len(inputs)

        x, healthy = training_slices([load_nifti(p) for p in inputs], masks(brain_masks), masks(lesion_masks),
                                     voxel_mm=voxel_mm, canvas=image_size)
        slices = list(x)
        make = partial(anomaly_batches, x, healthy, batch_size=batch_size)
        arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=1, out_channels=1)
        prediction = "v"
        norm = {"method": "resampled to voxel_mm (RAS+), divided by the median inside the brain, minus 1; "
                "-1 outside the brain; axial slices centred on the brain on a canvas",
                "voxel_mm": voxel_mm, "canvas": list(image_size), "contrast": contrast}
    elif kind in ("recon", "recon-prior"):
        from ..mri.recon_data import foreground_slices, recon_batches

        slices = [s for p in inputs for s in foreground_slices(load_image(p, ndim=(3,))[0])]
        make = partial(recon_batches, slices, batch_size=batch_size, size=image_size)
        norm = {"method": "per-slice: divide by the 99.5th percentile of the zero-filled magnitude",
                "channels": ["real", "imaginary"], "condition": ["zero-filled real", "zero-filled imaginary", "mask"]}
        if kind == "recon":
            arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=5,
                        out_channels=2, residual_channels=[2, 3])
            prediction = "x0"
        else:  # the same simulated slices and scaling, without the condition
            make = partial(_without_condition, make)
            arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=2,
                        out_channels=2)
            prediction = "v"
            norm["condition"] = None
    else:
        make = partial(_image_batches, slices, batch_size)
        n_cond = slices[0].shape[0] - 1 if slices else 0
        arch = dict(factory="monai.DiffusionModelUNet", size=net_size, spatial_dims=2, in_channels=1 + n_cond,
                    out_channels=1)
        prediction = "eps"
        norm = {"method": "per-volume 0.5-99.5 percentile range to [-1, 1], foreground-cropped, padded",
                "image_size": list(image_size),
                "condition": "conditioning image as given (nearest-neighbour resized), concatenated" if n_cond else None}
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
            "data_workers": workers,
        },
        "metrics": {},
    }
    torch.manual_seed(seed)
    den = build_denoiser(card).to(device)
    cfg = TrainConfig(steps=steps, lr=lr, seed=seed)
    batches = prefetched(make, workers, seed, device)
    ema, state = fit(den, batches, cfg, checkpoint=out.with_suffix(".ckpt"), resume=resume, callback=callback)
    card["training"]["seconds"] = round(state.seconds, 1)
    card["training"]["device"] = str(device)
    weights, card_path = save_model(ema, card, out)
    losses = pd.DataFrame({"step": np.arange(1, len(state.losses) + 1), "loss": state.losses})
    losses["loss_smooth"] = losses["loss"].ewm(alpha=0.02).mean()
    losses.to_csv(out.with_name(out.name + "_loss.csv"), index=False)
    return TrainResult(weights, card_path, losses, time.time() - t0)
