import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from neurodiff.errors import InputError, OutputExistsError
from neurodiff.mri.fft import fft2c, ifft2c
from neurodiff.mri.operators import rss
from neurodiff.mri.masks import sampling_mask
from neurodiff.mri.raw import _recentred, kspace_echoes, read_kspace, write_cfl

from ..conftest import ECHO_FACTOR

TWIX = Path(__file__).parents[1] / "data" / "mri" / "gre.dat"


@pytest.fixture(scope="module")
def twix():
    pytest.importorskip("twixtools")
    return read_kspace(TWIX)


def _kspace(shape, seed=0):
    """Centred k-space of a smooth random object: peak at DC like measured data."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    image = (yy**2 + xx**2 < 0.6) * (1 + rng.random(shape))
    return fft2c(torch.from_numpy(image.astype(np.complex64))).numpy()


def test_twix_phantom(twix):
    # 160 lines x 320 oversampled readout samples, 2 coils, 1 slice -> oversampling removed
    assert twix.data.shape == (1, 2, 160, 160) and twix.data.dtype == np.complex64
    assert twix.source == "twix" and twix.voxel_size == pytest.approx((1.25, 1.25, 4.0))
    assert twix.axes == ("phase-encode", "readout", "slice")
    energy = (np.abs(twix.data) ** 2).sum(axis=(0, 1))
    assert np.unravel_index(energy.argmax(), energy.shape) == pytest.approx((80, 80), abs=2)  # centred
    image = rss(ifft2c(torch.from_numpy(twix.data)))[0].numpy()
    assert np.isfinite(image).all()
    centre = image[60:100, 60:100].mean()
    corners = [image[:16, :16], image[:16, -16:], image[-16:, :16], image[-16:, -16:]]
    assert all(centre > 3 * c.mean() for c in corners)


def test_cfl_roundtrip(twix, tmp_path):
    write_cfl(tmp_path / "k", twix.data)
    back = read_kspace(tmp_path / "k.cfl")
    assert back.source == "bart"
    np.testing.assert_array_equal(back.data, twix.data)
    hdr = (tmp_path / "k.hdr").read_text().splitlines()
    assert hdr[1].split()[:4] == ["160", "160", "1", "2"]  # [RO, PE1, PE2, COIL]
    with pytest.raises(OutputExistsError):
        write_cfl(tmp_path / "k.cfl", twix.data)


def test_cfl_asymmetric_multislice(tmp_path):
    data = _kspace((3, 2, 5, 7))
    write_cfl(tmp_path / "a.hdr", data)
    np.testing.assert_array_equal(read_kspace(tmp_path / "a.hdr").data, data)
    raw = np.fromfile(tmp_path / "a.cfl", dtype=np.complex64)
    assert raw[1] == data[0, 0, 0, 1]  # Fortran order: readout varies fastest
    write_cfl(tmp_path / "a", data[:1], force=True)
    assert read_kspace(tmp_path / "a.cfl").data.shape == (1, 2, 5, 7)


def test_nifti_roundtrip(tmp_path):
    k = np.moveaxis(_kspace((2, 3, 5, 6)), (0, 1), (2, 3))  # (H, W, S, C)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    nib.save(nib.Nifti1Image(k, affine), tmp_path / "k.nii.gz")
    back = read_kspace(tmp_path / "k.nii.gz")
    assert back.data.shape == (2, 3, 5, 6) and back.source == "nifti"
    np.testing.assert_array_equal(back.data, np.moveaxis(k, (2, 3), (0, 1)))
    assert back.voxel_size == pytest.approx((0.5, 0.7, 2.0))
    np.testing.assert_allclose(back.affine, affine, rtol=1e-6)  # NIfTI stores float32
    nib.save(nib.Nifti1Image(k[:, :, 0, 0], affine), tmp_path / "single.nii")
    assert read_kspace(tmp_path / "single.nii").data.shape == (1, 1, 5, 6)


def test_fastmri(tmp_path):
    h5py = pytest.importorskip("h5py")
    k = _kspace((2, 3, 12, 8))  # fastMRI order (S, C, readout, phase-encode)
    header = (
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        "<encodedSpace><matrixSize><x>12</x><y>8</y><z>1</z></matrixSize>"
        "<fieldOfView_mm><x>240</x><y>160</y><z>3</z></fieldOfView_mm></encodedSpace>"
        "<reconSpace><matrixSize><x>6</x><y>8</y><z>1</z></matrixSize>"
        "<fieldOfView_mm><x>120</x><y>160</y><z>3</z></fieldOfView_mm></reconSpace>"
        "</encoding></ismrmrdHeader>"
    )
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["kspace"] = k
    with h5py.File(tmp_path / "header.h5", "w") as f:
        f["kspace"] = k[:, 0]  # single coil
        f["ismrmrd_header"] = header
    with h5py.File(tmp_path / "chunked.h5", "w") as f:  # compressed, chunks spanning slices: read chunk-wise
        f.create_dataset("kspace", data=np.concatenate([k] * 3), chunks=(2, 3, 12, 8), compression="gzip")
    plain = read_kspace(tmp_path / "plain.h5")
    assert plain.source == "fastmri"
    np.testing.assert_array_equal(plain.data, np.swapaxes(k, -1, -2))
    np.testing.assert_array_equal(read_kspace(tmp_path / "chunked.h5").data, np.concatenate([plain.data] * 3))
    cropped = read_kspace(tmp_path / "header.h5")
    assert cropped.data.shape == (2, 1, 8, 6)  # readout oversampling 12 -> 6 removed
    assert cropped.voxel_size == pytest.approx((20.0, 20.0, 3.0))
    full_image = ifft2c(torch.from_numpy(np.swapaxes(k[:, :1], -1, -2)))[..., 3:9]
    torch.testing.assert_close(ifft2c(torch.from_numpy(cropped.data)), full_image, rtol=0, atol=1e-5)
    with h5py.File(tmp_path / "shifted.h5", "w") as f:
        f["kspace"] = np.fft.ifftshift(k, axes=(-2, -1))
    shifted = read_kspace(tmp_path / "shifted.h5")  # uncentred: put back
    np.testing.assert_array_equal(shifted.data, plain.data)
    assert shifted.notes == ("k-space stored uncentred (peak in a corner): fftshifted",) and plain.notes == ()
    bad = k.copy()
    bad[0, 0, 0, 0] = np.nan  # checked before the centring (whose peak search a NaN would fool)
    for name, data, message in (("nan.h5", bad, "NaN"), ("zero.h5", 0 * k, "all zero")):
        with h5py.File(tmp_path / name, "w") as f:
            f["kspace"] = data
        with pytest.raises(InputError, match=message):
            read_kspace(tmp_path / name)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("dataset/data", data=np.zeros(3))
    with pytest.raises(InputError, match="neither a 'kspace' dataset"):
        read_kspace(tmp_path / "other.h5")


def _head_slices(n_slices=3, shape=(40, 36)):
    """``(S, H, W)`` complex: a head-like object (a textured ellipse in the middle of the field of view, the
    background empty) with a smooth phase."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    inside = (yy / 0.7) ** 2 + (xx / 0.6) ** 2 < 1
    image = inside * (1 + rng.random((n_slices, *shape))) * np.exp(1j * (yy + 0.5 * xx))
    return image.astype(np.complex64)


