import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri import MultiCoil, compress_coils, estimate_sensitivities, fft2c
from neurodiff.mri.raw import KSpace

COILS, PROFILES, SIGMA = 8, 3, 0.02


def _kspace(rng, sigma=SIGMA):
    """Two slices of centred k-space ``(2, 8, 48, 48)`` of a textured disc seen by 8 coils that mix 3 smooth
    profiles, with white noise of std ``sigma`` per complex sample; noise-only samples ``(8, 4000)`` alike."""
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    obj = (yy**2 + xx**2 < 0.7) * (1 + 0.3 * rng.random((2, 48, 48)))
    profiles = np.stack([np.exp(-((yy - a) ** 2 + (xx - b) ** 2)) * np.exp(1j * a * xx)
                         for a, b in [(-1, -1), (1, 0), (0, 1)]])
    sens = np.tensordot(rng.normal(size=(COILS, PROFILES)) + 1j * rng.normal(size=(COILS, PROFILES)), profiles, 1)
    k = fft2c(torch.from_numpy((obj[:, None] * sens[None]).astype(np.complex64))).numpy()

    def noise(shape):
        return sigma * (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)

    return KSpace((k + noise(k.shape)).astype(np.complex64), None, None, "test",
                  noise=noise((COILS, 4000)).astype(np.complex64)), obj > 0


def _combination(data):
    """Coil combination ``(H, W)`` of one slice ``(C, H, W)`` with its own ESPIRiT maps."""
    d = torch.from_numpy(data)
    return MultiCoil(torch.ones(d.shape[-2:], dtype=torch.bool), estimate_sensitivities(d)).A_adjoint(d).abs().numpy()


def test_compression_keeps_the_components_above_the_noise_and_the_image():
    ks, inside = _kspace(np.random.default_rng(0))
    small, info = compress_coils(ks)
    assert info["coils"] == COILS and info["virtual_coils"] == PROFILES == small.data.shape[1]
    assert info["signal_kept"] > 0.999
    # orthonormal rows: the noise stays white at the same variance
    cov = small.noise @ small.noise.conj().T / small.noise.shape[1]
    np.testing.assert_allclose(cov, SIGMA**2 * np.eye(PROFILES), atol=0.1 * SIGMA**2)
    full, compressed = _combination(ks.data[0]), _combination(small.data[0])
    assert np.abs(compressed - full)[inside[0]].mean() < 0.02 * full[inside[0]].mean()


def test_compression_to_a_given_count_and_what_is_left_alone():
    ks, _ = _kspace(np.random.default_rng(1))
    two, info = compress_coils(ks, 2)
    assert two.data.shape == (2, 2, 48, 48) and info["virtual_coils"] == 2 and info["signal_kept"] < 0.999
    assert compress_coils(ks, COILS)[0] is ks and compress_coils(ks, 99)[1]["virtual_coils"] == COILS
    rng = np.random.default_rng(2)  # too small a k-space to read the noise from: every coil kept
    tiny = KSpace((rng.normal(size=(1, 4, 12, 12)) + 0j).astype(np.complex64), None, None, "test")
    assert compress_coils(tiny)[0] is tiny
    one = KSpace(ks.data[:, :1], None, None, "test")
    assert compress_coils(one) == (one, {"coils": 1, "virtual_coils": 1, "signal_kept": 1.0})
    for bad in (0, 1):
        with pytest.raises(InputError, match="virtual coils must be at least 2"):
            compress_coils(ks, bad)
