"""Speed of ``neurodiff recon``: one slice and a whole volume, milliseconds per network evaluation (NFE) and,
from the counted FLOPs, the achieved throughput (and its fraction of a given peak on a GPU).

    python benchmarks/recon_speed.py                     # CPU, the shipped example (Colin27, 2 mm)
    python benchmarks/recon_speed.py --device cuda --peak-tflops 989 --volume path/to/scan.nii.gz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import neurodiff
from neurodiff.tasks.recon import reconstruct, slices_per_batch
from neurodiff.weights import load_model

EXAMPLE = Path(neurodiff.__file__).parent / "data" / "sub-colin27_T1w.nii.gz"


def flops_per_nfe(model, batch: int, shape: tuple[int, int], device: torch.device) -> float:
    den = model.denoiser
    x = torch.randn(batch, 2, *shape, device=device)
    c = torch.randn(batch, 3, *shape, device=device)
    t = torch.full((batch,), 500, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        den.raw(x, t, neurodiff.diffusion.Cond(image=c))
    return float(fc.get_total_flops())


def timed(src, device: str, **kw) -> dict:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = reconstruct(src, device=device, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "slices": res.recon.shape[2], "shape": res.recon.shape[:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volume", type=Path, default=EXAMPLE)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-slices", type=int, default=None)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the fraction reached")
    a = ap.parse_args()
    dev = torch.device(a.device)
    model = load_model("recon-t1-flair-tiny", dev)
    kw = dict(samples=a.samples, steps=a.steps, model=model, accel=4.0, batch_slices=a.batch_slices)
    n = nib.load(a.volume).shape[2]
    mid = n // 2
    timed(a.volume, a.device, slices=f"{mid}:{mid + 1}", **{**kw, "steps": 2})  # warm-up
    one = timed(a.volume, a.device, slices=f"{mid}:{mid + 1}", **kw)
    vol = timed(a.volume, a.device, **kw)
    canvas = model.card["training"]["image_size"]
    shape = tuple(max(s, c) + -max(s, c) % 8 for s, c in zip(one["shape"], canvas))  # what the network sees
    group = a.batch_slices or slices_per_batch(shape, dev)
    rows = []
    for name, r, batch in (("one slice", one, a.samples), ("volume", vol, a.samples * group)):
        nfe = a.steps * -(-r["slices"] // (1 if name == "one slice" else group))
        fl = flops_per_nfe(model, batch, shape, dev) * nfe
        rows.append({"case": name, "device": str(dev) if dev.type != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
                     "slices": r["slices"], "in-plane": "x".join(map(str, r["shape"])), "samples": a.samples,
                     "steps": a.steps, "seconds": round(r["seconds"], 2), "ms per NFE (batch)": round(1000 * r["seconds"] / nfe, 1),
                     "TFLOP/s": round(fl / r["seconds"] / 1e12, 3),
                     "% of peak": None if a.peak_tflops is None else round(100 * fl / r["seconds"] / 1e12 / a.peak_tflops, 2)})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
