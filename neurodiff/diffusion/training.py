"""Training (DDPM Algorithm 1) with EMA, gradient clipping, mixed precision, checkpoint/resume and DDP.

``fit`` knows nothing of the data: it takes an iterator of :class:`Batch` and a step budget.
Launched with ``torchrun``, each process trains on its own batches and gradients are averaged by DDP.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..nets import cpu_layout
from .denoiser import Cond, Denoiser


@dataclass
class Batch:
    """One training batch: clean data ``x0`` ``(B, C, *spatial)``, optional conditioning and loss mask."""

    x0: torch.Tensor
    cond: Cond | None = None
    mask: torch.Tensor | None = None


@dataclass
class TrainConfig:
    """Optimisation settings (recorded in the model card)."""

    steps: int = 10_000
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_uncond: float = 0.0
    amp: bool = True
    checkpoint_every: int = 500
    seed: int = 0


@dataclass
class TrainState:
    """What a run has done so far (saved in checkpoints)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


class _Stream(torch.utils.data.IterableDataset):
    """One ``make(seed=...)`` batch stream per DataLoader worker, each with its own seed."""

    def __init__(self, make: Callable[..., Iterator[Batch]], seed: int):
        super().__init__()
        self.make, self.seed = make, seed

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        return self.make(seed=self.seed * 1000 + 1 + (info.id if info is not None else 0))


def to_device(batch: Batch, device: str | torch.device) -> Batch:
    """``batch`` with every tensor (``x0``, ``mask``, ``cond.image``, ``cond.label``) moved to ``device``."""

    def move(v):
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    cond = batch.cond
    if cond is not None:
        cond = dataclasses.replace(cond, **{f.name: move(getattr(cond, f.name)) for f in dataclasses.fields(cond)})
    return Batch(move(batch.x0), cond, move(batch.mask))


def prefetched(
    make: Callable[..., Iterator[Batch]], workers: int, seed: int, device: str | torch.device
) -> Iterator[Batch]:
    """Infinite iterator of batches drawn by ``workers`` background processes (``workers=0``: in this process).

    Parameters
    ----------
    make
        ``make(seed=...)`` returns an infinite iterator of CPU batches; worker ``i`` gets seed
        ``seed * 1000 + 1 + i``, so its stream differs from every other worker's. With ``workers=0`` it is called
        with ``seed`` itself (the batches are then those of a run without workers).
    device
        Where the batches are delivered (a GPU's data simulation then overlaps with its training step).
    """
    if workers <= 0:
        return (to_device(b, device) for b in make(seed=seed))
    loader = torch.utils.data.DataLoader(_Stream(make, seed), batch_size=None, num_workers=workers, prefetch_factor=4)
    return (to_device(b, device) for b in loader)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def fit(
    denoiser: Denoiser,
    batches: Iterator[Batch],
    cfg: TrainConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    callback: Callable[[TrainState], None] | None = None,
) -> tuple[nn.Module, TrainState]:
    """Train ``denoiser.net`` in place for ``cfg.steps`` optimiser steps.

    Parameters
    ----------
    batches
        Infinite iterator of batches already on the training device.
    checkpoint
        File written every ``cfg.checkpoint_every`` steps and at the end (net, EMA, optimiser, state).
    resume
        Continue from ``checkpoint`` if it exists.
    callback
        Called after every step with the current :class:`TrainState` (progress bars, logging).

    Returns
    -------
    ema_net, state
        The exponential moving average of the network (what should be shipped) and the run's state.
    """
    net = denoiser.net
    device = next(net.parameters()).device
    if device.type == "cpu":
        cpu_layout(net)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if resume and checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
    train_net = net
    if _distributed():
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    rank0 = not _distributed() or torch.distributed.get_rank() == 0
    use_amp = cfg.amp and device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(cfg.seed + (torch.distributed.get_rank() if _distributed() else 0))
    wrapped = Denoiser(train_net, denoiser.schedule, denoiser.prediction, denoiser.num_classes)
    net.train()
    t0 = time.time() - state.seconds
    while state.step < cfg.steps:
        batch = next(batches)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(state.step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = wrapped.loss(batch.x0, batch.cond, mask=batch.mask, p_uncond=cfg.p_uncond, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + state.step) / (10 + state.step))  # warm-up: early EMA forgets the init
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        state.step += 1
        state.losses.append(float(loss.detach()))
        state.seconds = time.time() - t0
        if callback is not None:
            callback(state)
        if rank0 and checkpoint is not None and (state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps):
            tmp = checkpoint.with_name(checkpoint.name + ".tmp")
            torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
            os.replace(tmp, checkpoint)
    net.eval()
    return ema, state
