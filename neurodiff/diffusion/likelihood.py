"""Likelihoods of data under a denoiser: the variational bound (ELBO) as per-timestep terms and a per-voxel map,
and the probability-flow ODE log-likelihood.

Units: nats, for data in the model's normalised units (a continuous density: no discretisation offset).
``bits/dim = nats / (D ln 2)`` with ``D`` the number of values per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .denoiser import Cond, Denoiser


@dataclass
class ELBO:
    """Terms of the negative ELBO of each sample (nats).

    Attributes
    ----------
    timesteps
        ``(K,)`` ascending timesteps of the (possibly strided) chain.
    terms
        ``(B, K)``: ``terms[:, 0]`` is the decoder ``-log p(x | z_t0)``; ``terms[:, k]`` the KL of the step from
        ``timesteps[k]`` to ``timesteps[k-1]``.
    prior
        ``(B,)`` KL of ``q(z_T | x)`` from the standard normal prior.
    voxel_nll
        ``(B, C, *spatial)`` every term split per voxel and summed (its sum over voxels is ``total``).
    """

    timesteps: torch.Tensor
    terms: torch.Tensor
    prior: torch.Tensor
    voxel_nll: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """``(B,)`` negative ELBO in nats: an upper bound of ``-log p(x)``."""
        return self.terms.sum(1) + self.prior

    @property
    def bits_per_dim(self) -> torch.Tensor:
        """``(B,)`` negative ELBO in bits per value."""
        return bits_per_dim(self.total, self.voxel_nll)


def bits_per_dim(nats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Convert per-sample nats ``(B,)`` to bits per value of ``x`` ``(B, ...)``."""
    return nats / (x[0].numel() * math.log(2))


def _chain(T: int, stride: int) -> torch.Tensor:
    return torch.tensor(sorted(set(range(0, T, stride)) | {T - 1}), dtype=torch.long)


def _term(err: torch.Tensor, a_t: float, a_s: float | None, data_var: float) -> torch.Tensor:
    """Per-voxel negative-ELBO term from the squared x0 error ``err``: the KL of the reverse step from ``abar = a_t``
    to ``a_s`` (Analytic-DPM variances, see :func:`elbo`), or the Gaussian decoder when ``a_s`` is None."""
    sig2 = (1 - a_t) / a_t
    x0_var = data_var * sig2 / (data_var + sig2)
    if a_s is None:
        return 0.5 * math.log(2 * math.pi * x0_var) + err / (2 * x0_var)
    beta = 1 - a_t / a_s
    coef2 = a_s * beta**2 / (1 - a_t) ** 2
    var_q = (1 - a_s) / (1 - a_t) * beta
    var_p = var_q + coef2 * x0_var
    return 0.5 * (math.log(var_p / var_q) + (var_q + coef2 * err) / var_p - 1)