@pytest.mark.parametrize("convention", ["ours", "fftshift(fft2)", "fft2"])
@pytest.mark.parametrize("undersampled", [False, True])
@pytest.mark.parametrize("shape", [(40, 36), (41, 37)])
def test_foreign_fft_conventions(tmp_path, convention, undersampled, shape):
    image = _head_slices(shape=shape)
    mask = sampling_mask(image.shape[1:], 4, 0.08, "random", seed=3) if undersampled else np.ones(image.shape[1:])
    if convention == "ours":
        k = fft2c(torch.from_numpy(image)).numpy() * mask
    else:
        k = np.fft.fftshift(np.fft.fft2(image, norm="ortho"), axes=(-2, -1)) * mask
        if convention == "fft2":
            k = np.fft.ifftshift(k, axes=(-2, -1))
    nib.save(nib.Nifti1Image(np.moveaxis(k, 0, 2), np.eye(4)), tmp_path / "k.nii.gz")
    ks = read_kspace(tmp_path / "k.nii.gz")
    expected = ifft2c(fft2c(torch.from_numpy(image)) * torch.from_numpy(mask).bool()).abs()
    torch.testing.assert_close(ifft2c(torch.from_numpy(ks.data[:, 0])).abs(), expected, rtol=0, atol=1e-4)
    assert len(ks.notes) == {"ours": 0, "fftshift(fft2)": 1, "fft2": 2}[convention]
    assert all("half a field of view" in n for n in ks.notes[-1:])


