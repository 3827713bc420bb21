"""Training from NIfTI files, through the CLI, with and without conditioning images; the result loads and samples."""

import json

import nibabel as nib
import numpy as np
import torch
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.diffusion import Cond, sample_ddim
from neurodiff.weights import load_model

from ..conftest import DATA


def test_train_image_model_with_conditioning(tmp_path):
    src = DATA / "io" / "colin27_crop.nii.gz"  # (20, 24, 18) real T1
    img = nib.load(src)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((img.get_fdata() > 60).astype(np.uint8), img.affine), mask)
    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["train", "image", str(src), "--cond", str(mask), "--out", str(out), "--steps", "3",
                                   "--size", "16", "--batch-size", "4", "-q"])
    assert res.exit_code == 0, res.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["architecture"]["in_channels"] == 2 and card["training"]["steps"] == 3
    assert len(open(str(out) + "_loss.csv").read().splitlines()) == 4  # header + 3 steps
    model = load_model(out.with_suffix(".json"))
    x = sample_ddim(model.denoiser, torch.randn(2, 1, 16, 16), 2, cond=Cond(image=torch.ones(2, 1, 16, 16)))
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()


def test_train_refuses_bad_conditioning(tmp_path):
    src = DATA / "io" / "colin27_crop.nii.gz"
    res = CliRunner().invoke(app, ["train", "recon", str(src), "--cond", str(src), "--out", str(tmp_path / "m"),
                                   "--steps", "1"])
    assert res.exit_code == 2 and "conditioning" in res.stderr


def test_train_recon_model_and_use_it(tmp_path):
    src = DATA / "io" / "colin27_crop.nii.gz"
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["train", "recon", str(src), "--out", str(out), "--steps", "2", "--size", "32",
                                   "--batch-size", "2", "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["recon", str(src), "--model", str(out.with_suffix(".json")), "--steps", "2",
                                   "--samples", "2", "--out-dir", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "colin27_crop_desc-recon.nii.gz").exists()


def test_train_recon_prior_and_reconstruct_prior_only(tmp_path):
    """A ``recon-prior`` model is unconditional (2 channels in, no condition); `neurodiff recon --model` with it samples
    prior-only, and its samples keep the measured k-space. A model of another task is refused in one line."""
    from neurodiff.mri import fft2c, ifft2c, sampling_mask
    from neurodiff.mri.consistency import soft_project
    from neurodiff.mri.posterior import sample_posterior
    from neurodiff.tasks.recon import reconstruct

    src = DATA / "io" / "colin27_crop.nii.gz"
    out = tmp_path / "p"
    res = CliRunner().invoke(app, ["train", "recon-prior", str(src), "--out", str(out), "--steps", "2", "--size", "32",
                                   "--batch-size", "2", "-q"])
    assert res.exit_code == 0, res.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["task"] == "recon-prior" and card["architecture"]["in_channels"] == 2
    assert card["normalisation"]["condition"] is None
    model = load_model(out.with_suffix(".json"))
    shapes = []
    model.denoiser.net.register_forward_hook(lambda mod, args, out: shapes.append(tuple(args[0].shape[1:])))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 24, 16, generator=g).to(torch.complex64)
    mask = torch.from_numpy(sampling_mask((24, 16), 3, 0.2, seed=0))
    y = fft2c(image) * mask
    post = sample_posterior(model.denoiser, ifft2c(y), mask, lambda z: soft_project(z, y, mask, float("inf")),
                            n_samples=4, steps=2, views=4, conditioned=False, keep_samples=True, generator=g)
    assert set(shapes) == {(2, 24, 16), (2, 16, 24)}  # the network sees only the image channels
    k = fft2c(post.samples)[..., mask]
    assert post.samples.shape == (4, 2, 24, 16) and torch.allclose(k, y[None][..., mask].expand_as(k), atol=1e-4)
    r = reconstruct(src, model=out.with_suffix(".json"), steps=2, samples=2, slices="8:10")
    assert r.params["sampler"] == "ddim, prior-only" and r.recon.shape == (20, 24, 2)
    assert np.isfinite(r.recon).all() and (r.uncertainty >= 0).all() and r.uncertainty.max() > 0
    res = CliRunner().invoke(app, ["recon", str(src), "--model", "anomaly-t1-tiny", "--out-dir", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a reconstruction model" in res.stderr
