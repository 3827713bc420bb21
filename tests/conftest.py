"""Shared fixtures: paths to the tiny real data in tests/data and the shipped example."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).parents[1] / "neurodiff" / "data" / "sub-colin27_T1w.nii.gz"
STROKE = Path(__file__).parents[1] / "neurodiff" / "data" / "sub-stroke_FLAIR.nii.gz"


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


@pytest.fixture(scope="session")
def untrained_anomaly_model(tmp_path_factory) -> Path:
    """A randomly initialised anomaly model on a coarse grid (4 mm, 48x48: fast), with a healthy reference fitted
    on the shipped stroke example by ``calibrate`` (a geometry fixture, not a meaningful reference)."""
    from neurodiff.anomaly.scores import ScoreConfig
    from neurodiff.tasks.anomaly import calibrate
    from neurodiff.weights import build_denoiser, save_model

    card = {
        "name": "untrained-anomaly", "version": "0", "task": "anomaly",
        "architecture": dict(size="tiny", in_channels=1, out_channels=1),
        "schedule": {"name": "cosine", "steps": 1000}, "prediction": "v",
        "normalisation": {"voxel_mm": 4.0, "canvas": [48, 48], "contrast": "flair"}, "training": {}, "metrics": {},
    }
    folder = tmp_path_factory.mktemp("models")
    save_model(build_denoiser(card).net, card, folder / "raw")
    configs = [ScoreConfig(method="residual", levels=(300, 600), draws=1, polarity="hyper"),
               ScoreConfig(method="elbo", levels=(50, 300), draws=1), ScoreConfig(method="recon", levels=(100,))]
    return calibrate([STROKE], folder / "untrained-anomaly", model=str(folder / "raw.json"), configs=configs,
                     device="cpu")


@pytest.fixture(scope="session")
def twix_with_noise_scan(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The twix phantom (tests/data/mri/gre.dat) rewritten as a two-measurement file whose first measurement is a
    noise adjust scan of coil-correlated noise (three lines), as multi-raid Siemens files hold it; and that noise
    ``(C, N)``."""
    twixtools = pytest.importorskip("twixtools")
    scan = twixtools.read_twix(str(DATA / "mri" / "gre.dat"), parse_pmu=False, verbose=False)[-1]
    image = [m for m in scan["mdb"] if m.is_image_scan()]
    c, n = image[0].data.shape
    rng = np.random.default_rng(0)
    white = rng.normal(size=(c, 3 * n)) + 1j * rng.normal(size=(c, 3 * n))
    noise = (np.tril(np.ones((c, c))) @ white * 1e-3 * np.abs(image[0].data).max()).astype(np.complex64)
    lines = []
    for part in np.split(noise, 3, axis=1):
        line = image[0].convert_to_local()
        line.clear_all_flags()
        line.set_flag("NOISEADJSCAN", True)
        line.data = part
        lines.append(line)
    path = tmp_path_factory.mktemp("twix") / "gre_noise.dat"
    twixtools.write_twix([dict(scan, mdb=lines), dict(scan, mdb=[m.convert_to_local() for m in image])], str(path))
    return path, noise


ECHO_FACTOR = 0.5 * np.exp(1j)  # each echo of ``multi_echo_twix`` is the one before it times this


@pytest.fixture(scope="session")
def multi_echo_twix(tmp_path_factory) -> Path:
    """The twix phantom rewritten as a two-echo file (``Eco`` 0 and 1), the second echo the first times
    ``ECHO_FACTOR`` (weaker, phase-shifted)."""
    twixtools = pytest.importorskip("twixtools")
    scan = twixtools.read_twix(str(DATA / "mri" / "gre.dat"), parse_pmu=False, verbose=False)[-1]
    lines = []
    for e in (0, 1):
        for m in (m for m in scan["mdb"] if m.is_image_scan()):
            line = m.convert_to_local()
            line.mdh.Counter.Eco = e
            line.data = (m.data * ECHO_FACTOR**e).astype(np.complex64)
            lines.append(line)
    path = tmp_path_factory.mktemp("twix") / "me.dat"
    twixtools.write_twix([dict(scan, mdb=lines)], str(path))
    return path
