"""Reconstruction quality and uncertainty calibration on held-out NiChart subjects.

Slices: axial (last voxel axis), ``--slices-per-volume`` evenly spread over the central 60% of each volume, T1 and
FLAIR. Subjects 13-14 are the calibration (validation) set, 15-16 the test set; the model was trained on 1-12.
Masks: 1D random phase-encode lines along the first axis, 4x with centre 8% and 8x with centre 4%, one seeded
mask per volume, the same for every method. k-space is simulated from the magnitude images (retrospective
undersampling flatters every method alike: Shimron et al., PNAS 2022).

``noise-limited psnr`` estimates the ceiling set by the references' own noise (``noise_limited_psnr``).
Methods: zero-filling; BART ``pics -S -l1 -r LAMBDA`` (l1-wavelet, lambda tuned on training subjects); neurodiff
(posterior mean of N samples). Uncertainty: 90% interval coverage (mean +- 1.645 std), Spearman(std, |error|) and
AUSE over the object's voxels (above 5% of the slice maximum), before and after the scale fitted on the
calibration subjects (``--calibrate`` writes it into the model card). ``spearman_oracle`` is the same rank
correlation for an oracle map, the true error's RMS over each voxel's neighbours (``neighbour_error``): how
predictable the size of the error is from its surroundings at all. These three pool the object voxels of all
slices, so part of what they reward is telling slices and volumes of different intensity apart;
``spearman_in_slice`` is the median over slices of the rank correlation within each slice.

``--test-set 1mm`` tests instead on two real 1 mm scans never used for training: Colin27's brain
(``mri/colin27/ch2bet.nii.gz``, T1, an average of 27 scans, so smooth and nearly noise-free) and the niivue stroke
FLAIR (``mri/niivue/FLAIR.nii.gz``, one acquisition, with skull): how a model trained on 2 mm slices does at 1 mm.

    python benchmarks/recon_quality.py ../shared/data --model runs/recon-t1-flair-tiny.json --calibrate
    python benchmarks/recon_quality.py ../shared/data --bart --bart-lambda 0.003 --test-set 1mm --slices-per-volume 6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy.stats import norm, spearmanr

from neurodiff.mri import fft2c, ifft2c, kspace_noise_variance, sampling_mask
from neurodiff.mri.posterior import calibrated_std, calibration_scale, in_plane_voxel_mm
from neurodiff.mri.metrics import foreground, in_slice_spearman, neighbour_error, slice_metrics, uncertainty_metrics
from neurodiff.tasks.recon import reconstruct
from neurodiff.weights import load_model

CAL_SUBJECTS, TEST_SUBJECTS, TRAIN_SUBJECTS = (13, 14), (15, 16), (1, 2, 3)
SETTINGS = ((4.0, 0.08), (8.0, 0.04))


Volume = tuple[str, np.ndarray, float]  # name, (X, Y, Z) data, in-plane voxel size (mm)


def _volume(name: str, path: Path) -> Volume:
    img = nib.load(path)
    return name, img.get_fdata(dtype=np.float32), in_plane_voxel_mm(img.affine)


def volumes(data: Path, subjects) -> list[Volume]:
    return [_volume(f"Subj{s}_{suffix}", data / "mri" / "nichart" / sub / f"Subj{s}_{suffix}.nii.gz")
            for s in subjects for sub, suffix in (("t1", "T1"), ("flair", "FL"))]


def one_mm(data: Path) -> list[Volume]:
    files = {"colin27_T1": "colin27/ch2bet.nii.gz", "stroke_FLAIR": "niivue/FLAIR.nii.gz"}
    return [_volume(name, data / "mri" / f) for name, f in files.items()]


def unseen_contrasts(data: Path) -> list[Volume]:
    """Contrasts absent from training: a T2-like image of each test subject (its T1 inverted inside the filled
    DLMUSE brain mask: bright fluid, dark white matter; synthetic) and the magnitude of niivue's real complex
    gradient-echo image (3.3 mm, 64 x 64)."""
    from scipy.ndimage import binary_closing, binary_fill_holes

    out = []
    for s in TEST_SUBJECTS:
        _, t1, voxel = _volume("", data / "mri" / "nichart" / "t1" / f"Subj{s}_T1.nii.gz")
        labels = nib.load(data / "mri" / "nichart" / "dlmuse" / f"Subj{s}_T1_DLMUSE.nii.gz").get_fdata()
        brain = binary_fill_holes(binary_closing(labels > 0, iterations=2))
        top = np.percentile(t1[brain], 99.5)
        t2like = np.where(brain, 1.05 * top - np.minimum(t1, top), 0).astype(np.float32)
        out.append((f"Subj{s}_T2like", t2like, voxel))
    gre = nib.load(data / "mri" / "niivue" / "complex.nii.gz")
    return out + [("niivue_GRE", np.abs(gre.get_fdata(dtype=np.complex64)).astype(np.float32),
                   in_plane_voxel_mm(gre.affine))]


TEST_SETS = {  # --test-set: (volumes, description, file suffix)
    "nichart": (lambda d: volumes(d, TEST_SUBJECTS), f"test subjects {TEST_SUBJECTS} (T1+FLAIR, 2 mm)", ""),
    "1mm": (one_mm, "Colin27 T1 + niivue FLAIR (1 mm)", "_1mm"),
    "0.67mm": (lambda d: upsampled(one_mm(d), 1.5), "Colin27 T1 + niivue FLAIR upsampled 1.5x in-plane (0.67 mm)",
               "_067mm"),
    "contrast": (unseen_contrasts, f"unseen contrasts: T2-like from the T1 of {TEST_SUBJECTS}, niivue GRE",
                 "_contrast"),
}


def central_slices(vol: np.ndarray, n: int) -> np.ndarray:
    """``(H, W, n)`` slices spread over the central 60% of the last axis, padded to even in-plane sizes."""
    z = vol.shape[2]
    idx = np.linspace(0.2 * z, 0.8 * z, n).round().astype(int)
    s = vol[:, :, idx]
    return np.pad(s, ((0, s.shape[0] % 2), (0, s.shape[1] % 2), (0, 0)))


def run_neurodiff(stack: np.ndarray, voxel: float, accel: float, cf: float, seed: int, model, args) -> dict:
    if args.baselines_only:  # the same mask reconstruct() would draw, no sampling
        mask = sampling_mask(stack.shape[:2], accel, cf, "random", seed=seed)
        zf = ifft2c(fft2c(torch.from_numpy(np.moveaxis(stack, 2, 0)).to(torch.complex64)) * torch.from_numpy(mask))
        return {"recon": zf.abs().numpy(), "std": np.zeros(zf.shape, np.float32), "zf": zf.numpy(), "mask": mask,
                "seconds": 0.0}
    img = nib.Nifti1Image(stack, np.diag([voxel, voxel, 1.0, 1.0]))
    res = reconstruct(img, accel=accel, center_fraction=cf, seed=seed,
                      samples=args.samples, steps=args.steps, eta=args.eta, views=args.views, model=model,
                      device=args.device)
    to_s = lambda a: np.moveaxis(a, 2, 0)  # noqa: E731
    return {"recon": to_s(res.recon), "std": to_s(res.uncertainty), "zf": to_s(res.zerofilled),
            "mask": res.mask[:, :, 0].astype(bool), "seconds": res.seconds}


def noise_limited_psnr(ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean PSNR (dB) over slices ``ref`` ``(S, H, W)`` of an ideal reconstruction that gets everything right but
    the reference's own noise in the k-space that ``mask`` ``(H, W)`` leaves out: MSE = unsampled fraction x the
    per-sample noise variance of the fully sampled k-space, read from its corners (``kspace_noise_variance``).
    An estimate of the ceiling no method can pass on these noisy references (pessimistic where the corners still
    hold signal, optimistic where the noise is not white); infinite for a noise-free (synthetic) reference."""
    k = fft2c(torch.from_numpy(ref).to(torch.complex64))
    full = np.ones(ref.shape[1:], bool)
    out = []
    for r, ks in zip(ref, k):
        mse = (1.0 - mask.mean()) * kspace_noise_variance(ks[None], full)
        out.append(10 * np.log10(float(r.max() - r.min()) ** 2 / mse) if mse > 0 else np.inf)  # noise-free
    return float(np.mean(out))


