"""Posterior sampling for undersampled MRI: a diffusion model (conditional, or an unconditional prior) + data
consistency at every step.

Samples are drawn as one batch (samples x slices); the mean and spread are accumulated online (Welford).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..diffusion import Cond, Denoiser, sample_ddim
from .consistency import Projection
from .fft import channels_to_complex, complex_to_channels
from .recon_model import condition, crop, pad, padded_shape, padding, slice_scale


@dataclass
class Posterior:
    """Posterior summary of ``S`` slices, each ``(S, H, W)``.

    Attributes
    ----------
    mean
        Complex posterior mean (the reconstruction), in the data's units.
    mag_mean, mag_std
        Mean and standard deviation of the magnitude of the samples.
    samples
        ``(N, S, H, W)`` complex samples when kept, else None.
    fit_std
        Standard deviation of the magnitude of the samples fitted to the measured data itself: without the final
        data consistency's noise draws (``final``), the model's own spread; ``mag_std`` when there were none.
    """

    mean: torch.Tensor
    mag_mean: torch.Tensor
    mag_std: torch.Tensor
    samples: torch.Tensor | None
    fit_std: torch.Tensor


# Symmetries of a slice's reconstruction problem by name: (transpose, flip axis 0, flip axis 1), in the order
# samples are spread over them (the first 2 and 4 are subgroups). Flips mirror about the centre voxel.
SYMMETRIES = {
    "as given": (False, False, False), "transposed": (True, False, False),
    "rotated 180": (False, True, True), "anti-transposed": (True, True, True),
    "flipped axis 0": (False, True, False), "flipped axis 0, transposed": (True, True, False),
    "flipped axis 1": (False, False, True), "flipped axis 1, transposed": (True, False, True),
}


def sample_views(n_samples: int, views: int) -> list[tuple[str, int]]:
    """``[(symmetry name, count), ...]``: how :func:`sample_posterior` spreads ``n_samples`` over the first
    ``views`` :data:`SYMMETRIES` (at most one view per sample; earlier views take the remainder)."""
    k = max(1, min(views, n_samples, len(SYMMETRIES)))
    return [(name, n_samples // k + (i < n_samples % k)) for i, name in enumerate(list(SYMMETRIES)[:k])]


def _centred_flip(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mirror ``x`` about the centre voxel ``n // 2`` of ``dim`` (index ``i -> 2 (n // 2) - i`` modulo ``n``): the
    flip that commutes with the centred FFT, so a flipped image has the flipped k-space and mask. Its own
    inverse."""
    n = x.shape[dim]
    return torch.roll(torch.flip(x, (dim,)), 1 - n % 2, dim)


