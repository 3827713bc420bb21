"""Peak memory and time of reading, and of reconstructing one slice of, large raw k-space files.

Writes two files of realistic size with synthetic content (an ellipsoid seen by smooth coil maps, a little noise):

- ``3d``: a 3D Cartesian ISMRMRD acquisition about half the size of an mridata.org knee scan (8 coils, 320 readout
  samples with 2x oversampling, 256 x 160 phase-encode lines), read as hybrid space (one 2D problem per readout position);
- ``2d``: a fastMRI-style multi-slice brain file (16 slices, 20 coils, 640 x 320 with 2x readout oversampling).

Each is read (``neurodiff.mri.read_kspace``) and reconstructed (``neurodiff recon FILE --slices K:K+1 --accel 4
--samples 1 --steps 1``) in a fresh process whose peak resident memory (``VmHWM``) is reported against the
size of the k-space as complex64. Usage (about 2 min on 2 CPU cores, 2 GB of temporary disk; writing the 3D file
takes about 7 GB of memory)::

    python benchmarks/recon_memory.py [--cases 3d,2d] [--tmp DIR] [--out benchmarks/results/recon_memory]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from recon_3d import header

# a child process that reports its own peak resident memory (kB) when it exits: VmHWM, the high-water mark of its
# own address space (ru_maxrss would carry over the parent's peak through fork and exec)
PEAK = ("import atexit, sys; atexit.register(lambda: print('PEAK_KB', [ln.split()[1] for ln in "
        "open('/proc/self/status') if ln.startswith('VmHWM')][0], file=sys.stderr)); ")
READ = "from neurodiff.mri import read_kspace; read_kspace(sys.argv[1])"
RECON = "from neurodiff.cli import main; sys.argv[0] = 'neurodiff'; main()"


def phantom(shape: tuple[int, ...], coils: int, seed: int = 0) -> np.ndarray:
    """Centred k-space ``(C, *shape)`` complex64 of an ellipsoid filling half of each axis, seen by ``coils``
    smooth coil maps around the first axis, with noise at 1e-3 of the peak."""
    grids = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    obj = (sum(g**2 for g in grids) < 0.25).astype(np.complex64)
    k = np.empty((coils, *shape), np.complex64)
    axes = tuple(range(1, len(shape) + 1))
    for c in range(coils):
        a = 2 * np.pi * c / coils
        k[c] = obj * np.exp(-((grids[-2] - np.cos(a)) ** 2 + (grids[-1] - np.sin(a)) ** 2) + 1j * a)
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)
    rng = np.random.default_rng(seed)
    k += (1e-3 * np.abs(k).max() * rng.standard_normal(k.shape, np.float32)).astype(np.complex64)
    return k


def write_3d(path: Path, coils: int = 8, readout: int = 320, lines: int = 256, partitions: int = 160) -> None:
    """A fully sampled 3D ISMRMRD acquisition, one acquisition per (line, partition), written in blocks."""
    from ismrmrd.hdf5 import acquisition_dtype

    k = phantom((2 * readout, lines, partitions), coils)
    n = lines * partitions
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset/xml", data=[header(readout, lines, partitions).encode()],
                         dtype=h5py.string_dtype())
        data = f.create_dataset("dataset/data", (n,), dtype=acquisition_dtype)
        block = 4096
        for start in range(0, n, block):
            rows = np.zeros(min(block, n - start), acquisition_dtype)
            j, i = np.divmod(np.arange(start, start + len(rows)), partitions)
            head = rows["head"]
            head["version"], head["number_of_samples"] = 1, 2 * readout
            head["active_channels"] = head["available_channels"] = coils
            head["center_sample"] = readout
            head["idx"]["kspace_encode_step_1"], head["idx"]["kspace_encode_step_2"] = j, i
            for r, (a, b) in enumerate(zip(j, i)):
                rows["data"][r] = np.ascontiguousarray(k[:, :, a, b]).view(np.float32).ravel()
                rows["traj"][r] = np.zeros(0, np.float32)
            data[start:start + len(rows)] = rows


def write_2d(path: Path, slices: int = 16, coils: int = 20, readout: int = 320, lines: int = 320) -> None:
    """A fully sampled fastMRI-style file: ``kspace`` ``(S, C, 2 readout, lines)`` and its ISMRMRD header."""
    with h5py.File(path, "w") as f:
        f["ismrmrd_header"] = header(readout, lines, 1)
        ks = f.create_dataset("kspace", (slices, coils, 2 * readout, lines), np.complex64)
        one = phantom((2 * readout, lines), coils)
        for s in range(slices):
            ks[s] = one * (1 + 0.01 * s)


CASES = {
    "3d": (write_3d, 8 * 320 * 256 * 160, 160),  # (writer, complex samples after readout cropping, slice)
    "2d": (write_2d, 16 * 20 * 320 * 320, 8),
}


def peak(code: str, *argv: str) -> tuple[float, float]:
    """Peak resident memory (GB, the child's own ``VmHWM``) and seconds of a fresh Python process running
    ``code`` with ``argv``; raises if it fails."""
    t0 = time.time()
    run = subprocess.run([sys.executable, "-c", PEAK + code, *argv], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{code} {' '.join(argv)} failed:\n{run.stderr[-2000:]}")
    kb = int(run.stderr.rsplit("PEAK_KB ", 1)[1].split()[0])
    return kb / 1e6, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="3d,2d")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files (default: system)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.txt")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="recon_memory_") as tmp:
        for case in args.cases.split(","):
            write, samples, k = CASES[case]
            path = Path(tmp) / f"{case}.h5"
            t0 = time.time()
            write(path)
            written = time.time() - t0
            read_gb, read_s = peak(READ, str(path))
            recon_gb, recon_s = peak(RECON, "recon", str(path), "--slices", f"{k}:{k + 1}", "--accel", "4",
                                     "--samples", "1", "--steps", "1", "--device", "cpu", "--out-dir",
                                     str(Path(tmp) / case), "--force")
            rows.append({"case": case, "file GB": round(path.stat().st_size / 1e9, 2),
                         "k-space GB (complex64)": round(samples * 8 / 1e9, 2),
                         "read: peak GB": round(read_gb, 2), "read: s": round(read_s, 1),
                         "recon 1 slice: peak GB": round(recon_gb, 2), "recon: s": round(recon_s, 1),
                         "writing s": round(written, 1)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
            path.unlink()
    table = pd.DataFrame(rows).to_string(index=False)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".txt").write_text(table + "\n")


if __name__ == "__main__":
    main()
