import json
from pathlib import Path

import numpy as np
import pytest

from neurodiff.errors import InputError
from neurodiff.io import derivative_path, write_sidecar


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("scan.nii.gz", "scan_desc-recon.nii.gz"),
        ("scan.nii", "scan_desc-recon.nii.gz"),
        ("sub-01_ses-1_T1w.nii.gz", "sub-01_ses-1_desc-recon_T1w.nii.gz"),
        ("sub-01_desc-raw_T1w.nii.gz", "sub-01_desc-recon_T1w.nii.gz"),
        ("scan_desc-old.nii.gz", "scan_desc-recon.nii.gz"),
        ("my_scan.v2.nii.gz", "my_scan.v2_desc-recon.nii.gz"),
        ("kspace.h5", "kspace_desc-recon.nii.gz"),
        ("meas_MID42.dat", "meas_MID42_desc-recon.nii.gz"),
        ("sub-01_acq-fast_kspace.cfl", "sub-01_acq-fast_desc-recon_kspace.nii.gz"),
    ],
)
def test_derivative_names(source, expected):
    assert derivative_path(Path("/data") / source, "recon") == Path("/data") / expected


def test_derivative_entities():
    named = derivative_path("meas_MID12.dat", "recon", entities={"echo": "2"})
    assert named.name == "meas_MID12_echo-2_desc-recon.nii.gz"
    bids = derivative_path("sub-01_echo-1_part-mag_T2starw.nii.gz", "mask", entities={"echo": "3"})
    assert bids.name == "sub-01_echo-3_part-mag_desc-mask_T2starw.nii.gz"  # the source's own echo, in its place


def test_derivative_out_dir_and_ext(tmp_path):
    path = derivative_path("in/sub-01_T1w.nii.gz", "uncertainty", tmp_path, ext=".json")
    assert path == tmp_path / "sub-01_desc-uncertainty_T1w.json"


def test_derivative_refuses_bad_desc_and_overwriting_input(tmp_path):
    with pytest.raises(InputError, match="letters and digits"):
        derivative_path("scan.nii.gz", "my_recon")
    with pytest.raises(InputError, match="would overwrite its input"):
        derivative_path(tmp_path / "scan_desc-recon.nii.gz", "recon")


def test_sidecar(tmp_path):
    fields = {
        "Sources": [Path("a/scan.nii.gz")],
        "Seed": np.int64(3),
        "PSNR": np.float32(31.5),
        "SSIM": float("nan"),
        "Shape": np.array([20, 24, 18]),
    }
    path = write_sidecar(tmp_path / "scan_desc-recon.nii.gz", fields)
    assert path == tmp_path / "scan_desc-recon.json"
    assert json.loads(path.read_text()) == {
        "Sources": ["a/scan.nii.gz"],
        "Seed": 3,
        "PSNR": 31.5,
        "SSIM": None,
        "Shape": [20, 24, 18],
    }
    assert path.read_text().startswith('{\n  "Sources"')
    assert write_sidecar(tmp_path / ".tmp-x.json", {}) == tmp_path / ".tmp-x.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-x.json", "scan_desc-recon.json"]


def test_sidecar_refuses_unserialisable(tmp_path):
    with pytest.raises(TypeError, match="cannot be written as JSON"):
        write_sidecar(tmp_path / "a.nii.gz", {"x": object()})
    assert list(tmp_path.iterdir()) == []
