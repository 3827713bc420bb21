import nibabel as nib
import numpy as np
import pytest

from neurodiff.errors import InputError
from neurodiff.io import check_finite, load_image, negative_offset, save_like


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def _save(data, affine, path):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_load_returns_float32_in_file_order(colin_path):
    data, record = load_image(colin_path)
    stored = np.asarray(nib.load(colin_path).dataobj)
    assert data.dtype == np.float32 and data.shape == (20, 24, 18)
    np.testing.assert_array_equal(data, stored)
    assert record.path == colin_path and record.shape == (20, 24, 18)
    assert record.orientation is None and not record.is_complex


def test_roundtrip_keeps_geometry_and_values(colin_path, tmp_path):
    data, record = load_image(colin_path)
    out = save_like(data * 1.5, record, tmp_path / "out.nii.gz")
    src, res = nib.load(colin_path), nib.load(out)
    np.testing.assert_array_equal(res.affine, src.affine)
    np.testing.assert_allclose(res.header.get_qform(), src.header.get_qform())
    np.testing.assert_allclose(res.header.get_sform(), src.header.get_sform())
    for key in ("qform_code", "sform_code"):
        assert res.header[key] == src.header[key]
    assert res.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(res.dataobj), data * 1.5)


def test_save_resets_scaling(tmp_path):
    values = np.linspace(-1, 1, 7 * 8 * 9).reshape(7, 8, 9)
    img = nib.Nifti1Image(values, np.eye(4))
    img.set_data_dtype(np.int16)  # nibabel stores int16 with scl_slope != 1
    scaled = tmp_path / "scaled.nii.gz"
    nib.save(img, scaled)
    assert nib.load(scaled).header["scl_slope"] not in (0, 1)
    data, record = load_image(scaled)
    np.testing.assert_allclose(data, values, atol=1e-4)
    res = nib.load(save_like(data, record, tmp_path / "out.nii"))
    assert np.isnan(res.header["scl_slope"]) and res.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(res.dataobj), data)