@pytest.mark.parametrize("convention", ["fftshift(fftn)", "fftn"])
def test_3d_bart_of_another_convention(tmp_path, convention):
    """A 3D BART file written as ``fftshift(fftn(x))`` or ``fftn(x)``: the slices along the readout, which the reader
    inverse-transforms itself, come back in order too, not only the in-plane axes."""
    zz, yy, xx = np.mgrid[-1 : 1 : 21j, -1 : 1 : 20j, -1 : 1 : 17j]
    vol = (((zz / 0.6) ** 2 + (yy / 0.7) ** 2 + (xx / 0.5) ** 2 < 1) * (1 + 0.5 * (xx > 0.3))).astype(np.complex64)
    dims = list(vol.shape) + [1]  # BART [RO, PE1, PE2, COIL]: vol axes (readout, PE1, PE2)
    for name, k in (("ours", np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(vol), norm="ortho"))),
                    ("theirs", np.fft.fftshift(np.fft.fftn(vol, norm="ortho")))):
        k = k if name == "ours" or convention == "fftshift(fftn)" else np.fft.ifftshift(k)
        (tmp_path / f"{name}.hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
        k.astype(np.complex64).ravel(order="F").tofile(tmp_path / f"{name}.cfl")
    ours, theirs = (read_kspace(tmp_path / f"{name}.cfl") for name in ("ours", "theirs"))
    assert ours.notes == () and "half a field of view" in theirs.notes[-1]
    images = [np.abs(ifft2c(torch.from_numpy(ks.data)).numpy()) for ks in (ours, theirs)]  # (X, C, H, P)
    np.testing.assert_allclose(images[1], images[0], atol=1e-4)
    np.testing.assert_allclose(images[0][:, 0], np.abs(vol).transpose(0, 1, 2), atol=1e-4)


@pytest.mark.parametrize("convention", ["ours", "fftshift(fft2)"])
def test_coil_sensitivity_fall_off_does_not_fool_the_recentring(convention):
    """Multi-coil data are judged on the object's support, not its energy: coils bright at the edges of a tight
    field of view (the object filling one axis) neither trigger a shift of correct data nor hide a wrong one."""
    yy, xx = np.mgrid[-1 : 1 : 40j, -1 : 1 : 36j]
    image = np.broadcast_to(np.abs(xx) < 0.6, (2, 40, 36))  # fills axis 0
    coils = np.stack([np.exp(-((yy - 1.1 * np.sin(a)) ** 2 + (xx - 1.1 * np.cos(a)) ** 2) / 0.4)
                      for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])  # centre ~5x darker than the edges
    coil_images = (image[:, None] * coils[None]).astype(np.complex64)
    if convention == "ours":
        k = fft2c(torch.from_numpy(coil_images)).numpy()
    else:
        k = np.fft.fftshift(np.fft.fft2(coil_images, norm="ortho"), axes=(-2, -1))
    data, notes = _recentred(k, "coils.cfl")
    assert len(notes) == (convention != "ours")
    np.testing.assert_allclose(np.abs(ifft2c(torch.from_numpy(data)).numpy()), np.abs(coil_images), atol=1e-4)


def test_scanner_formats_are_not_recentred():
    k = np.fft.ifftshift(fft2c(torch.from_numpy(_head_slices()[:, None])).numpy(), axes=(-2, -1))
    with pytest.raises(InputError, match="scan.dat: k-space peak is in a corner"):
        _recentred(k, "scan.dat", recentre=False)


def test_calgary_campinas(tmp_path):
    h5py = pytest.importorskip("h5py")
    image = np.stack([_head_slices(4) * c for c in (1.0, 0.5j)], axis=-1)  # (x, ky, kz, coils)
    k = np.fft.fft2(image, axes=(1, 2), norm="ortho")  # their convention: numpy's fft2, no shifts
    k[:, :, 13:18] = 0  # partial Fourier along kz (its highest frequencies), as the dataset was acquired
    stored = np.empty(k.shape[:3] + (4,), np.float32)
    stored[..., ::2], stored[..., 1::2] = k.real, k.imag
    with h5py.File(tmp_path / "e14089s3_P53248.7.h5", "w") as f:
        f["kspace"] = stored
    ks = read_kspace(tmp_path / "e14089s3_P53248.7.h5")
    assert ks.source == "calgary-campinas" and ks.data.shape == (4, 2, 40, 36) and ks.axes[2] == "readout"
    expected = np.abs(np.fft.ifft2(k, axes=(1, 2), norm="ortho")).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(np.abs(ifft2c(torch.from_numpy(ks.data)).numpy()), expected, atol=1e-4)
    with h5py.File(tmp_path / "ri.h5", "w") as f:  # (S, readout, PE, 2): real/imaginary last, or two coils?
        f["kspace"] = stored[..., :2]
    with pytest.raises(InputError, match="last axis of 2 is ambiguous"):
        read_kspace(tmp_path / "ri.h5")
    with h5py.File(tmp_path / "magnitude.h5", "w") as f:  # a real 4D array that is not this layout
        f["kspace"] = np.abs(stored[:, :3, :3])
    with pytest.raises(InputError, match="must be complex"):
        read_kspace(tmp_path / "magnitude.h5")


def _ismrmrd_file(path, lines, matrix, centre_lin, fov=(240.0, 240.0, 4.0), recon_x=None, partitions=1, centre_par=0):
    """Write ISMRMRD HDF5 with the reference ``ismrmrd`` package: ``lines`` = [(data (C, N), lin, slc, flags[,
    partition[, contrast]])]."""
    ismrmrd = pytest.importorskip("ismrmrd")
    x, y = matrix
    space = ("<{0}><matrixSize><x>{1}</x><y>{2}</y><z>{6}</z></matrixSize><fieldOfView_mm><x>{3}</x><y>{4}</y>"
             "<z>{5}</z></fieldOfView_mm></{0}>")
    xml = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
           + space.format("encodedSpace", x, y, fov[0] * x / (recon_x or x), fov[1], fov[2], partitions)
           + space.format("reconSpace", recon_x or x, y, *fov, partitions)
           + f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{y - 1}</maximum>"
           f"<center>{centre_lin}</center></kspace_encoding_step_1><kspace_encoding_step_2><minimum>0</minimum>"
           f"<maximum>{partitions - 1}</maximum><center>{centre_par}</center></kspace_encoding_step_2>"
           "</encodingLimits><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")
    ds = ismrmrd.Dataset(str(path), "/dataset", create_if_needed=True)
    ds.write_xml_header(xml)
    for data, lin, slc, flags, *extra in lines:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
        acq.idx.kspace_encode_step_1, acq.idx.slice = lin, slc
        acq.idx.kspace_encode_step_2, acq.idx.contrast = (list(extra) + [0, 0])[:2]
        acq.center_sample = data.shape[-1] // 2
        for bit in flags:
            acq.set_flag(bit)
        ds.append_acquisition(acq)
    ds.close()


