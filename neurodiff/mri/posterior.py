"""Posterior sampling for undersampled MRI: a conditional diffusion model + data consistency at every step.

Samples are drawn as one batch (samples x slices); the mean and spread are accumulated online over sample
chunks (Welford), so memory does not grow with the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..diffusion import Cond, Denoiser, sample_ddim
from .fft import channels_to_complex, complex_to_channels
from .recon_model import condition, crop, pad, padded_shape, padding, slice_scale

# x (N, S, H, W) complex image estimates in the data's units -> data-consistent estimates
Projection = Callable[[torch.Tensor], torch.Tensor]


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
    """

    mean: torch.Tensor
    mag_mean: torch.Tensor
    mag_std: torch.Tensor
    samples: torch.Tensor | None


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
    sample_chunk: int | None = None,
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
        it receives tensors on the denoiser's device.
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
    sample_chunk
        Samples per network batch (default all ``N`` at once).
    callback
        Called with the number of network evaluations done so far.
    """
    dev = next(denoiser.parameters()).device
    zf, mask = zf.to(dev), mask.to(dev)
    s, h, w = zf.shape
    pads = padding((h, w), padded_shape((max(h, canvas[0]), max(w, canvas[1])), multiple))
    scale = slice_scale(zf)[:, None, None]  # (S, 1, 1)
    cond_one = condition(pad(zf / scale, pads), pad(mask.float(), pads))  # (S, 3, H', W')
    chunk = sample_chunk or n_samples
    n_done, calls = 0, 0
    mean = torch.zeros_like(zf)
    mag_mean = torch.zeros(zf.shape, dtype=torch.float32, device=dev)
    mag_m2 = torch.zeros_like(mag_mean)
    kept = []
    while n_done < n_samples:
        n = min(chunk, n_samples - n_done)

        def consistency(x0: torch.Tensor, t: torch.Tensor, n: int = n) -> torch.Tensor:
            x = crop(channels_to_complex(x0.float()), pads).reshape(n, s, h, w) * scale
            x = project(x) / scale
            return complex_to_channels(pad(x.reshape(n * s, h, w), pads)).to(x0)

        def count(i: int, t: int, x: torch.Tensor, pred) -> None:
            nonlocal calls
            calls += 1
            if callback is not None:
                callback(calls)

        x_T = torch.randn((n * s, 2) + cond_one.shape[-2:], generator=generator, device=dev)
        out = sample_ddim(denoiser, x_T, steps, cond=Cond(image=cond_one.repeat(n, 1, 1, 1)), eta=eta,
                          consistency=consistency, generator=generator, callback=count)
        x = (final or project)(crop(channels_to_complex(out.float()), pads).reshape(n, s, h, w) * scale)
        for xi in x:  # Welford
            n_done += 1
            mean += (xi - mean) / n_done
            d = xi.abs() - mag_mean
            mag_mean += d / n_done
            mag_m2 += d * (xi.abs() - mag_mean)
        if keep_samples:
            kept.append(x.cpu())
    std = (mag_m2 / max(n_done - 1, 1)).sqrt()
    return Posterior(mean.cpu(), mag_mean.cpu(), std.cpu(), torch.cat(kept) if keep_samples else None)



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
    total = steps * -(-s_total // group)
    parts = []
    for a in range(0, s_total, group):
        b = min(a + group, s_total)
        base = steps * (a // group)
        tick = None if progress is None else (lambda calls, base=base: progress(base + calls, total))
        fin = None if final_for is None else final_for(a, b)
        parts.append(sample_posterior(denoiser, zf[a:b], mask, project_for(a, b), final=fin, steps=steps,
                                      callback=tick, **kwargs))
    keep = parts[0].samples is not None
    return Posterior(
        torch.cat([p.mean for p in parts]), torch.cat([p.mag_mean for p in parts]),
        torch.cat([p.mag_std for p in parts]), torch.cat([p.samples for p in parts], 1) if keep else None,
    )


def calibrated_std(std: torch.Tensor, scale: float = 1.0, smooth: float = 0.0) -> torch.Tensor:
    """Uncertainty map from the sample std ``(S, H, W)``: the variance is averaged over neighbouring voxels with a
    Gaussian of ``smooth`` voxels in-plane (less noisy than from few samples alone), then the std is multiplied
    by ``scale``. Both come from the model card, fitted on calibration subjects."""
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        var = gaussian_filter(std.double().numpy() ** 2, sigma=(0, smooth, smooth))
        std = torch.from_numpy(var).sqrt().to(std.dtype)
    return std * scale
