"""Speed of ``neurodiff anomaly``: one whole volume per scoring method, seconds per volume and per scored slice,
on the CPU or a GPU (a warm-up run first, so model loading and CUDA start-up are not counted).

    python benchmarks/anomaly_speed.py                                  # CPU, the shipped stroke FLAIR (1 mm)
    python benchmarks/anomaly_speed.py --device cuda --methods residual elbo recon
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import neurodiff
from neurodiff.tasks.anomaly import detect

EXAMPLE = Path(neurodiff.__file__).parent / "data" / "sub-stroke_FLAIR.nii.gz"


def timed(scan: Path, device: str, **kw) -> tuple[float, int]:
    """Seconds one :func:`detect` call takes on ``scan`` and the number of slices it scored."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = detect(scan, device=device, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, len(res.slices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scan", type=Path, default=EXAMPLE)
    ap.add_argument("--contrast", default="flair", choices=("flair", "t1"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["residual"], choices=("residual", "elbo", "recon"))
    a = ap.parse_args()
    timed(a.scan, a.device, contrast=a.contrast)  # warm-up: weights, brain mask code paths, CUDA context
    rows = []
    for method in a.methods:
        seconds, n = timed(a.scan, a.device, contrast=a.contrast, method=method)
        device = a.device if not a.device.startswith("cpu") else f"cpu ({torch.get_num_threads()} threads)"
        rows.append({"method": method, "device": device, "scan": a.scan.name, "slices scored": n,
                     "s per volume": round(seconds, 2), "s per slice": round(seconds / n, 3)})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
