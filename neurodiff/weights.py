"""Model weights (safetensors) with a JSON model card, and the registry of models shipped in the package.

A card holds everything needed to rebuild and use a model: architecture, schedule, prediction type, intensity
normalisation, training data and command, validation metrics and calibration. A user checkpoint is a
``NAME.safetensors`` + ``NAME.json`` pair and loads the same way as a shipped one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .diffusion import Denoiser, NoiseSchedule
from .errors import ModelError
from .nets import ResidualOnInput, build_unet, cpu_layout

MODELS_DIR = Path(__file__).parent / "models"


@dataclass
class Model:
    """A loaded model: the denoiser (eval mode) and its card."""

    denoiser: Denoiser
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return self.card["name"]


def build_denoiser(card: dict[str, Any]) -> Denoiser:
    """An untrained :class:`Denoiser` with the architecture and schedule a card describes."""
    arch = card["architecture"]
    net = build_unet(
        arch["size"], spatial_dims=arch.get("spatial_dims", 2), in_channels=arch["in_channels"],
        out_channels=arch["out_channels"], num_classes=arch.get("num_classes", 0),
    )
    if arch.get("residual_channels"):
        net = ResidualOnInput(net, tuple(arch["residual_channels"]))
    sched = NoiseSchedule(card["schedule"]["name"], card["schedule"]["steps"])
    return Denoiser(net, sched, card["prediction"], arch.get("num_classes", 0))


def save_model(net: torch.nn.Module, card: dict[str, Any], stem: Path, *, half: bool = True) -> tuple[Path, Path]:
    """Write ``stem.safetensors`` (fp16 when ``half``) and ``stem.json``; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
               for k, v in net.state_dict().items()}
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    save_file(tensors, str(weights))
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return weights, card_path


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a shipped model by name, or a user model from ``PATH.json``/``PATH.safetensors``/``PATH``."""
    p = Path(name_or_path)
    stem = MODELS_DIR / str(name_or_path) if str(name_or_path) in shipped_models() else p.with_suffix("")
    card_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not card_path.exists() or not weights.exists():
        raise ModelError(
            f"model {name_or_path!s} not found: expected {card_path.name} and {weights.name}"
            f" (shipped models: {', '.join(shipped_models()) or 'none'})"
        )
    try:
        card = json.loads(card_path.read_text())
        den = build_denoiser(card)
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        den.net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise ModelError(f"model {stem} is inconsistent with its card: {str(e).splitlines()[0]}") from None
    den = den.to(device).eval()
    if torch.device(device).type == "cpu":
        cpu_layout(den)
    return Model(den, card)
