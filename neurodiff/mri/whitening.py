"""Coil noise prewhitening: make the receiver noise of multi-coil k-space independent and equal across coils.

Receive coils pick up correlated noise of unequal power. Sensitivity estimation, the coil combination and the
data-consistency damping (one noise variance for every coil, read from the k-space corners) all assume white,
uncorrelated noise; prewhitening with the covariance measured by the scanner's noise-only acquisition (Siemens
noise adjust scan, ISMRMRD noise measurement) makes that true (Pruessmann et al., MRM 2001; Roemer et al., MRM 1990).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neurodiff.mri.raw import KSpace

MIN_SAMPLES_PER_COIL = 4  # fewer noise samples per coil than this give too unstable a covariance to whiten with


def noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Coil noise covariance ``Sigma`` ``(C, C)`` (complex128) of noise-only samples ``(C, N)``."""
    noise = np.asarray(noise, dtype=np.complex128)
    noise = noise - noise.mean(axis=1, keepdims=True)
    return noise @ noise.conj().T / noise.shape[1]


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """Matrix ``W`` that whitens coil noise: ``W Sigma W^H = mean(diag Sigma) I``.

    ``W = sqrt(mean(diag Sigma)) L^{-1}`` with ``Sigma = L L^H`` (Cholesky), so the whitened noise of every coil
    has the coils' average noise variance: the data keep their units and noise level.

    Parameters
    ----------
    cov : ndarray, shape (C, C), complex
        Coil noise covariance (:func:`noise_covariance`).

    Returns
    -------
    ndarray, shape (C, C), complex128
        Lower-triangular whitening matrix, applied along the coil axis.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the covariance is not positive definite (a dead coil, or fewer samples than coils).
    """
    chol = np.linalg.cholesky(cov)  # LinAlgError (a ValueError) if not positive definite
    return np.sqrt(np.real(np.trace(cov)) / len(cov)) * np.linalg.inv(chol)


def coil_transform(kspace: KSpace, w: np.ndarray) -> KSpace:
    """``kspace`` with the matrix ``w`` ``(K, C)`` applied along the coil axis of its data ``(S, C, H, W)`` and of
    its noise samples ``(C, N)``: ``(S, K, H, W)``, complex64."""
    w = w.astype(np.complex64)
    data = np.stack([np.einsum("kc,chw->khw", w, d) for d in kspace.data])  # slice by slice: no big temporary
    noise = None if kspace.noise is None else (w @ kspace.noise).astype(np.complex64)
    return dataclasses.replace(kspace, data=data, noise=noise)


def prewhiten(kspace: KSpace) -> tuple[KSpace, dict]:
    """Whiten multi-coil k-space with the noise samples recorded in the file.

    Parameters
    ----------
    kspace : KSpace
        Data ``(S, C, H, W)``; ``kspace.noise`` ``(C, N)`` noise-only samples, or None.

    Returns
    -------
    KSpace
        The whitened data (``noise`` whitened too), or ``kspace`` unchanged when there is nothing to whiten
        with: a single coil, no noise samples, fewer than ``MIN_SAMPLES_PER_COIL`` per coil, or a singular
        noise covariance. Zeros stay zero: the sampling pattern is unchanged.
    dict
        What was done, for the output's sidecar: ``{"prewhitened": bool, "noise_samples": N, ...}`` with the
        largest noise correlation between two coils before whitening, or the reason for skipping it.
    """
    noise, c = kspace.noise, kspace.data.shape[1]
    if noise is None or c == 1:
        return kspace, {"prewhitened": False, "reason": "single coil" if c == 1 else "no noise scan in the file"}
    n = noise.shape[1]
    if noise.shape[0] != c or n < MIN_SAMPLES_PER_COIL * c:
        return kspace, {"prewhitened": False, "noise_samples": n,
                        "reason": f"noise scan has {noise.shape[0]} coils x {n} samples for {c} coils"}
    cov = noise_covariance(noise)
    try:
        w = whitening_matrix(cov)
    except np.linalg.LinAlgError:
        return kspace, {"prewhitened": False, "noise_samples": n, "reason": "singular noise covariance"}
    corr = np.abs(cov) / np.sqrt(np.outer(np.diag(cov).real, np.diag(cov).real))
    return coil_transform(kspace, w), {"prewhitened": True, "noise_samples": n,
                      "max_coil_noise_correlation": round(float((corr - np.eye(c)).max()), 3)}
