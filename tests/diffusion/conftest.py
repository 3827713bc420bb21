"""Analytic fixtures: for Gaussian data x0 ~ N(m, s^2 I) the exact denoiser is known in closed form."""

import pytest
import torch
from torch import nn

from neurodiff.diffusion import Denoiser, NoiseSchedule

MEAN, STD = 0.7, 1.3


class GaussianEps(nn.Module):
    """Exact eps-prediction for x0 ~ N(means[label], std^2) per value; label None -> means[0]."""

    def __init__(self, schedule: NoiseSchedule, means: tuple[float, ...] = (MEAN,), std: float = STD):
        super().__init__()
        self.schedule, self.std = schedule, std
        self.register_buffer("means", torch.tensor(means, dtype=torch.float64))

    def forward(self, x, t, class_labels=None):
        a = self.schedule.abar(t, x)
        m = self.means[class_labels if class_labels is not None else torch.zeros_like(t)]
        m = m.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        s2 = self.std**2
        x0 = m + a.sqrt() * s2 / (a * s2 + 1 - a) * (x - a.sqrt() * m)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule("cosine", 1000)


@pytest.fixture(scope="module")
def gaussian(schedule):
    return Denoiser(GaussianEps(schedule), schedule, "eps")
