import math

import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri.consistency import (
    hard_project, kspace_noise_variance, misfit_damping_factor, multicoil_project, noise_misfit, noisy_copies,
    phase_constrained, snr_damping, soft_project,
)
from neurodiff.mri.fft import fft2c, ifft2c
from neurodiff.mri.masks import sampling_mask, symmetric_centre_window
from neurodiff.mri.operators import MultiCoil, rss

H, W = 30, 34


def _rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.complex64)


@pytest.fixture
def data():
    mask = torch.from_numpy(sampling_mask((H, W), 4, 0.1, kind="random", seed=0))
    return _rand((2, H, W), 1), fft2c(_rand((2, H, W), 2)) * mask, mask


def test_hard_projection(data):
    x, y, mask = data
    out = hard_project(x, y, mask)
    k = fft2c(out)
    torch.testing.assert_close(k[..., mask], y[..., mask], rtol=0, atol=1e-5)  # measured data reproduced
    torch.testing.assert_close(k[..., ~mask], fft2c(x)[..., ~mask], rtol=0, atol=1e-5)  # unmeasured untouched
    torch.testing.assert_close(hard_project(out, y, mask), out, rtol=0, atol=1e-5)  # idempotent


def test_soft_projection(data):
    x, y, mask = data
    torch.testing.assert_close(soft_project(x, y, mask, 0.0), x)
    torch.testing.assert_close(soft_project(x, y, mask, math.inf), hard_project(x, y, mask))
    torch.testing.assert_close(soft_project(x, y, mask, 1e8), hard_project(x, y, mask), rtol=0, atol=1e-5)
    k = fft2c(soft_project(x, y, mask, 3.0))
    torch.testing.assert_close(k[..., mask], ((fft2c(x) + 3 * y) / 4)[..., mask], rtol=0, atol=1e-5)
    with pytest.raises(InputError):
        soft_project(x, y, mask, -1.0)


def test_multicoil_projection():
    sens = _rand((3, H, W), 3)
    sens = sens / rss(sens)
    truth = _rand((H, W), 4)
    full = np.ones((H, W), bool)
    y_full = MultiCoil(full, sens).A(truth)
    torch.testing.assert_close(multicoil_project(_rand((H, W), 5), y_full, full, sens), truth, rtol=0, atol=1e-5)

    mask = sampling_mask((H, W), 3, 0.1, seed=1)
    op = MultiCoil(mask, sens)
    y = op.A(truth)
    x = _rand((H, W), 6)
    residuals = [torch.linalg.vector_norm(op.A(multicoil_project(x, y, mask, sens, steps=s)) - y) for s in range(6)]
    assert all(b <= a + 1e-6 for a, b in zip(residuals, residuals[1:])) and residuals[-1] < 0.1 * residuals[0]
    batch = torch.stack([x, 2 * x])  # each image of a batch is solved on its own
    torch.testing.assert_close(multicoil_project(batch, y, mask, sens)[1], multicoil_project(2 * x, y, mask, sens))
    torch.testing.assert_close(multicoil_project(x, y, mask, sens, damping=1e6), x, rtol=0, atol=1e-4)
    with pytest.raises(InputError):
        multicoil_project(x, y, mask, sens, steps=-1)
    with pytest.raises(InputError):
        multicoil_project(x, y, mask, sens, damping=-1.0)


def test_noise_misfit_measures_the_unexplained_data_in_units_of_the_noise():
    sens = _rand((4, H, W), 3)
    sens = sens / rss(sens)
    truth, mask, sigma = _rand((H, W), 4), sampling_mask((H, W), 2, 0.1, seed=1), 0.05
    op = MultiCoil(mask, sens)
    y = op.A(truth) + sigma * _rand((4, H, W), 5) * torch.from_numpy(mask)  # E|noise|^2 = sigma^2
    samples = torch.stack([truth, truth])[:, None]  # (N, 1, H, W), as the finished posterior samples
    assert noise_misfit(samples, y, mask, sens, sigma**2) == pytest.approx(1.0, abs=0.1)
    # data that hold as much again as the noise which the estimate cannot explain: twice the noise variance
    unexplained = y + sigma * _rand((4, H, W), 6) * torch.from_numpy(mask)
    assert noise_misfit(samples, unexplained, mask, sens, sigma**2) == pytest.approx(2.0, abs=0.2)
    assert noise_misfit(torch.zeros_like(truth), y, mask, sens, sigma**2) > 50  # the signal: ~1 / (4 sigma^2)
    assert noise_misfit(torch.zeros_like(truth), y, mask, sens, 0.0) == 1.0  # noise-free: nothing to compare with


