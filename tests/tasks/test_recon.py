"""The reconstruction task on real data: geometry, data consistency, k-space inputs, the shipped model."""

import nibabel as nib
import numpy as np
import pytest
import torch

from neurodiff.errors import InputError
from neurodiff.mri import fft2c, ifft2c, kspace_noise_variance, sampling_mask
from neurodiff.tasks.recon import output_paths, parse_slices, reconstruct, write

from ..conftest import DATA, EXAMPLE


def test_complex_image_recon_is_data_consistent(untrained_recon_model):
    src = DATA / "io" / "complex_crop.nii.gz"  # (16, 18, 5) complex64, real scan
    res = reconstruct(src, accel=3, samples=2, steps=3, model=untrained_recon_model, device="cpu")
    assert res.recon.dtype == np.complex64 and res.recon.shape == (16, 18, 5)
    x = torch.from_numpy(np.moveaxis(nib.load(src).get_fdata(dtype=np.complex64), 2, 0))
    r = torch.from_numpy(np.moveaxis(res.recon, 2, 0))
    m = torch.from_numpy(res.mask[:, :, 0].astype(bool))
    k_in, k_out = fft2c(x)[:, m], fft2c(r)[:, m]
    assert torch.allclose(k_out, k_in, atol=1e-3 * k_in.abs().max())
    assert np.isfinite(res.uncertainty).all() and (res.uncertainty >= 0).all()
    assert res.params["uncertainty_unmeasured_noise_std"] is None  # image input: the card's calibration covers it


def test_uncertainty_scale_follows_the_voxel_size(untrained_recon_model):
    """A card calibrated at several resolutions scales the spread by the scan's in-plane voxel size (2 mm here)."""
    from neurodiff.weights import load_model

    model = load_model(untrained_recon_model)
    model.card["calibration"] = {"std_scale": 1.0, "std_scale_by_voxel_mm": [[1.0, 3.0], [2.0, 2.0]]}
    kw = dict(slices="40:41", samples=2, steps=1, device="cpu", seed=3)
    res = reconstruct(EXAMPLE, model=model, **kw)
    assert res.params["voxel_mm_in_plane"] == pytest.approx(2.0) and res.params["uncertainty_scale"] == 2.0
    model.card["calibration"] = {"std_scale": 1.0}
    plain = reconstruct(EXAMPLE, model=model, **kw)
    np.testing.assert_allclose(res.uncertainty, 2.0 * plain.uncertainty, rtol=1e-5, atol=1e-6)


def test_outputs_keep_geometry_and_subset_affine(untrained_recon_model, tmp_path):
    res = reconstruct(EXAMPLE, slices="40:42", samples=2, steps=2, model=untrained_recon_model, device="cpu",
                      save_samples=True)
    paths = output_paths(EXAMPLE, tmp_path, save_samples=True)
    write(res, EXAMPLE, paths)
    src = nib.load(EXAMPLE)
    out = nib.load(paths["recon"])
    assert out.shape == src.shape[:2] + (2,)
    assert np.allclose(out.affine, src.slicer[:, :, 40:42].affine)
    assert nib.load(paths["samples"]).shape == src.shape[:2] + (2, 2)
    assert paths["recon"].name == "sub-colin27_desc-recon_T1w.nii.gz"
    m = res.metrics
    assert m["recon"]["psnr"] > 10 and 0 < m["recon"]["ssim"] <= 1


def test_same_seed_same_output(untrained_recon_model):
    kw = dict(slices="40:41", samples=2, steps=2, model=untrained_recon_model, device="cpu", seed=3)
    a, b = reconstruct(EXAMPLE, **kw), reconstruct(EXAMPLE, **kw)
    assert np.array_equal(a.recon, b.recon) and np.array_equal(a.mask, b.mask)


