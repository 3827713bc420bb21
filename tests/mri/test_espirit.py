"""ESPIRiT sensitivities: exact at sharp object edges, cropped outside the object, and the fallbacks."""

import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri import multicoil_project
from neurodiff.mri.espirit import espirit_maps
from neurodiff.mri.fft import fft2c
from neurodiff.mri.operators import estimate_sensitivities, rss

H, W = 48, 44


def _sharp_phantom():
    """A two-level ellipse with sharp edges (the low-resolution maps' hard case) seen by 4 smooth coils."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    r2 = (yy / 0.75) ** 2 + (xx / 0.65) ** 2
    image = ((r2 < 1).float() * (1 + 0.5 * (r2 > 0.4).float())).to(torch.complex64)
    sens = torch.stack([torch.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 1.5) * torch.exp(1j * (a * xx - b * yy))
                        for a, b in ((-1.2, 0.0), (1.2, 0.3), (0.2, -1.3), (0.0, 1.3))])
    return image, (sens / rss(sens)).to(torch.complex64), r2


def test_espirit_maps_match_the_true_sensitivities_and_mark_the_object():
    image, sens, r2 = _sharp_phantom()
    k = fft2c(sens * image)
    maps, (eig, second) = espirit_maps(k[:, H // 2 - 8 : H // 2 + 8, W // 2 - 8 : W // 2 + 8], (H, W))
    assert maps.shape == (4, H, W) and eig.shape == second.shape == (H, W)
    inside = image.abs() > 0
    torch.testing.assert_close(rss(maps), torch.ones(H, W), rtol=0, atol=1e-4)
    assert (maps.conj() * sens).sum(0).abs()[inside].min() > 0.999  # up to a phase per voxel
    assert eig[inside].min() > 0.99 and eig[r2 > 2].max() < 0.8 and second[inside].max() < 0.5


def test_espirit_sensitivities_beat_low_resolution_maps_at_sharp_edges():
    image, sens, _ = _sharp_phantom()
    k = fft2c(sens * image)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[H // 2 - 8 : H // 2 + 8] = True
    mask[::3] = True
    inside = image.abs() > 0
    errors = {}
    for method in ("lowres", "espirit"):
        est = estimate_sensitivities(k * mask, method=method)
        assert (est.conj() * sens).sum(0).abs()[inside].min() > 0.99
        x = multicoil_project(torch.zeros(H, W, dtype=torch.complex64), k * mask, mask, est, steps=50)
        errors[method] = float((x.abs() - image.abs()).norm() / image.abs().norm())
    # CG-SENSE of 3x lines: 2.8% error with the low-resolution maps, 0.4% with ESPIRiT's
    assert errors["espirit"] < 0.01 < errors["lowres"]
    far = estimate_sensitivities(k * mask)[:, _sharp_phantom()[2] > 2]
    assert (far == 0).all()  # cropped outside the object


def test_estimate_sensitivities_falls_back_on_a_narrow_calibration():
    image, sens, _ = _sharp_phantom()
    k = fft2c(sens * image)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[H // 2 - 3 : H // 2 + 4] = True  # 7 lines: too few for the 6 x 6 kernel and its patches
    mask[::3] = True
    torch.testing.assert_close(estimate_sensitivities(k * mask), estimate_sensitivities(k * mask, method="lowres"))


def test_noise_floor_keeps_the_signal_subspace_clean():
    # image SNR 5: with the 2% cut alone the calibration's noise directions make the second eigenvalue large
    # everywhere (no voxel has a determined map); above the noise floor the subspace is the coils' again
    image, sens, _ = _sharp_phantom()
    std = float(image.abs()[image.abs() > 0].mean()) / 5
    k = fft2c(sens * image) + std * torch.randn((4, H, W), generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.complex64)
    centre = k[:, H // 2 - 8 : H // 2 + 8, W // 2 - 8 : W // 2 + 8]
    inside = image.abs() > 0
    determined = {}
    for noise_std in (0.0, std):
        maps, (first, second) = espirit_maps(centre, (H, W), noise_std=noise_std)
        determined[noise_std] = float(((first >= 0.95) & (second <= 0.5))[inside].float().mean())
    assert determined[0.0] < 0.1 and determined[std] > 0.95
    agree = (maps.conj() * sens).sum(0).abs()[inside]
    assert agree.quantile(0.01) > 0.99


def test_dark_cavity_inside_the_object_keeps_its_maps():
    image, sens, r2 = _sharp_phantom()
    image = torch.where(r2 < 0.5, 0, image)  # an empty cavity of 70% of the object's width
    est = estimate_sensitivities(fft2c(sens * image), calib=16)
    torch.testing.assert_close(rss(est)[r2 < 1], torch.ones(int((r2 < 1).sum())), rtol=0, atol=1e-4)


def test_espirit_validation():
    k = torch.ones(2, 5, 5, dtype=torch.complex64)
    with pytest.raises(InputError, match="at least 6 x 6"):
        espirit_maps(k, (16, 16))
    with pytest.raises(InputError, match="2 coils"):
        espirit_maps(torch.ones(1, 8, 8, dtype=torch.complex64), (16, 16))
    one = fft2c(_sharp_phantom()[0])[None]  # one coil: the low-resolution maps (all ones inside)
    torch.testing.assert_close(estimate_sensitivities(one), estimate_sensitivities(one, method="lowres"))
    with pytest.raises(InputError, match="method"):
        estimate_sensitivities(torch.ones(2, 16, 16, dtype=torch.complex64), method="walsh")