def _hybrid(k):
    """Expected hybrid space of centred 3D k-space ``(C, P, H, W)``: inverse FFT along readout W, as
    ``(W, C, H, P)``."""
    x = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=-1), axis=-1, norm="ortho"), axes=-1)
    return x.transpose(3, 0, 2, 1)


def test_ismrmrd_3d(tmp_path):
    """A 3D acquisition (partitions along kspace_encode_step_2) reads as hybrid space: slices along the readout,
    each a (phase-encode, partition) k-space; oversampling cropped, partial Fourier in partitions zero-filled."""
    rng = np.random.default_rng(1)
    image = np.zeros((2, 8, 10, 12), np.complex64)  # (C, P, H, W)
    image[:, 2:6, 3:7, 3:9] = rng.random((2, 4, 4, 6)) + 1
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(image, axes=(1, 2, 3)), axes=(1, 2, 3), norm="ortho"),
                        axes=(1, 2, 3))
    lines = [(k[:, p, i], i, 0, [], p) for p in range(2, 8) for i in range(10)]  # partitions 0-1 not acquired
    _ismrmrd_file(tmp_path / "3d.h5", lines, (12, 10), 5, fov=(120.0, 100.0, 16.0), recon_x=6, partitions=8,
                  centre_par=4)
    back = read_kspace(tmp_path / "3d.h5")
    expected = k.copy()
    expected[:, :2] = 0
    assert back.data.shape == (6, 2, 10, 8)  # (readout cropped 12 -> 6, coils, lines, partitions)
    np.testing.assert_allclose(back.data, _hybrid(expected)[3:9], atol=1e-5)
    assert back.voxel_size == pytest.approx((10.0, 2.0, 20.0))
    assert back.axes == ("phase-encode", "partition", "readout")
    _ismrmrd_file(tmp_path / "slabs.h5", lines + [(k[:, 4, 5], 5, 1, [], 4)], (12, 10), 5, partitions=8,
                  centre_par=4)
    with pytest.raises(InputError, match="multi-slab"):
        read_kspace(tmp_path / "slabs.h5")


