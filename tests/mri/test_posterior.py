"""Posterior summaries: the uncertainty calibration and its scale by voxel size."""

import math

import numpy as np
import pytest
import torch

from neurodiff.mri.posterior import (
    calibrated_std, calibration_scale, in_plane_voxel_mm, kspace_share_noise_std, measured_kspace_std,
)


def test_calibrated_std_scale_and_smoothing():
    std = torch.ones(2, 12, 14)
    assert torch.allclose(calibrated_std(std, 2.0, 0.0), 2 * std)
    assert torch.allclose(calibrated_std(std, 1.0, 1.5), std, atol=1e-6)  # a constant map stays constant
    spike = torch.zeros(1, 15, 15)
    spike[0, 7, 7] = 1.0
    out = calibrated_std(spike, 1.0, 1.0)
    assert out[0, 7, 8] > 0 and out[0, 7, 7] < 1  # spread to neighbours
    assert torch.allclose((out**2).sum(), torch.tensor(1.0), atol=1e-3)  # variance is conserved
    assert (out[:, :, :] >= 0).all() and out.shape == spike.shape


def test_measured_kspace_std_scales_the_model_spread_not_the_noise():
    """The model's spread is scaled; the noise goes in unscaled: the unmeasured k-space's (sigma sqrt((1 - f) / 2))
    and the measured noise the draws carry beyond what the fully sampled image shares (sigma sqrt(f / 2))."""
    sigma, f, scale = np.array([2.0, 0.0]), 0.25, 3.0
    measured, unmeasured = kspace_share_noise_std(sigma, f), kspace_share_noise_std(sigma, 1 - f)
    np.testing.assert_allclose(unmeasured, [2.0 * math.sqrt(0.375), 0.0])
    col = lambda v: torch.from_numpy(v).float()[:, None, None]  # noqa: E731
    model = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]])  # (S, H, W): no model spread, unit model spread
    shared = (model**2 + col(measured) ** 2).sqrt()  # draws that carry exactly the shared noise: no excess
    expect = (scale**2 * model**2 + col(unmeasured) ** 2).sqrt()
    torch.testing.assert_close(measured_kspace_std(shared, model, measured, unmeasured, scale), expect)
    amplified = (model**2 + 5 * col(measured) ** 2).sqrt()  # noise amplified 5x in variance: 4x of it is error
    expect = (scale**2 * model**2 + 4 * col(measured) ** 2 + col(unmeasured) ** 2).sqrt()
    torch.testing.assert_close(measured_kspace_std(amplified, model, measured, unmeasured, scale), expect)
    # a few samples' estimate of the draws' variance scatters about d^2: smoothed before it is clipped, no excess
    g = torch.Generator().manual_seed(0)
    d2 = float(measured[0]) ** 2
    draws_var = d2 * (1 + 0.5 * torch.randn(1, 64, 64, generator=g))
    out = measured_kspace_std(draws_var.clamp(min=0).sqrt(), torch.zeros(1, 64, 64), measured[:1], np.zeros(1),
                              smooth=1.5)
    assert float((out**2).mean()) < 0.1 * d2


def test_fit_std_leaves_out_the_final_noise_draws():
    """With a final projection that adds noise to each sample, ``mag_std`` holds it and ``fit_std`` (the samples
    fitted to the data itself) does not."""
    from neurodiff.mri import fft2c, ifft2c
    from neurodiff.mri.consistency import soft_project
    from neurodiff.mri.posterior import sample_posterior
    from neurodiff.weights import build_denoiser

    card = {"architecture": dict(size="tiny", in_channels=5, out_channels=2, residual_channels=[2, 3]),
            "schedule": {"name": "cosine", "steps": 1000}, "prediction": "x0"}
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    image = 1 + torch.rand(1, 16, 16, generator=g).to(torch.complex64)
    mask = torch.ones(16, 16, dtype=torch.bool)  # all of k-space measured: every fitted sample is the image
    y = fft2c(image)
    project = lambda z: soft_project(z, y, mask, float("inf"))  # noqa: E731
    noisy = lambda z: project(z) + 0.3 * torch.randn(z.shape, generator=g)  # noqa: E731
    post = sample_posterior(build_denoiser(card), ifft2c(y), mask, project, final=noisy, n_samples=6, steps=2,
                            generator=g)
    assert float(post.mag_std.mean()) > 0.1 and float(post.fit_std.max()) < 1e-4


def test_calibration_scale_by_voxel_size():
    """Interpolated in log voxel size between the fitted resolutions, constant beyond them; the pooled scale for
    unknown geometry or a card without a table."""
    cal = {"std_scale": 1.8, "std_scale_by_voxel_mm": [[2.0, 1.5], [1.0, 2.5]]}
    assert calibration_scale(cal, 2.0) == pytest.approx(1.5) and calibration_scale(cal, 1.0) == pytest.approx(2.5)
    assert calibration_scale(cal, math.sqrt(2.0)) == pytest.approx(2.0)  # halfway in log
    assert calibration_scale(cal, 3.3) == pytest.approx(1.5) and calibration_scale(cal, 0.5) == pytest.approx(2.5)
    assert calibration_scale(cal, None) == 1.8 and calibration_scale({"std_scale": 1.7}, 1.0) == 1.7
    assert calibration_scale({}, 1.0) == 1.0


