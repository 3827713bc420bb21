"""Shared fixtures: paths to the tiny real data in tests/data and the shipped example."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).parents[1] / "neurodiff" / "data" / "sub-colin27_T1w.nii.gz"


@pytest.fixture(scope="session")
def untrained_recon_model(tmp_path_factory) -> Path:
    """A randomly initialised reconstruction model (its residual output starts at the zero-filled image)."""
    from neurodiff.weights import build_denoiser, save_model

    card = {
        "name": "untrained", "version": "0", "task": "recon",
        "architecture": dict(size="tiny", in_channels=5, out_channels=2, residual_channels=[2, 3]),
        "schedule": {"name": "cosine", "steps": 1000}, "prediction": "x0", "training": {}, "metrics": {},
    }
    stem = tmp_path_factory.mktemp("models") / "untrained"
    save_model(build_denoiser(card).net, card, stem)
    return stem.with_suffix(".json")
