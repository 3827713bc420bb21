"""Reference normalisation, thresholds, polarity and detection metrics."""

import numpy as np
import pytest
import torch

from neurodiff.anomaly.metrics import dice, slice_auroc, voxel_metrics
from neurodiff.anomaly.scores import DEPTH_BINS_MM, Reference, ScoreConfig, finish, fit_reference, normalise
from neurodiff.errors import InputError


def test_reference_thresholds_hold_their_false_positive_rate():
    g = torch.Generator().manual_seed(0)
    cfg = ScoreConfig(method="elbo", levels=(10, 100, 500), smooth_voxels=0)
    scale = torch.tensor([1.0, 5.0, 50.0]).view(3, 1, 1, 1, 1)  # levels on very different scales
    raws = [torch.rand(3, 30, 1, 16, 16, generator=g) ** 2 * scale for _ in range(2)]
    brains = [torch.ones(30, 1, 16, 16, dtype=torch.bool) for _ in range(2)]
    depth = torch.tensor([1.0, 3, 5, 8, 12, 12] * 5).view(30, 1, 1, 1).expand(30, 1, 16, 16)  # every depth bin
    raws = [r * (1 + depth) for r in raws]  # deeper voxels score higher when healthy: the bins must absorb it
    ref = fit_reference(raws, brains, brains, [depth, depth], cfg)
    assert len(ref.mean[0]) == len(DEPTH_BINS_MM) + 1
    z = torch.cat([normalise(r, ref, depth) for r in raws])
    assert abs(float(z[:6].mean() - z[-6:].mean())) < 0.2 and abs(float(z[5::6].mean() - z[0::6].mean())) < 0.3
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1, abs=1e-3)  # healthy SDs
    fresh = normalise(torch.rand(3, 30, 1, 16, 16, generator=g) ** 2 * scale * (1 + depth), ref, depth)
    for fpr in (0.01, 0.05):
        assert float((fresh > ref.threshold_at(fpr)).float().mean()) == pytest.approx(fpr, rel=0.35)
    back = Reference.from_dict(ref.to_dict())
    assert back.config == cfg and back.threshold_at(0.01) == ref.threshold_at(0.01)
    assert ref.percentile(max(ref.image_scores) + 1) == 100.0
    with pytest.raises(InputError, match="false-positive rate"):
        ref.threshold_at(0.9)


def test_polarity_keeps_one_sign():
    maps = torch.ones(2, 1, 1, 4, 4)
    resid = torch.randn(2, 1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    hyper = finish(maps, resid, ScoreConfig(method="elbo", polarity="hyper", smooth_voxels=0))
    hypo = finish(maps, resid, ScoreConfig(method="elbo", polarity="hypo", smooth_voxels=0))
    assert torch.equal(hyper.bool(), resid > 0) and torch.equal(hypo.bool(), resid < 0)
    smooth = finish(maps, resid, ScoreConfig(method="elbo", smooth_voxels=1.0))
    assert torch.allclose(smooth, maps)  # smoothing a constant map changes nothing
    # residual: the signed residual itself, taken linearly (the ELBO maps are not used)
    for polarity, expected in (("hyper", resid.clamp(min=0)), ("hypo", (-resid).clamp(min=0)), ("both", resid.abs())):
        got = finish(maps * 7, resid, ScoreConfig(method="residual", polarity=polarity, smooth_voxels=0))
        assert torch.equal(got, expected)


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError):
        ScoreConfig(method="magic")
    with pytest.raises(ValueError):
        ScoreConfig(polarity="up")
    with pytest.raises(ValueError):
        ScoreConfig(draws=0)


def test_voxel_metrics_perfect_random_and_threshold():
    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.05
    perfect = voxel_metrics(truth.astype(float) + rng.random(5000) * 0.1, truth, threshold=0.5)
    assert perfect["auroc"] == 1 and perfect["auprc"] == pytest.approx(1) and perfect["dice"] == 1
    assert perfect["fpr"] == 0 and perfect["best_dice"] == pytest.approx(1)
    rand = voxel_metrics(rng.random(5000), truth, threshold=0.99)
    assert abs(rand["auroc"] - 0.5) < 0.06 and rand["auprc"] < 0.1 and rand["fpr"] == pytest.approx(0.01, abs=0.005)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert slice_auroc(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1])) == 1.0
    assert np.isnan(slice_auroc(np.array([1.0, 2.0]), np.array([1, 1])))