def test_real_image_with_an_intensity_offset_is_reconstructed_in_its_own_units(untrained_recon_model, tmp_path):
    """A constant only changes the (always sampled) k-space centre: an image with an offset of -100 is
    reconstructed shifted back to >= 0, and every output is shifted by -100 again."""
    src = nib.load(EXAMPLE).slicer[:, :, 40:42]
    shifted = nib.Nifti1Image(src.get_fdata(dtype=np.float32) - 100, src.affine)
    kw = dict(samples=2, steps=2, model=untrained_recon_model, device="cpu", seed=3, save_samples=True)
    plain, res = reconstruct(src, **kw), reconstruct(shifted, **kw)
    assert res.params["intensity_offset"] == -100 and "intensity_offset" not in plain.params
    for name in ("recon", "zerofilled", "samples", "reference"):
        assert np.allclose(getattr(res, name), getattr(plain, name) - 100, atol=1e-3), name
    assert np.array_equal(res.uncertainty, plain.uncertainty)
    assert np.isclose(res.metrics["recon"]["psnr"], plain.metrics["recon"]["psnr"])
    centre_free = np.ones(src.shape[:2], np.uint8)
    centre_free[src.shape[0] // 2, src.shape[1] // 2] = 0
    nib.save(nib.Nifti1Image(centre_free, src.affine), tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match="negative values"):
        reconstruct(shifted, mask=tmp_path / "mask.nii.gz", **kw)


def test_twix_multicoil_kspace(untrained_recon_model):
    res = reconstruct(DATA / "mri" / "gre.dat", accel=2, center_fraction=0.1, samples=2, steps=2,
                      model=untrained_recon_model, device="cpu")
    assert res.recon.shape == (160, 160, 1)
    assert res.params["input_kind"] == "kspace"
    assert res.metrics["zerofilled"]["psnr"] > 15  # the fully sampled coil combination is the reference
    assert res.params["coil_noise"] == {"prewhitened": False, "reason": "no noise scan in the file"}
    # ESPIRiT crops the maps outside the phantom: no coil sees anything there, and the reconstruction is 0
    outside = res.params["coil_maps_outside_object"][0]
    assert 0.01 < outside < 0.5 and (res.recon == 0).mean() == pytest.approx(outside, abs=1e-4)
    # the finished samples' misfit (residual / noise variance) sets their final damping: the sampling steps' data
    # consistency has fitted even an untrained model's samples to about the noise
    (misfit,) = res.params["multicoil_final_misfit"]
    assert 0.3 < misfit < 3
    # the noise a fully sampled scan would carry in the unmeasured half of k-space is part of the uncertainty
    sigma, f = res.params["kspace_noise_std"][0], res.params["sampled_fraction"]
    floor = sigma * np.sqrt((1 - f) / 2)
    assert res.params["uncertainty_unmeasured_noise_std"][0] == pytest.approx(floor, rel=1e-3)
    assert res.uncertainty.min() >= floor * (1 - 1e-3)


def test_twix_noise_scan_prewhitens(twix_with_noise_scan):
    path, noise = twix_with_noise_scan
    res = reconstruct(path, model="no-such-model", device="cpu")  # fully sampled: the coil combination
    assert res.params["coil_noise"]["prewhitened"] and res.params["coil_noise"]["noise_samples"] == noise.shape[1]
    assert res.params["coil_noise"]["max_coil_noise_correlation"] > 0.5
    assert np.isfinite(res.recon).all() and res.recon.shape == (160, 160, 1)


def test_3d_multicoil_kspace_reconstructs_slices_along_the_readout(untrained_recon_model, tmp_path):
    """3D k-space (BART dims [RO, PE1, PE2, COIL]) is reconstructed in hybrid space: one slice per readout
    position, each a (PE1, PE2) image; the fully sampled coil combination is the volume itself."""
    vol = nib.load(EXAMPLE).get_fdata(dtype=np.float32)[30:50, 20:84, 30:62]  # (RO, PE1, PE2) = (20, 64, 32)
    yy, zz = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 32), indexing="ij")
    sens = np.stack([np.exp(-((yy - a) ** 2 + (zz - b) ** 2) / 1.5) for a, b in [(-1, -1), (-1, 1), (1, 0)]])
    sens /= np.sqrt((sens**2).sum(0))
    coil = (vol[None] * sens[:, None]).astype(np.complex64)  # (C, RO, PE1, PE2)
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(coil, axes=(1, 2, 3)), axes=(1, 2, 3), norm="ortho"),
                        axes=(1, 2, 3))
    (tmp_path / "vol.hdr").write_text("# Dimensions\n20 64 32 3\n")
    k.transpose(0, 3, 2, 1).astype(np.complex64).tofile(tmp_path / "vol.cfl")  # C order (C, PE2, PE1, RO)
    res = reconstruct(tmp_path / "vol.cfl", accel=2, center_fraction=0.15, slices="9:11", samples=2, steps=2,
                      model=untrained_recon_model, device="cpu")
    assert res.recon.shape == res.reference.shape == (64, 32, 2) and res.mask.shape == (64, 32, 2)
    for i in range(2):
        assert np.corrcoef(res.reference[:, :, i].ravel(), vol[9 + i].ravel())[0, 1] > 0.99
    assert res.metrics["zerofilled"]["psnr"] > 15 and res.params["axes"] == ["phase-encode", "partition", "readout"]


