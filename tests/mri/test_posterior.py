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
