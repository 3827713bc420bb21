"""Undersampling masks for centred Cartesian k-space.

A mask is a boolean array of shape ``(H, W)`` (the last two axes of k-space), ``True`` = sampled. The centre of
k-space (DC) is at ``(H // 2, W // 2)`` (see :mod:`neurodiff.mri.fft`).
"""

from __future__ import annotations

import numpy as np
import torch

from neurodiff.errors import InputError

KINDS = ("random", "equispaced", "poisson")


def sampling_mask(
    shape: tuple[int, int],
    accel: float,
    center_fraction: float,
    kind: str = "random",
    pe_axis: int = 0,
    seed: int | None = None,
) -> np.ndarray:
    """Undersampling mask with a fully sampled calibration centre.

    Parameters
    ----------
    shape : (int, int)
        k-space shape ``(H, W)``.
    accel : float
        Acceleration factor (>= 1); the sampled fraction is about ``1 / accel``.
    center_fraction : float in [0, 1)
        Fraction of the phase-encode lines (``"random"``, ``"equispaced"``) or of each axis (``"poisson"``) that
        is fully sampled around the centre: ``round(center_fraction * N)`` lines.
    kind : {"random", "equispaced", "poisson"}
        ``"random"``: the centre plus exactly ``round(N / accel) - n_centre`` other lines drawn uniformly without
        replacement (fastMRI's random mask with a fixed line count). ``"equispaced"``: the centre plus lines at a
        fixed spacing and random offset, the spacing adjusted for the centre lines (fastMRI's equispaced mask).
        ``"poisson"``: 2D variable-density Poisson-disc sampling over both axes (disc radius grows linearly with
        the normalised distance to the centre), plus a fully sampled central rectangle; its radius scale is
        searched so that the acceleration is ``accel`` within a few percent.
    pe_axis : {0, 1}
        Phase-encode axis of the 1D masks: 0 for ``H`` (rows), 1 for ``W``. Whole lines are selected along it
        (the mask varies along ``pe_axis`` and is constant along the other, readout axis). Unused by
        ``"poisson"``, which undersamples both axes.
    seed : int or None
        Seed of the ``numpy.random.default_rng`` used; the global RNG is never touched.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    if len(shape) != 2 or min(shape) < 2:
        raise InputError(f"mask shape must be two sizes >= 2, got {tuple(shape)}")
    if not accel >= 1:
        raise InputError(f"accel must be >= 1, got {accel}")
    if not 0 <= center_fraction < 1:
        raise InputError(f"center_fraction must be in [0, 1), got {center_fraction}")
    if pe_axis not in (0, 1):
        raise InputError(f"pe_axis must be 0 (rows, H) or 1 (columns, W), got {pe_axis}")
    if kind not in KINDS:
        raise InputError(f"unknown mask kind {kind!r}; choose one of {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    if kind == "poisson":
        return _poisson(shape, accel, center_fraction, rng)
    n = shape[pe_axis]
    n_low = int(round(center_fraction * n))
    if n_low > round(n / accel):
        raise InputError(
            f"center_fraction {center_fraction} samples {n_low} of {n} lines, more than accel {accel} allows; "
            "lower center_fraction or accel"
        )
    lines = _centre(n, n_low)
    if kind == "random":
        others = np.flatnonzero(~lines)
        lines[rng.choice(others, size=int(round(n / accel)) - n_low, replace=False)] = True
    elif n_low < n:
        spacing = accel * (n_low - n) / (n_low * accel - n) if n_low else accel
        offset = rng.integers(0, max(1, round(spacing)))
        lines[np.round(np.arange(offset, n - 1, spacing)).astype(int)] = True
    mask = np.zeros(shape, dtype=bool)
    if pe_axis == 0:
        mask[lines, :] = True
    else:
        mask[:, lines] = True
    return mask


def centred_block(shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """Index of the ``size`` rectangle of centred k-space ``shape`` centred on DC ``(H // 2, W // 2)`` (as a
    calibration centre is)."""
    return tuple(slice(n // 2 - c // 2, n // 2 - c // 2 + c) for n, c in zip(shape, size))


def _centre(n: int, n_low: int) -> np.ndarray:
    """Boolean vector of length ``n``, True on the ``n_low`` entries centred on the DC index ``n // 2``."""
    lines = np.zeros(n, dtype=bool)
    start = n // 2 - n_low // 2
    lines[start : start + n_low] = True
    return lines