def test_fully_sampled_kspace_skips_the_sampler(tmp_path):
    """Fully sampled k-space has nothing to infer: the output is the coil combination, with zero spread, and no
    model is loaded (a model path that does not exist is never read). Zero-padded edges count as fully sampled."""
    from neurodiff.mri import MultiCoil, estimate_sensitivities, read_kspace, write_cfl

    k = read_kspace(DATA / "mri" / "gre.dat").data
    combined = MultiCoil(np.ones(k.shape[-2:], bool), estimate_sensitivities(torch.from_numpy(k[0]))).A_adjoint(
        torch.from_numpy(k[0])).abs().numpy()
    res = reconstruct(DATA / "mri" / "gre.dat", samples=3, model="no-such-model", device="cpu", save_samples=True)
    assert res.params["sampler"] == "none" and res.params["model"] is None
    assert np.allclose(res.recon[:, :, 0], combined, atol=1e-6 * combined.max()) and not res.uncertainty.any()
    assert res.samples.shape == (160, 160, 1, 3) and res.metrics is None  # no metrics against itself
    padded = k.copy()
    padded[..., :6, :] = 0
    write_cfl(tmp_path / "padded.cfl", padded)
    assert reconstruct(tmp_path / "padded.cfl", model="no-such-model", device="cpu").params["sampler"] == "none"


def test_kspace_of_another_fft_convention_is_shifted_back(tmp_path):
    """k-space a user wrote as ``fftshift(fft2(x))`` (the image not ifftshifted) gives the image where it is, not
    half a field of view off, and the sidecar says what was done; k-space in neurodiff's convention is kept."""
    from neurodiff.mri import write_cfl

    head = np.moveaxis(nib.load(EXAMPLE).get_fdata(dtype=np.float32)[:, :94, 40:42], 2, 0)[:, None]  # (2, 1, 76, 94)
    write_cfl(tmp_path / "ours.cfl", fft2c(torch.from_numpy(head.astype(np.complex64))).numpy())
    write_cfl(tmp_path / "plain.cfl", np.fft.fftshift(np.fft.fft2(head, norm="ortho"), axes=(-2, -1)))
    ours = reconstruct(tmp_path / "ours.cfl", model="no-such-model", device="cpu")
    res = reconstruct(tmp_path / "plain.cfl", model="no-such-model", device="cpu")
    assert np.allclose(ours.recon, np.moveaxis(head[:, 0], 0, 2), atol=1e-4 * head.max())
    assert np.allclose(res.recon, ours.recon, atol=1e-4 * head.max()) and "kspace_reader_notes" not in ours.params
    assert "half a field of view" in res.params["kspace_reader_notes"][0]


def test_echo_names_the_outputs(tmp_path):
    """``--echo`` of a multi-echo file is recorded and names the outputs ``echo-N`` (echoes do not overwrite each
    other); the single-echo twix phantom read as echo 1 is what it is without it."""
    res = reconstruct(DATA / "mri" / "gre.dat", echo=1, model="no-such-model", device="cpu")
    assert res.params["echo"] == 1
    assert np.array_equal(res.recon, reconstruct(DATA / "mri" / "gre.dat", model="no-such-model", device="cpu").recon)
    paths = output_paths(DATA / "mri" / "gre.dat", tmp_path, echo=2)
    assert paths["recon"].name == "gre_echo-2_desc-recon.nii.gz"
    assert paths["sidecar"].name == "gre_echo-2_desc-recon.json"


