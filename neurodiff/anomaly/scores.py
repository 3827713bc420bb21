"""Per-voxel anomaly scores from a diffusion model of healthy anatomy, normalised against a healthy reference.

Three scores, each a stack of maps over noise levels ``t``:

- ``residual``: the signed residual ``x - x0_hat(x_t)`` of the model's one-step estimate of the clean image from the
  noised scan, averaged over noise draws (an estimate of ``x - E[x0 | x_t]``: how far each voxel is from what the
  model expects a healthy brain to look like there), taken linearly (its positive part for ``polarity="hyper"``).
  It shares its network evaluations with ``elbo``.
- ``elbo``: the per-voxel terms of the negative ELBO at those levels (how many nats the model pays to explain each
  voxel at that noise level), averaged over noise draws: the squared residuals of each draw, weighted per level.
- ``recon``: the squared error of a partial-noising-then-denoising reconstruction started at each level (Graham et
  al. 2023), a deterministic DDIM run back to ``t = 0``.

Raw terms are not comparable across levels and are known to mislead (simple regions look likely, Nalisnick et al.
2019); near the brain's edge (cortex against the background, the first and last slices) even a healthy brain is
hard to predict. Each level is therefore z-scored against the same level's values in healthy reference voxels at the
same depth below the brain surface (bins of :data:`DEPTH_BINS_MM`), the levels are averaged, and the result is
re-standardised into units of healthy standard deviations. ``polarity="hyper"`` counts only voxels
brighter than the model expects (hyperintense lesions on FLAIR), ``"hypo"`` darker, ``"both"`` either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion import Denoiser, sample_ddim, voxel_terms
from ..errors import InputError

METHODS = ("residual", "elbo", "recon")
POLARITIES = ("both", "hyper", "hypo")
FPRS = np.logspace(-4, -0.5, 36)  # voxel false-positive rates at which healthy-score quantiles are stored
DEPTH_BINS_MM = (2.0, 4.0, 6.0, 10.0)  # edges of the depth bins (mm below the brain surface) of the reference


@dataclass(frozen=True)
class ScoreConfig:
    """How raw level maps are computed (part of a stored reference: change it and the reference is invalid)."""

    method: str = "residual"
    levels: tuple[int, ...] = (600, 700, 800)
    draws: int = 8
    recon_steps_per_100: int = 2
    polarity: str = "both"
    smooth_voxels: float = 1.0

    def __post_init__(self) -> None:
        if not self.levels or min(self.levels) < 0 or self.draws < 1 or self.recon_steps_per_100 <= 0:
            raise ValueError(f"bad score config: levels {self.levels}, draws {self.draws}, "
                             f"recon_steps_per_100 {self.recon_steps_per_100}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {self.polarity!r}")


@dataclass
class Reference:
    """Healthy reference statistics of one :class:`ScoreConfig`.

    Attributes
    ----------
    mean, std
        ``(K, D)`` per-level, per-depth-bin mean and standard deviation of the raw maps over healthy brain voxels.
    scale
        Mean and standard deviation over healthy voxels of the level-averaged z-scores (re-standardised, so the
        final score is in healthy standard deviations).
    fpr, threshold
        Voxel false-positive rates and the normalised scores healthy brain voxels exceed at those rates.
    slice_scores, image_scores
        Slice- and scan-level scores of the reference scans (for percentiles).
    """

    config: ScoreConfig
    mean: list[list[float]]
    std: list[list[float]]
    scale: list[float] = field(default_factory=lambda: [0.0, 1.0])
    fpr: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    slice_scores: list[float] = field(default_factory=list)
    image_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"]["levels"] = list(self.config.levels)
        return d

    @staticmethod
    def from_dict(d: dict) -> "Reference":
        cfg = dict(d["config"])
        cfg["levels"] = tuple(cfg["levels"])
        return Reference(**{**d, "config": ScoreConfig(**cfg)})

    def threshold_at(self, fpr: float) -> float:
        """The normalised score above which a healthy voxel is flagged with probability ``fpr`` (interpolated in
        log-rate between stored rates).

        Raises
        ------
        InputError
            If ``fpr`` is outside the stored range of rates.
        """
        if not self.fpr or not min(self.fpr) <= fpr <= max(self.fpr):
            lo, hi = (min(self.fpr), max(self.fpr)) if self.fpr else (float("nan"),) * 2
            raise InputError(f"the false-positive rate must be between {lo:.4g} and {hi:.3g} (the range the healthy "
                             f"reference covers), got {fpr}")
        f = np.log(np.asarray(self.fpr))
        return float(np.interp(np.log(fpr), f, np.asarray(self.threshold)))

    def percentile(self, score: float, level: str = "image") -> float:
        """Percentage of reference scans (``level="image"``) or slices (``"slice"``) scoring below ``score``."""
        ref = np.asarray(self.image_scores if level == "image" else self.slice_scores)
        return float(100.0 * np.mean(ref < score)) if ref.size else float("nan")


def level_maps(
    denoiser: Denoiser,
    x: torch.Tensor,
    config: ScoreConfig,
    *,
    batch: int = 32,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unprocessed per-level maps ``(K, N, 1, H, W)`` of slices ``x`` ``(N, 1, H, W)`` (model units) and the signed
    residuals ``x - x_hat`` of the same shape, computed ``batch`` slices at a time."""
    maps, resid = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if config.method in ("elbo", "residual"):
            m, r = voxel_terms(denoiser, xb, list(config.levels), draws=config.draws, generator=generator)
        else:
            m, r = _recon_maps(denoiser, xb, config, generator)
        maps.append(m.cpu())
        resid.append(r.cpu())
        if progress is not None:
            progress(min(i + batch, len(x)), len(x))
    return torch.cat(maps, 1), torch.cat(resid, 1)


