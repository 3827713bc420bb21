"""Engine checks against closed-form answers for Gaussian data."""

import math

import pytest
import torch

from neurodiff.diffusion import (
    Cond, Denoiser, classifier_free, ddim_invert, elbo, ode_nll, sample_ddim, sample_ddpm,
    sample_dpmpp_2m, slerp, voxel_terms,
)

from .conftest import MEAN, STD, GaussianEps

N = 4096


def analytic_nll(x: torch.Tensor) -> torch.Tensor:
    """-log N(x; MEAN, STD^2) summed per sample, nats."""
    z = (x - MEAN) / STD
    return (0.5 * z**2 + math.log(STD) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


@pytest.mark.parametrize(
    "sampler, steps", [(sample_ddpm, 1000), (sample_ddim, 50), (sample_dpmpp_2m, 20)], ids=["ddpm", "ddim", "dpmpp"]
)
def test_samplers_reproduce_mean_and_std(gaussian, sampler, steps):
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(N, 1, 4, 4, generator=g, dtype=torch.float64)
    x = sampler(gaussian, x_T, steps, generator=g)
    assert abs(x.mean().item() - MEAN) < 0.03 * MEAN
    assert abs(x.std().item() - STD) < 0.03 * STD


def test_elbo_bounds_analytic_nll(gaussian):
    g = torch.Generator().manual_seed(1)
    x = MEAN + STD * torch.randn(64, 1, 3, 4, generator=g, dtype=torch.float64)
    res = elbo(gaussian, x, chunk=50, data_var=STD**2, generator=g)
    d = x[0].numel() * math.log(2)
    exact = analytic_nll(x) / d
    bpd = res.bits_per_dim
    gap = (bpd - exact).mean().item()
    mc_err = (bpd - exact).std().item() / math.sqrt(len(x))
    assert gap < 0.05
    assert gap > -3 * mc_err
    assert torch.allclose(res.voxel_nll.flatten(1).sum(1), res.total)
    strided = elbo(gaussian, x, stride=10, data_var=STD**2, generator=g).bits_per_dim.mean().item()
    assert strided > bpd.mean().item() - 3 * mc_err  # a looser bound


def test_ode_nll_matches_analytic(gaussian):
    g = torch.Generator().manual_seed(2)
    x = MEAN + STD * torch.randn(32, 1, 3, 4, generator=g, dtype=torch.float64)
    nll = ode_nll(gaussian, x, steps=200, generator=g)
    exact = analytic_nll(x)
    assert (nll.mean() - exact.mean()).abs() / exact.mean().abs() < 0.01


def test_classifier_free_endpoints(schedule):
    den = Denoiser(GaussianEps(schedule, means=(0.5, -1.0, 2.0)), schedule, "eps", num_classes=2)
    x = torch.randn(6, 1, 3, 4, dtype=torch.float64)
    t = torch.full((6,), 300)
    cond = Cond(label=torch.tensor([0, 1, 0, 1, 1, 0]))
    cond_pred, uncond_pred = den(x, t, cond), den(x, t, den.null_cond(cond))
    assert torch.equal(classifier_free(0.0)(den, x, t, cond).eps, uncond_pred.eps)
    assert torch.equal(classifier_free(1.0)(den, x, t, cond).eps, cond_pred.eps)
    guided = classifier_free(2.0)(den, x, t, cond).eps
    assert torch.allclose(guided, 2 * cond_pred.eps - uncond_pred.eps)


def test_ddim_inversion_roundtrip(gaussian):
    g = torch.Generator().manual_seed(3)
    x0 = MEAN + STD * torch.randn(16, 1, 4, 5, generator=g, dtype=torch.float64)
    z = ddim_invert(gaussian, x0, 100)
    back = sample_ddim(gaussian, z, 100)
    assert ((back - x0).norm() / x0.norm()).item() < 1e-3
    assert abs(z.std().item() - 1) < 0.2  # latents look like noise


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert abs(mid.norm().item() / a.norm().item() - 1) < 0.2



def test_voxel_terms_are_the_elbo_terms(gaussian):
    """Per-voxel terms at the steps of a strided chain, summed over voxels, are :func:`elbo`'s terms (in
    expectation: both are Monte-Carlo estimates)."""
    g = torch.Generator().manual_seed(3)
    x = MEAN + STD * torch.randn(256, 1, 3, 4, generator=g, dtype=torch.float64)
    chain = list(range(0, 1000, 50))
    terms, resid = voxel_terms(gaussian, x, chain, stride=50, draws=2, data_var=STD**2, generator=g)
    assert terms.shape == resid.shape == (len(chain),) + x.shape
    ref = elbo(gaussian, x, stride=50, data_var=STD**2, generator=g)
    diff = terms.flatten(2).sum((0, 2)) - ref.terms[:, : len(chain)].sum(1)
    assert abs(diff.mean().item()) < 3 * diff.std().item() / math.sqrt(len(x)) + 1e-9
    # the exact denoiser's residual is small at low noise; at high noise it is x - E[x] (the sign of the deviation)
    assert resid[0].abs().mean() < resid[-1].abs().mean()
    assert torch.corrcoef(torch.stack([resid[-1].flatten(), (x - MEAN).flatten()]))[0, 1] > 0.95


def test_partial_ddim_from_a_noised_image_keeps_it_close(gaussian):
    """DDIM started at a low noise level (start=t) returns near the original image, far less so from high noise."""
    g = torch.Generator().manual_seed(4)
    x = MEAN + STD * torch.randn(512, 1, 2, 2, generator=g, dtype=torch.float64)
    err = []
    for t in (50, 600):
        tt = torch.full((len(x),), t)
        x_t = gaussian.schedule.q_sample(x, tt, torch.randn(x.shape, generator=g, dtype=x.dtype))
        err.append((sample_ddim(gaussian, x_t, 10, start=t) - x).pow(2).mean().item())
    assert err[0] < 0.1 * STD**2 < err[1]