def test_in_plane_voxel_mm():
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    assert in_plane_voxel_mm(affine) == pytest.approx(1.0)  # slices along the third axis
    assert in_plane_voxel_mm(affine, slice_axis=0) == pytest.approx(math.sqrt(6.0))
    rotated = np.eye(4)
    rotated[:3, :3] = [[0, 0, 1.2], [0, 1.2, 0], [-1.2, 0, 0]]  # axes permuted and flipped: same sizes
    assert in_plane_voxel_mm(rotated) == pytest.approx(1.2)
    assert in_plane_voxel_mm(np.diag([0.0, 1.0, 1.0, 1.0])) is None


def test_centred_flip_commutes_with_the_centred_fft():
    """Mirroring about the centre voxel is an exact symmetry of undersampling: the flipped image's k-space is the
    flipped k-space (even and odd sizes)."""
    from neurodiff.mri import fft2c
    from neurodiff.mri.posterior import _centred_flip

    x = torch.randn(2, 9, 8, dtype=torch.complex64)
    for dim in (-2, -1):
        torch.testing.assert_close(fft2c(_centred_flip(x, dim)), _centred_flip(fft2c(x), dim), rtol=0, atol=1e-5)
        torch.testing.assert_close(_centred_flip(_centred_flip(x, dim), dim), x)


def test_symmetric_views_see_the_transformed_slice_and_stay_data_consistent():
    """With ``views=2`` half of the samples are drawn on the transposed slice (the network sees (W, H) inputs),
    with ``views=8`` one on each symmetry of the slice; every returned sample is in the slice's own orientation
    and keeps the measured k-space."""
    from neurodiff.mri import fft2c, ifft2c, sampling_mask
    from neurodiff.mri.consistency import soft_project
    from neurodiff.mri.posterior import SYMMETRIES, sample_posterior, sample_views
    from neurodiff.weights import build_denoiser

    plain, transposed = "as given", "transposed"
    assert sample_views(8, 2) == [(plain, 4), (transposed, 4)] and sample_views(3, 2) == [(plain, 2), (transposed, 1)]
    assert sample_views(1, 2) == [(plain, 1)] and sample_views(8, 1) == [(plain, 8)]
    assert sample_views(8, 8) == [(name, 1) for name in SYMMETRIES] and len(set(SYMMETRIES.values())) == 8
    card = {"architecture": dict(size="tiny", in_channels=5, out_channels=2, residual_channels=[2, 3]),
            "schedule": {"name": "cosine", "steps": 1000}, "prediction": "x0"}
    torch.manual_seed(0)
    denoiser = build_denoiser(card)
    shapes = []
    denoiser.net.register_forward_hook(lambda mod, args, out: shapes.append(tuple(args[0].shape[-2:])))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 24, 16, generator=g).to(torch.complex64)
    mask = torch.from_numpy(sampling_mask((24, 16), 3, 0.2, seed=0))
    y = fft2c(image) * mask
    post = sample_posterior(denoiser, ifft2c(y), mask, lambda z: soft_project(z, y, mask, float("inf")),
                            n_samples=3, steps=2, views=2, keep_samples=True, generator=g)
    assert set(shapes) == {(24, 16), (16, 24)} and shapes.count((16, 24)) == 2  # 2 steps on the transposed view
    assert post.samples.shape == (3, 2, 24, 16)
    k = fft2c(post.samples)
    assert torch.allclose(k[..., mask], y[None][..., mask].expand_as(k[..., mask]), atol=1e-4)
    assert torch.allclose(post.mean, post.samples.mean(0), atol=1e-5)
    shapes.clear()  # a square slice: both views in one network batch
    sq = image[:, :16]
    mask = torch.from_numpy(sampling_mask((16, 16), 3, 0.2, seed=0))
    y = fft2c(sq) * mask
    post = sample_posterior(denoiser, ifft2c(y), mask, lambda z: soft_project(z, y, mask, float("inf")),
                            n_samples=3, steps=2, views=2, keep_samples=True, generator=g)
    k = fft2c(post.samples)[..., mask]
    assert shapes == [(16, 16)] * 2 and torch.allclose(k, y[None][..., mask].expand_as(k), atol=1e-4)
    shapes.clear()  # every symmetry: the four transposed ones in a batch of their own
    mask = torch.from_numpy(sampling_mask((24, 16), 3, 0.2, seed=1))
    y = fft2c(image) * mask
    post = sample_posterior(denoiser, ifft2c(y), mask, lambda z: soft_project(z, y, mask, float("inf")),
                            n_samples=8, steps=1, views=8, keep_samples=True, generator=g)
    assert sorted(shapes) == [(16, 24), (24, 16)] and post.samples.shape == (8, 2, 24, 16)
    k = fft2c(post.samples)[..., mask]
    assert torch.allclose(k, y[None][..., mask].expand_as(k), atol=1e-4)


def test_every_view_is_an_exact_symmetry_of_undersampling():
    """For each symmetry, the view of the zero-filled image is the zero-filled image of the view's k-space and
    mask, and the view's round trip (to the network's channels and back) is the identity."""
    from neurodiff.mri import fft2c, ifft2c, sampling_mask
    from neurodiff.mri.posterior import SYMMETRIES, _View

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 10, 7, dtype=torch.complex64, generator=g)
    mask = torch.from_numpy(sampling_mask((10, 7), 2, 0.2, seed=0))
    scale = torch.full((2, 1, 1), 2.0)
    for sym in SYMMETRIES.values():
        shape = (7, 10) if sym[0] else (10, 7)
        view = _View(sym, 1, shape, (0, 0, 0, 0), scale)
        k = view.orient(fft2c(x))  # the view's k-space: the transformed data, sampled by the transformed mask
        torch.testing.assert_close(view.orient(ifft2c(fft2c(x) * mask)), ifft2c(k * view.orient(mask)),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(view.to_image(view.to_net(x)), x, rtol=0, atol=1e-6)
