"""Computed brain masks (``neurodiff.anomaly.preprocess.compute_brain_mask``) against reference brain masks.

NiChart subjects 1-16: FLAIR and T1 scans with skull against the DLMUSE brain mask (all non-zero labels, resampled
onto each scan); Colin27 ``ch2`` (with skull, MNI-padded) against ``ch2bet > 0``. Prints Dice and the volume
difference per scan, and a summary.

``--anomaly``: what a computed mask costs the anomaly detector end to end. ``neurodiff.tasks.anomaly.detect`` with
the shipped FLAIR model on the test subjects 13-16, once with the DLMUSE brain mask and once with none (computed),
scored on the input grid against the WMH masks inside the DLMUSE brain: voxel AUROC, AUPRC, best Dice, Dice of the
written anomaly mask.

    python benchmarks/brain_mask.py ../shared/data [--anomaly]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from neurodiff.anomaly.preprocess import compute_brain_mask, is_skull_stripped, mask_on_grid

RESULTS = Path(__file__).parent / "results"


def compare(img: nib.Nifti1Image, truth: nib.Nifti1Image) -> dict:
    t0 = time.time()
    mask = np.asarray(compute_brain_mask(img).dataobj) > 0
    seconds = time.time() - t0
    ref = mask_on_grid(truth, img)
    voxel_cm3 = float(np.prod(img.header.get_zooms()[:3])) / 1000
    return {"skull_stripped": is_skull_stripped(img), "dice": 2 * (mask & ref).sum() / (mask.sum() + ref.sum()),
            "volume_cm3": mask.sum() * voxel_cm3, "reference_cm3": ref.sum() * voxel_cm3, "seconds": seconds}


def anomaly_table(nichart: Path) -> pd.DataFrame:
    """End-to-end anomaly metrics of test subjects 13-16 with the reference and with a computed brain mask."""
    from neurodiff.anomaly.metrics import voxel_metrics
    from neurodiff.tasks.anomaly import detect

    rows = []
    for i in (13, 14, 15, 16):
        scan = nichart / "flair" / f"Subj{i}_FL.nii.gz"
        img, dlmuse = nib.load(scan), nib.load(nichart / "dlmuse" / f"Subj{i}_T1_DLMUSE.nii.gz")
        brain = mask_on_grid(dlmuse, img)
        wmh = mask_on_grid(nib.load(nichart / "wmh" / f"Subj{i}_FL_DLWMLS.nii.gz"), img)
        for mask_name, mask in (("DLMUSE (given)", dlmuse), ("computed", None)):
            res = detect(scan, contrast="flair", brain_mask=mask, device="cpu")
            m = voxel_metrics(res.score[brain], wmh[brain], res.threshold)
            rows.append({"subject": i, "brain mask": mask_name, **m,
                         "dice_written_mask": 2 * (res.mask & wmh).sum() / (res.mask.sum() + wmh.sum())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--anomaly", action="store_true", help="also the anomaly detector with computed brain masks")
    args = ap.parse_args()
    rows = []
    nichart = args.data / "mri" / "nichart"
    for i in range(1, 17):
        truth = nib.load(nichart / "dlmuse" / f"Subj{i}_T1_DLMUSE.nii.gz")
        for contrast, folder, suffix in (("FLAIR", "flair", "FL"), ("T1", "t1", "T1")):
            img = nib.load(nichart / folder / f"Subj{i}_{suffix}.nii.gz")
            rows.append({"scan": f"NiChart Subj{i}", "contrast": contrast, **compare(img, truth)})
    colin = args.data / "mri" / "colin27"
    rows.append({"scan": "Colin27 ch2", "contrast": "T1", **compare(nib.load(colin / "ch2.nii.gz"),
                                                                  nib.load(colin / "ch2bet.nii.gz"))})
    table = pd.DataFrame(rows).round(3)
    summary = table.groupby("contrast")["dice"].describe()[["count", "mean", "min", "50%", "max"]].round(3)
    text = (f"computed brain masks vs reference masks (CPU, {torch.get_num_threads()} threads)\n"
            + table.to_string(index=False) + "\n\nDice by contrast\n" + summary.to_string() + "\n")
    if args.anomaly:
        anomaly = anomaly_table(nichart)
        mean = anomaly.drop(columns="subject").groupby("brain mask").mean()
        text += ("\nanomaly-flair-tiny on NiChart 13-16 (input grid, inside the DLMUSE brain, automated WMH)\n"
                 + anomaly.round(3).to_string(index=False) + "\n\nmean over subjects\n" + mean.round(3).to_string()
                 + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "brain_mask.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