def test_misfit_damping_factor_holds_back_both_unexplainable_and_overfitted_data():
    assert misfit_damping_factor(1.0) == 1.0
    assert misfit_damping_factor(4.0) == 4.0  # 4x the noise unexplained: damped 4x
    assert misfit_damping_factor(0.5) == 4.0  # fitted to half the noise already: damped 4x
    assert misfit_damping_factor(0.0) == 1e6 and misfit_damping_factor(math.nan) == 1.0


def test_snr_damping_reads_the_noise_from_kspace_corners():
    h, w, sigma = 256, 192, 0.05
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    signal = torch.exp(-(yy**2 + xx**2) * 200).to(torch.complex64) * 50  # energy at the centre only
    noise = sigma * _rand((4, h, w), 7)  # complex Gaussian, E|n|^2 = sigma^2
    mask = torch.from_numpy(sampling_mask((h, w), 2, 0.1, seed=2))
    k = (signal + noise) * mask
    assert kspace_noise_variance(k, mask) == pytest.approx(sigma**2, rel=0.15)
    d = snr_damping(k, mask, rel_error=0.1)
    assert d == pytest.approx(kspace_noise_variance(k, mask) * h * w / (0.1**2 * float((k.abs() ** 2).sum())))
    assert snr_damping((signal * mask)[None], mask) < 1e-6 * d  # noiseless: fit the data
    edge = k.clone()
    edge[:, :16, :12] += 5 * sigma  # an object's edge reaching one corner does not raise the estimate
    assert snr_damping(edge, mask, rel_error=0.1) == pytest.approx(d, rel=0.3)
    sparse = torch.zeros(h, w, dtype=torch.bool)  # a few samples per corner (variable density): corners pooled
    sparse[::5, ::5] = True
    sparse[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8] = True
    assert kspace_noise_variance(((signal + noise) * sparse)[:1], sparse) == pytest.approx(sigma**2, rel=0.3)
    band = torch.zeros(h, w, dtype=torch.bool)
    band[h // 2 - 8:h // 2 + 8, :] = True  # a calibration band: read at its readout ends
    assert kspace_noise_variance(k * band, band) == pytest.approx(sigma**2, rel=0.3)
    centre = torch.zeros(h, w, dtype=torch.bool)
    centre[h // 2 - 16:h // 2 + 16, w // 2 - 16:w // 2 + 16] = True  # a calibration block alone: signal, not noise
    assert kspace_noise_variance(k * centre, centre) == 0.0


def test_kspace_noise_is_read_where_elliptical_or_zero_padded_kspace_ends():
    h, w, sigma = 256, 192, 0.05
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    signal = torch.exp(-(yy**2 + xx**2) * 200).to(torch.complex64) * 50
    k = signal + sigma * _rand((2, h, w), 3)
    ellipse = yy**2 + xx**2 <= 1  # elliptical scanning: the corners hold nothing
    assert kspace_noise_variance(k * ellipse, ellipse) == pytest.approx(sigma**2, rel=0.15)
    padded = torch.zeros(h, w, dtype=torch.bool)  # zero-padded (interpolated) k-space: the measured block's corners
    padded[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    assert kspace_noise_variance(k * padded, padded) == pytest.approx(sigma**2, rel=0.15)


@pytest.mark.parametrize("h, w", [(9, 11), (10, 11), (9, 12)])
def test_multicoil_cg_solves_the_damped_normal_equations_at_odd_sizes(h, w):
    """Converged CG equals a dense solve of (A^H A + damping) d = A^H (y - A x) (centring shifts at odd sizes)."""
    g = torch.Generator().manual_seed(0)
    c = lambda *s: torch.randn(*s, generator=g, dtype=torch.complex128)  # noqa: E731
    sens = c(3, h, w)
    sens = sens / rss(sens)
    mask = torch.rand(h, w, generator=g) > 0.5
    x, y = c(h, w), c(3, h, w) * mask
    op, lam = MultiCoil(mask, sens), 0.3
    cols = torch.eye(h * w, dtype=torch.complex128).reshape(h * w, h, w)
    normal = (op.A_adjoint(op.A(cols)) + lam * cols).reshape(h * w, h * w).T
    d = torch.linalg.solve(normal, op.A_adjoint(y - op.A(x)).reshape(-1)).reshape(h, w)
    torch.testing.assert_close(multicoil_project(x, y, mask, sens, steps=h * w, damping=lam), x + d)


def test_noisy_copies_spread_samples_by_the_noise_and_keep_their_mean():
    """Each sample fits its own noisy copy of the data: converged and undamped, the samples' measured k-space
    keeps the noise in the range of the operator (a fraction H W / (C |M|) of its variance), their mean is the
    unperturbed projection."""
    h, w, n, sigma = 12, 10, 64, 0.3
    g = torch.Generator().manual_seed(0)
    sens = _rand((3, h, w), 1)
    sens = sens / rss(sens)
    mask = torch.from_numpy(sampling_mask((h, w), 2, 0.2, seed=0))
    x, y = _rand((h, w), 2), _rand((3, h, w), 3) * mask
    copies = noisy_copies(y, mask, sigma, n, g)
    assert copies.shape == (n, 3, h, w) and not copies[:, :, ~mask].any()
    torch.testing.assert_close(copies.mean(0), y)  # centred: the mean is the data
    assert float(copies[:, :, mask].var(0).mean()) == pytest.approx(sigma**2, rel=0.1)
    z = multicoil_project(x.expand(n, h, w), copies, mask, sens, steps=h * w)
    torch.testing.assert_close(z.mean(0), multicoil_project(x, y, mask, sens, steps=h * w), rtol=0, atol=1e-3)
    spread = MultiCoil(mask, sens).A(z).var(0)[:, mask].mean()  # per coil, measured samples
    assert float(spread) == pytest.approx(sigma**2 * h * w / (3 * int(mask.sum())), rel=0.2)
    torch.testing.assert_close(noisy_copies(y, mask, 0.0, 2), y.expand(2, 3, h, w))
    with pytest.raises(InputError):
        noisy_copies(y, mask, -1.0, 2)


def test_phase_constraint_fills_the_skipped_side_of_partial_fourier():
    """POCS: with the phase of the symmetric centre imposed before each hard projection, iterating from the
    zero-filled image recovers a smoothly phased image from 5/8 of its phase-encode lines far better than
    zero-filling or the same iterations without the constraint (which never change a projection's output)."""
    yy, xx = np.mgrid[-1 : 1 : 64j, -1 : 1 : 48j]
    mag = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1) * (1.0 + 0.5 * np.cos(6 * yy) * np.sin(5 * xx))
    image = torch.from_numpy(mag * np.exp(1j * (0.8 * yy + 0.5 * xx**2))).to(torch.complex64)[None]
    mask = np.ones((64, 48), bool)
    mask[:24] = False  # 5/8 partial Fourier along the first axis
    y = fft2c(image) * torch.from_numpy(mask)
    phase = ifft2c(y * torch.from_numpy(symmetric_centre_window(mask, 0))).angle()
    constrained, plain = phase_constrained(lambda x: hard_project(x, y, mask), phase), ifft2c(y)
    x = ifft2c(y)
    for _ in range(30):
        x = constrained(x)
    plain = hard_project(plain, y, mask)
    err = lambda est: float((est.abs() - image.abs()).norm() / image.abs().norm())  # noqa: E731
    assert err(x) < 0.25 * err(ifft2c(y)) and err(plain) == pytest.approx(err(ifft2c(y)), rel=1e-5)
    m = torch.from_numpy(mask)
    torch.testing.assert_close(fft2c(x)[..., m], y[..., m], rtol=0, atol=1e-4)  # still data consistent
