"""Model-grid preparation: geometry round trips, brain masks, lesion masks on the canvas."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from neurodiff.anomaly.data import anomaly_batches, lesion_on_canvas, training_slices
from neurodiff.anomaly.preprocess import compute_brain_mask, is_skull_stripped, prepare, to_input
from neurodiff.errors import InputError

DATA = Path(__file__).parents[1] / "data" / "mri"


def _head(shape=(37, 44, 29), zooms=(1.5, 1.5, 3.0)):
    """An ellipsoidal 'brain' with a bright blob, on an LPS grid with anisotropic voxels."""
    aff = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    aff[:3, 3] = [30, 30, -40]
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((g / np.array([0.7, 0.8, 0.75])[:, None, None, None]) ** 2).sum(0))
    vol = np.where(r < 1, 100.0, 0.0) + np.where(np.hypot(g[0] - 0.2, g[1]) < 0.15, 60.0, 0.0) * (r < 1)
    return nib.Nifti1Image(vol.astype(np.float32), aff), r < 1


def test_prepare_round_trip_and_normalisation():
    img, brain = _head()
    prep = prepare(img, nib.Nifti1Image(brain.astype(np.uint8), img.affine), voxel_mm=2.0, canvas=(40, 48))
    assert prep.x.shape[1:] == (1, 40, 48) and prep.brain.shape == prep.x.shape
    assert prep.scale == pytest.approx(100.0, rel=0.01)
    assert torch.all(prep.x[~prep.brain] == -1)
    assert abs(float(prep.x[prep.brain].median())) < 0.02  # tissue at 0 after dividing by the brain median
    back = to_input(prep.x[:, 0].numpy() + 1, prep, img)  # +1: back to multiples of the median
    inner = brain & (np.asarray(img.dataobj) == 100)
    assert back.shape == img.shape
    assert np.median(np.abs(back[inner] - 1)) < 0.05


def test_brain_mask_of_a_skull_stripped_scan_is_its_non_zero_region():
    img, brain = _head()
    assert is_skull_stripped(img)
    m = np.asarray(compute_brain_mask(img).dataobj) > 0
    assert (m == brain).mean() > 0.999


def test_brain_mask_of_a_real_scan_with_skull():
    """Colin27 with skull (2 mm, zero-padded in MNI space: not taken for skull-stripped) against its ch2bet brain."""
    img = nib.load(DATA / "colin27_ch2_2mm.nii.gz")
    truth = np.asarray(nib.load(DATA / "colin27_ch2bet_mask_2mm.nii.gz").dataobj) > 0
    assert not is_skull_stripped(img)
    m = np.asarray(compute_brain_mask(img).dataobj) > 0
    assert 2 * (m & truth).sum() / (m.sum() + truth.sum()) > 0.9
    with pytest.raises(InputError, match="could not find a brain"):
        compute_brain_mask(nib.Nifti1Image(np.ones((30, 30, 30), np.float32), np.eye(4)))


def test_empty_brain_mask_is_a_clear_error():
    img, brain = _head()
    with pytest.raises(InputError, match="brain mask is empty"):
        prepare(img, nib.Nifti1Image(np.zeros(brain.shape, np.uint8), img.affine))


def test_lesions_on_canvas_follow_the_image_and_leave_the_loss():
    img, brain = _head()
    vol = np.asarray(img.dataobj)
    lesion = nib.Nifti1Image((vol == 160).astype(np.uint8), img.affine)
    prep = prepare(img, nib.Nifti1Image(brain.astype(np.uint8), img.affine), voxel_mm=2.0, canvas=(40, 48))
    les = lesion_on_canvas(lesion, prep, dilate_mm=0)
    assert les.any() and float(prep.x[les].mean()) > 0.4  # the blob is 1.6x the median
    x, healthy = training_slices([img], [nib.Nifti1Image(brain.astype(np.uint8), img.affine)], [lesion],
                                 voxel_mm=2.0, canvas=(40, 48))
    assert not healthy[les].any() and healthy[~les].float().mean() > 0.95
    b = next(anomaly_batches(x, healthy, batch_size=4))
    assert b.x0.shape == (4, 1, 40, 48) and b.mask.shape == b.x0.shape
