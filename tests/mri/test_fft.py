import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri.fft import channels_to_complex, complex_to_channels, fft2c, ifft2c

SHAPES = [(30, 34), (7, 9), (2, 3, 8, 5)]


def _rand(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.complex64)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_numpy_convention(shape):
    x = _rand(shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, atol=1e-5)
    ref_inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ifft2c(x).numpy(), ref_inv, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_parseval_and_inverse(shape):
    x = _rand(shape, 1)
    k = fft2c(x)
    assert k.shape == x.shape and k.dtype == torch.complex64
    torch.testing.assert_close(k.abs().square().sum(), x.abs().square().sum(), rtol=1e-5, atol=0)
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(7, 9), (30, 34)])
def test_dc_at_centre(shape):
    k = fft2c(torch.ones(shape, dtype=torch.complex64))
    h, w = shape
    assert k.abs().argmax().item() == (h // 2) * w + w // 2


def test_channels_roundtrip():
    x = _rand((2, 7, 9))
    c = complex_to_channels(x)
    assert c.shape == (2, 2, 7, 9) and not torch.is_complex(c)
    torch.testing.assert_close(c[:, 0], x.real)
    torch.testing.assert_close(c[:, 1], x.imag)
    torch.testing.assert_close(channels_to_complex(c), x)
    with pytest.raises(InputError):
        channels_to_complex(torch.zeros(3, 7, 9))
    with pytest.raises(InputError):
        complex_to_channels(torch.zeros(7, 9))