def test_readout_cropped_as_lines_are_placed():
    """Removing readout oversampling line by line, as the lines are assembled (asymmetric echoes zero-filled,
    repeats averaged, calibration lines filling only skipped rows), equals removing it from the assembled k-space."""
    from neurodiff.mri.raw import _assemble, _crop_readout, _padded_width

    rng = np.random.default_rng(3)
    for ncol, centre_col, keep in ((16, 8, 8), (15, 5, 7), (12, 9, 12)):
        lines = (rng.standard_normal((9, 2, ncol)) + 1j * rng.standard_normal((9, 2, ncol))).astype(np.complex64)
        lin, slc = np.array([0, 1, 2, 3, 1, 4, 5, 2, 0]), np.zeros(9, int)
        fill = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1], bool)
        args = ((2, ncol), slc, lin, 3, centre_col)
        whole = _assemble(iter(lines), *args, fill=fill)
        assert whole.shape[-1] == _padded_width(ncol, centre_col)
        expected = _crop_readout(whole[:, :, 0], keep)[:, :, None]
        np.testing.assert_allclose(_assemble(iter(lines), *args, fill=fill, readout=keep), expected, atol=1e-5)


def test_ismrmrd_read_in_blocks(tmp_path):
    """Headers and samples are read in blocks of acquisitions (memory); any block size gives the same rows,
    skipped rows included, as reading the table at once."""
    import h5py

    from neurodiff.mri.raw import _ismrmrd_heads, _ismrmrd_samples

    rng = np.random.default_rng(2)
    lines = [((rng.standard_normal((2, 6)) + 1j * rng.standard_normal((2, 6))), i, 0, []) for i in range(7)]
    _ismrmrd_file(tmp_path / "b.h5", lines, (6, 7), 3)
    with h5py.File(tmp_path / "b.h5") as f:
        table = f["dataset/data"]
        whole, dtype = table[()], table.dtype
        rows = np.array([0, 2, 3, 6])
        for block in (1, 2, 3, 100):
            np.testing.assert_array_equal(_ismrmrd_heads(table, block), whole["head"])
            got = list(_ismrmrd_samples(table, rows, (2, 6), block))
            assert len(got) == len(rows)
            for r, g in zip(rows, got):
                np.testing.assert_array_equal(g, lines[r][0].astype(np.complex64))
    with h5py.File(tmp_path / "empty.h5", "w") as f:  # no acquisitions at all: one clear error
        f.create_dataset("dataset/data", (0,), dtype=dtype)
    for read in (read_kspace, kspace_echoes):
        with pytest.raises(InputError, match="no imaging"):
            read(tmp_path / "empty.h5")


