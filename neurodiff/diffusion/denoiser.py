"""The one wrapper every network goes through: whatever it was trained to predict (eps, x0 or v), a
:class:`Denoiser` yields both eps-hat and x0-hat, and knows how to compute its own training loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .schedules import NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")


@dataclass
class Prediction:
    """Both estimates at ``(x_t, t)``; each ``(B, C, *spatial)`` like ``x_t``."""

    eps: torch.Tensor
    x0: torch.Tensor


@dataclass
class Cond:
    """Conditioning of a denoiser. Either part may be absent.

    Attributes
    ----------
    image
        ``(B, Cc, *spatial)`` images concatenated to ``x_t`` along channels (a zero-filled reconstruction and
        its mask, a segmentation mask ...). All zeros is the "unconditional" image.
    label
        ``(B,)`` int64 class indices, or the null class ``num_classes`` for "unconditional".
    """

    image: torch.Tensor | None = None
    label: torch.Tensor | None = None

    @staticmethod
    def concat(*conds: "Cond") -> "Cond":
        """Conditionings of several batches joined along the batch axis (all with the same parts)."""
        parts = [[c.image for c in conds], [c.label for c in conds]]
        return Cond(*(None if p[0] is None else torch.cat(p) for p in parts))

    def select(self, keep: torch.Tensor, null: "Cond") -> "Cond":
        """Per-sample choice between ``self`` (``keep[b]`` true) and ``null``; ``keep`` is ``(B,)`` bool."""

        def pick(v: torch.Tensor | None, n: torch.Tensor | None) -> torch.Tensor | None:
            if v is None:
                return None
            return torch.where(keep.reshape((-1,) + (1,) * (v.ndim - 1)), v, n)

        return Cond(pick(self.image, null.image), pick(self.label, null.label))


class Denoiser(nn.Module):
    """A network plus the schedule it was trained with.

    Parameters
    ----------
    net
        Module called as ``net(x, timesteps, class_labels=labels)`` (MONAI ``DiffusionModelUNet`` convention)
        or ``net(x, timesteps)`` when no labels are used; ``x`` is ``x_t`` with the conditioning image
        concatenated along channels.
    schedule
        The :class:`NoiseSchedule` used in training.
    prediction
        What ``net`` outputs: ``"eps"``, ``"x0"`` or ``"v"``.
    num_classes
        Number of real classes for label conditioning (the null class is ``num_classes``); 0 for none.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prediction: str = "eps", num_classes: int = 0):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.net, self.schedule, self.prediction, self.num_classes = net, schedule, prediction, num_classes

    def null_cond(self, cond: Cond | None) -> Cond | None:
        """The unconditional counterpart of ``cond`` (zero image, null label)."""
        if cond is None:
            return None
        return Cond(
            None if cond.image is None else torch.zeros_like(cond.image),
            None if cond.label is None else torch.full_like(cond.label, self.num_classes),
        )

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None = None) -> torch.Tensor:
        """The network's own output at ``x_t`` ``(B, C, ...)``, integer timesteps ``t`` ``(B,)``."""
        x = x_t if cond is None or cond.image is None else torch.cat([x_t, cond.image.to(x_t.dtype)], 1)
        if cond is not None and cond.label is not None:
            return self.net(x, t, class_labels=cond.label)
        return self.net(x, t)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None = None) -> Prediction:
        """eps-hat and x0-hat at ``x_t`` ``(B, C, ...)``, timesteps ``t`` ``(B,)`` (or a scalar)."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        out = self.raw(x_t, t, cond).to(x_t.dtype)
        s = self.schedule
        if self.prediction == "eps":
            return Prediction(out, s.x0_from_eps(x_t, t, out))
        if self.prediction == "x0":
            return Prediction(s.eps_from_x0(x_t, t, out), out)
        x0, eps = s.x0_eps_from_v(x_t, t, out)
        return Prediction(eps, x0)

    def loss(
        self,
        x0: torch.Tensor,
        cond: Cond | None = None,
        *,
        mask: torch.Tensor | None = None,
        p_uncond: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """DDPM training loss (Ho et al. 2020, Algorithm 1) in the network's own parameterisation.

        Parameters
        ----------
        x0
            Clean data ``(B, C, *spatial)``, normalised as the model card says.
        cond
            Conditioning; with ``p_uncond > 0`` each sample's conditioning is replaced by the null one with that
            probability (classifier-free guidance training).
        mask
            Optional per-voxel loss weight broadcastable to ``x0`` (0 = ignore, e.g. a known lesion).
        """
        b = x0.shape[0]
        dev = x0.device
        t = torch.randint(0, self.schedule.steps, (b,), device=dev, generator=generator)
        eps = torch.randn(x0.shape, device=dev, generator=generator, dtype=x0.dtype)
        x_t = self.schedule.q_sample(x0, t, eps)
        if cond is not None and p_uncond > 0:
            keep = torch.rand(b, device=dev, generator=generator) >= p_uncond
            cond = cond.select(keep, self.null_cond(cond))
        target = {"eps": eps, "x0": x0, "v": self.schedule.v_target(x0, t, eps)}[self.prediction]
        err = (self.raw(x_t, t, cond).float() - target.float()) ** 2
        if mask is None:
            return err.mean()
        w = torch.broadcast_to(mask.float(), err.shape)
        return (err * w).sum() / w.sum().clamp_min(1.0)
