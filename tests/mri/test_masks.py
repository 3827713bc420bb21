import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri.masks import (
    check_mask, conjugate_mirror, is_full_block, is_uncentred, mask_from_kspace, mirrored, partial_fourier_axis,
    sampling_mask, support_fraction, symmetric_centre_window,
)

KINDS = ["random", "equispaced", "poisson"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(128, 128), (96, 130)])
@pytest.mark.parametrize("accel", [4, 8])
def test_acceleration_and_centre(kind, shape, accel):
    cf = 0.08
    mask = sampling_mask(shape, accel, cf, kind=kind, pe_axis=1, seed=3)
    assert mask.shape == shape and mask.dtype == bool
    assert mask.size / mask.sum() == pytest.approx(accel, rel=0.1)
    h, w = shape
    if kind == "poisson":
        ch, cw = round(cf * h), round(cf * w)
        assert mask[h // 2 - ch // 2 : h // 2 - ch // 2 + ch, w // 2 - cw // 2 : w // 2 - cw // 2 + cw].all()
    else:
        n = round(cf * w)
        assert mask[:, w // 2 - n // 2 : w // 2 - n // 2 + n].all()


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_pe_axis_selects_whole_lines(kind):
    m0 = sampling_mask((30, 34), 4, 0.1, kind=kind, pe_axis=0, seed=1)
    m1 = sampling_mask((30, 34), 4, 0.1, kind=kind, pe_axis=1, seed=1)
    assert (m0 == m0[:, :1]).all() and not (m0 == m0[:1, :]).all()  # varies along H, constant along W
    assert (m1 == m1[:1, :]).all() and not (m1 == m1[:, :1]).all()


def test_poisson_is_2d_and_variable_density():
    m = sampling_mask((128, 128), 6, 0.06, kind="poisson", seed=0)
    assert not (m == m[:, :1]).all() and not (m == m[:1, :]).all()
    yy, xx = np.mgrid[-64:64, -64:64]
    r = np.hypot(yy, xx)
    assert m[(r > 8) & (r < 30)].mean() > 1.5 * m[r > 45].mean()


@pytest.mark.parametrize("kind", KINDS)
def test_seeded(kind):
    state = np.random.get_state()
    a = sampling_mask((48, 40), 4, 0.1, kind=kind, seed=7)
    assert np.array_equal(a, sampling_mask((48, 40), 4, 0.1, kind=kind, seed=7))
    assert not np.array_equal(a, sampling_mask((48, 40), 4, 0.1, kind=kind, seed=8))
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched


@pytest.mark.parametrize(
    "args",
    [((1, 32), 4, 0.1), ((32, 32), 0.5, 0.1), ((32, 32), 4, 1.0), ((32, 32), 4, -0.1), ((32, 32), 4, 0.5)],
)
def test_validation(args):
    with pytest.raises(InputError):
        sampling_mask(*args)
    with pytest.raises(InputError):
        sampling_mask((32, 32), 4, 0.1, kind="spiral")
    with pytest.raises(InputError):
        sampling_mask((32, 32), 4, 0.1, pe_axis=2)


def test_mask_from_kspace():
    mask = sampling_mask((30, 34), 4, 0.1, seed=0)
    k = np.random.default_rng(0).standard_normal((2, 3, 30, 34)) * (1 + 0j)
    k[..., ~mask] = 0
    k[1, 2, 0, 0] = 1  # one coil of one slice sampled a location
    expected = mask.copy()
    expected[0, 0] = True
    assert np.array_equal(mask_from_kspace(k), expected)
    assert np.array_equal(mask_from_kspace(torch.from_numpy(k)), expected)


def test_check_mask():
    check_mask(np.ones((30, 34)), (3, 30, 34))
    with pytest.raises(InputError, match=r"mask shape \(30, 34\) does not match k-space \(34, 30\)"):
        check_mask(np.ones((30, 34), bool), (34, 30))
    with pytest.raises(InputError, match="samples nothing"):
        check_mask(np.zeros((30, 34)), (30, 34))
    with pytest.raises(InputError, match="not binary"):
        check_mask(np.full((30, 34), 0.5), (30, 34))


def test_is_full_block():
    full = np.ones((8, 6), bool)
    padded = np.zeros((8, 6), bool)
    padded[1:7, :5] = True  # zero-padded edges / partial Fourier
    assert is_full_block(full) and is_full_block(padded)
    assert not is_full_block(sampling_mask((32, 24), 4, 0.1, seed=0))
    assert not is_full_block(np.zeros((8, 6), bool))
    yy, xx = np.mgrid[-1 : 1 : 40j, -1 : 1 : 30j]
    elliptical = np.pad(yy**2 + xx**2 <= 1, 2)  # elliptical scanning, zero-padded
    assert is_full_block(elliptical)
    assert not is_full_block(elliptical & sampling_mask(elliptical.shape, 4, 0.1, seed=0))
    assert not is_full_block(elliptical & sampling_mask(elliptical.shape, 3, 0.1, "poisson", seed=0))


def test_support_fraction_leaves_out_padding_and_elliptical_corners():
    padded = np.zeros((40, 30), bool)
    padded[4:36, 3:27] = sampling_mask((32, 24), 4, 0.1, seed=0)  # undersampled inside zero-padded edges
    rows, cols = np.flatnonzero(padded.any(1)), np.flatnonzero(padded.any(0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert support_fraction(padded) == pytest.approx(box / padded.size)
    yy, xx = np.mgrid[-1 : 1 : 40j, -1 : 1 : 30j]
    ellipse = yy**2 + xx**2 <= 1
    sparse = support_fraction(ellipse & sampling_mask(ellipse.shape, 3, 0.1, "poisson", seed=0))
    assert ellipse.mean() - 0.08 < sparse <= ellipse.mean()  # (a sparse rim may not reach the ellipse's extent)
    assert support_fraction(np.ones((8, 6), bool)) == 1.0 and support_fraction(np.zeros((8, 6), bool)) == 0.0



def test_partial_fourier_axis_and_symmetric_centre():
    """One side of k-space skipped (along either axis, alone or with random lines) is partial Fourier; full,
    symmetrically zero-padded and elliptical sampling are not, nor is a skipped side without a sampled centre to
    read the phase from. The window covers the lines sampled on both sides of the centre line 32 (20 skipped
    leave 12 on each side) and the whole fully sampled centre line across."""
    pf = np.ones((64, 48), bool)
    pf[:20] = False
    assert partial_fourier_axis(pf) == 0 and partial_fourier_axis(pf.T) == 1
    big = np.ones((256, 200), bool)
    big[:64] = False  # 6/8
    assert partial_fourier_axis(big & sampling_mask(big.shape, 4, 0.08, seed=0)) == 0
    assert partial_fourier_axis(big & sampling_mask(big.shape, 2, 0.08, "equispaced", seed=0)) == 0
    padded = np.zeros((64, 48), bool)
    padded[3:61, 2:46] = True
    yy, xx = np.mgrid[-1 : 1 : 64j, -1 : 1 : 48j]
    off_centre = np.ones((64, 48), bool)
    off_centre[:33] = False
    for mask in (np.ones((64, 48), bool), padded, yy**2 + xx**2 <= 1, off_centre):
        assert partial_fourier_axis(mask) is None
    window = symmetric_centre_window(pf, 0)
    assert window.shape == pf.shape and window.dtype == np.float32 and (window[:, 0] == window[:, 47]).all()
    assert np.flatnonzero(window[:, 0]).tolist() == list(range(20, 45)) and window[32, 0] == 1.0


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_line_masks_are_not_partial_fourier(kind):
    """Random and equispaced line masks leave gaps at an edge by chance, never one so wide against the line
    density of the other edge that it reads as a skipped side (seeds 0-39, 4x to 12x, either axis)."""
    for accel, cf in ((4, 0.08), (8, 0.04), (12, 0.04)):
        for seed in range(40):
            for pe_axis in (0, 1):
                mask = sampling_mask((256, 192), accel, cf, kind, pe_axis=pe_axis, seed=seed)
                assert partial_fourier_axis(mask) is None, (accel, seed, pe_axis)


def test_uncentred_masks_are_recognised():
    """Masks written with k-space's centre in the corners (``ifftshift`` of a centred one) are recognised; centred
    masks, one-sided (partial-Fourier) and fully sampled ones are not."""
    for kind in KINDS:
        for accel, cf in ((3, 0.08), (4, 0.08), (8, 0.04), (12, 0.04)):
            for seed in range(2 if kind == "poisson" else 5):
                for shape in ((128, 128), (63, 77)):
                    mask = sampling_mask(shape, accel, cf, kind, pe_axis=seed % 2, seed=seed)
                    assert not is_uncentred(mask), (kind, accel, seed, shape)
                    assert is_uncentred(np.fft.ifftshift(mask)), (kind, accel, seed, shape)
    one_sided = np.ones((64, 48), bool)
    one_sided[:24] = False
    assert not is_uncentred(one_sided) and not is_uncentred(np.ones((64, 48), bool))


@pytest.mark.parametrize("n", [8, 9])
def test_conjugate_mirror_is_the_point_minus_k(n):
    """The centred FFT of a real image is conjugate-symmetric about ``n // 2``: ``conjugate_mirror`` of it is its
    conjugate (except the most negative frequency of an even axis, which has no mirror), on even and odd axes;
    ``mirrored`` adds the lines a partial-Fourier scan skipped."""
    from neurodiff.mri.fft import fft2c

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, n + 1))).to(torch.complex64)
    k = fft2c(x).numpy()
    keep = (slice(1 - n % 2, None), slice(1 - (n + 1) % 2, None))
    np.testing.assert_allclose(conjugate_mirror(k, (0, 1))[keep], k.conj()[keep], atol=1e-5)
    mask = np.zeros((n, n + 1), bool)
    mask[n // 2 - 1:] = True  # one line before the centre and all after it
    assert mirrored(mask, 0).all() == (n % 2 == 1)  # (an even axis's line 0 has no mirror)
    assert mirrored(mask, 0)[1:].all()