def _poisson(shape: tuple[int, int], accel: float, center_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Variable-density Poisson-disc mask: bisection on the disc-radius scale to reach ``accel``."""
    h, w = shape
    calib = np.outer(_centre(h, int(round(center_fraction * h))), _centre(w, int(round(center_fraction * w))))
    target = h * w / accel
    if calib.sum() > target:
        raise InputError(f"center_fraction {center_fraction} alone exceeds accel {accel}; lower center_fraction")
    order = rng.permutation(h * w)  # one candidate order for every radius: the count is then monotonic in it
    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    distance = np.sqrt((yy / (h / 2)) ** 2 + (xx / (w / 2)) ** 2).ravel()  # 0 at DC, 1 at the edge midpoints
    lo, hi = 0.0, float(max(h, w))
    best = calib
    for _ in range(24):
        scale = (lo + hi) / 2
        mask = _dart_throw(shape, calib, order, scale * (0.25 + distance))
        if abs(mask.sum() - target) < abs(best.sum() - target):
            best = mask
        if abs(mask.sum() - target) <= 0.01 * target:
            break
        lo, hi = (scale, hi) if mask.sum() > target else (lo, scale)
    return best


def _dart_throw(shape: tuple[int, int], calib: np.ndarray, order: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Accept candidates in ``order`` unless within the disc of an accepted one (disc radius ``radius[p]``)."""
    h, w = shape
    mask = calib.copy()
    blocked = calib.copy()
    for p in order:
        y, x = divmod(int(p), w)
        if blocked[y, x]:
            continue
        mask[y, x] = True
        r = radius[p]
        ri = int(np.ceil(r))
        y0, y1, x0, x1 = max(0, y - ri + 1), min(h, y + ri), max(0, x - ri + 1), min(w, x + ri)
        dy, dx = np.ogrid[y0 - y : y1 - y, x0 - x : x1 - x]
        blocked[y0:y1, x0:x1] |= dy**2 + dx**2 < r**2
        blocked[y, x] = True
    return mask


def mask_from_kspace(kspace: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sampling mask of measured k-space: sampled where any coil or slice holds non-zero data.

    Parameters
    ----------
    kspace : ndarray or Tensor, shape (..., H, W)
        Centred k-space, zero where not sampled; leading axes (slices, coils) are reduced.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if k.ndim < 2:
        raise InputError(f"k-space must have at least two axes (H, W), got shape {k.shape}")
    return (k != 0).reshape(-1, *k.shape[-2:]).any(axis=0)


def is_uncentred(mask: np.ndarray) -> bool:
    """Whether ``mask`` ``(H, W)`` has k-space's centre in its corners (plain ``fft2`` order, not fftshifted).

    Its fftshifted copy must sample DC ``(H // 2, W // 2)`` and be denser near DC (Gaussian weights of 1/16 of each
    axis: the calibration centre and the low frequencies every sampling pattern favours): more than twice as dense,
    or more than 1.25 times with a sampled line on each side of DC along both axes. Of 828 masks from
    :func:`sampling_mask` (2-16x, three kinds, three shapes) none is flagged, and 818 of their uncentred
    (``ifftshift``) copies are; a uniform random line mask without a calibration centre is flagged 2-8% of the time
    (more often on small grids).
    """
    m = np.asarray(mask, bool)
    shifted = np.fft.fftshift(m)
    half = min(centre_half(shifted, 0), centre_half(shifted, 1))
    if half < 0:
        return False
    weights = np.outer(*(np.exp(-0.5 * ((np.arange(n) - n // 2) / (n / 16)) ** 2) for n in m.shape))
    ratio = (shifted * weights).sum() / max((m * weights).sum(), 1e-12)
    return ratio > 2 or (half >= 1 and ratio > 1.25)


def is_full_block(mask: np.ndarray) -> bool:
    """Whether ``mask`` ``(H, W)`` samples k-space fully: one filled rectangle, possibly zero-padded at the edges or
    partial Fourier (as scanners and fastMRI files store it), or the filled ellipse inscribed in that rectangle
    (elliptical scanning, as 3D acquisitions skip the corners of their phase-encode plane)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return False
    block = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if block.all():
        return True
    h, w = block.shape
    r2 = _ellipse_r2(h, w)
    inside, outside = block[r2 <= 0.8].all() and block[r2 <= 1].mean() > 0.98, block[r2 > 1.2].any()
    return bool(min(h, w) >= 8 and inside and not outside)


def support_fraction(mask: np.ndarray) -> float:
    """Fraction of k-space ``(H, W)`` that a full acquisition of this sampling's extent measures: the bounding box
    of the sampled rows and columns (zero-padded edges left out), or the ellipse inscribed in it when nothing is
    sampled outside that ellipse (elliptical scanning). Sparse masks whose outermost samples stop short of the
    acquisition's extent give a lower bound."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0.0
    block = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    r2 = _ellipse_r2(*block.shape)
    return float((r2 <= 1).sum() if not block[r2 > 1.2].any() else block.size) / mask.size


def partial_fourier_axis(mask: np.ndarray, alpha: float = 1e-4, min_half: int = 4) -> int | None:
    """The axis along which ``mask`` skips one side of k-space (partial Fourier), or None.

    A band of ``g`` unsampled lines at one edge (at least 1/8 of the axis: 7/8 partial Fourier or less) counts as
    skipped when the mirrored band at the other edge is sampled so densely (a fraction ``p`` of its lines) that a
    gap that wide would arise by chance with probability ``(1 - p)^g < alpha`` (random line masks leave shorter
    gaps), and the centre line and at least ``min_half`` lines on each side of it are sampled, to read the phase
    from (see :func:`symmetric_centre_window`).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
        Sampling mask, k-space centred on ``(H // 2, W // 2)``.
    alpha : float
        Largest chance probability of the gap.
    min_half : int
        Fewest sampled lines on each side of the centre line.

    Returns
    -------
    int or None
        0 or 1 (the more clearly skipped of the two, if both are), None if neither.
    """
    chance = {}
    for axis in (0, 1):
        lines = mask.any(axis=1 - axis)
        n, sampled = lines.size, np.flatnonzero(lines)
        if sampled.size == 0 or centre_half(mask, axis) < min_half:
            continue
        low, high = sampled[0], n - 1 - sampled[-1]
        gap = max(low, high)
        mirror = lines[n - gap:] if low > high else lines[:gap]
        if gap >= max(n / 8, 2) and mirror.any():
            chance[axis] = (1.0 - mirror.mean()) ** gap
    axis = min(chance, key=chance.get, default=None)
    return axis if axis is not None and chance[axis] < alpha else None


def conjugate_mirror(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``a`` at the mirror point ``-k`` of each sample along ``axes`` of centred k-space: with ``k = 0`` at index
    ``n // 2``, index ``i`` takes index ``2 (n // 2) - i`` (on an even axis the most negative frequency, which has
    no mirror, takes itself)."""
    return np.roll(np.flip(a, axes), tuple(1 - a.shape[ax] % 2 for ax in axes), axes)


def _centre_line(mask: np.ndarray, axis: int) -> np.ndarray:
    """The line of ``mask`` ``(H, W)`` along ``axis`` through the centre of the other axis."""
    return np.take(mask, mask.shape[1 - axis] // 2, axis=1 - axis)


def mirrored(mask: np.ndarray, axis: int | None) -> np.ndarray:
    """``mask`` ``(H, W)`` or'ed with its mirror image about the k-space centre (index ``n // 2``) along ``axis``:
    the side that partial Fourier skips, as a full scan would measure it; unchanged for None."""
    return mask if axis is None else mask | conjugate_mirror(mask, (axis,))


def centre_half(mask: np.ndarray, axis: int) -> int:
    """Lines sampled on each side of the centre line along ``axis`` (on the central line across it), the centre
    line included; -1 if the centre line is not sampled."""
    profile = _centre_line(mask, axis)
    n, centre = profile.size, profile.size // 2
    if not profile[centre]:
        return -1
    half = 0
    while 0 <= centre - half - 1 and centre + half + 1 < n and profile[[centre - half - 1, centre + half + 1]].all():
        half += 1
    return half


def symmetric_centre_window(mask: np.ndarray, axis: int) -> np.ndarray:
    """Window over the symmetric part of the sampled centre of ``mask``, whose k-space gives the low-resolution
    image that the partial-Fourier constraint takes the phase of.

    Along ``axis`` a Hann window over the lines ``centre - h .. centre + h`` that are all sampled (on the central
    line across ``axis``); along the other axis ones where the centre line is fully sampled (line masks), else a
    Hann window over its sampled run around the centre (2D masks: no aliased samples).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
        Sampling mask, k-space centred on ``(H // 2, W // 2)``, with its centre sampled.
    axis : int
        The partial-Fourier axis (:func:`partial_fourier_axis`).

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    windows = []
    for ax in (axis, 1 - axis):
        n, centre, half = mask.shape[ax], mask.shape[ax] // 2, max(centre_half(mask, ax), 0)
        window = np.zeros(n, np.float32)
        full = ax != axis and _centre_line(mask, ax).all()
        if full:
            window[:] = 1.0
        else:
            window[centre - half:centre + half + 1] = np.hanning(2 * half + 3)[1:-1]
        windows.append(window)
    rows, cols = windows if axis == 0 else windows[::-1]
    return np.outer(rows, cols).astype(np.float32)


def calibration_size(mask: np.ndarray) -> tuple[int, int]:
    """Size ``(ch, cw)`` of the largest fully sampled rectangle centred on DC (shrunk until fully sampled)."""
    h, w = mask.shape
    cy, cx = h // 2, w // 2

    def run(line: np.ndarray, c: int) -> int:
        lo, hi = c, c
        while lo > 0 and line[lo - 1]:
            lo -= 1
        while hi < len(line) - 1 and line[hi + 1]:
            hi += 1
        return 2 * min(c - lo, hi - c) + 1 if line[c] else 0

    ch, cw = run(mask[:, cx], cy), run(mask[cy, :], cx)
    while ch > 1 and cw > 1 and not mask[centred_block((h, w), (ch, cw))].all():
        ch, cw = (ch - 2, cw) if ch >= cw else (ch, cw - 2)
    if min(ch, cw) < 2:
        raise InputError("k-space has no fully sampled calibration centre (3 x 3 samples or more around its "
                         "centre) to estimate coil sensitivities from (give calib)")
    return ch, cw


def _ellipse_r2(h: int, w: int) -> np.ndarray:
    """``(h, w)`` squared radius relative to the ellipse inscribed in an ``h x w`` block (1 on the ellipse)."""
    yy, xx = np.mgrid[:h, :w]
    return ((2 * yy + 1 - h) / h) ** 2 + ((2 * xx + 1 - w) / w) ** 2


def check_mask(mask: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> None:
    """Raise :class:`InputError` unless ``mask`` is a usable binary mask for k-space of ``shape``.

    Parameters
    ----------
    mask : ndarray or Tensor, shape (H, W)
        Bool or 0/1 values.
    shape : tuple of int
        k-space shape ``(..., H, W)``; its last two sizes must equal the mask's.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.shape != tuple(shape[-2:]):
        raise InputError(f"mask shape {m.shape} does not match k-space {tuple(int(n) for n in shape[-2:])}")
    if not np.isin(m, (0, 1)).all():
        raise InputError("mask is not binary: use True/1 for sampled and False/0 for unsampled k-space")
    if not m.any():
        raise InputError("mask samples nothing: at least one k-space location must be sampled")