def test_twix_reference_lines_fill_only_skipped_lines(twix, tmp_path):
    """GRAPPA-style: the image scan skips every other line and the centre, separately acquired reference lines
    (PATREFSCAN) cover the centre and one line the image scan has; they fill only the skipped lines."""
    import twixtools

    scan = twixtools.read_twix(str(TWIX), parse_pmu=False, verbose=False)[-1]
    image = [m for m in scan["mdb"] if m.is_image_scan()]
    centre = int(image[0].mdh.CenterLin)
    kept = [m.convert_to_local() for m in image if m.cLin % 2 == 0 and abs(m.cLin - centre) > 12]
    reference = []
    for m in image:
        if abs(m.cLin - centre) <= 12 or m.cLin == 20:
            line = m.convert_to_local()
            line.clear_all_flags()
            line.set_flag("PATREFSCAN", True)
            line.data = (-m.data if m.cLin == 20 else m.data).astype(np.complex64)  # line 20 would be wrong
            reference.append(line)
    twixtools.write_twix([dict(scan, mdb=kept + reference)], str(tmp_path / "grappa.dat"))
    back = read_kspace(tmp_path / "grappa.dat")
    measured = np.array([(i % 2 == 0 and abs(i - centre) > 12) or abs(i - centre) <= 12 for i in range(160)])
    rows = np.flatnonzero(measured) + 80 - centre  # the reader puts the centre line on row 80
    np.testing.assert_allclose(back.data[:, :, rows], twix.data[:, :, rows], atol=1e-6 * np.abs(twix.data).max())
    assert not back.data[:, :, np.setdiff1d(np.arange(160), rows)].any()


def test_twix_3d(twix, tmp_path):
    """The 2D phantom repeated over 6 partitions (each scaled by a complex factor) and written as a 3D twix file
    reads as its hybrid space."""
    import twixtools

    scan = twixtools.read_twix(str(TWIX), parse_pmu=False, verbose=False)[-1]
    factors = np.exp(1j * np.arange(6)) * (1 + np.arange(6))
    mdbs = []
    for p, f in enumerate(factors):
        for m in (m for m in scan["mdb"] if m.is_image_scan()):
            line = m.convert_to_local()
            line.mdh.Counter.Par, line.mdh.CenterPar = p, 2  # centre partition 2 of 0-5: 8 after zero-filling
            line.data = (m.data * f).astype(np.complex64)
            mdbs.append(line)
    twixtools.write_twix([dict(scan, mdb=mdbs)], str(tmp_path / "gre3d.dat"))
    back = read_kspace(tmp_path / "gre3d.dat")
    expected = np.zeros((2, 8, 160, 160), np.complex64)
    expected[:, 2:] = factors[None, :, None, None] * twix.data[0][:, None]
    assert back.data.shape == (160, 2, 160, 8)
    np.testing.assert_allclose(back.data, _hybrid(expected), atol=1e-5 * np.abs(expected).max())
    assert back.voxel_size == pytest.approx((1.25, 0.5, 1.25)) and back.axes[1] == "partition"  # 4 mm slab, 8 par.


