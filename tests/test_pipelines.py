"""The Snakemake reconstruction pipeline (pipelines/Snakefile): dry run and a tiny real run on CPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("snakemake")

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "pipelines" / "Snakefile"
EXAMPLE = ROOT / "neurodiff" / "data" / "sub-colin27_T1w.nii.gz"
STROKE = ROOT / "neurodiff" / "data" / "sub-stroke_FLAIR.nii.gz"
DESCS = ("recon", "uncertainty", "zerofilled", "mask")


def snakemake(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(cwd), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_dry_run_lists_recon_anomaly_and_summaries(tmp_path):
    proc = snakemake("-n", "--cores", "1", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "rule recon:" in log and "rule summary:" in log
    assert "rule anomaly:" in log and "rule anomaly_summary:" in log
    assert "sub-stroke_desc-anomaly_FLAIR.nii.gz" in log and "anomaly_scores.tsv" in log
    assert "sub-colin27_desc-recon_T1w.nii.gz" in log and "sub-colin27_desc-recon_T1w.json" in log
    assert "recon_metrics.tsv" in log
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_tiny_run(tmp_path, untrained_recon_model):
    import nibabel as nib
    import pandas as pd

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    src = Path(shutil.copy(EXAMPLE, in_dir))
    snakemake("--cores", "1", "--config", "anomaly=false", f"input_dir={in_dir}", f"out_dir={out_dir}", "slices=38:40",
              "samples=2",
              "steps=2", f"model={untrained_recon_model}", "threads=1", cwd=tmp_path)

    expected = nib.load(src).slicer[:, :, 38:40]  # outputs cover the chosen slices; affine shifted to match
    for desc in DESCS:
        out = nib.load(out_dir / f"sub-colin27_desc-{desc}_T1w.nii.gz")
        assert out.shape == expected.shape
        np.testing.assert_allclose(out.affine, expected.affine, atol=1e-5)
    assert (out_dir / "sub-colin27_desc-recon_T1w.json").is_file()

    table = pd.read_csv(tmp_path / "results" / "recon_metrics.tsv", sep="\t")
    assert list(table.columns) == ["scan", "echo", "psnr", "ssim", "nmse", "zerofilled_psnr", "zerofilled_ssim",
                                   "seconds"]
    assert len(table) == 1 and table.loc[0, "scan"] == "sub-colin27_T1w"
    assert np.isfinite(table.loc[0, "psnr"]) and np.isfinite(table.loc[0, "zerofilled_psnr"])


def test_tiny_anomaly_run(tmp_path, untrained_anomaly_model):
    import nibabel as nib
    import pandas as pd

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    src = Path(shutil.copy(STROKE, in_dir))
    snakemake("--cores", "1", "--config", "recon=false", f"input_dir={in_dir}", f"out_dir={out_dir}",
              f"anomaly_model={untrained_anomaly_model}", "threads=1", cwd=tmp_path)
    for desc in ("anomaly", "anomalymask"):
        out = nib.load(out_dir / f"sub-stroke_desc-{desc}_FLAIR.nii.gz")
        assert out.shape == nib.load(src).shape
    table = pd.read_csv(tmp_path / "results" / "anomaly_scores.tsv", sep="\t")
    assert len(table) == 1 and table.loc[0, "scan"] == str(src) and np.isfinite(table.loc[0, "image_score"])


def test_raw_multi_echo_kspace(tmp_path, multi_echo_twix, untrained_recon_model):
    """Raw k-space in the input folder is reconstructed, each echo of a multi-echo file as its own job (here
    undersampled retrospectively with ``kspace_accel``); anomaly detection leaves it alone; a file that is not
    k-space is skipped with a warning."""
    import nibabel as nib
    import pandas as pd

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    shutil.copy(multi_echo_twix, in_dir)
    (in_dir / "notes.dat").write_text("not k-space")  # skipped with a warning, not a failed workflow
    proc = snakemake("--cores", "1", "--config", f"input_dir={in_dir}", f"out_dir={out_dir}", "samples=2", "steps=2",
                     "kspace_accel=4", f"model={untrained_recon_model}", "threads=1", cwd=tmp_path)
    assert "skipping notes.dat: notes.dat could not be read as a Siemens twix file" in proc.stderr
    zerofilled = [nib.load(out_dir / f"me_echo-{e}_desc-zerofilled.nii.gz").get_fdata() for e in (1, 2)]
    assert zerofilled[0].shape == (160, 160, 1) and zerofilled[1].max() < 0.6 * zerofilled[0].max()
    table = pd.read_csv(tmp_path / "results" / "recon_metrics.tsv", sep="\t")
    assert table["scan"].tolist() == ["me", "me"] and table["echo"].tolist() == [1, 2]
    assert np.isfinite(table["psnr"]).all()
    assert not (tmp_path / "results" / "anomaly_scores.tsv").exists()  # no image to score


def test_dry_run_takes_every_input_extension(tmp_path):
    """Uncompressed NIfTI, ``.hdf5`` and upper-case raw extensions are scans too; a BART ``.hdr`` is not a scan
    of its own."""
    import h5py
    import nibabel as nib

    in_dir = tmp_path / "in"
    in_dir.mkdir()
    nib.save(nib.load(EXAMPLE), in_dir / "sub-01_T1w.nii")
    with h5py.File(in_dir / "knee.HDF5", "w") as f:  # fastMRI layout: (slices, coils, ky, kx)
        f["kspace"] = np.ones((1, 2, 16, 16), np.complex64)
    proc = snakemake("-n", "--cores", "1", "--config", f"input_dir={in_dir}", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "sub-01_desc-recon_T1w.nii.gz" in log and "knee_desc-recon.nii.gz" in log
    assert "sub-01_desc-anomaly_T1w.nii.gz" in log and "knee_desc-anomaly" not in log