@dataclass
class _View:
    """``n`` samples of ``S`` slices ``(H, W)`` as the network sees them: scaled, mirrored and/or transposed
    (``symmetry``, a value of :data:`SYMMETRIES`), padded."""

    symmetry: tuple[bool, bool, bool]
    n: int
    shape: tuple[int, int]  # (H, W) of the view, before padding
    pads: tuple
    scale: torch.Tensor  # (S, 1, 1)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        for dim, on in ((-2, self.symmetry[1]), (-1, self.symmetry[2])):
            x = _centred_flip(x, dim) if on else x
        return x

    def orient(self, x: torch.Tensor) -> torch.Tensor:
        """Slice orientation -> the view's."""
        x = self._flip(x)
        return x.transpose(-2, -1) if self.symmetry[0] else x

    def unorient(self, x: torch.Tensor) -> torch.Tensor:
        """The view's orientation -> the slice's (inverse of :meth:`orient`)."""
        return self._flip(x.transpose(-2, -1) if self.symmetry[0] else x)

    def to_image(self, x0: torch.Tensor) -> torch.Tensor:
        """Network output ``(n S, 2, H', W')`` -> complex ``(n, S, H, W)`` in the data's units and orientation."""
        x = crop(channels_to_complex(x0), self.pads).reshape(self.n, -1, *self.shape)
        return self.unorient(x) * self.scale

    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_image`."""
        return complex_to_channels(pad(self.orient(x / self.scale).reshape(-1, *self.shape), self.pads))


def sample_posterior(
    denoiser: Denoiser,
    zf: torch.Tensor,
    mask: torch.Tensor,
    project: Projection,
    *,
    final: Projection | None = None,
    n_samples: int = 8,
    steps: int = 20,
    eta: float = 1.0,
    multiple: int = 8,
    canvas: tuple[int, int] = (0, 0),
    views: int = 1,
    conditioned: bool = True,
    keep_samples: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[int], None] | None = None,
) -> Posterior:
    """Draw posterior samples of ``S`` slices given their zero-filled images.

    Parameters
    ----------
    zf
        ``(S, H, W)`` complex zero-filled (adjoint) images of the measured data, any units.
    mask
        ``(H, W)`` sampling mask (1 = measured), shown to the network.
    project
        Data consistency in the data's units, applied to x0-hat at every step (e.g. a hard k-space projection);
        it receives ``(N', S, H, W)`` tensors on the denoiser's device.
    final
        Data consistency of the finished samples (default ``project``).
    n_samples
        Number of posterior samples ``N``.
    steps, eta
        DDIM steps and stochasticity (``eta = 1``: ancestral sampling, which keeps the spread of the posterior).
    multiple
        The network's size divisor: slices are zero-padded to it and cropped back.
    canvas
        Minimum padded size ``(H, W)``: the training canvas, so that a small field of view sits in the same
        zero frame as the training slices did.
    views
        Spread the samples over this many :data:`SYMMETRIES` of the problem (:func:`sample_views`; 2: half of
        them on the transposed slice, 8: the whole dihedral group): the network sees the transformed zero-filled
        image and mask (exact symmetries of the reconstruction problem, which the network has only learned
        approximately), so that part of its orientation-dependent error shows in the spread; data consistency and
        the returned samples stay in the slice's own orientation. Views whose padded shapes agree (square canvas)
        run as one network batch.
    conditioned
        True: the denoiser is conditioned on the zero-filled image and the mask (channel concatenation); False:
        an unconditional prior of the scaled slices, so that the measured data enter only through ``project``
        (prior-only posterior sampling).
    callback
        Called with the number of network evaluations done so far.
    """
    dev = next(denoiser.parameters()).device
    zf, mask = zf.to(dev), mask.to(dev)
    s, h, w = zf.shape
    scale = slice_scale(zf)[:, None, None]  # (S, 1, 1)
    batches: dict[tuple[int, int], list[tuple[_View, torch.Tensor]]] = {}  # views of one padded shape: a batch
    for name, n in sample_views(n_samples, views):
        symmetry = SYMMETRIES[name]
        vh, vw = (w, h) if symmetry[0] else (h, w)
        net_shape = _network_shape((vh, vw), canvas, multiple)
        view = _View(symmetry, n, (vh, vw), padding((vh, vw), net_shape), scale)
        cond = (condition(pad(view.orient(zf) / scale, view.pads), pad(view.orient(mask).float(), view.pads))
                if conditioned else None)
        batches.setdefault(net_shape, []).append((view, cond))
    n_done, calls = 0, 0
    mean = torch.zeros_like(zf)
    # Welford accumulators of the magnitudes: of the final samples, and of the samples fitted to the data itself
    mag_mean, mag_m2, fit_mean, fit_m2 = (torch.zeros(zf.shape, dtype=torch.float32, device=dev) for _ in range(4))
    kept = []

    def count(i: int, t: int, x: torch.Tensor, pred) -> None:
        nonlocal calls
        calls += 1
        if callback is not None:
            callback(calls)

    for net_shape, batch in batches.items():
        views = [v for v, _ in batch]

        def to_image(x0: torch.Tensor, views: list[_View] = views) -> torch.Tensor:  # -> (N', S, H, W)
            parts = torch.split(x0.float(), [v.n * s for v in views])
            return torch.cat([v.to_image(p) for v, p in zip(views, parts)])

        def consistency(x0: torch.Tensor, t: torch.Tensor, views: list[_View] = views) -> torch.Tensor:
            x = project(to_image(x0))
            return torch.cat([v.to_net(p) for v, p in zip(views, torch.split(x, [v.n for v in views]))]).to(x0)

        cond = Cond(image=torch.cat([c.repeat(v.n, 1, 1, 1) for v, c in batch])) if conditioned else None
        x_T = torch.randn((sum(v.n for v in views) * s, 2) + net_shape, generator=generator, device=dev)
        out = sample_ddim(denoiser, x_T, steps, cond=cond, eta=eta, consistency=consistency,
                          generator=generator, callback=count)
        x0 = to_image(out)
        x = project(x0) if final is None else final(x0)
        fitted = x if final is None else project(x0)
        for xi, fi in zip(x, fitted):
            n_done += 1
            mean += (xi - mean) / n_done
            _welford(mag_mean, mag_m2, xi.abs(), n_done)
            _welford(fit_mean, fit_m2, fi.abs(), n_done)
        if keep_samples:
            kept.append(x.cpu())
    std, fit_std = ((m2 / max(n_done - 1, 1)).sqrt().cpu() for m2 in (mag_m2, fit_m2))
    return Posterior(mean.cpu(), mag_mean.cpu(), std, torch.cat(kept) if keep_samples else None, fit_std)


def _welford(mean: torch.Tensor, m2: torch.Tensor, value: torch.Tensor, n: int) -> None:
    """Add the ``n``-th value to a running mean and sum of squared deviations, in place."""
    d = value - mean
    mean += d / n
    m2 += d * (value - mean)


def _network_shape(shape: tuple[int, int], canvas: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The padded ``(H', W')`` the network sees for slices ``shape``: at least ``canvas``, a multiple of
    ``multiple``."""
    return padded_shape((max(shape[0], canvas[0]), max(shape[1], canvas[1])), multiple)


def network_batches(shape: tuple[int, int], n_samples: int, views: int, multiple: int,
                    canvas: tuple[int, int]) -> int:
    """Number of network batches :func:`sample_posterior` runs per group of slices ``(H, W)``: 2 when transposed
    views pad to another shape, else 1."""
    return len({_network_shape(shape[::-1] if SYMMETRIES[name][0] else shape, canvas, multiple)
                for name, _ in sample_views(n_samples, views)})


def sample_posterior_slices(
    denoiser: Denoiser,
    zf: torch.Tensor,
    mask: torch.Tensor,
    project_for: Callable[[int, int], Projection],
    *,
    group: int = 8,
    final_for: Callable[[int, int], Projection] | None = None,
    steps: int = 20,
    progress: Callable[[int, int], None] | None = None,
    **kwargs,
) -> Posterior:
    """:func:`sample_posterior` over a stack of slices ``zf`` ``(S, H, W)``, ``group`` slices per batch.

    ``project_for(a, b)`` returns the data consistency of slices ``a:b`` (``final_for(a, b)``, when given, that of
    their finished samples); ``progress(done, total)`` counts network evaluations; other keyword arguments go to
    :func:`sample_posterior`.
    """
    s_total = zf.shape[0]
    batches = network_batches(tuple(zf.shape[-2:]), kwargs.get("n_samples", 8), kwargs.get("views", 1),
                              kwargs.get("multiple", 8), kwargs.get("canvas", (0, 0)))
    total = steps * batches * -(-s_total // group)
    parts = []
    for a in range(0, s_total, group):
        b = min(a + group, s_total)
        base = steps * batches * (a // group)
        tick = None if progress is None else (lambda calls, base=base: progress(base + calls, total))
        fin = None if final_for is None else final_for(a, b)
        parts.append(sample_posterior(denoiser, zf[a:b], mask, project_for(a, b), final=fin, steps=steps,
                                      callback=tick, **kwargs))
    keep = parts[0].samples is not None
    return Posterior(
        torch.cat([p.mean for p in parts]), torch.cat([p.mag_mean for p in parts]),
        torch.cat([p.mag_std for p in parts]), torch.cat([p.samples for p in parts], 1) if keep else None,
        torch.cat([p.fit_std for p in parts]),
    )


def calibration_scale(calibration: dict, voxel_mm: float | None = None) -> float:
    """The std scale a model card's ``calibration`` gives slices of in-plane voxel size ``voxel_mm``.

    The spread of a model trained at one resolution is more overconfident on finer scans, so a card may hold
    ``std_scale_by_voxel_mm``, ``[[voxel_mm, scale], ...]`` fitted on calibration subjects at several resolutions;
    the scale is then interpolated linearly in ``log(voxel_mm)`` and held constant beyond the table's ends.
    Without a table, or without a voxel size, it is ``std_scale`` (default 1).

    Parameters
    ----------
    calibration : dict
        The card's ``calibration`` entry (may be empty).
    voxel_mm : float, optional
        In-plane voxel size in mm (geometric mean of the two in-plane axes).

    Returns
    -------
    float
    """
    table = calibration.get("std_scale_by_voxel_mm")
    if not table or voxel_mm is None or not voxel_mm > 0:
        return float(calibration.get("std_scale", 1.0))
    voxel, scale = np.array(sorted(table), dtype=float).T
    return float(np.interp(np.log(voxel_mm), np.log(voxel), scale))


def in_plane_voxel_mm(affine, slice_axis: int = 2) -> float | None:
    """Geometric mean of the voxel sizes (mm) of a ``(4, 4)`` affine's two axes other than ``slice_axis``; None if
    either is zero."""
    zooms = np.delete(np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(0)), slice_axis)
    return float(np.sqrt(zooms[0] * zooms[1])) if (zooms > 0).all() else None


def calibrated_std(std: torch.Tensor, scale: float = 1.0, smooth: float = 0.0) -> torch.Tensor:
    """Uncertainty map from the sample std ``(S, H, W)``: the variance is averaged over neighbouring voxels with a
    Gaussian of ``smooth`` voxels in-plane (less noisy than from few samples alone), then the std is multiplied
    by ``scale``. Both come from the model card, fitted on calibration subjects."""
    return _smoothed(std**2, smooth).clamp(min=0).sqrt() * scale


def _smoothed(var: torch.Tensor, smooth: float) -> torch.Tensor:
    """``var`` ``(S, H, W)`` averaged in-plane with a Gaussian of ``smooth`` voxels (unchanged for 0)."""
    if smooth <= 0:
        return var
    from scipy.ndimage import gaussian_filter

    return torch.from_numpy(gaussian_filter(var.double().cpu().numpy(), sigma=(0, smooth, smooth))).to(var.dtype)


def kspace_share_noise_std(noise_std: np.ndarray, fraction: float) -> np.ndarray:
    """Std of the magnitude noise that complex k-space noise on a ``fraction`` of k-space puts into the image.

    With the orthonormal FFT (and, for coil combinations, sensitivities of unit root-sum-of-squares) complex
    k-space noise of variance ``sigma^2`` per sample is image noise of variance ``sigma^2`` per voxel; a fraction
    ``f`` of the samples carries ``f sigma^2`` of it, and half of a complex variance lies along the image's phase,
    in its magnitude. For the unmeasured fraction this is the noise a fully sampled image holds that no
    reconstruction can know.

    Parameters
    ----------
    noise_std : ndarray, shape (S,)
        Noise std ``sigma`` of one complex k-space sample per slice (``kspace_noise_variance``), data units.
    fraction : float
        Fraction of k-space, in [0, 1].

    Returns
    -------
    ndarray, shape (S,)
        ``sigma sqrt(fraction / 2)``, image units.
    """
    return np.asarray(noise_std, dtype=float) * math.sqrt(fraction / 2.0)


def measured_kspace_std(mag_std: torch.Tensor, fit_std: torch.Tensor, measured_std: np.ndarray,
                        unmeasured_std: np.ndarray, scale: float = 1.0, smooth: float = 0.0) -> torch.Tensor:
    """Uncertainty map of a reconstruction from measured (noisy) k-space, against the fully sampled image.

    Three parts, added as variances:

    - the model's spread, the samples fitted to the measured data itself (``fit_std``), calibrated (``scale``,
      ``smooth``: :func:`calibrated_std`, fitted on such spreads);
    - the measurement noise as the reconstruction carries it, beyond what the fully sampled image shares: the
      noise draws each final sample fits add the variance ``mag_std^2 - fit_std^2`` (the data's noise through the
      data consistency: for multi-coil data amplified where the coils separate aliases poorly); the fully sampled
      image holds the same measured noise, ``d^2`` in magnitude, so only the excess over it is error (none for
      single-coil data, whose measured k-space the reconstruction keeps); smoothed like the spread before the
      excess is clipped at 0 (clipping the few-sample estimate first would bias it upwards), not scaled;
    - the noise ``u`` the fully sampled image holds in the k-space left out, which no reconstruction can know.

    ``std = sqrt(scale^2 smooth(fit_std^2) + (smooth(mag_std^2 - fit_std^2) - d^2)_+ + u^2)``.

    Parameters
    ----------
    mag_std, fit_std : Tensor, shape (S, H, W)
        Spread of the samples' magnitudes with and without the final noise draws (:class:`Posterior`), image units.
    measured_std, unmeasured_std : ndarray, shape (S,)
        ``d`` and ``u`` per slice (:func:`kspace_share_noise_std` of the measured and the unmeasured fraction),
        image units.
    scale, smooth : float
        The model card's calibration.

    Returns
    -------
    Tensor, shape (S, H, W)
    """
    d, u = (torch.from_numpy(np.asarray(v, dtype=float)).to(fit_std.dtype)[:, None, None]
            for v in (measured_std, unmeasured_std))
    excess = (_smoothed(mag_std**2 - fit_std**2, smooth) - d**2).clamp(min=0)
    return (calibrated_std(fit_std, scale, smooth) ** 2 + excess + u**2).sqrt()