def test_cfl_3d(tmp_path):
    k = _kspace((2, 3, 4, 6))  # (C, PE2, PE1, RO)
    dims = [6, 4, 3, 2]
    (tmp_path / "v.hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    k.transpose(3, 2, 1, 0).ravel(order="F").astype(np.complex64).tofile(tmp_path / "v.cfl")
    back = read_kspace(tmp_path / "v.cfl")
    np.testing.assert_allclose(back.data, _hybrid(k), atol=1e-5)


def test_ismrmrd_matches_twix(twix, tmp_path):
    """The twix phantom written as ISMRMRD (as siemens_to_ismrmrd would) reads back as the same k-space."""
    import twixtools

    meas = twixtools.read_twix(str(TWIX), parse_pmu=False, verbose=False)[-1]
    mdbs = [m for m in meas["mdb"] if m.is_image_scan()]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=mdbs[0].data.shape) * (1 + 1j)
    lines = [(noise, 0, 0, [19])]  # a noise scan, to be dropped
    lines += [(m.data, m.cLin, m.cSlc, [22] if m.is_flag_set("REFLECT") else []) for m in mdbs]
    lines += [(100 * noise, 80, 0, [23])]  # a navigator on the centre line, to be dropped
    ncol = mdbs[0].data.shape[-1]
    _ismrmrd_file(tmp_path / "gre.h5", lines, (ncol, 160), int(mdbs[0].mdh.CenterLin), fov=(200.0, 200.0, 4.0),
                  recon_x=ncol // 2)
    back = read_kspace(tmp_path / "gre.h5")
    assert back.source == "ismrmrd" and back.data.shape == twix.data.shape == (1, 2, 160, 160)
    np.testing.assert_allclose(back.data, twix.data, rtol=0, atol=1e-6 * np.abs(twix.data).max())
    assert back.voxel_size == pytest.approx((1.25, 1.25, 4.0))
    np.testing.assert_allclose(back.noise, noise, rtol=1e-6)  # kept for prewhitening, (C, N)
    assert twix.noise is None  # the phantom file has no noise adjust scan


def test_multi_echo(twix, multi_echo_twix, tmp_path):
    """Multi-echo twix and ISMRMRD files: each echo is read with ``echo`` (1-based); without it, or past the last
    echo, one clear error says how many there are; ``kspace_echoes`` lists them."""
    import twixtools

    image = [m for m in twixtools.read_twix(str(TWIX), parse_pmu=False, verbose=False)[-1]["mdb"]
             if m.is_image_scan()]
    lines = [(m.data * ECHO_FACTOR**e, m.cLin, m.cSlc, [22] if m.is_flag_set("REFLECT") else [], 0, e)
             for e in (0, 1) for m in image]
    ncol = image[0].data.shape[-1]
    _ismrmrd_file(tmp_path / "me.h5", lines, (ncol, 160), int(image[0].mdh.CenterLin), recon_x=ncol // 2)
    for path in (multi_echo_twix, tmp_path / "me.h5"):
        assert kspace_echoes(path) == (1, 2)
        np.testing.assert_allclose(read_kspace(path, echo=1).data, twix.data, atol=1e-5)
        np.testing.assert_allclose(read_kspace(path, echo=2).data, ECHO_FACTOR * twix.data, atol=1e-5)
        with pytest.raises(InputError, match=r"holds 2 echoes \(contrasts\): choose one with --echo \(1, 2\) or "
                                             r"--echo all"):
            read_kspace(path)
        with pytest.raises(InputError, match=r"--echo 3: me.* no imaging lines of that echo \(echoes present: 1, 2\)"):
            read_kspace(path, echo=3)
    assert read_kspace(TWIX, echo=1).data.shape == twix.data.shape
    assert kspace_echoes(TWIX) == (1,)
    with pytest.raises(InputError, match=r"echoes present: 1\)"):
        read_kspace(TWIX, echo=2)
    _ismrmrd_file(tmp_path / "second.h5", lines[len(image):], (ncol, 160), int(image[0].mdh.CenterLin),
                  recon_x=ncol // 2)  # only the second echo exported: read without --echo, refused as echo 1
    assert kspace_echoes(tmp_path / "second.h5") == (2,)
    np.testing.assert_allclose(read_kspace(tmp_path / "second.h5").data, ECHO_FACTOR * twix.data, atol=1e-5)
    with pytest.raises(InputError, match=r"--echo 1: second.h5 has no imaging lines .*present: 2\)"):
        read_kspace(tmp_path / "second.h5", echo=1)


def test_twix_noise_adjust_scan(twix, twix_with_noise_scan):
    """Noise adjust lines, here in a measurement of their own before the image scan, are returned as ``noise``
    (C, N) and do not enter the k-space."""
    path, noise = twix_with_noise_scan
    back = read_kspace(path)
    np.testing.assert_allclose(back.data, twix.data, atol=1e-6 * np.abs(twix.data).max())
    np.testing.assert_allclose(back.noise, noise)


def test_ismrmrd_partial_fourier_and_calibration(tmp_path):
    k = _kspace((1, 2, 16, 12))[0]  # (C, H, W), centre line 8
    lines = [(k[:, i], i, 0, []) for i in range(5, 16)]  # partial Fourier: lines 0-4 not acquired
    lines += [(-k[:, i], i, 0, [20]) for i in (7, 8)]  # separate calibration lines where imaging exists: ignored
    lines += [(k[:, 3], 3, 0, [20])]  # ... and where it does not: used
    lines += [(k[:, 9, ::-1], 9, 0, [22])]  # a reversed repetition of line 9: flipped, averaged
    _ismrmrd_file(tmp_path / "pf.h5", lines, (12, 16), 8, fov=(240.0, 320.0, 3.0))
    back = read_kspace(tmp_path / "pf.h5")
    expected = k.copy()
    expected[:, [0, 1, 2, 4]] = 0
    np.testing.assert_allclose(back.data[0], expected, atol=1e-6)
    assert back.voxel_size == pytest.approx((20.0, 20.0, 3.0))
    _ismrmrd_file(tmp_path / "noise.h5", [(k[:, 0], 0, 0, [19])], (12, 16), 8)
    with pytest.raises(InputError, match="no imaging k-space lines"):
        read_kspace(tmp_path / "noise.h5")


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not found"):
        read_kspace(tmp_path / "missing.dat")
    with pytest.raises(InputError, match="not found"):
        read_kspace(tmp_path / "missing.cfl")
    (tmp_path / "k.mat").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown k-space format"):
        read_kspace(tmp_path / "k.mat")
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.complex64), np.eye(4)), tmp_path / "zero.nii")
    with pytest.raises(InputError, match="all zero"):
        read_kspace(tmp_path / "zero.nii")
    nan = np.ones((5, 6), np.complex64)
    nan[1, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(InputError, match="NaN"):
        read_kspace(tmp_path / "nan.nii")
    nib.save(nib.Nifti1Image(np.ones((5, 6), np.float32), np.eye(4)), tmp_path / "real.nii")
    with pytest.raises(InputError, match="complex"):
        read_kspace(tmp_path / "real.nii")
    (tmp_path / "notes.dat").write_text("not twix")
    (tmp_path / "notes.h5").write_text("not hdf5")
    for name, match in (("notes.dat", "could not be read as a Siemens twix file"),
                        ("notes.h5", "could not be read as an HDF5 file")):
        for read in (read_kspace, kspace_echoes):
            with pytest.raises(InputError, match=match):
                read(tmp_path / name)
    monkeypatch.setitem(sys.modules, "twixtools", None)
    with pytest.raises(InputError, match=r"pip install neurodiff\[raw\]"):
        read_kspace(TWIX)