def test_zero_padded_kspace_undersampled_retrospectively(untrained_recon_model, tmp_path):
    """Fully sampled k-space stored with zero-padded edge lines (as fastMRI files are) takes --accel; the padded
    lines stay unsampled. Already undersampled k-space refuses it with one clear error."""
    from neurodiff.errors import InputError
    from neurodiff.mri import read_kspace, write_cfl

    k = read_kspace(DATA / "mri" / "gre.dat").data.copy()
    k[..., :6, :] = 0
    write_cfl(tmp_path / "padded.cfl", k)
    res = reconstruct(tmp_path / "padded.cfl", accel=2, center_fraction=0.1, samples=2, steps=2,
                      model=untrained_recon_model, device="cpu")
    assert not res.mask[:6].any() and 0.4 < res.mask.mean() < 0.5
    assert res.metrics["zerofilled"]["psnr"] > 15
    whole = kspace_noise_variance(torch.from_numpy(k[0, :, 6:]), np.ones(k.shape[-2:], bool)[6:]) ** 0.5
    assert res.params["kspace_noise_std"][0] == pytest.approx(whole, rel=0.2)  # read where the padding ends
    left_out = (k.shape[-2] - 6) / k.shape[-2] - res.params["sampled_fraction"]  # the padding holds no noise
    unmeasured = res.params["kspace_noise_std"][0] * np.sqrt(left_out / 2)
    assert res.params["uncertainty_unmeasured_noise_std"][0] == pytest.approx(unmeasured, rel=2e-3)
    write_cfl(tmp_path / "under.cfl", k * res.mask[None, None, :, :, 0])
    with pytest.raises(InputError, match="already undersampled"):
        reconstruct(tmp_path / "under.cfl", accel=2, model=untrained_recon_model, device="cpu")


@pytest.mark.parametrize("spec, n, expect", [(None, 9, (0, 9)), ("2:5", 9, (2, 5)), (":3", 9, (0, 3)),
                                             ("-2:", 9, (7, 9))])
def test_parse_slices(spec, n, expect):
    sl = parse_slices(spec, n)
    assert (sl.start, sl.stop) == expect


def test_soft_data_consistency_blends():
    """A finite weight pulls measured k-space towards the data without replacing it; hard (inf) replaces it.
    Uses the shipped model, whose x0-hat departs from the data (an untrained one returns the zero-filled image)."""
    src = DATA / "io" / "complex_crop.nii.gz"
    x = torch.from_numpy(np.moveaxis(nib.load(src).get_fdata(dtype=np.complex64), 2, 0))
    kw = dict(accel=3, samples=2, steps=3, device="cpu")
    hard, soft = reconstruct(src, **kw), reconstruct(src, dc_weight=1.0, **kw)
    m = torch.from_numpy(hard.mask[:, :, 0].astype(bool))
    k_in = fft2c(x)[:, m]
    err = {n: (fft2c(torch.from_numpy(np.moveaxis(r.recon, 2, 0)))[:, m] - k_in).abs().mean()
           for n, r in (("hard", hard), ("soft", soft))}
    assert err["hard"] < 1e-3 * k_in.abs().mean() < err["soft"]
    assert soft.params["dc_weight"] == 1.0


def _coil_kspace(img: np.ndarray, coils: int = 4) -> np.ndarray:
    """Multi-coil centred k-space ``(S, C, H, W)`` of slices ``(S, H, W)`` with smooth synthetic sensitivities."""
    s, h, w = img.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    centres = [(-1, -1), (-1, 1), (1, -1), (1, 1)][:coils]
    sens = np.stack([np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 1.5) * np.exp(1j * (a * yy + b * xx))
                     for a, b in centres])
    sens /= np.sqrt((np.abs(sens) ** 2).sum(0, keepdims=True))
    return fft2c(torch.from_numpy((img[:, None] * sens[None]).astype(np.complex64))).numpy()


