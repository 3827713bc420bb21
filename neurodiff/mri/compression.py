"""Coil compression: fewer virtual coils from the principal components of whitened multi-coil k-space.

Receive arrays have more coils than independent sensitivity profiles: the coil images of a head in a 32-channel
array are largely combinations of fewer patterns. Projecting the (prewhitened) coils onto the leading principal
components of their covariance (Buehrer et al., MRM 2007; Huang et al., MRI 2008; BART ``cc``) keeps the signal,
keeps the noise white at the same variance (the projection has orthonormal rows), and makes every coil-wise step
(sensitivity estimation, the data-consistency solves) cheaper in proportion.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodiff.errors import InputError
from neurodiff.mri.consistency import kspace_noise_variance
from neurodiff.mri.masks import mask_from_kspace
from neurodiff.mri.raw import KSpace
from neurodiff.mri.whitening import coil_transform

MAX_SLICES = 16  # slices (evenly spaced) whose k-space the coil covariance is accumulated over
# a component is kept while its signal energy exceeds this fraction of its noise energy: pure-noise components
# show up to ~0.13 on small k-space, where the corner reading of the noise runs ~10% low (a noise scan would not
# do: its bandwidth, and so its noise level, differs from the imaging scan's)
SIGNAL_TO_FLOOR = 0.25


def coil_components(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Principal components of the coils of multi-coil k-space, and how much of each is signal.

    Parameters
    ----------
    data : ndarray, shape (S, C, H, W), complex
        Centred k-space, zero where not sampled, noise white across coils (prewhitened). At most
        :data:`MAX_SLICES` evenly spaced slices are used.

    Returns
    -------
    components : ndarray, shape (C, C), complex128
        Orthonormal rows, the coil combinations in order of decreasing energy.
    signal : ndarray, shape (C,)
        Each component's energy less its noise energy (summed over the slices used; can be slightly negative).
    noise : float
        The noise energy of one component: the noise variance of one sample (from the k-space corners,
        :func:`~neurodiff.mri.consistency.kspace_noise_variance`; median over slices) times the measured samples.
        0 when the noise cannot be read.
    """
    used = data[np.unique(np.linspace(0, len(data) - 1, min(len(data), MAX_SLICES)).round().astype(int))]
    c = data.shape[1]
    cov, variances, measured = np.zeros((c, c), np.complex128), [], 0
    for d in used:
        flat = d.reshape(c, -1).astype(np.complex128)
        cov += flat @ flat.conj().T
        mask = mask_from_kspace(d)
        variances.append(kspace_noise_variance(torch.from_numpy(d), mask))
        measured += int(mask.sum())
    values, vectors = np.linalg.eigh(cov)  # ascending
    noise = float(np.median(variances)) * measured
    return vectors[:, ::-1].conj().T, values[::-1].real - noise, noise


def compress_coils(kspace: KSpace, coils: int | None = None) -> tuple[KSpace, dict]:
    """Multi-coil k-space projected onto fewer virtual coils.

    Parameters
    ----------
    kspace : KSpace
        Data ``(S, C, H, W)`` with white coil noise (:func:`neurodiff.mri.whitening.prewhiten`).
    coils : int >= 2 or None
        Virtual coils to keep (all when more than there are). None: the leading components whose signal energy exceeds
        :data:`SIGNAL_TO_FLOOR` times their noise energy (at least 2); all of them when the noise cannot be read.

    Returns
    -------
    KSpace
        ``(S, K, H, W)`` (``noise`` projected too), or ``kspace`` itself when nothing is dropped (one coil, or
        every component kept).
    dict
        For the sidecar: ``{"coils": C, "virtual_coils": K, "signal_kept": fraction of the signal energy}``.
    """
    c = kspace.data.shape[1]
    if coils is not None and not 2 <= coils:
        raise InputError(f"the number of virtual coils must be at least 2, got {coils}")
    if c == 1:
        return kspace, {"coils": 1, "virtual_coils": 1, "signal_kept": 1.0}
    components, signal, noise = coil_components(kspace.data)
    if coils is None:
        coils = max(2, int((signal > SIGNAL_TO_FLOOR * noise).sum())) if noise > 0 else c
    k = min(coils, c)
    positive = np.clip(signal, 0, None)
    kept = float(positive[:k].sum() / positive.sum()) if positive.sum() > 0 else 1.0
    info = {"coils": c, "virtual_coils": k, "signal_kept": round(kept, 6)}
    return (kspace if k == c else coil_transform(kspace, components[:k])), info