def upsampled(vols: list[Volume], factor: float) -> list[Volume]:
    """In-plane cubic upsampling of each volume by ``factor``: finer-grid versions of the calibration subjects, as
    the training's resolution augmentation makes them, so that the calibration also sees scans finer than 2 mm."""
    from scipy.ndimage import zoom

    return [(f"{name}_x{factor:g}", zoom(vol, (factor, factor, 1), order=3).clip(0), voxel / factor)
            for name, vol, voxel in vols]


def evaluate(vols, model, args, bart_lam: float | None,
             slices_per_volume: int | None = None) -> tuple[pd.DataFrame, list[tuple[np.ndarray, ...]]]:
    rows, unc = [], []
    for vi, (name, vol, voxel) in enumerate(vols):
        stack = central_slices(vol, slices_per_volume or args.slices_per_volume)
        ref = np.moveaxis(stack, 2, 0)
        for accel, cf in SETTINGS:
            seed = 1000 * vi + int(accel)
            nd = run_neurodiff(stack, voxel, accel, cf, seed, model, args)
            row = {"volume": name, "accel": accel, "seconds": nd["seconds"]}
            estimates = {"zero-filled": np.abs(nd["zf"])}
            if not args.baselines_only:
                estimates["neurodiff"] = nd["recon"]
            mask = torch.from_numpy(nd["mask"])
            k = fft2c(torch.from_numpy(ref).to(torch.complex64)) * mask
            if bart_lam is not None:
                from baselines import bart_pics

                estimates["BART"] = np.abs(bart_pics(k.numpy(), nd["mask"], bart_lam))
            if args.unet is not None:
                import unet_baseline

                net = unet_baseline.build()
                net.load_state_dict(torch.load(args.unet, map_location="cpu"))
                for dc in (False, True):
                    x = unet_baseline.predict(net.eval(), ifft2c(k), mask, dc)
                    estimates["U-Net + DC" if dc else "U-Net"] = x.abs().numpy()
            for method, est in estimates.items():
                row.update({f"{method} {k}": v for k, v in slice_metrics(ref, est).items()})
            row["noise-limited psnr"] = noise_limited_psnr(ref, nd["mask"])
            rows.append(row)
            unc.append((accel, ref, nd["recon"], nd["std"], voxel))
    return pd.DataFrame(rows), unc


