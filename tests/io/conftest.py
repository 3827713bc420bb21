"""Fixtures for the io tests: tiny real images copied into tests/data/io (tests never read the shared data folder)."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "io"


@pytest.fixture
def colin_path() -> Path:
    """Colin27 T1 (ch2bet) crop, 20x24x18, uint8, RAS+, 1 mm."""
    return DATA / "colin27_crop.nii.gz"


@pytest.fixture
def complex_path() -> Path:
    """niivue complex-valued crop, 16x18x5, complex64, ~3.3 mm."""
    return DATA / "complex_crop.nii.gz"
