"""Uncertainty metrics: interval coverage, sparsification and the neighbour-error oracle."""

import numpy as np
from scipy.stats import spearmanr

from neurodiff.mri.metrics import ause, coverage, foreground, in_slice_spearman, neighbour_error, slice_metrics


def test_coverage_of_a_calibrated_gaussian_is_its_level():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, 200_000)
    ref = std * rng.standard_normal(std.shape)
    assert abs(coverage(ref, np.zeros_like(ref), std, 0.9) - 0.9) < 0.005


def test_ause_is_zero_for_the_oracle_ranking_and_positive_for_a_random_one():
    err = np.random.default_rng(1).random(5000)
    assert ause(err, err) == 0.0
    assert ause(err, np.random.default_rng(2).random(5000)) > 0.1


def test_neighbour_error_leaves_the_voxel_itself_out():
    ref = np.zeros((1, 9, 9))
    est = ref.copy()
    est[0, 4, 4] = 3.0  # one wrong voxel
    local = neighbour_error(ref, est)
    assert local[0, 4, 4] == 0.0  # its own error is not seen
    assert local[0, 4, 5] > 0.0  # its neighbours see it
    flat = neighbour_error(ref, ref + 2.0)
    np.testing.assert_allclose(flat, 2.0)  # a constant error is its own local RMS


def test_neighbour_error_predicts_smooth_errors_but_not_white_ones():
    rng = np.random.default_rng(3)
    ref = np.zeros((2, 64, 64))
    white = rng.standard_normal(ref.shape)
    amplitude = 0.2 + np.linspace(0, 3, 64)[None, None, :] * np.ones_like(ref)  # error size varies across x
    for err, lo, hi in ((white, -0.05, 0.05), (amplitude * white, 0.3, 1.0)):
        rho = spearmanr(neighbour_error(ref, err).ravel(), np.abs(err).ravel()).statistic
        assert lo < rho < hi


def test_slice_metrics_on_thin_slices():
    rng = np.random.default_rng(4)
    ref = rng.random((2, 5, 127))
    m = slice_metrics(ref, ref + 0.01 * rng.standard_normal(ref.shape))  # SSIM with a 5 x 5 window
    assert m["psnr"] > 30 and 0.5 < m["ssim"] <= 1
    m = slice_metrics(ref[:, :2], ref[:, :2] + 0.01)  # too thin for any SSIM window
    assert m["psnr"] > 30 and np.isnan(m["ssim"])


def test_foreground_ignores_a_constant_offset():
    ref = np.zeros((2, 8, 8))
    ref[:, 2:6, 2:6] = 10.0
    assert np.array_equal(foreground(ref), foreground(ref - 50)) and foreground(ref).sum() == 32


def test_in_slice_spearman_gives_no_credit_for_telling_slices_apart():
    rng = np.random.default_rng(0)
    ref = np.zeros((4, 16, 16))
    level = np.array([1.0, 2.0, 4.0, 8.0])[:, None, None]  # slices that err more...
    mean = ref + level * rng.random(ref.shape)
    std = level * rng.random(ref.shape)  # ...and a map larger there, but random within each slice
    where = np.ones(ref.shape, bool)
    assert spearmanr(std.ravel(), np.abs(mean - ref).ravel()).statistic > 0.4  # pooled: looks informative
    assert abs(in_slice_spearman(ref, mean, std, where)) < 0.15
    assert np.isclose(in_slice_spearman(ref, mean, np.abs(mean - ref), where), 1.0)  # a perfect map
    assert np.isnan(in_slice_spearman(ref, mean, np.ones(ref.shape), where))  # constant map: undefined