def calibrated(unc, cal: dict):
    """``unc`` entries ``(accel, ref, mean, std, voxel_mm)`` with ``std`` calibrated as a model card's calibration
    ``cal`` says for that voxel size (``calibration_scale``; an empty dict: the raw spread)."""
    return [(a, r, m, calibrated_std(torch.from_numpy(s), calibration_scale(cal, v),
                                     float(cal.get("smooth_voxels", 0.0))).numpy(), v) for a, r, m, s, v in unc]


def uncertainty_table(unc, cal: dict) -> pd.DataFrame:
    rows = []
    scales = sorted({round(calibration_scale(cal, u[4]), 3) for u in unc})
    unc = calibrated(unc, cal)
    for accel in sorted({u[0] for u in unc}):
        parts = [u for u in unc if u[0] == accel]
        fgs = [foreground(p[1]) for p in parts]  # object voxels of each slice stack, pooled
        ref, mean, std = (np.concatenate([p[i][fg] for p, fg in zip(parts, fgs)]) for i in (1, 2, 3))
        m = uncertainty_metrics(ref, mean, std, np.ones(ref.shape, bool))
        oracle = np.concatenate([neighbour_error(p[1], p[2])[fg] for p, fg in zip(parts, fgs)])
        m["spearman_oracle"] = float(spearmanr(oracle, np.abs(mean - ref)).statistic)
        m["spearman_in_slice"] = in_slice_spearman(*([a for p in parts for a in p[i]] for i in (1, 2, 3)),
                                                   [f for fg in fgs for f in fg])  # over every slice of the set
        rows.append({"accel": accel, "std scale": "/".join(map(str, scales)),
                     "smoothing (voxels)": float(cal.get("smooth_voxels", 0.0)), **m})
    return pd.DataFrame(rows)


