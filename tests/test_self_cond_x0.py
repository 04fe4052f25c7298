"""x0 self-conditioning (diffusion.self_cond_x0, off by default): the loss and the samplers feed
the model the previous x_0 estimate the same way they feed the latents, and the estimate reaches
every predicted token of a real model."""
import pytest
import torch

from rinkit.build import build_diffusion, build_model
from rinkit.config import load_config
from rinkit.diffusion import Diffusion, sample
from rinkit.errors import RinkitError

TINY = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
        "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2",
        "modality_options.frames=6", "modality_options.context_frames=2", "modality_options.frame_size=16",
        "modality_options.digit_size=8", "modality_options.copy_window=0", "diffusion.pred=v",
        "diffusion.self_cond_rate=0.9", "diffusion.self_cond_x0=true"]  # the earlier video preset's readout


class Recorder(torch.nn.Module):
    """A stand-in denoiser that records the previous latents and estimate it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.seen = []

    def forward(self, x, gamma, labels=None, prev=None, context=None, prev_x0=None):
        self.seen.append((prev, prev_x0))
        return x * self.w, torch.ones(x.shape[0], 3, 4) * (len(self.seen) + 1)


def test_loss_gives_zeros_then_the_first_pass_estimate_for_the_kept_examples():
    torch.manual_seed(0)
    m, d = Recorder(), Diffusion(pred="v", self_cond_rate=0.6, self_cond_x0=True)
    x = torch.rand(2000, 1, 2, 2) * 2 - 1
    torch.manual_seed(1)
    d.loss(m, x).backward()
    (p1, e1), (p2, e2) = m.seen
    assert p1 is None and torch.equal(e1, torch.zeros_like(e1))
    kept = p2.flatten(1).abs().sum(1) > 0
    assert 0.56 < kept.float().mean() < 0.64
    # pass 1's prediction x * w turned into a clipped x_0 estimate, for the same examples as the latents
    torch.manual_seed(1)
    gamma = d.train_schedule(torch.rand(2000))
    x_t = d.add_noise(x, gamma, torch.randn_like(x))
    want = d.to_x0_eps(x_t * 0.7, x_t, gamma, clip=True)[0]
    torch.testing.assert_close(e2[kept], want[kept].detach())
    assert torch.equal(e2[~kept], torch.zeros_like(e2[~kept])) and not e2.requires_grad
    assert e2.abs().max() <= 1.0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_give_zeros_then_the_previous_estimate(sampler):
    m, d = Recorder(), Diffusion(pred="eps", self_cond_x0=True)
    estimates = []
    sample(m, d, (2, 1, 4, 4), steps=4, sampler=sampler, generator=torch.Generator().manual_seed(0),
           callback=lambda k, x0: estimates.append(x0))
    assert torch.equal(m.seen[0][1], torch.zeros(2, 1, 4, 4)) and m.seen[0][0] is None
    for k in range(1, 4):
        torch.testing.assert_close(m.seen[k][1], estimates[k - 1])
    m = Recorder()
    sample(m, d, (2, 1, 4, 4), steps=3, sampler=sampler, carry_latents=False)
    assert all(p is None and torch.equal(e, torch.zeros(2, 1, 4, 4)) for p, e in m.seen)
    m = Recorder()  # off: the model is never given the keyword (models without it keep working)
    sample(m, Diffusion(), (2, 1, 4, 4), steps=2)
    assert [e for _, e in m.seen] == [None, None]


def test_train_and_sample_feed_the_model_the_same_kinds_of_inputs():
    """Pass 1 of training must look like the first sampling step and pass 2 like every later
    one: the same arguments, shapes, dtypes and value range (only the values differ)."""
    cfg = load_config("video-digits", None, TINY)
    model, d = build_model(cfg), build_diffusion(cfg)
    calls = []
    orig = model.forward

    def spy(x, gamma, labels=None, prev=None, context=None, prev_x0=None):
        calls.append(dict(x=(x.shape, x.dtype), labels=labels, ctx=None if context is None else context.shape,
                          prev=None if prev is None else (prev.shape, prev.dtype),
                          est=(prev_x0.shape, prev_x0.dtype), est_zero=bool((prev_x0 == 0).all()),
                          est_range=float(prev_x0.abs().max())))
        return orig(x, gamma, labels, prev, context, prev_x0)
    model.forward = spy
    x, ctx = torch.rand(4, 4, 1, 16, 16) * 2 - 1, torch.rand(4, 2, 1, 16, 16) * 2 - 1
    d.self_cond_rate = 1.0  # every example self-conditioned, so pass 2 is comparable row by row
    d.loss(model, x, None, ctx)
    train = calls[:]
    calls.clear()
    with torch.no_grad():
        sample(model, d, x.shape, None, steps=3, context=ctx, generator=torch.Generator().manual_seed(0))
    first, later = calls[0], calls[1:]
    assert train[0] == first and first["prev"] is None and first["est_zero"]
    for c in later:
        assert {k: v for k, v in c.items() if k not in ("est_zero", "est_range")} == \
            {k: v for k, v in train[1].items() if k not in ("est_zero", "est_range")}
        assert c["est_range"] <= 1.0 and train[1]["est_range"] <= 1.0


def test_estimate_is_identity_at_init_and_then_reaches_every_predicted_token():
    torch.manual_seed(0)
    cfg = load_config("video-digits", None, TINY)
    model = build_model(cfg).eval()
    assert model.estimate is not None and build_model(load_config("video-digits", None, TINY[:-1])).estimate is None
    x, ctx, g = torch.randn(1, 4, 1, 16, 16), torch.randn(1, 2, 1, 16, 16), torch.full((1,), 0.3)
    est = torch.rand(1, 4, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        a, _ = model(x, g, None, None, ctx, torch.zeros_like(x))
        b, _ = model(x, g, None, None, ctx, est)
        assert torch.equal(a, b)  # zero-initialised LayerNorm: the estimate path starts closed
        torch.nn.init.normal_(model.estimate.norm.weight)
        a, _ = model(x, g, None, None, ctx, torch.zeros_like(x))
        b, _ = model(x, g, None, None, ctx, est)
    # every predicted 2x4x4 patch changes, not only through the latents' average
    diff = (a - b).abs().view(1, 2, 2, 4, 4, 4, 4).amax((2, 4, 6))
    assert (diff > 1e-5).all(), diff


def test_x0_self_conditioning_needs_the_latent_pass():
    with pytest.raises(ValueError, match="self_cond_rate"):
        Diffusion(self_cond_rate=0.0, self_cond_x0=True)
    with pytest.raises(RinkitError, match="self_cond_rate"):
        load_config("video-digits", None, ["diffusion.self_cond_rate=0", "diffusion.self_cond_x0=true"])
