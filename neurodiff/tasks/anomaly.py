"""Likelihood-based anomaly detection: score a brain scan voxel by voxel under a diffusion model of healthy anatomy.

``detect`` loads a scan, brings it to the model's grid (:mod:`neurodiff.anomaly.preprocess`), computes the raw
per-level maps, normalises them against the healthy reference stored in the model card, and returns the score on the
input's grid with a mask thresholded at a voxel false-positive rate. ``calibrate`` builds that reference from scans
of a new site or protocol and stores it in a copy of the model.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from nibabel.orientations import io_orientation

from ..anomaly.data import lesion_on_canvas
from ..anomaly.preprocess import Prepared, is_skull_stripped, prepare, to_input
from ..anomaly.scores import METHODS, Reference, ScoreConfig, fit_reference, image_score, normalise, raw_maps, slice_scores
from ..errors import InputError, ModelError
from ..io import ImageRecord, atomic_path, load_image, load_nifti, negative_offset
from ..io.bids import split_extension
from ..weights import MODELS_DIR, Model, load_model, shipped_models
from .common import resolve_device

CONTRASTS = {"flair": "anomaly-flair-tiny", "t1": "anomaly-t1-tiny"}
_SUFFIX = {"flair": "flair", "t1w": "t1", "t1": "t1"}
DEFAULT_FPR = 0.01  # voxel false-positive rate of the anomaly mask when the model's card names none
_WHAT = {"residual": "residuals of the one-step healthy estimate", "elbo": "negative-ELBO terms",
         "recon": "reconstruction errors"}


@dataclass
class AnomalyResult:
    """Anomaly maps on the input's grid and the scan's scores.

    Attributes
    ----------
    score
        ``(X, Y, Z)`` float32 anomaly score in healthy standard deviations (0 outside the brain / scored slices).
    mask
        ``(X, Y, Z)`` bool: score above ``threshold`` inside the brain, decided on the model grid (where the
        threshold was calibrated) and resampled to the input grid.
    brain
        ``(X, Y, Z)`` bool brain mask used.
    threshold
        Score at which healthy reference voxels are flagged at rate ``params["fpr"]``.
    image_score, image_percentile
        Scan-level score and its percentile among the healthy reference scans.
    slices
        One row per scored axial slice of the model grid: ``z_mm`` (scanner superior coordinate), ``input_slice``
        (nearest index along the input's most superior voxel axis), ``score``, ``percentile`` (among healthy
        reference slices), ``flagged_voxels``.
    """

    score: np.ndarray
    mask: np.ndarray
    brain: np.ndarray
    threshold: float
    image_score: float
    image_percentile: float
    slices: pd.DataFrame
    record: ImageRecord
    params: dict
    seconds: float


def contrast_model(path: Path | str | None, contrast: str | None, model: str | None) -> str:
    """The model to use: ``model`` if given, else the shipped model of ``contrast``, else of the contrast named by
    the file's BIDS suffix (``_FLAIR``, ``_T1w``)."""
    if model:
        return model
    if contrast is None and path is not None:
        stem, _ = split_extension(Path(path).name)
        contrast = _SUFFIX.get(re.split(r"[_\-.]", stem)[-1].lower())
        if contrast is None:
            raise InputError(f"cannot tell the contrast of {Path(path).name} from its name (no _FLAIR or _T1w "
                             "suffix); pass --contrast flair or --contrast t1")
    if contrast not in CONTRASTS:
        raise InputError(f"unknown contrast {contrast!r}; choose one of {', '.join(CONTRASTS)}")
    return CONTRASTS[contrast]


def _anomaly_model(name: str, device: torch.device) -> Model:
    mdl = load_model(name, device)
    if mdl.card.get("task") != "anomaly":
        raise ModelError(f"model {mdl.name} is a {mdl.card.get('task')!r} model, not an anomaly model")
    return mdl


def _reference(model: Model, method: str | None) -> Reference:
    refs = model.card.get("reference") or {}
    method = method or refs.get("default")
    if method not in refs or method not in METHODS:
        have = ", ".join(k for k in refs if k in METHODS) or "none"
        raise ModelError(f"model {model.name} has no healthy reference for method {method!r} (has: {have}); build "
                         "one with `neurodiff anomaly calibrate`")
    return Reference.from_dict(refs[method])