def test_shipped_model_beats_zero_filling_single_and_multicoil(tmp_path):
    """The shipped model on the example scan (never used in training): better than zero-filling, single-coil image
    input and multi-coil k-space (BART .cfl) alike."""
    from neurodiff.mri import write_cfl

    kw = dict(accel=4, center_fraction=0.08, samples=4, steps=10, device="cpu", seed=1)
    single = reconstruct(EXAMPLE, slices="38:40", **kw)
    assert single.metrics["recon"]["psnr"] > single.metrics["zerofilled"]["psnr"] + 0.5
    assert single.metrics["recon"]["ssim"] > single.metrics["zerofilled"]["ssim"]
    img = np.moveaxis(nib.load(EXAMPLE).get_fdata(dtype=np.float32)[:, :, 38:40], 2, 0)
    write_cfl(tmp_path / "coils.cfl", _coil_kspace(img))
    multi = reconstruct(tmp_path / "coils.cfl", **kw)
    assert multi.recon.shape == img.shape[1:] + (2,)
    assert multi.metrics["recon"]["psnr"] > multi.metrics["zerofilled"]["psnr"] + 0.5


def test_redundant_coils_are_compressed(untrained_recon_model, tmp_path):
    """Eight coils that mix four profiles, with noise: compressed on request to the four combinations above the
    noise (auto) or to the count asked for, said in the sidecar, from the slices reconstructed; an image input has
    no coils to compress."""
    from neurodiff.mri import write_cfl

    rng = np.random.default_rng(0)
    img = np.moveaxis(nib.load(EXAMPLE).get_fdata(dtype=np.float32)[:, :, 38:39], 2, 0)
    k = np.tensordot(rng.normal(size=(8, 4)), _coil_kspace(img), axes=([1], [1])).transpose(1, 0, 2, 3)
    k += 0.002 * np.abs(k).max() * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    write_cfl(tmp_path / "coils.cfl", k.astype(np.complex64))
    kw = dict(accel=4, samples=2, steps=2, model=untrained_recon_model, device="cpu")
    assert "coil_compression" not in reconstruct(tmp_path / "coils.cfl", **kw).params  # by default every coil
    auto = reconstruct(tmp_path / "coils.cfl", virtual_coils="auto", **kw)
    assert auto.params["coil_compression"]["coils"] == 8 and auto.params["coil_compression"]["virtual_coils"] == 4
    assert auto.metrics["recon"]["psnr"] > auto.metrics["zerofilled"]["psnr"]
    assert reconstruct(tmp_path / "coils.cfl", virtual_coils=2, **kw).params["coil_compression"]["virtual_coils"] == 2
    for bad in ("some", 1, True):
        with pytest.raises(InputError, match="virtual-coils must be auto"):
            reconstruct(tmp_path / "coils.cfl", virtual_coils=bad, **kw)
    with pytest.raises(InputError, match="virtual-coils"):
        reconstruct(EXAMPLE, slices="38:39", virtual_coils=4, **kw)
    # a second slice whose coils mix two other profiles: --slices compresses the slice asked for by its own coils
    other = np.tensordot(rng.normal(size=(8, 2)), _coil_kspace(img)[:, 2:], axes=([1], [1])).transpose(1, 0, 2, 3)
    write_cfl(tmp_path / "two.cfl", np.concatenate([k, 10 * other]).astype(np.complex64))
    assert reconstruct(tmp_path / "two.cfl", virtual_coils="auto", **kw).params["coil_compression"][
        "virtual_coils"] > 4
    first = reconstruct(tmp_path / "two.cfl", slices="0:1", virtual_coils="auto", **kw)
    assert first.params["coil_compression"]["virtual_coils"] == 4


