"""Anomaly detection on held-out NiChart subjects: real white-matter hyperintensities and synthetic lesions.

Split (see ``train_anomaly.py``): the model trained on subjects 1-10; subjects 11-12 are the healthy reference
(per-level statistics and thresholds from their voxels outside the dilated WMH masks) and the validation set on which
polarity and the default method are chosen; subjects 13-16 are the test set. Everything is scored on the model grid
(2 mm, 96x96 canvas, DLMUSE brain mask resampled onto the scan). The WMH masks are automated (DLWMLS), not manual.

Methods: ``residual`` (the one-step healthy estimate's signed residual ``x - x0_hat(x_t)``, mean of 8 noise draws,
taken linearly), ``elbo`` (per-voxel negative-ELBO terms over noise levels), ``recon`` (partial noising + DDIM
reconstruction error, Graham et al. 2023), each with polarity ``both`` and one-sided (``hyper`` on FLAIR, ``hypo``
on T1), over several ranges of noise levels (low / mid / high / top / all) and (one-sided) in-plane smoothing of 0, 1
(no suffix) or 2 voxels (``-s0``, ``-s2``), all z-scored per level and depth against the reference; and the trivial baseline: intensity z-scored inside the brain
(sign by contrast), thresholded at the same reference false-positive rate (Meissen et al. 2021).

Metrics over brain voxels: AUROC, AUPRC, best Dice (over thresholds), Dice and FPR at the threshold calibrated to
``--fpr`` on the reference, FPR on lesion-free slices, slice-level AUROC (lesioned vs lesion-free slices by the 99th
percentile of the slice's scores); and the operating rate of each method: the reference rate in ``FPR_GRID`` whose
calibrated threshold gives the best WMH Dice on the validation subjects, with the test Dice there (``fpr_op``,
``dice_op``; the default method's rate is stored in the card and is ``neurodiff anomaly``'s default ``--fpr``).
Synthetic lesions: 3 smooth spheres (radius 3-8 mm, +30..80% of the brain median; -30..60% on T1) per slice in 16
central slices of each test subject; real WMH voxels are left out there.

    python benchmarks/anomaly.py ../shared/data --model runs/anomaly-flair-tiny --contrast flair --write-reference
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from neurodiff.anomaly.data import lesion_on_canvas
from neurodiff.anomaly.metrics import dice, slice_auroc, voxel_metrics
from neurodiff.anomaly.preprocess import prepare
from neurodiff.anomaly.scores import ScoreConfig, finish, fit_reference, level_maps, normalise, slice_scores
from neurodiff.weights import load_model

REF, TEST = (11, 12), (13, 14, 15, 16)
FPR_GRID = (0.002, 0.003, 0.005, 0.007, 0.01, 0.02)  # candidate operating rates (reference voxel FPR)
RESULTS = Path(__file__).parent / "results"


def subject(data: Path, contrast: str, i: int, model) -> dict:
    n = data / "mri" / "nichart"
    img = nib.load(n / ("flair" if contrast == "flair" else "t1") / f"Subj{i}_{'FL' if contrast == 'flair' else 'T1'}.nii.gz")
    brain = nib.load(n / "dlmuse" / f"Subj{i}_T1_DLMUSE.nii.gz")
    brain = nib.Nifti1Image((np.asarray(brain.dataobj) > 0).astype(np.float32), brain.affine)
    norm = model.card["normalisation"]
    prep = prepare(nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine), brain, voxel_mm=norm["voxel_mm"],
                   canvas=tuple(norm["canvas"]))
    wmh = nib.load(n / "wmh" / f"Subj{i}_FL_DLWMLS.nii.gz")
    return {"id": i, "prep": prep, "lesion": lesion_on_canvas(wmh, prep, dilate_mm=0),
            "lesion_dilated": lesion_on_canvas(wmh, prep, dilate_mm=2)}


def baseline(x: torch.Tensor, brain: torch.Tensor, sign: float) -> torch.Tensor:
    """Intensity z-scored inside the scan's brain, times ``sign``."""
    v = x[brain]
    return sign * (x - v.mean()) / v.std() * brain