def fit_scale(unc, level: float = 0.9) -> float:
    """The factor on std that makes the central ``level`` Gaussian interval cover ``level`` of the voxels."""
    ratios = []
    for _, ref, mean, std, _ in unc:
        fg = foreground(ref)
        ratios.append(np.abs(ref - mean)[fg] / np.maximum(std[fg], 1e-8))
    return float(np.quantile(np.concatenate(ratios), level) / norm.ppf(0.5 + level / 2))


def fit_calibration(unc, smooths=(0.0, 0.75, 1.5, 3.0)) -> dict:
    """Smoothing with the best mean Spearman(std, |error|); then the coverage scale for it over all slices
    (``std_scale``, for scans of unknown voxel size) and, with several voxel sizes, for each of them
    (``std_scale_by_voxel_mm``)."""
    best = max(smooths, key=lambda s: uncertainty_table(unc, {"smooth_voxels": s})["spearman"].mean())
    smoothed = calibrated(unc, {"smooth_voxels": best})
    cal = {"std_scale": round(fit_scale(smoothed), 4), "smooth_voxels": best}
    voxels = sorted({round(u[4], 3) for u in unc})
    if len(voxels) > 1:
        cal["std_scale_by_voxel_mm"] = [[v, round(fit_scale([u for u in smoothed if round(u[4], 3) == v]), 4)]
                                        for v in voxels]
    return cal


