"""The command line as a user meets it: help, info, and one clear line with exit code 2 for bad input,
with nothing written."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app

from .conftest import DATA, ECHO_FACTOR, EXAMPLE

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, code=2):
    assert res.exit_code == code, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neurodiff: error:"), res.stderr
    assert "Traceback" not in res.output


def test_help_and_info():
    assert run("--help").exit_code == 0
    res = run("recon", "--help")
    assert res.exit_code == 0 and "--accel" in res.output and "uncertainty" in res.output
    res = run("info")
    assert res.exit_code == 0 and "torch" in res.output and "monai" in res.output


def test_console_script_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "neurodiff.cli", "recon", str(tmp_path / "missing.nii.gz")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == f"neurodiff: error: input file not found: {tmp_path / 'missing.nii.gz'}"


@pytest.fixture
def scan(tmp_path):
    """A small real scan (two slices of the shipped example) in a fresh folder."""
    img = nib.load(EXAMPLE).slicer[:, :, 40:42]
    path = tmp_path / "in" / "scan.nii.gz"
    path.parent.mkdir()
    nib.save(img, path)
    return path


def _write(path, data, like):
    nib.save(nib.Nifti1Image(data, like.affine), path)
    return path


def bad_inputs(scan):
    like = nib.load(scan)
    d = scan.parent
    (d / "text.nii.gz").write_text("not an image")
    (d / "notes.txt").write_text("hello")
    return {
        "missing": d / "nothere.nii.gz",
        "not nifti": d / "text.nii.gz",
        "unknown type": d / "notes.txt",
        "4D": _write(d / "four.nii.gz", np.ones(like.shape + (3,), np.float32), like),
        "all NaN": _write(d / "nan.nii.gz", np.full(like.shape, np.nan, np.float32), like),
        "all zero": _write(d / "zero.nii.gz", np.zeros(like.shape, np.float32), like),
    }


@pytest.mark.parametrize("case", ["missing", "not nifti", "unknown type", "4D", "all NaN", "all zero"])
def test_bad_input_one_line_exit_2(scan, tmp_path, case, untrained_recon_model):
    src = bad_inputs(scan)[case]
    out = tmp_path / "out"
    res = run("recon", src, "--out-dir", out / "deep", "--model", untrained_recon_model, "--steps", 1, "--samples", 1)
    assert_one_line_error(res)
    assert not out.exists()  # not even the output folder is left behind


def test_bad_masks(scan, tmp_path, untrained_recon_model):
    like = nib.load(scan)
    empty = _write(tmp_path / "empty.nii.gz", np.zeros(like.shape[:2] + (1,), np.uint8), like)
    wrong = _write(tmp_path / "wrong.nii.gz", np.ones((10, 12, 1), np.uint8), like)
    for m in (empty, wrong):
        res = run("recon", scan, "--mask", m, "--model", untrained_recon_model, "--out-dir", tmp_path / "o")
        assert_one_line_error(res)
        assert "np." not in res.output  # plain numbers, not numpy reprs
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_mask_with_accel_slices_out_of_range_and_mask_as_output(scan, tmp_path, untrained_recon_model):
    like = nib.load(scan)
    plane = np.zeros(like.shape[:2] + (1,), np.uint8)
    plane[::2] = 1
    m = _write(tmp_path / "m.nii.gz", plane, like)
    common = ("--model", untrained_recon_model, "--steps", 1, "--samples", 2)
    assert_one_line_error(run("recon", scan, "--mask", m, "--accel", 8, "--out-dir", tmp_path / "o", *common))
    assert_one_line_error(run("recon", scan, "--slices", "1:10", "--out-dir", tmp_path / "o", *common))
    for echo in (2, "all"):  # an image
        assert_one_line_error(run("recon", scan, "--echo", echo, "--out-dir", tmp_path / "o", *common))
    for coils in ("4", "some", "1"):  # an image has no coils to compress; a count is >= 2
        assert_one_line_error(run("recon", scan, "--virtual-coils", coils, "--out-dir", tmp_path / "o", *common))
    own = scan.parent / "scan_desc-mask.nii.gz"  # the user's mask where the mask output would go
    _write(own, plane, like)
    before = own.read_bytes()
    assert_one_line_error(run("recon", scan, "--mask", own, "--force", *common))
    assert own.read_bytes() == before and not (tmp_path / "o").exists()


def test_multicoil_sampling_without_a_calibration_centre(tmp_path, untrained_recon_model):
    """Coil sensitivities need a fully sampled centre: a --center-fraction too small for one is refused in one
    line that says what to raise."""
    res = run("recon", DATA / "mri" / "gre.dat", "--accel", 4, "--center-fraction", 0.005, "--model",
              untrained_recon_model, "--out-dir", tmp_path / "o")
    assert_one_line_error(res)
    assert "fully sampled centre" in res.output and "--center-fraction" in res.output
    plane = np.zeros((160, 160, 1), np.uint8)  # (the phantom's k-space: 160 lines x 160 readout samples)
    plane[1::2] = 1  # every other line, the centre line 80 not among them
    m = _write(tmp_path / "m.nii.gz", plane, nib.Nifti1Image(plane, np.eye(4)))
    res = run("recon", DATA / "mri" / "gre.dat", "--mask", m, "--model", untrained_recon_model, "--out-dir",
              tmp_path / "o")
    assert_one_line_error(res)
    assert "--mask file must sample it" in res.output
    assert not (tmp_path / "o").exists()


def test_all_echoes(multi_echo_twix, tmp_path, untrained_recon_model):
    """``--echo all`` reconstructs each echo of a multi-echo file into its own ``echo-N`` outputs, all or none."""
    common = ("--model", untrained_recon_model, "--steps", 1, "--samples", 2, "--accel", 4, "--out-dir", tmp_path)
    res = run("recon", multi_echo_twix, "--echo", "all", *common)
    assert res.exit_code == 0, res.output
    recon = [nib.load(tmp_path / f"me_echo-{e}_desc-zerofilled.nii.gz").get_fdata() for e in (1, 2)]
    np.testing.assert_allclose(recon[1], abs(ECHO_FACTOR) * recon[0], rtol=1e-3, atol=1e-3 * recon[0].max())
    assert json.loads((tmp_path / "me_echo-2_desc-recon.json").read_text())["Parameters"]["echo"] == 2
    assert "(echo 2) in" in res.output
    (tmp_path / "me_echo-1_desc-recon.nii.gz").unlink()
    assert_one_line_error(run("recon", multi_echo_twix, "--echo", "all", *common))  # echo 2's outputs exist
    assert not (tmp_path / "me_echo-1_desc-recon.nii.gz").exists()
    assert_one_line_error(run("recon", multi_echo_twix, "--echo", "second", *common))


def test_2d_input_gives_2d_outputs(scan, tmp_path, untrained_recon_model):
    like = nib.load(scan)
    src = _write(tmp_path / "slice.nii.gz", like.get_fdata(dtype=np.float32)[:, :, 0], like)
    res = run("recon", src, "--model", untrained_recon_model, "--steps", 1, "--samples", 1, "--save-samples")
    assert res.exit_code == 0, res.output
    assert "one sample has no spread" in res.stderr
    for desc in ("recon", "uncertainty", "zerofilled", "mask"):
        out = nib.load(tmp_path / f"slice_desc-{desc}.nii.gz")
        assert out.shape == like.shape[:2] and np.allclose(out.affine, like.affine)
    assert nib.load(tmp_path / "slice_desc-samples.nii.gz").shape == like.shape[:2] + (1, 1)  # samples: 4th axis
    params = json.loads((tmp_path / "slice_desc-recon.json").read_text())["Parameters"]
    assert params["slice_range"] == [0, 1] and params["accel"] == 4.0 and params["mask"] is None


def test_unwritable_output_folder(scan, tmp_path, untrained_recon_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run("recon", scan, "--out-dir", blocker / "sub", "--model", untrained_recon_model)
    assert_one_line_error(res)


def test_no_overwrite_without_force(scan, untrained_recon_model):
    args = ("recon", scan, "--model", untrained_recon_model, "--steps", 1, "--samples", 2, "-q")
    assert run(*args).exit_code == 0
    recon = scan.parent / "scan_desc-recon.nii.gz"
    before = recon.read_bytes()
    assert (scan.parent / "scan_desc-recon.png").read_bytes()[:4] == b"\x89PNG"  # summary figure with calibration
    assert_one_line_error(run(*args))
    assert recon.read_bytes() == before
    assert run(*args, "--force", "--seed", 1).exit_code == 0
    assert recon.read_bytes() != before
    assert not [p for p in scan.parent.iterdir() if p.name.startswith(".tmp")]


def test_unknown_model(scan):
    assert_one_line_error(run("recon", scan, "--model", "no-such-model"))


@pytest.mark.parametrize("case", ["missing", "not nifti", "unknown type", "4D", "all NaN", "all zero"])
def test_anomaly_bad_input_one_line_exit_2(scan, tmp_path, case, untrained_anomaly_model):
    src = bad_inputs(scan)[case]
    out = tmp_path / "out"
    assert_one_line_error(run("anomaly", src, "--out-dir", out, "--model", untrained_anomaly_model))
    assert not out.exists() or not any(out.iterdir())


def test_anomaly_bad_brain_mask_and_unknown_contrast(scan, tmp_path, untrained_anomaly_model):
    like = nib.load(scan)
    empty = _write(tmp_path / "empty.nii.gz", np.zeros(like.shape, np.uint8), like)
    out = tmp_path / "o"
    res = run("anomaly", scan, "--brain-mask", empty, "--model", untrained_anomaly_model, "--out-dir", out)
    assert_one_line_error(res)
    assert "brain mask is empty" in res.stderr
    res = run("anomaly", scan, "--brain-mask", empty, "--brain-mask", empty, "--model", untrained_anomaly_model)
    assert_one_line_error(res)
    res = run("anomaly", scan, "--out-dir", out)  # scan.nii.gz has no contrast suffix
    assert_one_line_error(res)
    assert "--contrast" in res.stderr
    assert_one_line_error(run("anomaly", scan, "--model", untrained_anomaly_model, "--fpr", 2))
    assert_one_line_error(run("anomaly", scan, "--model", untrained_anomaly_model, "--fpr", 0.9))
    assert_one_line_error(run("anomaly", scan, "--model", untrained_anomaly_model, "--lesion-mask", empty))
    assert not out.exists() or not any(out.iterdir())
