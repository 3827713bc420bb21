"""The ``neurodiff`` command line: one command per task; heavy imports happen inside the commands.

A user mistake prints one line on stderr and exits with code 2; a runtime failure exits with code 1; no
traceback is shown unless ``NEURODIFF_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import typer

from . import __version__
from .errors import InputError, NeurodiffError

if TYPE_CHECKING:
    from .tasks.recon import ReconResult

app = typer.Typer(
    help="Diffusion models for neuroimaging: MRI reconstruction with uncertainty, anomaly detection, model training and more.\n\n"
    "Outputs are NIfTI files with the input's geometry and BIDS-derivative names, each with a JSON sidecar.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts use [default: ...] literally
)


def _fail(message: str, code: int) -> None:
    typer.echo(f"neurodiff: error: {message}", err=True)
    raise typer.Exit(code)


def handled(fn: Callable) -> Callable:
    """Turn neurodiff errors into one line on stderr and an exit code (2 input, 1 runtime)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NeurodiffError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; no output was written", 130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # an unexpected failure: still one line, unless debugging
            if os.environ.get("NEURODIFF_DEBUG"):
                raise
            _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  "(set NEURODIFF_DEBUG=1 for the traceback)", 1)

    return wrapper


class MaskType(str, Enum):
    random = "random"
    equispaced = "equispaced"
    poisson = "poisson"


class MaskLayout(str, Enum):
    auto = "auto"
    centred = "centred"
    corner = "corner"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _progress(quiet: bool, label: str):
    """A context yielding ``update(done, total)``; a rich progress bar on stderr appears at the first update (so
    errors raised before any work print alone). A no-op when quiet."""
    import contextlib

    @contextlib.contextmanager
    def bar():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        state: dict = {}

        def update(done: int, total: int) -> None:
            if quiet:
                return
            if "p" not in state:
                state["p"] = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=Console(stderr=True))
                state["p"].start()
                state["task"] = state["p"].add_task(label, total=total)
            state["p"].update(state["task"], completed=done, total=total)

        try:
            yield update
        finally:
            if "p" in state:
                state["p"].stop()

    return bar()


@app.command()
@handled
def info() -> None:
    """Show versions, the compute device and the models shipped with neurodiff."""
    import monai
    import torch

    from .weights import MODELS_DIR, shipped_models

    typer.echo(f"neurodiff {__version__}")
    typer.echo(f"python    {sys.version.split()[0]}")
    typer.echo(f"torch     {torch.__version__}  (CUDA available: {torch.cuda.is_available()})")
    typer.echo(f"monai     {monai.__version__}")
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    typer.echo(f"device    {dev}")
    typer.echo("models:")
    for name in shipped_models():
        card = json.loads((MODELS_DIR / f"{name}.json").read_text())
        typer.echo(f"  {name:24s} {card.get('task', '')}: {card['training'].get('data', '')}")


