"""Train the shipped anomaly models (``neurodiff/models/anomaly-{flair,t1}-tiny``): unconditional diffusion models
of brain slices on NiChart, with the automated WMH masks left out of the loss.

Subjects 1-10 train; 11-12 are the healthy reference (``neurodiff anomaly calibrate``, thresholds); 13-16 are the
test subjects of ``benchmarks/anomaly.py``. T1 also trains on Colin27 (ch2bet). Brain masks: DLMUSE labels > 0
(T1 grid; resampled onto the FLAIR grid through the scanner affines, on which the WMH masks lie fully in the brain).

    python benchmarks/train_anomaly.py ../shared/data --contrast flair --steps 3000 --out runs/anomaly-flair-tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from neurodiff.tasks.train import train

TRAIN_SUBJECTS = range(1, 11)
REFERENCE_SUBJECTS = (11, 12)
TEST_SUBJECTS = (13, 14, 15, 16)


def scans(data: Path, contrast: str, subjects) -> tuple[list[Path], list[Path], list[Path]]:
    """(images, brain masks, lesion masks) of NiChart subjects for ``contrast`` 'flair' or 't1'."""
    n = data / "mri" / "nichart"
    img = [n / "flair" / f"Subj{i}_FL.nii.gz" if contrast == "flair" else n / "t1" / f"Subj{i}_T1.nii.gz"
           for i in subjects]
    return img, [n / "dlmuse" / f"Subj{i}_T1_DLMUSE.nii.gz" for i in subjects], \
        [n / "wmh" / f"Subj{i}_FL_DLWMLS.nii.gz" for i in subjects]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the shared data folder (with mri/nichart, mri/colin27)")
    ap.add_argument("--contrast", choices=["flair", "t1"], required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--net", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    img, brain, lesion = scans(a.data, a.contrast, TRAIN_SUBJECTS)
    note = f"NiChart demo {a.contrast.upper()}, Subj1-10 (WMH masks excluded from the loss)"
    if a.contrast == "t1":
        colin = a.data / "mri" / "colin27" / "ch2bet.nii.gz"
        img, brain, lesion = img + [colin], brain + [colin], lesion + [None]
        note += " + Colin27 ch2bet"
    with Progress(TextColumn("training"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=a.steps, loss=float("nan"))
        res = train(
            "anomaly", img, a.out, net_size=a.net, image_size=(96, 96), steps=a.steps, batch_size=a.batch_size,
            lr=a.lr, device=a.device, resume=a.resume, name=a.out.name, data_note=note, brain_masks=brain,
            lesion_masks=lesion, contrast=a.contrast,
            callback=lambda s: bar.update(task, completed=s.step, loss=s.losses[-1]),
        )
    print(f"wrote {res.weights} and {res.card} in {res.seconds / 60:.1f} min; final smoothed loss "
          f"{res.losses['loss_smooth'].iloc[-1]:.4f}")


if __name__ == "__main__":
    main()