def synthetic(s: dict, sign: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """16 central slices of a subject with 3 spheres each: (x, truth, slice indices)."""
    prep = s["prep"]
    n = len(prep.x)
    idx = np.linspace(n * 0.3, n * 0.75, 16).round().astype(int)
    x = prep.x[idx].clone()
    truth = torch.zeros_like(prep.brain[idx])
    hh, ww = np.mgrid[: x.shape[-2], : x.shape[-1]]
    for j, k in enumerate(idx):
        ok = ndimage.binary_erosion(prep.brain[k, 0].numpy(), iterations=4) & ~s["lesion_dilated"][k, 0].numpy()
        cand = np.argwhere(ok)
        for _ in range(3):
            c = cand[rng.integers(len(cand))]
            r = rng.uniform(1.5, 4.0)
            d = np.hypot(hh - c[0], ww - c[1])
            prof = torch.from_numpy(1 / (1 + np.exp((d - r) / 0.5))).float()
            amp = rng.uniform(0.3, 0.8) if sign > 0 else -rng.uniform(0.3, 0.6)
            x[j, 0] = torch.where(prep.brain[k, 0], (x[j, 0] + 1) * (1 + amp * prof) - 1, x[j, 0])
            truth[j, 0] |= torch.from_numpy(d < r) & prep.brain[k, 0]
    return x, truth, idx


def evaluate(score: torch.Tensor, truth: torch.Tensor, brain: torch.Tensor, ignore: torch.Tensor,
             threshold: float, grid: dict[float, float]) -> dict:
    """Metrics at ``threshold``, and Dice at each ``grid`` rate's threshold (``dice@RATE``)."""
    keep = brain & ~ignore
    m = voxel_metrics(score[keep].numpy(), truth[keep].numpy(), threshold)
    m.update({f"dice@{f:g}": dice((score[keep] > t).numpy(), truth[keep].numpy()) for f, t in grid.items()})
    has = truth.flatten(1).any(1).numpy()
    flagged = (score > threshold) & keep
    clean = ~has
    n_clean = int(keep[clean].sum())
    m["fpr_clean_slices"] = float(flagged[clean].sum() / n_clean) if n_clean else float("nan")
    m["slice_auroc"] = slice_auroc(slice_scores(score, brain), has)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", required=True, help="model stem (runs/anomaly-flair-tiny) or shipped name")
    ap.add_argument("--contrast", choices=["flair", "t1"], required=True)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--write-reference", action="store_true", help="store the reference in the model card")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = load_model(a.model)
    one_sided = "hyper" if a.contrast == "flair" else "hypo"
    sign = 1.0 if a.contrast == "flair" else -1.0
    bases = {"residual": ScoreConfig(method="residual", levels=(500, 600, 700, 800), draws=8),
             "elbo": ScoreConfig(method="elbo", levels=(25, 50, 100, 150, 200, 300, 400, 600, 800), draws=2),
             "recon": ScoreConfig(method="recon", levels=(100, 200, 300, 400, 600, 800))}
    ranges = {"residual": {"upper": (500, 800), "top": (600, 800), "peak": (700, 800)},
              "elbo": {"all": (0, 800), "low": (0, 100), "mid": (100, 300), "high": (300, 600), "top": (600, 800)},
              "recon": {"all": (0, 800), "low": (0, 200), "high": (300, 400), "top": (600, 800)}}
    variants = {f"{m}-{p}-{r}" + ("" if sm == 1.0 else f"-s{sm:g}"):
                replace(c, polarity=p, levels=tuple(t for t in c.levels if lo <= t <= hi), smooth_voxels=sm)
                for m, c in bases.items() for p in ("both", one_sided) for r, (lo, hi) in ranges[m].items()
                for sm in ((0.0, 1.0, 2.0) if p == one_sided else (1.0,))}
    ref_s = [subject(a.data, a.contrast, i, model) for i in REF]
    test_s = [subject(a.data, a.contrast, i, model) for i in TEST]
    rng = np.random.default_rng(a.seed)
    syn = [synthetic(s, sign, rng) for s in test_s]
    gen = torch.Generator().manual_seed(a.seed)
    raw: dict[str, dict] = {m: {} for m in bases}
    timing = {}
    for m, cfg in bases.items():
        t0, n = time.time(), 0
        for s in ref_s + test_s:
            raw[m][s["id"]] = level_maps(model.denoiser, s["prep"].x, cfg, generator=gen)
            n += len(s["prep"].x)
        timing[m] = (time.time() - t0) / n
        for s, (x, _, _) in zip(test_s, syn):
            raw[m][("syn", s["id"])] = level_maps(model.denoiser, x, cfg, generator=gen)
        print(f"{m}: {timing[m]:.3f} s per slice (CPU, {torch.get_num_threads()} threads)", flush=True)

    def scored(name: str, key) -> torch.Tensor:
        """Raw maps of a variant: its subset of the base method's levels, polarity, smoothing."""
        cfg = variants[name]
        idx = [bases[cfg.method].levels.index(t) for t in cfg.levels]
        maps, resid = raw[cfg.method][key]
        return finish(maps[idx], resid[idx], cfg)

    rows, refs = [], {}
    for name, cfg in variants.items():
        ref = fit_reference([scored(name, s["id"]) for s in ref_s],
                            [s["prep"].brain & ~s["lesion_dilated"] for s in ref_s], [s["prep"].brain for s in ref_s],
                            [s["prep"].depth for s in ref_s], cfg)
        refs[name] = ref
        thr, grid = ref.threshold_at(a.fpr), {f: ref.threshold_at(f) for f in FPR_GRID}
        for split, subs in (("validation", ref_s), ("test", test_s)):
            z = [normalise(scored(name, s["id"]), ref, s["prep"].depth) * s["prep"].brain for s in subs]
            rows.append({"method": name, "split": split, "lesions": "WMH", **evaluate(
                torch.cat(z), torch.cat([s["lesion"] for s in subs]), torch.cat([s["prep"].brain for s in subs]),
                torch.zeros_like(torch.cat([s["lesion"] for s in subs])), thr, grid)})
        z = [normalise(scored(name, ("syn", s["id"])), ref, s["prep"].depth[idx]) * s["prep"].brain[idx]
             for s, (_, _, idx) in zip(test_s, syn)]
        rows.append({"method": name, "split": "test", "lesions": "synthetic", **evaluate(
            torch.cat(z), torch.cat([t for _, t, _ in syn]), torch.cat([s["prep"].brain[idx] for s, (_, _, idx) in zip(test_s, syn)]),
            torch.cat([s["lesion_dilated"][idx] for s, (_, _, idx) in zip(test_s, syn)]), thr, grid)})
    # baseline: threshold from the reference subjects' healthy voxels
    ref_z = torch.cat([baseline(s["prep"].x, s["prep"].brain, sign)[s["prep"].brain & ~s["lesion_dilated"]]
                       for s in ref_s]).numpy()
    thr, grid = float(np.quantile(ref_z, 1 - a.fpr)), {f: float(np.quantile(ref_z, 1 - f)) for f in FPR_GRID}
    for split, subs in (("validation", ref_s), ("test", test_s)):
        z = torch.cat([baseline(s["prep"].x, s["prep"].brain, sign) for s in subs])
        rows.append({"method": "intensity", "split": split, "lesions": "WMH", **evaluate(
            z, torch.cat([s["lesion"] for s in subs]), torch.cat([s["prep"].brain for s in subs]),
            torch.zeros_like(z, dtype=torch.bool), thr, grid)})
    z = torch.cat([baseline(x, s["prep"].brain[idx], sign) for s, (x, _, idx) in zip(test_s, syn)])
    rows.append({"method": "intensity", "split": "test", "lesions": "synthetic", **evaluate(
        z, torch.cat([t for _, t, _ in syn]), torch.cat([s["prep"].brain[idx] for s, (_, _, idx) in zip(test_s, syn)]),
        torch.cat([s["lesion_dilated"][idx] for s, (_, _, idx) in zip(test_s, syn)]), thr, grid)})
    table = pd.DataFrame(rows)
    val_wmh = table[(table.split == "validation")].set_index("method")
    op = {m: max(FPR_GRID, key=lambda f: val_wmh.loc[m, f"dice@{f:g}"]) for m in val_wmh.index}
    table["fpr_op"] = table.method.map(op)
    table["dice_op"] = table.apply(lambda r: r[f"dice@{r['fpr_op']:g}"], axis=1)
    table = table.round(3)
    val = table[table.split == "validation"].set_index("method")["auprc"]
    best = {m: max((v for v in variants if v.startswith(m)), key=lambda v: val[v]) for m in bases}
    default = max(best.values(), key=lambda v: val[v])
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / f"anomaly_{a.contrast}.csv", index=False)
    wide = table[table.split == "test"].pivot(index="method", columns="lesions")
    wide = wide[[(k, les) for les in ("WMH", "synthetic") for k in ("auroc", "auprc", "best_dice", "dice", "dice_op",
                 "fpr_clean_slices", "slice_auroc") if les == "WMH" or k not in ("slice_auroc", "fpr_clean_slices")]]
    wide.columns = [f"{les[:3]}_{k}" for k, les in wide.columns]
    wide.insert(0, "val_auprc", val)
    wide.insert(1, "fpr_op", pd.Series(op))
    wide = wide.sort_values("val_auprc", ascending=False)
    text = (f"model {model.name}; reference/validation subjects {REF}, test {TEST}; dice: threshold at voxel fpr "
            f"{a.fpr} on the reference; dice_op: at the method's operating rate fpr_op, chosen from {FPR_GRID} on "
            "the validation WMH Dice\n(test metrics; WMH = real white-matter hyperintensities, syn = synthetic "
            "lesions; val_auprc: WMH of the reference subjects; fpr_clean_slices at --fpr)\n" + wide.to_string()
            + f"\n\nchosen on validation AUPRC: {best}; default {default}\n"
            + "".join(f"{m}: {timing[m]:.3f} s per slice on CPU ({torch.get_num_threads()} threads)\n" for m in bases))
    (RESULTS / f"anomaly_{a.contrast}.txt").write_text(text)
    print(text)
    if a.write_reference:
        card_path = Path(a.model).with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["reference"] = {"default": variants[default].method, "fpr": op[default], "variants": best,
                             **{variants[v].method: refs[v].to_dict() for v in best.values()},
                             "scans": [f"NiChart Subj{i}" for i in REF]}
        card["metrics"] = {"benchmark": "benchmarks/anomaly.py", "fpr": a.fpr,
                           "test": table[table.split == "test"].to_dict(orient="records")}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote the reference into {card_path}")
        if a.contrast == "flair":
            stroke_figure(a.data / "mri" / "niivue" / "FLAIR.nii.gz", a.model)