@app.command()
@handled
def recon(
    input: Path = typer.Argument(..., help="Image NIfTI (2D/3D, magnitude or complex) to undersample "
                                 "retrospectively, or measured k-space: .dat (Siemens twix), .h5 (fastMRI or ISMRMRD), "
                                 ".cfl (BART); 2D multi-slice, or 3D reconstructed slice by slice along the readout."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o",
                                           help="Output folder [default: the input's folder]."),
    accel: Optional[float] = typer.Option(None, help="Acceleration of the simulated undersampling [default: 4 for "
                                          "images; none for k-space, whose own sampling is used]."),
    mask_type: MaskType = typer.Option(MaskType.random, help="random/equispaced: 1D phase-encode lines; poisson: 2D "
                                       "variable density."),
    center_fraction: float = typer.Option(0.08, help="Fully sampled centre, as a fraction of the lines."),
    mask: Optional[Path] = typer.Option(None, help="Sampling mask NIfTI (voxel order of the image, centred like "
                                        "k-space, see --mask-layout; one plane or identical planes) instead of "
                                        "--accel."),
    mask_layout: MaskLayout = typer.Option(MaskLayout.auto, help="Where the --mask file has k-space's centre: "
                                           "centred (middle), corner (plain fft2 order: fftshifted), auto (judged "
                                           "by its density, said when moved)."),
    kspace: bool = typer.Option(False, "--kspace", help="The NIfTI input is complex k-space (H, W[, S][, C])."),
    pe_axis: int = typer.Option(0, help="Phase-encode axis of 1D masks: 0 = first in-plane voxel axis, 1 = second."),
    slice_axis: int = typer.Option(2, help="Voxel axis along which the volume is sliced; k-space is 2D over the "
                                   "other two."),
    slices: Optional[str] = typer.Option(None, help="Reconstruct only slices A:B (e.g. 40:48); outputs cover these."),
    echo: Optional[str] = typer.Option(None, help="Echo of multi-echo raw k-space (twix, ISMRMRD contrasts) to "
                                       "reconstruct, 1 = the first, or all (each in turn); outputs are named "
                                       "echo-N."),
    virtual_coils: Optional[str] = typer.Option(None, help="Compress multi-coil k-space to this many virtual coils "
                                                "(principal components, after prewhitening; faster, see docs/recon.md "
                                                "for what it costs), or auto: the components whose signal stands above "
                                                "the noise [default: every coil]."),
    samples: int = typer.Option(8, help="Posterior samples (drawn as one batch); their spread is the uncertainty."),
    steps: int = typer.Option(20, help="Sampler steps per sample."),
    eta: float = typer.Option(1.0, help="Sampler stochasticity (1 = ancestral, keeps the posterior spread)."),
    dc_weight: float = typer.Option(float("inf"), help="Data-consistency weight: inf keeps measured k-space exactly "
                                    "(noiseless data); a finite value blends model and data for noisy data."),
    model: str = typer.Option("recon-t1-flair-tiny", help="Shipped model name or path to NAME.json/.safetensors: "
                              "a conditional model (kind recon, e.g. the shipped recon-t1-flair-tiny), or an "
                              "unconditional prior (kind recon-prior, from `neurodiff train recon-prior`) for "
                              "prior-only sampling, where the data enter only through data consistency."),
    device: Device = typer.Option(Device.auto, help="Compute device."),
    seed: int = typer.Option(0, help="Seed of the mask and the sampler: same seed, same output."),
    save_samples: bool = typer.Option(False, "--save-samples", help="Also write the samples as a 4D NIfTI."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Reconstruct an MRI scan from undersampled k-space with a diffusion model and data consistency.

    Writes <stem>_desc-recon (posterior mean), _desc-uncertainty (posterior std), _desc-zerofilled, _desc-mask
    (k-space sampling mask) as NIfTI with the input's geometry and units, and _desc-recon.json with parameters,
    timing and, for a fully sampled input, PSNR/SSIM/NMSE and uncertainty calibration.

    Raw k-space is reconstructed from its own sampling (zeros); fully sampled k-space is only coil-combined unless
    --accel or --mask undersamples it. Partial Fourier (one side of k-space skipped) is filled under the phase of
    the symmetric centre.
    """
    from .io import OutputSet
    from .tasks.recon import echoes_to_reconstruct, output_paths, reconstruct, write

    if not input.exists():
        bart = Path(f"{input}.cfl")
        raise InputError(f"input file not found: {input}" + (f" (BART data: give {bart})" if bart.exists() else ""))
    if input.is_dir():
        raise InputError(f"input {input} is a folder; give a NIfTI or k-space file")
    echoes = echoes_to_reconstruct(input, echo, kspace)
    coils: int | str | None = virtual_coils
    with contextlib.suppress(TypeError, ValueError):  # a number of coils, else "auto" (checked by reconstruct)
        coils = int(virtual_coils)  # type: ignore[arg-type]
    paths = {e: output_paths(input, out_dir, save_samples, e) for e in echoes}
    inputs = [input] + ([mask] if mask else [])
    with OutputSet([p for ps in paths.values() for p in ps.values()], force=force, inputs=inputs) as outputs:
        summary: list[str] = []  # printed once every output is in place
        for i, e in enumerate(echoes):
            label = "sampling" if len(echoes) == 1 else f"echo {e} ({i + 1} of {len(echoes)}): sampling"
            with _progress(quiet, label) as update:
                res = reconstruct(
                    input, kspace=kspace or None, accel=accel, mask_type=mask_type.value,
                    center_fraction=center_fraction, mask=mask, mask_layout=mask_layout.value, pe_axis=pe_axis,
                    slice_axis=slice_axis, slices=slices, echo=e, virtual_coils=coils, samples=samples,
                    steps=steps, eta=eta, dc_weight=dc_weight, model=model, device=device.value, seed=seed,
                    save_samples=save_samples, progress=update,
                )
            write(res, input, paths[e], outputs.tmp)
            summary += _recon_summary(res, input if e is None else f"{input} (echo {e})", paths[e],
                                      undersampled=accel is not None or mask is not None, notes=i == 0)
            no_spread = samples == 1 and res.params["sampler"] != "none"
            del res
    if not quiet:
        typer.echo("\n".join(summary))
        if no_spread:
            typer.echo("note: one sample has no spread, so the uncertainty map is zero (use --samples 8)", err=True)


def _recon_summary(res: ReconResult, what: str, paths: dict[str, Path], undersampled: bool,
                   notes: bool = True) -> list[str]:
    """The lines that say what ``neurodiff recon`` did to ``what`` and where its outputs ``paths`` are; ``notes``:
    with the reader's and the mask's notes."""
    lines = []
    if res.params["sampler"] == "none":
        lines.append("the k-space is fully sampled: the output is its (coil-combined) inverse FFT"
                     + ("" if undersampled else "; give --accel to undersample it retrospectively"))
    for key in ("kspace_reader_notes", "mask_notes") if notes else ():
        lines += [f"note: {note} (sidecar: {key})" for note in res.params.get(key, [])]
    if res.params.get("partial_fourier_axis") is not None:
        lines.append(f"partial Fourier (one side of k-space skipped along in-plane axis "
                     f"{res.params['partial_fourier_axis']}): the skipped side is filled under the phase of the "
                     "symmetric centre")
    cc = res.params.get("coil_compression")
    if notes and cc and cc["virtual_coils"] < cc["coils"]:
        lines.append(f"{cc['coils']} coils compressed to {cc['virtual_coils']} virtual coils holding "
                     f"{100 * cc['signal_kept']:.2f}% of the signal")
    lines.append(f"reconstructed {what} in {res.seconds:.1f} s; outputs:")
    lines += [f"  {p}" for p in paths.values()]
    if res.metrics and not math.isfinite(res.metrics["recon"]["psnr"]):
        lines.append("the input is constant in every slice: PSNR and SSIM against it are undefined")
    elif res.metrics:
        r, z = res.metrics["recon"], res.metrics["zerofilled"]
        lines.append(f"PSNR {r['psnr']:.2f} dB (zero-filled {z['psnr']:.2f}), SSIM {r['ssim']:.3f} "
                     f"(zero-filled {z['ssim']:.3f}) against the input as fully sampled reference")
    return lines


@app.command()
@handled
def train(
    kind: str = typer.Argument(..., help="recon (k-space reconstruction model, conditioned on simulated "
                               "undersampling), recon-prior (unconditional prior of complex slices, for prior-only "
                               "reconstruction), image (unconditional slices) or anomaly (healthy brain slices at "
                               "2 mm, for `neurodiff anomaly`)."),
    inputs: List[Path] = typer.Argument(..., help="3D NIfTI files, or folders of them."),
    cond: Optional[List[Path]] = typer.Option(None, "--cond", help="kind image: a conditioning image (e.g. a mask) "
                                              "per input file, same grid, repeated in the same order."),
    brain_mask: Optional[List[Path]] = typer.Option(None, "--brain-mask", help="kind anomaly: a brain mask per "
                                                    "input file (any grid), in the same order [default: computed]."),
    lesion_mask: Optional[List[Path]] = typer.Option(None, "--lesion-mask", help="kind anomaly: a lesion mask per "
                                                     "input file, left out of the loss."),
    contrast: Optional[str] = typer.Option(None, help="kind anomaly: the contrast, recorded in the model card."),
    out: Path = typer.Option(..., "--out", "-o", help="Output stem: writes OUT.safetensors, OUT.json, OUT_loss.csv."),
    steps: int = typer.Option(5000, help="Optimiser steps."),
    batch_size: int = typer.Option(8, help="Slices per step."),
    lr: float = typer.Option(5e-4, help="Peak learning rate (warm-up, then cosine decay)."),
    size: Optional[int] = typer.Option(None, help="Slices are padded/cropped to SIZE x SIZE (a multiple of 8) "
                                       "[default: 128; 96 for kind anomaly]."),
    net: str = typer.Option("tiny", help="Network size: tiny, small or base."),
    device: Device = typer.Option(Device.auto, help="Compute device."),
    seed: int = typer.Option(0, help="Seed."),
    workers: int = typer.Option(0, help="Background processes simulating the training batches (keeps a GPU fed; "
                                "0: none)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.ckpt."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing model at OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a diffusion model on your own NIfTI images (2D slices along the last voxel axis).

    Use the result with `neurodiff recon --model OUT` (kinds recon and recon-prior) or, after `neurodiff anomaly
    calibrate`, with `neurodiff anomaly --model` (kind anomaly). Multi-GPU: launch with `torchrun --nproc-per-node N -m
    neurodiff.cli train ...`.
    """
    import torch

    from .tasks.train import train as run_train

    files: list[Path] = []
    for p in inputs:
        if not p.exists():
            raise InputError(f"input not found: {p}")
        files += sorted(q for q in p.iterdir() if q.name.endswith((".nii", ".nii.gz"))) if p.is_dir() else [p]
    if not files:
        raise InputError("no .nii/.nii.gz files found in the inputs")
    if out.with_suffix(".json").exists() and not (force or resume):
        raise InputError(f"{out.with_suffix('.json')} exists; use --force to overwrite or --resume to continue")
    out.parent.mkdir(parents=True, exist_ok=True)
    dev = device.value if device != Device.auto else ("cuda" if torch.cuda.is_available() else "cpu")
    size = size or (96 if kind == "anomaly" else 128)
    with _progress(quiet, "training") as update:
        res = run_train(kind, files, out, net_size=net, image_size=(size, size), steps=steps, batch_size=batch_size,
                        lr=lr, device=dev, seed=seed, resume=resume, cond_inputs=cond or None,
                        brain_masks=brain_mask or None, lesion_masks=lesion_mask or None, contrast=contrast,
                        workers=workers, callback=lambda s: update(s.step, steps))
    if not quiet:
        typer.echo(f"wrote {res.weights} and {res.card} ({res.seconds / 60:.1f} min, final smoothed loss "
                   f"{res.losses['loss_smooth'].iloc[-1]:.4f})")


class Contrast(str, Enum):
    flair = "flair"
    t1 = "t1"


class Method(str, Enum):
    residual = "residual"
    elbo = "elbo"
    recon = "recon"


@app.command()
@handled
def anomaly(
    inputs: List[Path] = typer.Argument(..., help="3D scans to score; or the word `calibrate` followed by healthy "
                                        "reference scans."),
    contrast: Optional[Contrast] = typer.Option(None, help="Picks the shipped model [default: from the file name's "
                                                "BIDS suffix, _FLAIR or _T1w]."),
    model: Optional[str] = typer.Option(None, help="Anomaly model: shipped name or path to NAME.json (e.g. one made "
                                        "by `calibrate`)."),
    brain_mask: Optional[List[Path]] = typer.Option(None, "--brain-mask", help="Brain mask per scan (any grid "
                                                    "overlapping it), repeated in the order of the scans [default: "
                                                    "computed: non-zero voxels of a skull-stripped "
                                                    "scan, deepbet for a scan with skull]."),
    lesion_mask: Optional[List[Path]] = typer.Option(None, "--lesion-mask", help="calibrate: known lesions per "
                                                     "reference scan, left out of the healthy statistics."),
    fpr: Optional[float] = typer.Option(None, help="Voxel false-positive rate on healthy reference brains at which "
                                        "the anomaly mask is thresholded [default: the model's operating rate, "
                                        "chosen on its benchmark's validation subjects; 0.01 if it has none]; "
                                        "the shipped references cover 0.0001-0.3."),
    method: Optional[Method] = typer.Option(None, help="residual (one-step healthy-estimate residual), elbo "
                                            "(likelihood terms) or recon (partial-noising reconstruction error) "
                                            "[default: the model's best on its benchmark]."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o", help="Output folder [default: the scan's folder]."),
    out: Optional[Path] = typer.Option(None, "--out", help="calibrate: output model stem (writes OUT.json and "
                                       "OUT.safetensors)."),
    device: Device = typer.Option(Device.auto, help="Compute device."),
    seed: int = typer.Option(0, help="Seed of the noise draws: same seed, same output."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Find what a model of healthy brains finds improbable: a per-voxel anomaly map of a FLAIR or T1 scan.

    Writes <stem>_desc-anomaly (score in healthy-reference standard deviations), _desc-anomalymask (score above the
    threshold calibrated to --fpr) on the scan's grid, _desc-anomaly.json, and adds the scan's row to
    anomaly_scores.tsv (scan score and its percentile among healthy reference scans) and its slices to
    anomaly_slices.tsv in the output folder.

    `neurodiff anomaly calibrate REF_SCANS... --contrast flair --out site-flair` builds the healthy reference for a
    new site or protocol and stores it with a copy of the model; use it with `--model site-flair`.
    """
    from .io import OutputSet
    from .tasks.anomaly import add_to_tables, calibrate, detect, output_paths, write

    calibrating = inputs[0] == Path("calibrate")
    scans = inputs[1:] if calibrating else inputs
    for p in scans:
        if not p.exists():
            raise InputError(f"input file not found: {p}")
    if brain_mask and len(brain_mask) != len(scans):
        raise InputError(f"give one --brain-mask per scan ({len(scans)}), got {len(brain_mask)}")
    if lesion_mask and not calibrating:
        raise InputError("--lesion-mask is for `neurodiff anomaly calibrate` (known lesions of reference scans)")
    if calibrating:
        if out is None:
            raise InputError("calibrate needs --out STEM for the calibrated model")
        existing = [p for p in (out.with_suffix(".json"), out.with_suffix(".safetensors")) if p.exists()]
        if existing and not force:
            raise InputError(f"{existing[0]} exists; use --force to overwrite")
        with _progress(quiet, "reference") as update:
            card = calibrate(scans, out, contrast=contrast and contrast.value, model=model,
                             brain_masks=brain_mask, lesion_masks=lesion_mask, device=device.value, seed=seed,
                             progress=update)
        if not quiet:
            typer.echo(f"wrote {card} and {card.with_suffix('.safetensors')}; use it with --model {out}")
        return
    for i, scan in enumerate(inputs):
        paths = output_paths(scan, out_dir)
        given = [scan] + ([brain_mask[i]] if brain_mask else [])
        with OutputSet(list(paths.values()), force=force, inputs=given) as outputs:
            with _progress(quiet, f"scoring {scan.name}") as update:
                res = detect(scan, contrast=contrast and contrast.value, model=model,
                             brain_mask=brain_mask[i] if brain_mask else None, fpr=fpr,
                             method=method and method.value, device=device.value, seed=seed, progress=update)
            fields = write(res, scan, paths, outputs.tmp)
        add_to_tables(paths["anomaly"].parent, scan, fields, res.slices)
        if not quiet:
            typer.echo(f"{scan}: score {res.image_score:.2f} ({res.image_percentile:.0f}th percentile of healthy "
                       f"reference scans), {fields['FlaggedVolume_ml']} ml ({int(res.mask.sum())} voxels) above "
                       f"{res.threshold:.2f} (fpr {res.params['fpr']}) in {res.seconds:.1f} s; outputs in "
                       f"{paths['anomaly'].parent}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
