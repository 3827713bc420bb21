"""Do the k-space readers bring other FFT conventions back to neurodiff's, and leave correct data alone?

    python benchmarks/kspace_conventions.py ../shared/data > benchmarks/results/kspace_conventions.txt

Three slices (one case) in each of three orientations of four volumes (Colin27 at 2 mm as shipped, the niivue FLAIR
at 1 mm, Colin27 with skull at 1 mm, NiChart subject 15's T1 at 2 mm), at their own field of view and cut to the
object along the first axis (a tight field of view), fully sampled and under 4x / 8x random, 4x equispaced and 6x
Poisson-disc masks, single-coil and as 16 coils on a ring around the field of view whose sensitivities fall off
towards the centre (Gaussian profiles of width 0.8, 0.4 and 0.2 in units of the half field of view: edge over centre
about 2x, 7x and 120x), written as ``fftshift(fft2(ifftshift(x)))`` (neurodiff's), ``fftshift(fft2(x))`` and
``fft2(x)``. A case passes when the reader's correction (:func:`neurodiff.mri.raw._recentred`) gives back the
zero-filled image of the data in neurodiff's convention (largest error below 0.1% of its maximum).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from neurodiff.mri.fft import fft2c, ifft2c
from neurodiff.mri.masks import sampling_mask
from neurodiff.mri.raw import _recentred

REPO = Path(__file__).resolve().parents[1]
MASKS = (("full", 1, 1.0), ("random", 4, 0.08), ("random", 8, 0.04), ("equispaced", 4, 0.08), ("poisson", 6, 0.08))


def written(image: np.ndarray, convention: str) -> np.ndarray:
    """Centred-or-not k-space of ``image`` ``(S, C, H, W)`` under ``convention``."""
    if convention == "neurodiff":
        return fft2c(torch.from_numpy(image)).numpy()
    k = np.fft.fftshift(np.fft.fft2(image, norm="ortho"), axes=(-2, -1))
    return k if convention == "fftshift(fft2(x))" else np.fft.ifftshift(k, axes=(-2, -1))


def coils(image: np.ndarray, width: float | None) -> np.ndarray:
    """``image`` ``(S, 1, H, W)`` as single-coil data (``width`` None) or seen by 16 ring coils of that fall-off."""
    if width is None:
        return image
    h, w = image.shape[-2:]
    yy, xx = np.mgrid[-1 : 1 : complex(0, h), -1 : 1 : complex(0, w)]
    maps = np.stack([np.exp(-((yy - 1.1 * np.sin(a)) ** 2 + (xx - 1.1 * np.cos(a)) ** 2) / width)
                     for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)])
    return (image * maps[None]).astype(np.complex64)


def tight(image: np.ndarray) -> np.ndarray:
    """``image`` cut along its first in-plane axis to where the object is (an even number of lines)."""
    profile = np.abs(image).sum(axis=(0, 1, 3))
    rows = np.flatnonzero(profile > 0.05 * profile.max())
    cut = image[:, :, rows[0]:rows[-1] + 1]
    return cut[:, :, :cut.shape[2] - cut.shape[2] % 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (../shared/data)")
    args = ap.parse_args()
    volumes = {"colin27 2 mm": REPO / "neurodiff" / "data" / "sub-colin27_T1w.nii.gz",
               "stroke FLAIR 1 mm": REPO / "neurodiff" / "data" / "sub-stroke_FLAIR.nii.gz",
               "colin27 with skull 1 mm": args.data / "mri" / "colin27" / "ch2.nii.gz",
               "NiChart Subj15 T1 2 mm": args.data / "mri" / "nichart" / "t1" / "Subj15_T1.nii.gz"}
    rows = []
    for name, path in volumes.items():
        vol = nib.load(path).get_fdata(dtype=np.float32)
        for axis in (0, 1, 2):
            stack = np.moveaxis(vol, axis, 0)
            idx = np.linspace(0.25 * len(stack), 0.75 * len(stack), 3).astype(int)
            image = stack[idx][:, None].astype(np.complex64)
            image = np.pad(image, ((0, 0), (0, 0), (0, image.shape[2] % 2), (0, image.shape[3] % 2)))
            for (fov, cut), width in itertools.product((("own", image), ("tight", tight(image))),
                                                       (None, 0.8, 0.4, 0.2)):
                im = coils(cut, width)
                for kind, accel, centre in MASKS:
                    mask = (np.ones(im.shape[-2:], bool) if kind == "full"
                            else sampling_mask(im.shape[-2:], accel, centre, kind, seed=1))
                    expected = ifft2c(fft2c(torch.from_numpy(im)) * torch.from_numpy(mask)).abs().numpy()
                    for convention in ("neurodiff", "fftshift(fft2(x))", "fft2(x)"):
                        m = mask if convention != "fft2(x)" else np.fft.ifftshift(mask)
                        data, notes = _recentred(written(im, convention) * m, name)
                        back = ifft2c(torch.from_numpy(data)).abs().numpy()
                        rows.append({"convention": convention, "mask": f"{kind} {accel}x" if accel > 1 else kind,
                                     "coils": "1" if width is None else f"16, fall-off {width:g}",
                                     "volume": name, "fov": fov, "changed": bool(notes),
                                     "ok": float(np.abs(back - expected).max() / expected.max()) < 1e-3})
    df = pd.DataFrame(rows)
    table = df.groupby(["convention", "coils"]).agg(cases=("ok", "size"), correct=("ok", "sum"),
                                                  changed=("changed", "sum"))
    print(table.to_string())
    print()
    print(df.groupby(["convention", "mask"]).agg(cases=("ok", "size"), correct=("ok", "sum"),
                                                 changed=("changed", "sum")).to_string())
    print(f"\n{int(df.ok.sum())} of {len(df)} cases correct (each case: 3 slices)")


if __name__ == "__main__":
    main()