def test_partial_fourier_kspace_is_reconstructed(untrained_recon_model, tmp_path):
    """Raw k-space with one side of the phase encoding skipped (6/8 partial Fourier, as scanners store it) is not
    returned zero-filled as fully sampled data are: it is reconstructed with the phase constraint."""
    from neurodiff.mri import read_kspace, write_cfl

    k = read_kspace(DATA / "mri" / "gre.dat").data.copy()
    k[..., :40, :] = 0
    write_cfl(tmp_path / "pf.cfl", k)
    res = reconstruct(tmp_path / "pf.cfl", samples=2, steps=2, model=untrained_recon_model, device="cpu")
    assert res.params["sampler"] != "none" and res.params["partial_fourier_axis"] == 0
    assert res.uncertainty.max() > 0 and res.params["sampled_fraction"] == 0.75
    # a full scan measures the skipped side too (the mirror of the measured lines: all but the Nyquist line 0)
    sigma = res.params["kspace_noise_std"][0]
    unmeasured = sigma * np.sqrt((159 / 160 - 0.75) / 2)
    assert res.params["uncertainty_unmeasured_noise_std"][0] == pytest.approx(unmeasured, rel=1e-3)


def test_partial_fourier_mask_fills_the_skipped_side(untrained_recon_model, tmp_path):
    """A mask file skipping 3/8 of one side of k-space switches on the phase constraint: the skipped side follows
    from the measured one by conjugate symmetry, so that even an untrained model's reconstruction of a smoothly
    phased image is far closer to it than zero-filling (three slices, one per batch, each with its own phase).
    Drawn masks are never checked (they are not one-sided)."""
    yy, xx = np.mgrid[-1 : 1 : 64j, -1 : 1 : 48j]
    mag = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1) * (1.0 + 0.5 * np.cos(6 * yy) * np.sin(5 * xx))
    phases = [0.8 * yy + 0.5 * xx**2, -0.6 * xx + 0.4 * yy**2, 0.3 * yy * xx]  # each slice its own phase
    image = np.stack([mag * np.exp(1j * ph) for ph in phases], -1).astype(np.complex64)
    mask = np.ones((64, 48, 1), np.uint8)
    mask[:24] = 0
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "pf_mask.nii.gz")
    kw = dict(samples=2, steps=20, model=untrained_recon_model, device="cpu", batch_slices=1)
    res = reconstruct(nib.Nifti1Image(image, np.eye(4)), mask=tmp_path / "pf_mask.nii.gz", **kw)
    assert res.params["partial_fourier_axis"] == 0
    assert res.metrics["recon"]["nmse"] < 0.2 * res.metrics["zerofilled"]["nmse"]
    drawn = reconstruct(nib.Nifti1Image(image, np.eye(4)), accel=4, **kw)
    assert "partial_fourier_axis" not in drawn.params


def test_uncentred_mask_file_is_centred(tmp_path, untrained_recon_model):
    """A mask file written with k-space's centre in its corners reconstructs as its centred version, and says so
    (odd sizes, where fftshift and ifftshift differ); ``mask_layout`` overrides the judgement."""
    image = nib.load(EXAMPLE).slicer[:75, :93, 40:41]
    centred = sampling_mask(image.shape[:2], 4, 0.08, "random", seed=3)[:, :, None].astype(np.uint8)
    files = {}
    for name, plane in (("centred", centred), ("uncentred", np.fft.ifftshift(centred, axes=(0, 1)))):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(plane, image.affine), files[name])
    kw = dict(samples=2, steps=2, model=untrained_recon_model, device="cpu")
    res = {name: reconstruct(image, mask=path, **kw) for name, path in files.items()}
    np.testing.assert_array_equal(res["uncentred"].mask, res["centred"].mask)
    np.testing.assert_allclose(res["uncentred"].recon, res["centred"].recon)
    assert "mask_notes" not in res["centred"].params
    assert "fftshifted" in res["uncentred"].params["mask_notes"][0]
    kept = reconstruct(image, mask=files["uncentred"], mask_layout="centred", **kw)
    np.testing.assert_array_equal(kept.mask[..., 0], np.fft.ifftshift(centred[..., 0]))
    assert "mask_notes" not in kept.params
    moved = reconstruct(image, mask=files["uncentred"], mask_layout="corner", **kw)
    np.testing.assert_array_equal(moved.mask, res["centred"].mask)
    with pytest.raises(InputError, match="--mask-layout must be one of"):
        reconstruct(image, mask=files["centred"], mask_layout="middle", **kw)
