import math

import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri.consistency import hard_project, multicoil_project, soft_project
from neurodiff.mri.fft import fft2c
from neurodiff.mri.masks import sampling_mask
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
    residuals = [torch.linalg.vector_norm(op.A(multicoil_project(x, y, mask, sens, steps=s)) - y) for s in range(4)]
    assert all(b <= a + 1e-6 for a, b in zip(residuals, residuals[1:])) and residuals[-1] < residuals[0]
    with pytest.raises(InputError):
        multicoil_project(x, y, mask, sens, steps=-1)