def test_canonical_roundtrip_restores_file_orientation(colin_path, tmp_path):
    img = nib.load(colin_path)
    flip = img.affine @ np.array([[-1, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    las = _save(np.asarray(img.dataobj)[::-1], flip, tmp_path / "las.nii.gz")
    data, record = load_image(las, canonical=True)
    assert nib.aff2axcodes(flip) == ("L", "A", "S")
    assert record.orientation is not None
    np.testing.assert_array_equal(data, np.asarray(img.dataobj))  # the RAS+ original
    samples = np.stack([data, 2 * data], axis=-1)
    out = nib.load(save_like(samples, record, tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(out.affine, flip)
    assert out.shape == (20, 24, 18, 2)
    np.testing.assert_array_equal(np.asarray(out.dataobj)[..., 1], 2 * np.asarray(img.dataobj)[::-1])


def test_canonical_permuted_2d_image(tmp_path):
    data = np.arange(6 * 7, dtype=np.float32).reshape(6, 7)
    affine = np.array([[0, 2.0, 0, 0], [0, 0, 1, 0], [-3, 0, 0, 0], [0, 0, 0, 1]])  # axes: I, R, A
    path = _save(data, affine, tmp_path / "slice.nii")
    loaded, record = load_image(path, canonical=True)
    np.testing.assert_array_equal(loaded, data.T[:, ::-1])
    out = nib.load(save_like(loaded, record, tmp_path / "out.nii"))
    assert out.shape == (6, 7)
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)


def test_in_memory_image_is_copied():
    img = nib.Nifti1Image(np.ones((7, 8, 9), np.float32), np.eye(4))
    data, record = load_image(img)
    data[:] = 5
    assert record.path is None and np.asarray(img.dataobj).max() == 1


def test_complex_roundtrip(complex_path, tmp_path):
    data, record = load_image(complex_path)
    assert data.dtype == np.complex64 and record.is_complex and data.shape == (16, 18, 5)
    np.testing.assert_array_equal(data, np.asarray(nib.load(complex_path).dataobj))
    out = nib.load(save_like(data * 1j, record, tmp_path / "out.nii.gz"))
    assert out.get_data_dtype() == np.complex64
    np.testing.assert_array_equal(np.asarray(out.dataobj), data * 1j)
    np.testing.assert_array_equal(out.affine, nib.load(complex_path).affine)
    magnitude = nib.load(save_like(np.abs(data), record, tmp_path / "mag.nii.gz"))
    assert magnitude.get_data_dtype() == np.float32


def test_trailing_singleton_is_squeezed(colin_path, tmp_path):
    img = nib.load(colin_path)
    path = _save(np.asarray(img.dataobj)[..., None], img.affine, tmp_path / "vol1.nii.gz")
    data, record = load_image(path, ndim=(3,))
    assert data.shape == (20, 24, 18) and record.shape == (20, 24, 18, 1)
    assert nib.load(save_like(data, record, tmp_path / "out.nii.gz")).shape == (20, 24, 18, 1)


def test_single_slice_loads_as_3d(tmp_path):
    path = _save(np.ones((7, 8, 1), np.int16), np.eye(4), tmp_path / "slice.nii.gz")
    assert load_image(path)[0].shape == (7, 8, 1)


def test_4d_is_refused(colin_path, tmp_path):
    img = nib.load(colin_path)
    path = _save(np.stack([np.asarray(img.dataobj)] * 3, -1), img.affine, tmp_path / "run.nii.gz")
    with pytest.raises(InputError) as error:
        load_image(path, ndim=(3,))
    message = _one_line(error)
    assert message.startswith(f"{path} is 4D (shape (20, 24, 18, 3)); a 3D image is expected")
    assert "fslroi" in message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.nii.gz", "input file not found: "),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "x.nii.gz", "not an image\n"), "is not a readable NIfTI file (not a gzip file)"),
        (lambda d: _write(d / "x.nii", "not an image\n"), "is not a readable NIfTI file"),
    ],
)
def test_unreadable_inputs(tmp_path, make, expected):
    with pytest.raises(InputError) as error:
        load_image(make(tmp_path))
    assert expected in _one_line(error)


def test_truncated_file(colin_path, tmp_path):
    raw = colin_path.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as error:
        load_image(path)
    assert _one_line(error) == f"{path} is not a readable NIfTI file (truncated or corrupt compressed data)"


def _write(path, text):
    path.write_text(text)
    return path


def test_nonfinite_inputs(tmp_path):
    data = np.ones((7, 8, 9), np.float32)
    data[0, 0, :2] = np.nan
    partial = _save(data, np.eye(4), tmp_path / "partial.nii.gz")
    with pytest.raises(InputError) as error:
        load_image(partial)
    assert _one_line(error).startswith(f"{partial} contains 2 NaN/inf voxels")
    assert np.isnan(load_image(partial, allow_nonfinite=True)[0]).sum() == 2
    empty = _save(np.full((7, 8, 9), np.nan, np.float32), np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError) as error:
        load_image(empty, allow_nonfinite=True)
    assert _one_line(error) == f"{empty} contains no finite values"


def test_all_zero_is_loaded(tmp_path):
    data, _ = load_image(_save(np.zeros((7, 8, 9), np.float32), np.eye(4), tmp_path / "z.nii.gz"))
    assert not data.any()


def test_check_finite_complex():
    data = np.ones(5, np.complex64)
    data[1] = complex(1, np.inf)
    with pytest.raises(InputError, match="recon contains 1 NaN/inf voxels"):
        check_finite(data, "recon", allow_partial=False)
    check_finite(data, "recon", allow_partial=True)


def test_save_checks_shape_and_name(colin_path, tmp_path):
    data, record = load_image(colin_path)
    with pytest.raises(ValueError, match="does not match"):
        save_like(data[:-1], record, tmp_path / "out.nii.gz")
    with pytest.raises(ValueError, match="does not match"):
        save_like(data[..., None], record, tmp_path / "out.nii.gz", extra_dims_ok=False)
    with pytest.raises(InputError, match="must end in .nii"):
        save_like(data, record, tmp_path / "out.mgz")
    with pytest.raises(InputError, match="cannot write"):
        save_like(data, record, tmp_path / "no" / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_save_integer_dtype(colin_path, tmp_path):
    data, record = load_image(colin_path)
    mask = nib.load(save_like(data > 50, record, tmp_path / "mask.nii.gz", dtype=np.uint8))
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (data > 50).astype(np.uint8))


def test_negative_offset_only_for_clearly_negative_real_images():
    img = np.linspace(0, 100, 50, dtype=np.float32)
    assert negative_offset(img) == 0 and negative_offset(img - 4) == 0  # ringing-sized negatives are kept
    assert negative_offset(img - 30) == -30  # an offset
    assert negative_offset((img - 50) / 10) == -5  # z-scored
    assert negative_offset((img - 50).astype(np.complex64)) == 0  # complex data have no sign to lose