def finish(maps: torch.Tensor, resid: torch.Tensor, config: ScoreConfig) -> torch.Tensor:
    """Raw maps as scored: ``config.polarity`` applied (voxels of the other sign set to 0; for ``residual``, the
    residual's positive part, negative part or absolute value) and smoothed in-plane with a Gaussian of
    ``config.smooth_voxels``."""
    if config.method == "residual":
        sign = {"hyper": 1.0, "hypo": -1.0}.get(config.polarity)
        maps = resid.abs() if sign is None else (sign * resid).clamp(min=0)
    elif config.polarity != "both":
        maps = maps * ((resid > 0) if config.polarity == "hyper" else (resid < 0))
    return _smooth(maps, config.smooth_voxels)


def raw_maps(denoiser: Denoiser, x: torch.Tensor, config: ScoreConfig, **kwargs) -> torch.Tensor:
    """:func:`level_maps` then :func:`finish`: the raw maps ``(K, N, 1, H, W)`` a reference normalises."""
    return finish(*level_maps(denoiser, x, config, **kwargs), config)


@torch.no_grad()
def _recon_maps(den: Denoiser, x: torch.Tensor, cfg: ScoreConfig, gen: torch.Generator | None):
    maps, resid = [], []
    for t in cfg.levels:
        steps = max(1, round(t / 100 * cfg.recon_steps_per_100))
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
        x_hat = sample_ddim(den, den.schedule.q_sample(x, tt, eps), steps, start=t)
        resid.append(x - x_hat)
        maps.append((x - x_hat) ** 2)
    return torch.stack(maps), torch.stack(resid)


def _smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return maps
    r = int(np.ceil(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=maps.dtype) / sigma) ** 2)
    g = (g / g.sum()).to(maps.device)
    k, n = maps.shape[:2]
    m = maps.reshape(k * n, 1, *maps.shape[-2:])
    m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
    return m.reshape(maps.shape)


def depth_bins(depth: torch.Tensor) -> torch.Tensor:
    """Depth-bin index (int64, same shape) of depths in mm (see :data:`DEPTH_BINS_MM`)."""
    return torch.bucketize(depth.contiguous(), torch.tensor(DEPTH_BINS_MM, dtype=depth.dtype))


def normalise(raw: torch.Tensor, ref: Reference, depth: torch.Tensor) -> torch.Tensor:
    """Per-level z-scores against the reference at each voxel's depth, averaged over levels and re-standardised over
    healthy voxels: raw ``(K, N, 1, H, W)``, depth ``(N, 1, H, W)`` mm -> ``(N, 1, H, W)`` healthy SDs."""
    b = depth_bins(depth)
    mean = torch.tensor(ref.mean, dtype=raw.dtype)[:, b]
    std = torch.tensor(ref.std, dtype=raw.dtype)[:, b]
    return (((raw - mean) / std).mean(0) - ref.scale[0]) / ref.scale[1]


def slice_scores(score: torch.Tensor, brain: torch.Tensor, q: float = 0.99) -> np.ndarray:
    """``(N,)`` slice-level scores: the ``q`` quantile of the normalised score inside each slice's brain."""
    return np.array([float(torch.quantile(s[b], q)) if b.any() else float("nan") for s, b in zip(score, brain)])


def image_score(score: torch.Tensor, brain: torch.Tensor, q: float = 0.99) -> float:
    """Scan-level score: the ``q`` quantile of the normalised score over all brain voxels."""
    v = score[brain]
    return float(torch.quantile(v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:1_000_000]], q))


def fit_reference(raws: list[torch.Tensor], healthy: list[torch.Tensor], brains: list[torch.Tensor],
                  depths: list[torch.Tensor], config: ScoreConfig) -> Reference:
    """A :class:`Reference` from the raw maps ``(K, N, 1, H, W)`` of reference scans, their healthy-voxel masks
    (brain minus known lesions), brain masks and depths ``(N, 1, H, W)``.

    Slices with known lesions are left out of the slice scores, and lesion voxels out of the scan scores.
    """
    vals = torch.cat([r[:, h] for r, h in zip(raws, healthy)], 1)
    bins = torch.cat([depth_bins(d[h]) for d, h in zip(depths, healthy)])
    mean, std = [], []
    for k in range(len(DEPTH_BINS_MM) + 1):
        v = vals[:, bins == k] if (bins == k).sum() > 100 else vals  # a (nearly) empty bin falls back to all voxels
        mean.append(v.mean(1))
        std.append(v.std(1).clamp_min(1e-12))
    ref = Reference(config, torch.stack(mean, 1).tolist(), torch.stack(std, 1).tolist())
    avg = torch.cat([normalise(r, ref, d)[h] for r, h, d in zip(raws, healthy, depths)])
    ref.scale = [float(avg.mean()), float(avg.std().clamp_min(1e-12))]
    z = [normalise(r, ref, d) for r, d in zip(raws, depths)]
    healthy_z = torch.cat([s[h] for s, h in zip(z, healthy)])
    ref.fpr = FPRS.tolist()
    ref.threshold = np.quantile(healthy_z.numpy(), 1 - FPRS).tolist()
    for s, h, b in zip(z, healthy, brains):
        clean = (h == b).flatten(1).all(1)
        ref.slice_scores += [v for v, c in zip(slice_scores(s, b), clean.tolist()) if c and np.isfinite(v)]
        ref.image_scores.append(image_score(s, h))  # known lesions left out of the reference scan scores
    return ref