def stroke_figure(path: Path, model: str) -> None:
    """The real chronic stroke (niivue FLAIR, 1 mm, no lesion mask): anomaly map over the scan, and the time one
    whole volume takes (brain mask computed: the scan is skull-stripped)."""
    import matplotlib

    matplotlib.use("Agg")
    from neurodiff import plotting
    from neurodiff.tasks.anomaly import detect

    res = detect(path, model=model, device="cpu")
    scan = nib.load(path)
    display = plotting.anomaly_overlay(scan, nib.Nifti1Image(res.score, scan.affine), res.threshold,
                                       title=f"niivue stroke FLAIR: score > {res.threshold:.2f} "
                                             f"(fpr {res.params['fpr']})",
                                       cut_coords=[-2, 10, 18, 26, 34])  # through the stroke (around z = 24 mm)
    out = Path(__file__).parents[1] / "docs" / "images" / "anomaly_stroke.png"
    display.savefig(str(out), dpi=110)
    display.close()
    line = (f"stroke FLAIR {scan.shape} 1 mm: {res.seconds:.1f} s per volume on CPU ({torch.get_num_threads()} "
            f"threads), {len(res.slices)} slices scored; image score {res.image_score:.2f} "
            f"(percentile {res.image_percentile:.0f}), {int(res.mask.sum())} voxels flagged; figure {out.name}")
    with open(RESULTS / "anomaly_flair.txt", "a") as f:
        f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
