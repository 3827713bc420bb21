"""Train the reconstruction models on NiChart T1 + FLAIR: the shipped conditional model
(``neurodiff/models/recon-t1-flair-tiny``, ``--kind recon``) or an unconditional prior for prior-only sampling
(``--kind recon-prior``; not shipped: see ``recon_prior.py --grid native``).

Subjects 1-12 train; 13-14 are kept for calibration/validation and 15-16 for the test benchmark
(``benchmarks/recon_quality.py``); Colin27 (the shipped example) is never used for training.

    python benchmarks/train_recon.py ../shared/data --steps 3000 --out runs/recon-t1-flair-tiny
    python benchmarks/train_recon.py ../shared/data --kind recon-prior --steps 2800 --out runs/recon-prior-t1-flair-tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from neurodiff.tasks.train import train

TRAIN_SUBJECTS = range(1, 13)


def training_files(data: Path) -> list[Path]:
    nichart = data / "mri" / "nichart"
    return [nichart / "t1" / f"Subj{i}_T1.nii.gz" for i in TRAIN_SUBJECTS] + [
        nichart / "flair" / f"Subj{i}_FL.nii.gz" for i in TRAIN_SUBJECTS
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the shared data folder (with mri/nichart)")
    ap.add_argument("--kind", choices=("recon", "recon-prior"), default="recon")
    ap.add_argument("--out", type=Path, default=Path("runs/recon-t1-flair-tiny"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--net", default="tiny", help="network size: tiny (shipped), small or base")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=0, help="background processes simulating batches (GPU: ~14)")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=a.steps, loss=float("nan"))
        res = train(
            a.kind, training_files(a.data), a.out, net_size=a.net, steps=a.steps, batch_size=a.batch_size,
            lr=a.lr, device=a.device, resume=a.resume, name=a.out.name, workers=a.workers,
            data_note="NiChart demo T1 + FLAIR, Subj1-12 (2 mm, real, magnitude; k-space simulated)",
            callback=lambda s: bar.update(task, completed=s.step, loss=s.losses[-1]),
        )
    print(f"wrote {res.weights} and {res.card} in {res.seconds / 60:.1f} min; final smoothed loss "
          f"{res.losses['loss_smooth'].iloc[-1]:.4f}")


if __name__ == "__main__":
    main()