def _magnitude_like(data: np.ndarray) -> tuple[np.ndarray, float]:
    """A scan's voxels as a magnitude image: complex data as their magnitude, a scan with clearly negative values
    (an offset, z-scored) shifted so its background is dark again; also the shift's offset (0 if none)."""
    data = np.abs(data) if np.iscomplexobj(data) else data
    offset = negative_offset(data)
    return data - offset, offset


def _prepare(model: Model, img: nib.Nifti1Image, brain: nib.Nifti1Image | None) -> Prepared:
    norm = model.card["normalisation"]
    return prepare(img, brain, voxel_mm=norm["voxel_mm"], canvas=tuple(norm["canvas"]))


def _slice_table(prep: Prepared, record: ImageRecord, scores: np.ndarray, flagged: np.ndarray,
                 ref: Reference) -> pd.DataFrame:
    h, w = prep.x.shape[-2:]
    centre = np.array([prep.corner[0] + h / 2, prep.corner[1] + w / 2])
    vox = np.stack([np.full(len(prep.slices), centre[0]), np.full(len(prep.slices), centre[1]), prep.slices,
                    np.ones(len(prep.slices))])
    world = prep.grid.affine @ vox
    axis = int(np.flatnonzero(io_orientation(record.affine)[:, 0] == 2)[0])
    idx = (np.linalg.inv(record.affine) @ world)[axis]
    return pd.DataFrame({
        "z_mm": np.round(world[2], 1), "input_slice": np.round(idx).astype(int), "score": np.round(scores, 3),
        "percentile": [round(ref.percentile(s, "slice"), 1) for s in scores], "flagged_voxels": flagged,
    })


