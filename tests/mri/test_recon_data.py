import numpy as np
import torch

from neurodiff.mri.fft import channels_to_complex
from neurodiff.mri.recon_data import ZoomPrior, foreground_slices, recon_batches


def _disc(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return (np.hypot(yy, xx) < n / 3).astype(np.float32)


def _support(batch) -> np.ndarray:
    """Rows of each target that hold signal, (B,)."""
    mag = channels_to_complex(batch.x0).abs()
    return (mag.amax(dim=-1) > 0.05).sum(dim=-1).numpy()


def test_batches_have_canvas_shapes_and_unit_scale():
    batch = next(recon_batches([_disc(60), _disc(50)], batch_size=6, size=(64, 64), seed=1))
    assert batch.x0.shape == (6, 2, 64, 64)
    assert batch.cond.image.shape == (6, 3, 64, 64)
    assert torch.isfinite(batch.x0).all() and torch.isfinite(batch.cond.image).all()
    zf = channels_to_complex(batch.cond.image[:, :2]).abs().flatten(1)
    assert torch.allclose(torch.quantile(zf, 0.995, dim=1), torch.ones(6), atol=0.05)  # per-slice scaling
    assert set(batch.cond.image[:, 2].unique().tolist()) <= {0.0, 1.0}  # the mask channel


def test_zoom_augmentation_enlarges_the_object_and_crops_to_the_canvas():
    plain = next(recon_batches([_disc(48)], batch_size=4, size=(64, 64), zoom=ZoomPrior(p=0.0), p_phase=0.0))
    zoomed = next(recon_batches([_disc(48)], batch_size=4, size=(64, 64), p_phase=0.0,
                                zoom=ZoomPrior(p=1.0, factor=(2.0, 2.0), noise=(0.0, 0.0))))
    assert (_support(plain) <= 33).all()  # a disc of diameter 32 on a 48-pixel slice
    assert (_support(zoomed) > 40).all()  # twice the diameter after a 2x zoom, randomly cropped to the canvas
    assert zoomed.x0.shape == (4, 2, 64, 64)  # the 96-pixel zoomed slice was cropped to the canvas


def test_foreground_slices_drop_empty_slices_and_scale_to_the_percentile():
    vol = np.zeros((32, 32, 5), np.float32)
    vol[8:24, 8:24, 1:4] = 200.0
    slices = foreground_slices(vol)
    assert len(slices) == 3
    assert np.isclose(max(s.max() for s in slices), 1.0)
