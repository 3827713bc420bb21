"""MONAI transform pair: undersampling then reconstruction inside a Compose, on a real image."""

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose

from neurodiff.transforms import RandKSpaceUndersampled, DiffusionReconstructd
from neurodiff.weights import load_model

from ..conftest import EXAMPLE, STROKE


def test_compose_undersample_then_reconstruct(untrained_recon_model):
    img = torch.from_numpy(nib.load(EXAMPLE).get_fdata(dtype=np.float32)[None, :, :, 40:42])  # (1, H, W, 2)
    under = RandKSpaceUndersampled("image", accel=4)
    pipe = Compose([under, DiffusionReconstructd("image", model=load_model(untrained_recon_model), samples=2, steps=2)])
    pipe.set_random_state(seed=5)
    out = pipe({"image": img})
    assert out["image"].shape == img.shape and out["image_uncertainty"].shape == img.shape
    m = out["image_mask"][0]
    assert 0.2 < m.float().mean() < 0.3
    # the untrained model's x0-hat is exactly the zero-filled image (a zero-initialised residual), so the posterior
    # collapses onto it: the reconstruction is |zero-filled| and the spread is zero
    zf = Compose([under]).set_random_state(seed=5)({"image": img})["image"]
    assert torch.allclose(out["image"], zf.abs(), atol=1e-3 * float(img.max()))
    assert float(out["image_uncertainty"].max()) < 1e-3 * float(img.max())


def test_same_seed_same_mask():
    a = RandKSpaceUndersampled("x").set_random_state(seed=1)
    b = RandKSpaceUndersampled("x").set_random_state(seed=1)
    x = {"x": torch.rand(1, 16, 18)}
    assert torch.equal(a(x)["x_mask"], b(x)["x_mask"])


def test_anomaly_score_in_a_monai_pipeline(untrained_anomaly_model):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from neurodiff.transforms import AnomalyScored

    pipe = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                    AnomalyScored("image", contrast=None, model=str(untrained_anomaly_model))])
    d = pipe({"image": str(STROKE)})
    score = d["image_anomaly"]
    assert score.shape == d["image"].shape and torch.isfinite(score).all()
    assert np.allclose(np.asarray(score.affine), nib.load(STROKE).affine, atol=1e-4)
