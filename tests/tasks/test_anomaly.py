"""The anomaly task end to end on the shipped stroke example, with an untrained model (geometry, tables, errors)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurodiff.errors import InputError, ModelError
from neurodiff.tasks.anomaly import contrast_model, detect

from ..conftest import STROKE


def test_detect_returns_maps_on_the_input_grid(untrained_anomaly_model):
    res = detect(STROKE, model=str(untrained_anomaly_model), device="cpu")
    shape = nib.load(STROKE).shape
    assert res.score.shape == res.mask.shape == res.brain.shape == shape
    assert np.isfinite(res.score).all() and not res.score[~res.brain].any()
    assert not res.brain[nib.load(STROKE).get_fdata() == 0].any()  # nothing scored where the scan is empty
    assert not res.mask[~res.brain].any()
    assert 0 <= res.image_percentile <= 100 and np.isfinite(res.image_score)
    assert {"z_mm", "input_slice", "score", "percentile", "flagged_voxels"} <= set(res.slices.columns)
    assert res.slices["input_slice"].between(0, shape[2] - 1).all()
    # a lower false-positive rate can only flag fewer voxels
    strict = detect(STROKE, model=str(untrained_anomaly_model), device="cpu", fpr=0.001)
    assert strict.mask.sum() <= res.mask.sum() and strict.threshold > res.threshold
    same = detect(STROKE, model=str(untrained_anomaly_model), device="cpu")
    assert np.array_equal(same.score, res.score)  # same seed, same output


def test_z_scored_scan_scores_like_the_scan(untrained_anomaly_model):
    """A z-scored copy of the scan (background at -2.6 instead of 0) is shifted back to a dark background first, so
    the brain mask, the normalisation inside it and every score are those of the scan itself."""
    scan = nib.load(STROKE)
    data = scan.get_fdata(dtype=np.float32)
    z = (data - data[data > 0].mean()) / data[data > 0].std()
    kw = dict(model=str(untrained_anomaly_model), device="cpu")
    res, plain = detect(nib.Nifti1Image(z, scan.affine), **kw), detect(STROKE, **kw)
    assert res.params["intensity_offset"] == pytest.approx(float(z.min())) and "intensity_offset" not in plain.params
    assert np.array_equal(res.brain, plain.brain) and np.array_equal(res.mask, plain.mask)
    assert np.allclose(res.score, plain.score, atol=1e-3)


def test_other_method_and_missing_reference(untrained_anomaly_model, tmp_path):
    assert detect(STROKE, model=str(untrained_anomaly_model), device="cpu").params["method"] == "residual"  # default
    for method in ("elbo", "recon"):
        res = detect(STROKE, model=str(untrained_anomaly_model), device="cpu", method=method)
        assert res.params["method"] == method and np.isfinite(res.score).all()
    card = json.loads(untrained_anomaly_model.read_text())
    del card["reference"]["recon"]
    stem = tmp_path / "noref"
    (stem.with_suffix(".json")).write_text(json.dumps(card))
    (stem.with_suffix(".safetensors")).write_bytes(untrained_anomaly_model.with_suffix(".safetensors").read_bytes())
    with pytest.raises(ModelError, match="no healthy reference for method 'recon'"):
        detect(STROKE, model=str(stem), method="recon")


def test_default_rate_is_the_models_operating_rate(untrained_anomaly_model, tmp_path):
    """Without --fpr the mask is thresholded at the rate the model's card names (its benchmark's choice), which
    `calibrate` keeps; a card without one gives 0.01."""
    from neurodiff.tasks.anomaly import calibrate

    card = json.loads(untrained_anomaly_model.read_text())
    assert card["reference"]["fpr"] == 0.01  # the fixture's raw model named none
    card["reference"]["fpr"] = 0.003
    stem = tmp_path / "op"
    stem.with_suffix(".json").write_text(json.dumps(card))
    stem.with_suffix(".safetensors").write_bytes(untrained_anomaly_model.with_suffix(".safetensors").read_bytes())
    res = detect(STROKE, model=str(stem), device="cpu")
    explicit = detect(STROKE, model=str(stem), device="cpu", fpr=0.003)
    assert res.params["fpr"] == 0.003 and res.threshold == explicit.threshold
    assert detect(STROKE, model=str(stem), device="cpu", fpr=0.01).params["fpr"] == 0.01
    again = calibrate([STROKE], tmp_path / "recal", model=str(stem.with_suffix(".json")), device="cpu")
    assert json.loads(again.read_text())["reference"]["fpr"] == 0.003


def test_contrast_comes_from_the_bids_suffix():
    assert contrast_model("sub-01_FLAIR.nii.gz", None, None) == "anomaly-flair-tiny"
    assert contrast_model("sub-01_ses-2_T1w.nii.gz", None, None) == "anomaly-t1-tiny"
    assert contrast_model("scan.nii.gz", "t1", None) == "anomaly-t1-tiny"
    assert contrast_model("scan.nii.gz", None, "mine.json") == "mine.json"
    with pytest.raises(InputError, match="pass --contrast"):
        contrast_model("scan.nii.gz", None, None)


def test_cli_writes_maps_sidecar_and_tables(untrained_anomaly_model, tmp_path):
    from typer.testing import CliRunner

    from neurodiff.cli import app

    run = CliRunner().invoke
    args = ["anomaly", str(STROKE), "--model", str(untrained_anomaly_model), "--out-dir", str(tmp_path), "-q"]
    r = run(app, args)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["anomaly_scores.tsv", "anomaly_slices.tsv", "sub-stroke_desc-anomaly_FLAIR.json",
                     "sub-stroke_desc-anomaly_FLAIR.nii.gz", "sub-stroke_desc-anomaly_FLAIR.png",
                     "sub-stroke_desc-anomalymask_FLAIR.nii.gz"]
    assert (tmp_path / "sub-stroke_desc-anomaly_FLAIR.png").read_bytes()[:4] == b"\x89PNG"
    out = nib.load(tmp_path / "sub-stroke_desc-anomaly_FLAIR.nii.gz")
    assert np.allclose(out.affine, nib.load(STROKE).affine)
    side = json.loads((tmp_path / "sub-stroke_desc-anomaly_FLAIR.json").read_text())
    assert side["Parameters"]["fpr"] == 0.01 and side["Units"].startswith("healthy-reference")
    before = (tmp_path / "anomaly_scores.tsv").read_text()
    r = run(app, args)  # exists: refused, nothing changed
    assert r.exit_code == 2 and "--force" in r.output and (tmp_path / "anomaly_scores.tsv").read_text() == before
    r = run(app, args + ["--force"])
    assert r.exit_code == 0
    table = pd.read_csv(tmp_path / "anomaly_scores.tsv", sep="\t")
    assert len(table) == 1 and table["scan"][0] == str(STROKE)  # replaced, not duplicated


def test_cli_calibrate_then_use(untrained_anomaly_model, tmp_path):
    from typer.testing import CliRunner

    from neurodiff.cli import app

    stem = tmp_path / "site-flair"
    r = CliRunner().invoke(app, ["anomaly", "calibrate", str(STROKE), "--model", str(untrained_anomaly_model),
                                 "--out", str(stem), "-q"])
    assert r.exit_code == 0, r.output
    card = json.loads(stem.with_suffix(".json").read_text())
    assert card["reference"]["default"] == "residual" and card["reference"]["scans"] == [str(STROKE)]
    assert {"residual", "elbo", "recon"} <= set(card["reference"])  # every method of the model refitted
    res = detect(STROKE, model=str(stem), device="cpu")
    assert np.isfinite(res.score).all()


def test_shipped_flair_model_flags_the_stroke():
    """The shipped FLAIR model on the shipped example: the hyperintense stroke (left posterior, around scanner
    (-20, -36, 24) mm) scores far above the mirror region of the other hemisphere."""
    res = detect(STROKE, contrast="flair", device="cpu")
    img = nib.load(STROKE)
    ijk = np.indices(img.shape).reshape(3, -1)
    xyz = (img.affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3].T.reshape(img.shape + (3,))

    def ball(centre):
        return (np.linalg.norm(xyz - np.array(centre), axis=-1) < 8) & res.brain

    lesion, mirror = ball((-20, -36, 24)), ball((20, -36, 24))
    assert res.score[lesion].mean() > res.score[mirror].mean() + 2
    assert res.mask[lesion].mean() > 5 * max(res.mask[mirror].mean(), 0.01)
    assert res.image_percentile == 100  # more anomalous than every healthy reference scan
