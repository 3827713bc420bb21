"""BIDS-derivative file names and JSON sidecars."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.errors import InputError
from neurodiff.io.outputs import atomic_path

# Longest first, so ".nii.gz" wins over ".gz".
_KNOWN_EXTENSIONS = (
    ".ome.tiff", ".ome.tif", ".nii.gz", ".nii", ".json", ".dat", ".h5", ".hdf5", ".cfl", ".hdr", ".mat",
    ".tiff", ".tif", ".mgz", ".npy", ".gz",
)  # fmt: skip


def split_extension(name: str) -> tuple[str, str]:
    """Split a file name into stem and extension, knowing multi-part ones.

    ``"scan.nii.gz"`` -> ``("scan", ".nii.gz")``; an unknown extension is the last suffix
    (``"scan.raw"`` -> ``("scan", ".raw")``); no suffix gives ``""``.
    """
    lower = name.lower()
    for ext in _KNOWN_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix) if suffix else (name, "")


def derivative_path(
    source: str | Path, desc: str, out_dir: str | Path | None = None, ext: str = ".nii.gz",
    entities: dict[str, str] | None = None,
) -> Path:
    """Name a derivative of ``source`` the BIDS way, with a ``desc-<desc>`` entity.

    ``scan.nii.gz`` -> ``scan_desc-recon.nii.gz``; ``sub-01_ses-1_T1w.nii.gz`` ->
    ``sub-01_ses-1_desc-recon_T1w.nii.gz`` (inserted before the BIDS suffix); an existing ``desc-`` entity is
    replaced. The source extension (``.nii``, ``.nii.gz``, ``.dat``, ``.h5``, ``.cfl``, ...) is replaced by ``ext``.

    Parameters
    ----------
    source : str or Path
        Input file the derivative is computed from.
    desc : str
        Alphanumeric BIDS ``desc`` label, e.g. ``"recon"``, ``"uncertainty"``.
    out_dir : str or Path, optional
        Output folder; default the source's folder.
    ext : str
        Extension of the derivative, e.g. ``".nii.gz"``, ``".json"``.
    entities : dict, optional
        Further BIDS entities, e.g. ``{"echo": "2"}``: a source's own entity of that name takes the new value in
        place, others go before ``desc-``.

    Returns
    -------
    Path
        The derivative path (not created).

    Raises
    ------
    InputError
        If ``desc`` is not alphanumeric, or the derivative would be the source file itself.
    """
    if not (desc.isascii() and desc.isalnum()):
        raise InputError(f"desc label {desc!r} must be letters and digits only (BIDS)")
    source = Path(source).expanduser()
    stem, _ = split_extension(source.name)
    entities = dict(entities or {})
    parts = []
    for part in stem.split("_"):
        key = part.split("-", 1)[0]
        if key in entities:  # the source's own entity, given a new value in its place
            part = f"{key}-{entities.pop(key)}"
        if key != "desc":
            parts.append(part)
    is_bids = len(parts) > 1 and "-" not in parts[-1] and all("-" in p for p in parts[:-1])
    at = len(parts) - 1 if is_bids else len(parts)
    parts[at:at] = [f"{key}-{value}" for key, value in entities.items()] + [f"desc-{desc}"]
    folder = source.parent if out_dir is None else Path(out_dir).expanduser()
    path = folder / ("_".join(parts) + (ext if ext.startswith(".") or not ext else f".{ext}"))
    if path.resolve() == source.resolve():
        raise InputError(f"the output {path} would overwrite its input; choose another output folder")
    return path


def write_sidecar(path: str | Path, fields: dict[str, Any]) -> Path:
    """Write ``fields`` as a JSON sidecar next to ``path``, atomically.

    numpy scalars and arrays become numbers and lists, paths become strings, NaN/inf become ``null`` (JSON has
    no NaN).

    Parameters
    ----------
    path : str or Path
        The data file (its extension is replaced by ``.json``) or the ``.json`` path itself.
    fields : dict
        Sidecar content, e.g. ``{"Sources": [...], "Seed": 0}``.

    Returns
    -------
    Path
        The sidecar path.

    Raises
    ------
    TypeError
        If a value cannot be represented in JSON.
    InputError
        If the file cannot be written.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() != ".json":
        path = path.with_name(split_extension(path.name)[0] + ".json")
    text = json.dumps(_jsonable(fields), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    """Convert ``value`` recursively to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"sidecar value {value!r} of type {type(value).__name__} cannot be written as JSON")
