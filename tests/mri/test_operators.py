"""Contract suite over every k-space operator (asymmetric 30x34, 3 coils)."""

import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri.fft import fft2c
from neurodiff.mri.masks import sampling_mask
from neurodiff.mri.operators import MultiCoil, SingleCoil, estimate_sensitivities, rss

H, W, C = 30, 34, 3


def _rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.complex64)


def _sens(seed=0):
    s = _rand((C, H, W), seed)
    return s / rss(s)


OPERATORS = {
    "single": lambda mask: SingleCoil(mask),
    "multi": lambda mask: MultiCoil(mask, _sens()),
    "multi-unnormalised": lambda mask: MultiCoil(torch.from_numpy(mask).float(), _rand((C, H, W), 5)),
}


@pytest.fixture
def mask():
    return sampling_mask((H, W), 3, 0.1, kind="random", pe_axis=1, seed=0)


@pytest.mark.parametrize("name", OPERATORS)
def test_adjointness(name, mask):
    op = OPERATORS[name](mask)
    x = _rand((2, H, W), 1)
    y = op.A(_rand((2, H, W), 2)) + _rand(op.A(x).shape, 3)
    lhs = torch.vdot(op.A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.A_adjoint(y).flatten())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


@pytest.mark.parametrize("name", OPERATORS)
def test_mask_fidelity(name, mask):
    y = OPERATORS[name](mask).A(_rand((H, W), 4))
    m = torch.from_numpy(mask)
    assert (y[..., ~m] == 0).all()
    assert (y[..., m] != 0).all()


def test_multicoil_full_mask_is_isometry():
    op = MultiCoil(np.ones((H, W), bool), _sens())
    x = _rand((2, H, W), 6)
    assert op.A(x).shape == (2, C, H, W)
    torch.testing.assert_close(op.A_adjoint(op.A(x)), x, rtol=0, atol=1e-5)


def test_operator_validation():
    with pytest.raises(InputError):
        MultiCoil(np.ones((H, W)), _rand((C, W, H), 0))
    with pytest.raises(InputError):
        SingleCoil(np.zeros((H, W)))


def _coil_phantom():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    image = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1).float() * (1 + 0.3 * xx)
    centres = [(-1.0, 0.0), (1.0, 0.5), (0.0, -1.2)]
    sens = torch.stack(
        [torch.exp(-((yy - a) ** 2 + (xx - b) ** 2)) * torch.exp(1j * (a * xx + b * yy)) for a, b in centres]
    )
    sens = sens / rss(sens)
    return image.to(torch.complex64), sens.to(torch.complex64)


def test_estimate_sensitivities():
    image, sens = _coil_phantom()
    kspace = fft2c(sens * image)
    est = estimate_sensitivities(kspace, calib=12)
    assert est.shape == (C, H, W) and est.dtype == torch.complex64
    inside = image.abs() > 0
    torch.testing.assert_close(rss(est)[inside], torch.ones(int(inside.sum())), rtol=0, atol=1e-5)
    # matches the true maps (up to one common phase) inside the object
    corr = (est.conj() * sens).sum(0)[inside]
    assert (corr.abs() > 0.95).all()
    # automatic calibration size from an undersampled pattern with a 12-column centre
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, W // 2 - 6 : W // 2 + 6] = True
    mask[:, ::4] = True
    auto = estimate_sensitivities(kspace * mask)
    assert ((auto.conj() * sens).sum(0)[inside].abs() > 0.95).all()


def test_estimate_sensitivities_needs_calibration():
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, ::3] = True
    with pytest.raises(InputError, match="calibration"):
        estimate_sensitivities(_rand((C, H, W), 0) * mask)


def test_estimate_sensitivities_object_filling_the_field_of_view():
    # an object that reaches both ends of the phase-encode axis (rows), coils above and below it: the circular
    # low-pass of an 8-line calibration mixes the top and bottom edges, which the edge extrapolation undoes
    h, w = 64, 48
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    image = (1 + 0.3 * torch.cos(5 * yy) * torch.sin(4 * xx)).to(torch.complex64)
    sens = torch.stack([torch.exp(-((yy - a) ** 2) - xx**2 / 2) * torch.exp(1j * (a + xx)) for a in (-1.2, 0.0, 1.2)])
    sens = (sens / rss(sens)).to(torch.complex64)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[h // 2 - 4 : h // 2 + 4] = True
    mask[::4] = True
    est = estimate_sensitivities(fft2c(sens * image) * mask)
    agreement = (est.conj() * sens).sum(0).abs()  # 1 where the maps match up to a common phase
    edges = torch.cat([agreement[:8], agreement[-8:]])
    assert edges.mean() > 0.995 and agreement.min() > 0.97


def test_extrapolate_edges_follows_the_opposite_edge():
    from neurodiff.mri.operators import _extrapolate_edges

    n, band = 30, 4
    rows = torch.arange(n, dtype=torch.float32)[None, :, None]
    linear = ((1 + 0.1j) * rows + 2.0).expand(2, n, 5).to(torch.complex64)  # (C, n, L), a straight line per line
    noisy = linear.clone()
    noisy[:, :band] += _rand((2, band, 5), 1)
    noisy[:, -band:] += _rand((2, band, 5), 2)
    air = torch.zeros(n, 5)
    air[band:-band] = 1.0  # the signal stays away from both edges
    full = torch.ones(n, 5)  # the object reaches both edges
    torch.testing.assert_close(_extrapolate_edges(noisy, air, -2, band), noisy)  # bands facing air are kept
    torch.testing.assert_close(_extrapolate_edges(noisy, full, -2, band), linear)  # else the inner line continues
    # along the last axis too, and unchanged when the axis is too short for three bands
    torch.testing.assert_close(_extrapolate_edges(noisy.transpose(1, 2), full.T, -1, band), linear.transpose(1, 2))
    torch.testing.assert_close(_extrapolate_edges(noisy, full, -2, 11), noisy)
