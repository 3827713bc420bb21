"""Reconstruction quality (PSNR, SSIM, NMSE) and uncertainty quality (interval coverage, rank correlation of
spread with error, sparsification) for slices ``(S, H, W)`` of real magnitude images."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, spearmanr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def slice_metrics(ref: np.ndarray, est: np.ndarray) -> dict[str, float]:
    """Mean over slices of PSNR (dB), SSIM and NMSE of ``est`` against ``ref`` (both ``(S, H, W)`` real), each
    slice with its own data range ``max - min`` of ``ref``. Slices whose reference is constant are skipped; SSIM
    uses a 7 x 7 window, smaller on slices thinner than 7 voxels, and is NaN below 3."""
    rows = []
    side = min(ref.shape[1:])
    win = min(7, side - (1 - side % 2))  # SSIM's window: 7, or the largest odd size that fits a thin slice
    for r, e in zip(ref, est):
        rng = float(r.max() - r.min())
        if rng <= 0:
            continue
        rows.append((
            peak_signal_noise_ratio(r, e, data_range=rng),
            structural_similarity(r, e, data_range=rng, win_size=win) if win >= 3 else float("nan"),
            float(((r - e) ** 2).sum() / max((r**2).sum(), 1e-12)),
        ))
    if not rows:
        return {"psnr": float("nan"), "ssim": float("nan"), "nmse": float("nan")}
    psnr, ssim, nmse = np.mean(rows, axis=0)
    return {"psnr": float(psnr), "ssim": float(ssim), "nmse": float(nmse)}


def foreground(ref: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Boolean mask of voxels above ``fraction`` of each slice's range over its minimum (the object, not the air;
    for images with a zero background, ``fraction`` of the slice's maximum)."""
    flat = ref.reshape(len(ref), -1)
    low, high = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return ref > low + fraction * (high - low)


def coverage(ref: np.ndarray, mean: np.ndarray, std: np.ndarray, level: float = 0.9) -> float:
    """Fraction of voxels whose reference lies in the central ``level`` interval ``mean +- z std`` (Gaussian)."""
    z = norm.ppf(0.5 + level / 2)
    return float((np.abs(ref - mean) <= z * std).mean())


def ause(err: np.ndarray, std: np.ndarray, fractions: int = 20) -> float:
    """Area under the sparsification error curve: RMSE left after removing the voxels the uncertainty ranks
    most uncertain, minus the same with the oracle ranking by error, normalised by the full RMSE, averaged over
    removed fractions 0 .. 0.95. 0 is a perfect ranking."""
    err, std = err.ravel(), std.ravel()
    by_std = err[np.argsort(-std)] ** 2
    by_err = np.sort(err)[::-1] ** 2
    full = np.sqrt(by_err.mean())
    gaps = []
    for f in np.linspace(0, 0.95, fractions):
        k = int(f * len(err))
        gaps.append((np.sqrt(by_std[k:].mean()) - np.sqrt(by_err[k:].mean())) / full)
    return float(np.mean(gaps))


def neighbour_error(ref: np.ndarray, est: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """RMS of the true error ``est - ref`` around each voxel of ``(S, H, W)`` slices, the voxel itself left out
    (in-plane Gaussian weights of ``sigma`` voxels, renormalised without the centre).

    An oracle uncertainty map: it knows the truth next door. Its rank correlation with ``|est - ref|`` says how
    much of the error's size can be predicted from the voxel's surroundings at all, a reference level for
    Spearman(std, |error|) that no map at this resolution is expected to exceed (voxel-white error such as the
    reference's own noise in unsampled k-space is unpredictable)."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((1, 9, 9))
    impulse[0, 4, 4] = 1.0
    w0 = gaussian_filter(impulse, (0, sigma, sigma))[0, 4, 4]  # the centre's weight
    sq = (est.astype(np.float64) - ref) ** 2
    local = (gaussian_filter(sq, (0, sigma, sigma)) - w0 * sq) / (1.0 - w0)
    return np.sqrt(np.maximum(local, 0.0))


def in_slice_spearman(ref: np.ndarray, mean: np.ndarray, std: np.ndarray, where: np.ndarray) -> float:
    """Median over slices of the Spearman correlation of ``std`` with ``|mean - ref|`` within each slice.

    Parameters
    ----------
    ref, mean, std, where
        ``(S, H, W)`` reference, estimate, predicted std and voxels to score (bool), or sequences of ``S`` such
        slices (of any sizes).

    Returns
    -------
    float
        Slices with fewer than 3 voxels or a constant map are skipped; NaN when none is left. Unlike a Spearman over
        the voxels of all slices pooled, a map that is merely larger on brighter slices gains nothing here.
    """
    rhos = []
    for r, m, s, w in zip(ref, mean, std, where):
        err, sw = np.abs(m - r)[w], s[w]
        if err.size >= 3 and np.ptp(err) > 0 and np.ptp(sw) > 0:
            rhos.append(spearmanr(sw, err).statistic)
    return float(np.median(rhos)) if rhos else float("nan")


def uncertainty_metrics(ref: np.ndarray, mean: np.ndarray, std: np.ndarray, where: np.ndarray) -> dict[str, float]:
    """90% interval coverage, Spearman correlation of ``std`` with ``|mean - ref|`` and AUSE over ``where``."""
    r, m, s = ref[where], mean[where], std[where]
    err = np.abs(m - r)
    return {
        "coverage90": coverage(r, m, s, 0.9),
        "spearman": float(spearmanr(s, err).statistic) if np.ptp(s) > 0 and np.ptp(err) > 0 else float("nan"),
        "ause": ause(err, s),
    }