def extend_calibration(cal: dict, vols: list[Volume], zooms: list[float], run) -> dict:
    """``cal`` with rows added to (or replaced in) ``std_scale_by_voxel_mm``: the scale fitted, with ``cal``'s
    smoothing, on ``vols`` upsampled in-plane by each of ``zooms`` (``run(vols)`` returns their uncertainty
    entries); the other rows are kept."""
    smooth = {"smooth_voxels": float(cal.get("smooth_voxels", 0.0))}
    rows = {round(v, 3): s for v, s in cal.get("std_scale_by_voxel_mm", [])}
    for zoom in zooms:
        unc = calibrated(run(upsampled(vols, zoom)), smooth)
        rows[round(unc[0][4], 3)] = round(fit_scale(unc), 4)
    added = " and ".join(f"{z:g}x" for z in zooms)
    return {**cal, "std_scale_by_voxel_mm": [[v, s] for v, s in sorted(rows.items())],
            "fitted_on": cal.get("fitted_on", "") + f"; rows added for upsampled {added} (3 slices each)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default="recon-t1-flair-tiny")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--views", type=int, default=8, help="symmetries of each slice the samples are spread over")
    ap.add_argument("--slices-per-volume", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bart", action="store_true", help="also run BART (needs the `bart` command)")
    ap.add_argument("--bart-lambda", type=float, default=None, help="skip tuning; use this lambda")
    ap.add_argument("--unet", type=Path, default=None, help="weights of the supervised U-Net baseline")
    ap.add_argument("--baselines-only", action="store_true", help="only zero-filling, BART and the U-Net")
    ap.add_argument("--calibrate", action="store_true", help="fit the std scale on subjects 13-14 and write it "
                    "into the model card")
    ap.add_argument("--calibrate-zoom", type=lambda v: [float(z) for z in v.split(",")], default=[],
                    help="with --calibrate: also fit on the calibration subjects upsampled in-plane by these "
                    "comma-separated factors (3 slices each)")
    ap.add_argument("--extend-calibration", type=lambda v: [float(z) for z in v.split(",")], default=[],
                    help="add rows to the card's std_scale_by_voxel_mm: fit only the calibration subjects upsampled "
                    "in-plane by these comma-separated factors (3 slices each), with the card's smoothing")
    ap.add_argument("--test-set", choices=tuple(TEST_SETS), default="nichart",
                    help="NiChart subjects 15-16 at 2 mm; Colin27 and the niivue FLAIR at 1 mm, or upsampled to "
                    "0.67 mm; or unseen contrasts")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_model(args.model, "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    lam = None
    if args.bart:
        from baselines import tune_lambda

        lam = args.bart_lambda
        if lam is None:  # tuned on training subjects, 4x
            tr = [central_slices(v, 3) for _, v, _ in volumes(args.data, TRAIN_SUBJECTS)]
            ref = np.concatenate([np.moveaxis(s, 2, 0) for s in tr if s.shape[:2] == tr[0].shape[:2]])
            from neurodiff.mri import sampling_mask

            mask = sampling_mask(ref.shape[1:], 4.0, 0.08, "random", seed=7)
            k = np.stack([np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(r), norm="ortho")) for r in ref]) * mask
            lam = tune_lambda(k.astype(np.complex64), mask, ref, [0.0003, 0.001, 0.003, 0.01])
        print(f"BART lambda = {lam}")

    cal = model.card.pop("calibration", {})  # evaluate with the raw spread; calibrate here
    card_path = Path(args.model).with_suffix(".json") if Path(args.model).with_suffix(".json").exists() else None
    if args.calibrate:
        cal_vols = volumes(args.data, CAL_SUBJECTS)
        _, cal_unc = evaluate(cal_vols, model, args, None)
        for zoom in args.calibrate_zoom:
            cal_unc += evaluate(upsampled(cal_vols, zoom), model, args, None, slices_per_volume=3)[1]
        cal = {**fit_calibration(cal_unc),
               "fitted_on": f"NiChart Subj{CAL_SUBJECTS}, T1+FLAIR"
               + (" (2 mm, and upsampled " + " and ".join(f"{z:g}x" for z in args.calibrate_zoom)
                  + " in-plane, 3 slices each)" if args.calibrate_zoom else "")
               + f", 4x and 8x random masks, {args.samples} samples "
               f"spread over {args.views} symmetric views, {args.steps} steps, eta {args.eta}",
               "target": "90% central interval covers 90% of object voxels"}
    elif args.extend_calibration:
        cal = extend_calibration(cal, volumes(args.data, CAL_SUBJECTS), args.extend_calibration,
                                 lambda vols: evaluate(vols, model, args, None, slices_per_volume=3)[1])
    if (args.calibrate or args.extend_calibration) and card_path is not None:
        print(f"fitted on subjects {CAL_SUBJECTS}: {cal}")
        card = json.loads(card_path.read_text())
        card["calibration"] = cal
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    load, test_name, set_suffix = TEST_SETS[args.test_set]
    test, test_unc = evaluate(load(args.data), model, args, lam)
    suffix = ("_baselines" if args.baselines_only else "") + set_suffix

    metric_cols = [c for c in test.columns if c.split()[-1] in ("psnr", "ssim", "nmse")]
    quality = test.groupby("accel")[metric_cols + ["seconds"]].mean()
    pd.set_option("display.width", 200)
    print(f"\n== Reconstruction quality, {test_name}, {args.slices_per_volume} slices per volume, "
          f"{args.samples} samples, {args.steps} steps, eta {args.eta} ==")
    print(quality.T.round(4).to_string())
    test.to_csv(args.out / f"recon_quality_per_volume{suffix}.csv", index=False)
    quality.to_csv(args.out / f"recon_quality{suffix}.csv")
    if not args.baselines_only:
        unc = pd.concat([uncertainty_table(test_unc, {}), uncertainty_table(test_unc, cal)])
        print(f"\n== Uncertainty on {test_name} (object voxels): raw, and calibrated on {CAL_SUBJECTS} ==")
        print(unc.round(3).to_string(index=False))
        unc.to_csv(args.out / f"recon_uncertainty{suffix}.csv", index=False)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
