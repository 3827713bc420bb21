"""Contracts every sampler and the training loop must keep, with a real (tiny, random) MONAI network."""

import math

import pytest
import torch

from neurodiff.diffusion import SAMPLERS, Cond, Denoiser, NoiseSchedule, classifier_free, gradient, predict
from neurodiff.diffusion.training import Batch, TrainConfig, fit, prefetched
from neurodiff.nets import build_unet

SHAPE = (3, 1, 16, 24)  # asymmetric on purpose


@pytest.fixture(scope="module")
def den():
    torch.manual_seed(0)
    net = build_unet("tiny", in_channels=2, out_channels=1, num_classes=2)
    for p in net.parameters():  # MONAI zero-initialises the output layer; make the net non-trivial
        p.data.add_(0.05 * torch.randn_like(p))
    return Denoiser(net, NoiseSchedule("linear", 1000), "v", num_classes=2).eval()


def cond():
    g = torch.Generator().manual_seed(9)
    return Cond(image=torch.randn(SHAPE, generator=g), label=torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(den, name):
    sampler = SAMPLERS[name]

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn(SHAPE, generator=g)
        return sampler(den, x_T, 4, cond=cond(), guidance=classifier_free(1.5), generator=g)

    a, b = draw(0), draw(0)
    assert a.shape == SHAPE
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, draw(1))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_consistency_hook_is_applied(den, name):
    target = torch.full(SHAPE, 0.25)
    out = SAMPLERS[name](den, torch.randn(SHAPE), 3, cond=cond(), consistency=lambda x0, t: target,
                         generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-4)  # the last step returns the (corrected) x0 estimate


def test_gradient_guidance_moves_towards_critic(den):
    x = torch.randn(SHAPE)
    t = torch.full((3,), 500)
    plain = den(x, t, cond())
    guided = gradient(lambda x0: -(x0 - 3.0).pow(2).flatten(1).sum(1), 0.05)(den, x, t, cond())
    assert ((guided.x0 - 3.0).abs().mean() < (plain.x0 - 3.0).abs().mean())
    zero = gradient(lambda x0: x0.sum((1, 2, 3)), 0.0)(den, x, t, cond())
    assert torch.allclose(zero.eps, plain.eps, atol=1e-6)
    late = predict(den, x, t, cond(), gradient(lambda x0: -(x0 - 3.0).pow(2).flatten(1).sum(1), 0.1,
                                               through_network=False))
    assert ((late.x0 - 3.0).abs().mean() < (plain.x0 - 3.0).abs().mean())


class Zero(torch.nn.Module):
    def forward(self, x, t, **kw):
        return torch.zeros_like(x[:, :1])


def test_loss_mask_weights_voxels():
    """With a network predicting eps = 0 the loss is the mean of eps^2 over the voxels the mask keeps."""
    den = Denoiser(Zero(), NoiseSchedule("cosine", 1000), "eps")
    x0 = torch.randn(SHAPE)
    mask = torch.zeros(SHAPE)
    mask[..., :5] = 1
    g = torch.Generator().manual_seed(4)
    torch.randint(0, 1000, (SHAPE[0],), generator=g)
    eps = torch.randn(SHAPE, generator=g)
    loss = den.loss(x0, mask=mask, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(loss, (eps**2 * mask).sum() / mask.sum())
    assert torch.allclose(den.loss(x0, generator=torch.Generator().manual_seed(4)), (eps**2).mean())


def test_fit_checkpoint_and_resume(tmp_path):
    torch.manual_seed(0)
    den = Denoiser(build_unet("tiny", in_channels=1, out_channels=1), NoiseSchedule("cosine", 100), "eps")
    data = torch.randn(64, 1, 16, 16) * 0.1 + 0.5

    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            yield Batch(data[torch.randint(0, 64, (8,), generator=g)])

    ck = tmp_path / "m.ckpt"
    cfg = TrainConfig(steps=30, lr=2e-3, warmup=5, checkpoint_every=10)
    ema, state = fit(den, batches(), cfg, checkpoint=ck)
    assert state.step == 30 and ck.exists()
    assert sum(state.losses[-10:]) < sum(state.losses[:10])  # it learns
    cfg2 = TrainConfig(steps=40, lr=2e-3, warmup=5, checkpoint_every=10)
    _, state2 = fit(den, batches(), cfg2, checkpoint=ck, resume=True)
    assert state2.step == 40 and len(state2.losses) == 40


def test_fit_3d_network_on_cpu():
    """A 3D network trains on a CPU (the channels-last layout is for 2D networks only)."""
    den = Denoiser(build_unet("tiny", spatial_dims=3), NoiseSchedule("cosine", 100), "eps")

    def batches():
        while True:
            yield Batch(torch.randn(2, 1, 8, 8, 8))

    _, state = fit(den, batches(), TrainConfig(steps=1, warmup=1, checkpoint_every=10))
    assert state.step == 1 and math.isfinite(state.losses[0])


def _seeded_batches(seed: int):
    """Batches whose every value is the stream's seed."""
    while True:
        x = torch.full((2, 1, 4, 4), float(seed))
        yield Batch(x, Cond(image=x.clone(), label=torch.full((2,), seed)), mask=x > 0)


def test_prefetched_streams_are_distinct_and_complete():
    here = next(prefetched(_seeded_batches, 0, 7, "cpu"))
    assert float(here.x0[0, 0, 0, 0]) == 7  # no workers: the caller's own stream
    stream = prefetched(_seeded_batches, 2, 7, "cpu")
    got = [next(stream) for _ in range(6)]
    assert {float(b.x0[0, 0, 0, 0]) for b in got} == {7001.0, 7002.0}  # one seeded stream per worker
    for b in got:  # every field arrives, consistent with x0
        assert torch.equal(b.cond.image, b.x0) and int(b.cond.label[0]) == int(b.x0[0, 0, 0, 0])
        assert b.mask.dtype == torch.bool and b.mask.all()
