import dataclasses

import numpy as np
import pytest
import torch

from neurodiff.mri import MultiCoil, estimate_sensitivities, fft2c
from neurodiff.mri.raw import KSpace
from neurodiff.mri.whitening import noise_covariance, prewhiten, whitening_matrix

COILS = 4
MIXING = np.array([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0.5, 0.5, 1.5, 0], [0.2, 0.7, 0.3, 3.0]])  # correlated, unequal


def _noise(shape, rng):
    """Complex coil noise ``(C, *shape)`` with covariance ``MIXING MIXING^T``."""
    white = (rng.normal(size=(COILS,) + shape) + 1j * rng.normal(size=(COILS,) + shape)) / np.sqrt(2)
    return np.tensordot(MIXING, white, axes=1)


def test_whitening_matrix_makes_noise_white_at_the_average_level():
    noise = _noise((20000,), np.random.default_rng(0))
    w = whitening_matrix(noise_covariance(noise))
    cov = np.cov(w @ noise)
    level = np.trace(np.cov(noise)).real / COILS
    np.testing.assert_allclose(cov, level * np.eye(COILS), atol=0.03 * level)
    assert np.allclose(w, np.tril(w))


def _object_kspace(rng):
    """Noise-free centred k-space ``(1, C, 48, 48)`` of a textured disc seen by smooth coils, and the object."""
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    obj = (yy**2 + xx**2 < 0.7) * (1 + 0.3 * rng.random((48, 48)))
    sens = np.stack([np.exp(-((yy - a) ** 2 + (xx - b) ** 2)) for a, b in [(-1, -1), (-1, 1), (1, -1), (1, 1)]])
    return fft2c(torch.from_numpy((obj * sens).astype(np.complex64))).numpy()[None], obj > 0


def _combinations(k_clean, k_noisy, noise):
    """Coil combinations of noise-free and noisy k-space ``(1, C, H, W)`` with maps from the noisy data, both
    prewhitened with ``noise`` when given."""
    out = []
    for k in (k_clean, k_noisy):
        ks = KSpace(k.astype(np.complex64), None, None, "test", noise=noise)
        out.append(torch.from_numpy(prewhiten(ks)[0].data[0]) if noise is not None else torch.from_numpy(k[0]))
    sens = estimate_sensitivities(out[1])
    op = MultiCoil(torch.ones(out[1].shape[-2:], dtype=torch.bool), sens)
    clean, noisy = (op.A_adjoint(k).abs().numpy() for k in out)
    return clean, noisy


def test_prewhitening_raises_the_snr_of_the_coil_combination():
    rng = np.random.default_rng(1)
    k, inside = _object_kspace(rng)
    noisy = k + 0.02 * np.abs(k).max() * _noise(k.shape[2:], rng)[None]
    scan = _noise((4096,), rng)
    snr = {}
    for name, noise in (("raw", None), ("whitened", scan)):
        clean, combined = _combinations(k, noisy, noise)
        snr[name] = clean[inside].mean() / (combined - clean)[inside].std()
    assert snr["whitened"] > 1.3 * snr["raw"]  # optimal (Roemer) combination with correlated noise


def test_prewhiten_keeps_the_sampling_and_says_when_it_cannot():
    rng = np.random.default_rng(2)
    k, _ = _object_kspace(rng)
    k[..., ::2, :] = 0
    ks = KSpace(k.astype(np.complex64), None, None, "test", noise=_noise((400,), rng).astype(np.complex64))
    out, info = prewhiten(ks)
    assert info["prewhitened"] and info["noise_samples"] == 400 and info["max_coil_noise_correlation"] > 0.5
    assert not out.data[..., ::2, :].any() and out.data[..., 1::2, :].all()
    assert out.noise.shape == (COILS, 400)
    for bad, reason in ((None, "no noise scan"), (ks.noise[:, :8], "4 coils x 8 samples"),
                        (np.zeros((COILS, 400), np.complex64), "singular")):
        same, info = prewhiten(dataclasses.replace(ks, noise=bad))
        assert same is not None and same.data is ks.data and not info["prewhitened"] and reason in info["reason"]
    single, info = prewhiten(dataclasses.replace(ks, data=ks.data[:, :1]))
    assert info == {"prewhitened": False, "reason": "single coil"}


def test_whitening_matrix_rejects_a_singular_covariance():
    with pytest.raises(np.linalg.LinAlgError):
        whitening_matrix(noise_covariance(_noise((1,), np.random.default_rng(3))))
