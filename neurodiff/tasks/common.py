"""Helpers shared by the task functions."""

from __future__ import annotations

import torch

from ..errors import InputError


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (a CUDA GPU if there is one, else the CPU), ``"cpu"`` or ``"cuda[:N]"`` as a torch device.

    Raises
    ------
    InputError
        If CUDA is asked for and not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(device)
