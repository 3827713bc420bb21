"""Posterior summaries: the uncertainty calibration transform."""

import torch

from neurodiff.mri.posterior import calibrated_std


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


def test_transposed_half_sees_the_transposed_slice_and_stays_data_consistent():
    """With ``transpose`` half of the samples are drawn on the transposed slice (the network sees (W, H) inputs),
    and every returned sample is in the slice's own orientation and keeps the measured k-space."""
    from neurodiff.mri import fft2c, ifft2c, sampling_mask
    from neurodiff.mri.consistency import soft_project
    from neurodiff.mri.posterior import sample_posterior, sample_views
    from neurodiff.weights import build_denoiser

    assert sample_views(8, True) == [(False, 4), (True, 4)] and sample_views(3, True) == [(False, 2), (True, 1)]
    assert sample_views(1, True) == [(False, 1)] and sample_views(8, False) == [(False, 8)]
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
                            n_samples=3, steps=2, transpose=True, keep_samples=True, generator=g)
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
                            n_samples=3, steps=2, transpose=True, keep_samples=True, generator=g)
    k = fft2c(post.samples)[..., mask]
    assert shapes == [(16, 16)] * 2 and torch.allclose(k, y[None][..., mask].expand_as(k), atol=1e-4)
