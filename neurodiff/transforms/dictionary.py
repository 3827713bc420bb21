"""Dictionary versions of :mod:`.array` transforms, for ``monai.transforms.Compose`` pipelines."""

from __future__ import annotations

from typing import Hashable, Mapping

import torch
from monai.transforms import MapTransform, Randomizable

from .array import AnomalyScore, DiffusionReconstruct, RandKSpaceUndersample


class RandKSpaceUndersampled(Randomizable, MapTransform):
    """For each key: replace the image by its complex zero-filled undersampling and store the mask ``(1, H, W)``
    under ``f"{key}_{mask_postfix}"``."""

    def __init__(self, keys, accel: float = 4.0, center_fraction: float = 0.08, mask_type: str = "random",
                 pe_axis: int = 0, mask_postfix: str = "mask", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.t = RandKSpaceUndersample(accel, center_fraction, mask_type, pe_axis)
        self.mask_postfix = mask_postfix

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.t.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:  # each call of the array transform draws its own mask
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
            d[f"{key}_{self.mask_postfix}"] = torch.from_numpy(self.t.mask)[None]
        return d


class DiffusionReconstructd(MapTransform):
    """For each key: reconstruct from the complex zero-filled image and ``f"{key}_{mask_postfix}"``; the key
    receives the posterior mean (magnitude) and ``f"{key}_{std_postfix}"`` the posterior std."""

    def __init__(self, keys, model="recon-t1-flair-tiny", samples: int = 8, steps: int = 20, eta: float = 1.0,
                 seed: int = 0, device: str = "cpu", mask_postfix: str = "mask", std_postfix: str = "uncertainty",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.t = DiffusionReconstruct(model, samples, steps, eta, seed, device)
        self.mask_postfix, self.std_postfix = mask_postfix, std_postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[f"{key}_{self.std_postfix}"] = self.t(d[key], d[f"{key}_{self.mask_postfix}"])
        return d


class AnomalyScored(MapTransform):
    """For each key: store the anomaly score of the volume under ``f"{key}_{score_postfix}"`` (the brain mask is
    read from ``brain_key`` when given)."""

    def __init__(self, keys, contrast: str | None = "flair", model: str | None = None, fpr: float = 0.01,
                 method: str | None = None, seed: int = 0, device: str = "cpu", brain_key: str | None = None,
                 score_postfix: str = "anomaly", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.t = AnomalyScore(contrast, model, fpr, method, seed, device)
        self.brain_key, self.score_postfix = brain_key, score_postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_{self.score_postfix}"] = self.t(d[key], d[self.brain_key] if self.brain_key else None)
        return d