@torch.no_grad()
def elbo(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    cond: Cond | None = None,
    stride: int = 1,
    chunk: int = 8,
    data_var: float = 1.0,
    generator: torch.Generator | None = None,
) -> ELBO:
    """Negative ELBO of ``x0`` ``(B, C, *spatial)`` (Ho et al. 2020, eq. 5), one Monte-Carlo draw per term.

    Parameters
    ----------
    stride
        1 evaluates all ``T`` terms; ``k > 1`` the bound of the strided chain ``0, k, 2k, ..., T-1`` — still a valid
        (looser) bound, ``k`` times cheaper.
    chunk
        Number of timesteps evaluated per network call (batch ``chunk * B``).
    data_var
        Per-value variance of the (normalised) data, used to set the reverse-step variances.

    Notes
    -----
    A network predicting only the mean leaves the reverse variances free. Each reverse step
    ``p(z_s | z_t)`` uses the posterior variance plus the spread of ``x0`` given ``z_t`` carried into ``z_s``
    (Bao et al. 2022, "Analytic-DPM"), with ``Var(x0 | z_t) = data_var sigma_t^2 / (data_var + sigma_t^2)``, the
    value for Gaussian data, ``sigma_t^2 = (1 - abar_t) / abar_t``. The fixed posterior variance alone makes the
    low-noise terms dominate and loosens the bound by ~0.5 bit/dim. The decoder is Gaussian with mean x0-hat at the
    first chain step and that same variance of ``x0``. The variances depend on ``t`` only, so the bound is valid.
    """
    sched = denoiser.schedule
    ts = _chain(sched.steps, stride)
    ac = sched.alphas_cumprod
    b = x0.shape[0]
    dims = tuple(range(1, x0.ndim))
    voxel = torch.zeros_like(x0)
    terms = torch.zeros(b, len(ts), dtype=x0.dtype, device=x0.device)
    for start in range(0, len(ts), chunk):
        idx = list(range(start, min(start + chunk, len(ts))))
        t = ts[idx].to(x0.device).repeat_interleave(b)
        xr = x0.repeat(len(idx), *([1] * (x0.ndim - 1)))
        eps = torch.randn(xr.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = sched.q_sample(xr, t, eps)
        x0_hat = denoiser(x_t, t, None if cond is None else Cond.concat(*[cond] * len(idx))).x0
        sq = (xr - x0_hat) ** 2
        for j, k in enumerate(idx):
            per = _term(sq[j * b:(j + 1) * b], float(ac[ts[k]]), None if k == 0 else float(ac[ts[k - 1]]), data_var)
            voxel += per
            terms[:, k] = per.sum(dims)
    a_T = float(ac[-1])
    prior_vox = 0.5 * (a_T * x0**2 + (1 - a_T) - 1 - math.log(1 - a_T))
    return ELBO(ts, terms, prior_vox.sum(dims), voxel + prior_vox)


@torch.no_grad()
def voxel_terms(
    denoiser: Denoiser,
    x0: torch.Tensor,
    timesteps: list[int],
    *,
    stride: int = 1,
    draws: int = 1,
    cond: Cond | None = None,
    data_var: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen per-voxel terms of the negative ELBO of ``x0`` ``(B, C, *spatial)``, averaged over ``draws`` noise draws.

    Term ``k`` is the KL of the reverse step from ``timesteps[k]`` to ``timesteps[k] - stride`` (the decoder term
    for timestep 0), computed as in :func:`elbo`: for timesteps on the chain ``0, stride, 2 stride, ...`` these are
    :func:`elbo`'s terms, whose sum plus the prior term is the per-voxel negative ELBO. Scoring only a range of
    noise levels (anomaly detection) needs these terms one by one.

    Returns
    -------
    terms
        ``(K, B, C, *spatial)`` nats per voxel.
    residual
        ``(K, B, C, *spatial)`` mean of ``x0 - x0_hat(x_t)`` over the draws: the sign of the error (brighter or darker
        than the model expects), in the model's units.
    """
    sched = denoiser.schedule
    if not timesteps or any(not 0 <= t < sched.steps for t in timesteps) or draws < 1:
        raise ValueError(f"timesteps must be in 0..{sched.steps - 1} and draws >= 1, got {timesteps}, {draws}")
    ac = sched.alphas_cumprod
    b = x0.shape[0]
    terms = torch.zeros((len(timesteps),) + x0.shape, dtype=x0.dtype, device=x0.device)
    resid = torch.zeros_like(terms)
    xr = x0.repeat(len(timesteps), *([1] * (x0.ndim - 1)))
    t = torch.tensor(timesteps, device=x0.device).repeat_interleave(b)
    c = None if cond is None else Cond.concat(*[cond] * len(timesteps))
    for _ in range(draws):
        eps = torch.randn(xr.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        r = (xr - denoiser(sched.q_sample(xr, t, eps), t, c).x0).reshape(terms.shape)
        for k, tk in enumerate(timesteps):
            a_s = None if tk == 0 else float(ac[max(tk - stride, 0)])
            terms[k] += _term(r[k] ** 2, float(ac[tk]), a_s, data_var) / draws
        resid += r / draws
    return terms, resid


def ode_nll(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    cond: Cond | None = None,
    steps: int = 100,
    probes: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Negative log-likelihood ``-log p(x0)`` ``(B,)`` in nats under the probability-flow ODE.

    The ODE ``dy/dsigma = eps_hat(sqrt(abar) y)`` with ``y = x_t / sqrt(abar_t)``, ``sigma^2 = (1 - abar) / abar``
    (in which the field is nearly constant at high noise) is integrated with Heun's method (the divergence
    term in ``log sigma``) from the data (``t = 0``) to ``t = T-1`` over ``steps`` timesteps, accumulating the
    divergence estimated with ``probes`` Rademacher vectors (Hutchinson); the end point is scored under the
    standard normal prior of ``x_T``.
    """
    sched = denoiser.schedule
    ts = sched.timesteps(steps).flip(0).tolist()
    ac = sched.alphas_cumprod
    dims = tuple(range(1, x0.ndim))
    vs = [torch.randint(0, 2, x0.shape, generator=generator, device=x0.device).to(x0.dtype) * 2 - 1
          for _ in range(probes)]

    def field(y: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = float(ac[t])
        tt = torch.full((y.shape[0],), t, device=y.device, dtype=torch.long)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = denoiser(math.sqrt(a) * y, tt, cond).eps
            div = 0.0
            for i, v in enumerate(vs):
                g = torch.autograd.grad((f * v).sum(), y, retain_graph=i < len(vs) - 1)[0]
                div = div + (g * v).sum(dims)
        return f.detach(), div.detach() / len(vs)

    def sigma(t: int) -> float:
        return math.sqrt((1 - float(ac[t])) / float(ac[t]))

    y = x0.clone()
    logdet = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    f1, d1 = field(y, ts[0])
    for t, s in zip(ts[:-1], ts[1:]):
        y_pred = y + (sigma(s) - sigma(t)) * f1
        f2, d2 = field(y_pred, s)
        y = y + 0.5 * (sigma(s) - sigma(t)) * (f1 + f2)
        # the divergence is integrated in log(sigma), where sigma * div is nearly constant
        logdet = logdet + 0.5 * math.log(sigma(s) / sigma(t)) * (sigma(t) * d1 + sigma(s) * d2)
        f1, d1 = field(y, s) if s != ts[-1] else (f2, d2)
    a_T = float(ac[ts[-1]])
    x_T = math.sqrt(a_T) * y
    d = x0[0].numel()
    log_prior = -0.5 * (x_T**2).sum(dims) - 0.5 * d * math.log(2 * math.pi) + 0.5 * d * math.log(a_T)
    return -(log_prior + logdet)