def detect(
    image: str | Path | nib.Nifti1Image,
    *,
    contrast: str | None = None,
    model: str | None = None,
    brain_mask: str | Path | nib.Nifti1Image | None = None,
    fpr: float | None = None,
    method: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> AnomalyResult:
    """Score every voxel of a 3D brain scan under the healthy-anatomy model.

    Parameters
    ----------
    image
        3D scan (NIfTI path or nibabel image), any orientation and voxel size.
    contrast, model
        ``"flair"`` or ``"t1"`` picks the shipped model (default: from the BIDS suffix of the file name); ``model``
        (shipped name or ``PATH.json``) overrides it.
    brain_mask
        Brain mask on any grid overlapping the scan; computed when absent (:func:`~neurodiff.anomaly.preprocess.compute_brain_mask`).
    fpr
        Voxel false-positive rate on healthy reference brains at which the binary mask is thresholded; default the
        model's operating rate (the one its benchmark chose on validation subjects, recorded in its card), else
        ``DEFAULT_FPR``.
    method
        ``"residual"``, ``"elbo"`` or ``"recon"``; default the model's best (recorded in its card).
    """
    t0 = time.time()
    if fpr is not None and not 0 < fpr < 1:
        raise InputError(f"--fpr must be a rate above 0 and below 1, got {fpr}")
    name = contrast_model(image if not isinstance(image, nib.Nifti1Image) else None, contrast, model)
    data, record = load_image(image, ndim=(3,))
    if not np.any(data):
        raise InputError("the image is all zeros")
    data, offset = _magnitude_like(data)
    img = nib.Nifti1Image(data, record.affine)
    brain_img = None if brain_mask is None else load_nifti(brain_mask, name="brain mask")
    dev = resolve_device(device)
    mdl = _anomaly_model(name, dev)
    ref = _reference(mdl, method)
    fpr = float((mdl.card.get("reference") or {}).get("fpr", DEFAULT_FPR)) if fpr is None else fpr
    thr = ref.threshold_at(fpr)  # checks the rate before any work
    prep = _prepare(mdl, img, brain_img)
    gen = torch.Generator(device=dev).manual_seed(seed)
    raw = raw_maps(mdl.denoiser, prep.x.to(dev), ref.config, generator=gen, progress=progress).cpu()
    z = normalise(raw, ref, prep.depth) * prep.brain
    flagged = (z > thr) & prep.brain
    per_slice = slice_scores(z, prep.brain)
    canvas_z = z[:, 0].numpy()
    score = to_input(canvas_z, prep, img)
    # the model-grid brain brought back, less the voxels the scan itself leaves empty (a 2 mm mask overhangs)
    brain = (to_input(prep.brain[:, 0].numpy().astype(np.float32), prep, img) > 0.5) & (data != 0)
    score = np.where(brain, score, 0.0).astype(np.float32)
    # thresholded where the threshold was calibrated (model grid), then brought back like a mask
    mask = (to_input(flagged[:, 0].numpy().astype(np.float32), prep, img) > 0.5) & brain
    img_score = image_score(z, prep.brain)
    return AnomalyResult(
        score=score, mask=mask, brain=brain, threshold=thr, image_score=img_score,
        image_percentile=ref.percentile(img_score), record=record,
        slices=_slice_table(prep, record, per_slice, flagged.flatten(1).sum(1).numpy(), ref),
        params={"model": mdl.name, "method": ref.config.method, "levels": list(ref.config.levels),
                "draws": ref.config.draws, "polarity": ref.config.polarity, "fpr": fpr, "seed": seed,
                "brain_mask": (str(brain_mask) if isinstance(brain_mask, (str, Path)) else "given")
                if brain_mask is not None else
                ("computed: non-zero voxels" if is_skull_stripped(img) else "computed: deepbet (scan with skull)"),
                "device": str(dev),
                "model_voxel_mm": mdl.card["normalisation"]["voxel_mm"],
                **({"intensity_offset": offset} if offset else {})},
        seconds=time.time() - t0,
    )


def calibrate(
    references: Sequence[str | Path],
    out: Path,
    *,
    contrast: str | None = None,
    model: str | None = None,
    brain_masks: Sequence[str | Path] | None = None,
    lesion_masks: Sequence[str | Path | None] | None = None,
    configs: Sequence[ScoreConfig] | None = None,
    default: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build healthy references from ``references`` (scans of healthy subjects of the target site/protocol) and
    write the model with them as ``out.json`` + ``out.safetensors``; returns the card path.

    ``lesion_masks`` (optional, one per scan) mark known lesions, left out of the healthy statistics. One reference
    is fitted per config (by method); ``configs`` defaults to those of the model's current references (the noise
    levels and polarity its benchmark chose), else :class:`ScoreConfig` defaults. ``default`` names the method
    ``detect`` uses (default: the model's current default, else the first config's).
    """
    if not references:
        raise InputError("no reference scans given")
    for extra, label in ((brain_masks, "brain masks"), (lesion_masks, "lesion masks")):
        if extra and len(extra) != len(references):
            raise InputError(f"give one of the {label} per reference scan ({len(references)}), got {len(extra)}")
    if not (model or contrast):
        raise InputError("pass --contrast flair|t1 or --model to say which model to calibrate")
    name = contrast_model(None, contrast, model)
    dev = resolve_device(device)
    mdl = _anomaly_model(name, dev)
    current = mdl.card.get("reference") or {}
    if configs is None:
        configs = [Reference.from_dict(v).config for k, v in current.items() if k in METHODS] or [ScoreConfig()]
    default = default or (current.get("default") if current.get("default") in {c.method for c in configs}
                          else configs[0].method)
    preps, healthy = [], []
    for i, path in enumerate(references):
        data, record = load_image(path, ndim=(3,), name="reference scan")
        img = nib.Nifti1Image(_magnitude_like(data)[0], record.affine)
        prep = _prepare(mdl, img, load_nifti(brain_masks[i], name="brain mask") if brain_masks else None)
        les = lesion_masks[i] if lesion_masks else None
        preps.append(prep)
        healthy.append(prep.brain & ~lesion_on_canvas(load_nifti(les, name="lesion mask"), prep) if les
                       else prep.brain)
    total = len(configs) * sum(len(p.x) for p in preps)
    done = 0
    refs = {}
    for cfg in configs:
        gen = torch.Generator(device=dev).manual_seed(seed)
        raws = []
        for p in preps:
            raws.append(raw_maps(mdl.denoiser, p.x.to(dev), cfg, generator=gen,
                                 progress=None if progress is None else
                                 (lambda d, n, base=done: progress(base + d, total))).cpu())
            done += len(p.x)
        refs[cfg.method] = fit_reference(raws, healthy, [p.brain for p in preps], [p.depth for p in preps],
                                         cfg).to_dict()
    card = dict(mdl.card)
    card["name"] = out.name
    card["reference"] = {"default": default, "fpr": current.get("fpr", DEFAULT_FPR), **refs,
                         "scans": [str(p) for p in references]}
    src = MODELS_DIR / name if name in shipped_models() else Path(name).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = out.with_suffix(".safetensors")
    if not (weights.exists() and weights.samefile(src.with_suffix(".safetensors"))):  # recalibrating in place
        with atomic_path(weights) as tmp:
            shutil.copyfile(src.with_suffix(".safetensors"), tmp)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return out.with_suffix(".json")


def output_paths(src: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """BIDS-derivative paths of the anomaly outputs of ``src`` (score map, binary mask, sidecar, PNG overlay)."""
    from ..io import derivative_path

    paths = {d: derivative_path(src, d, out_dir) for d in ("anomaly", "anomalymask")}
    paths["sidecar"] = derivative_path(src, "anomaly", out_dir, ext=".json")
    paths["figure"] = derivative_path(src, "anomaly", out_dir, ext=".png")
    return paths


def sidecar_row(sidecar: dict, src: Path | str) -> dict:
    """The ``anomaly_scores.tsv`` row of a scan, from its sidecar (as :func:`write` wrote it)."""
    p = sidecar["Parameters"]
    return {"scan": str(src), "model": p["model"], "method": p["method"],
            "image_score": round(sidecar["ImageScore"], 3), "percentile": round(sidecar["ImagePercentile"], 1),
            "fpr": p["fpr"], "threshold": round(sidecar["Threshold"], 3), "flagged_ml": sidecar["FlaggedVolume_ml"]}


def write(result: AnomalyResult, src: Path, paths: dict[str, Path], tmp: Callable[[Path], Path] = lambda p: p) -> dict:
    """Write the maps and sidecar of ``result`` to ``paths`` (from :func:`output_paths`), each through ``tmp``;
    returns the sidecar's fields."""
    from ..io import save_like, write_sidecar

    save_like(result.score, result.record, tmp(paths["anomaly"]))
    save_like(result.mask.astype(np.uint8), result.record, tmp(paths["anomalymask"]), dtype=np.uint8)
    vox_ml = float(np.prod(result.record.header.get_zooms()[:3])) / 1000
    fields = {
        "Description": "Voxel anomaly score under a diffusion model of healthy brain slices: the per-noise-level "
                       f"{_WHAT[result.params['method']]}, "
                       "z-scored against healthy reference voxels and averaged over levels.",
        "Units": "healthy-reference standard deviations (0 outside the brain)",
        "Sources": [str(src)],
        "GeneratedBy": [{"Name": "neurodiff", "Version": __import__("neurodiff").__version__}],
        "Parameters": result.params, "Threshold": result.threshold, "ImageScore": result.image_score,
        "ImagePercentile": result.image_percentile, "FlaggedVolume_ml": round(float(result.mask.sum()) * vox_ml, 2),
        "Outputs": {k: p.name for k, p in paths.items()}, "ElapsedSeconds": round(result.seconds, 2),
    }
    write_sidecar(tmp(paths["sidecar"]), fields)
    _figure(result, src, tmp(paths["figure"]))
    return fields


def _figure(result: AnomalyResult, src: Path, path: Path) -> None:
    """PNG: the score map above the calibrated threshold over the scan, five axial cuts through its maximum."""
    import matplotlib.pyplot as plt

    from ..plotting import anomaly_overlay

    scan = nib.load(src)
    background = nib.Nifti1Image(np.nan_to_num(np.abs(np.asanyarray(scan.dataobj))).astype(np.float32), scan.affine)
    display = anomaly_overlay(background, nib.Nifti1Image(result.score, result.record.affine), result.threshold,
                              title=f"{Path(src).name}: score > {result.threshold:.2f} (fpr {result.params['fpr']})")
    display.savefig(str(path), dpi=90)
    display.close()
    plt.close("all")


def add_to_tables(folder: Path, src: Path, fields: dict, slices: pd.DataFrame) -> None:
    """Add the scan's row to ``folder/anomaly_scores.tsv`` and its slices to ``folder/anomaly_slices.tsv``,
    replacing earlier rows of the same scan (each table rewritten atomically)."""
    from ..io import atomic_path

    for name, new in (("anomaly_scores.tsv", pd.DataFrame([sidecar_row(fields, src)])),
                      ("anomaly_slices.tsv", slices.assign(scan=str(src)))):
        table = folder / name
        if table.exists():
            old = pd.read_csv(table, sep="\t")
            new = pd.concat([old[old["scan"] != str(src)], new], ignore_index=True)
        with atomic_path(table) as t:
            new.to_csv(t, sep="\t", index=False)
