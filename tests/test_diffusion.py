import math

import pytest
import torch

from rinkit.diffusion import Diffusion, parse_schedule, sample
from rinkit.diffusion.samplers import denoise


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_schedules_against_hand_computed_values():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # linear: gamma = 1 - t (clipped away from 0)
    torch.testing.assert_close(parse_schedule("linear")(t), torch.tensor([1.0, 0.75, 0.5, 1e-9]))
    # official cosine with its offsets
    cos = parse_schedule("cosine")(torch.tensor([0.5]))
    assert cos.item() == pytest.approx(math.cos((0.5 + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2, rel=1e-6)
    # sigmoid(-3, 3, 0.9) at t = 0.25: the formula worked by hand
    s, e, tau = -3, 3, 0.9
    want = (sig(e / tau) - sig((0.25 * (e - s) + s) / tau)) / (sig(e / tau) - sig(s / tau))
    assert parse_schedule("sigmoid(-3,3,0.9)")(torch.tensor([0.25])).item() == pytest.approx(want, rel=1e-6)
    # official spelling accepted; endpoints; monotone decreasing
    g = parse_schedule("sigmoid@-3,3,0.9")(torch.linspace(0, 1, 101))
    assert g[0].item() == pytest.approx(1.0) and g[-1].item() < 1e-6
    assert (g[1:] <= g[:-1]).all()
    g = parse_schedule("cosine(0.2,1,1)")(torch.linspace(0, 1, 11))
    assert g[0].item() == pytest.approx(1.0, abs=1e-6) and (g[1:] <= g[:-1]).all()


@pytest.mark.parametrize("bad", ["sigmoid(1,2)", "cosine(1,0,1)", "quadratic", "sigmoid(0,1,-1)", "linear(1,2,3)"])
def test_bad_schedules_rejected(bad):
    with pytest.raises(ValueError, match="schedule"):
        parse_schedule(bad)


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "x0+skip"])
@pytest.mark.parametrize("b", [1.0, 0.5])
def test_target_conversions_round_trip(pred, b):
    d = Diffusion(pred="x0", input_scale=b, x0_skip=0.5) if pred == "x0+skip" else Diffusion(pred=pred, input_scale=b)
    x0 = (torch.rand(4, 3, 5, 5) * 2 - 1) * b
    eps = torch.randn_like(x0)
    gamma = torch.tensor([0.999, 0.7, 0.2, 0.01])
    x_t = d.add_noise(x0, gamma, eps)
    rx0, reps = d.to_x0_eps(d.target(x0, eps, gamma), x_t, gamma)
    torch.testing.assert_close(rx0, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(reps, eps, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "x0+skip"])
def test_clipping_rederives_consistent_eps(pred):
    d = Diffusion(pred="x0", input_scale=0.5, x0_skip=0.5) if pred == "x0+skip" else Diffusion(pred=pred, input_scale=0.5)
    x_t, gamma = torch.randn(3, 1, 4, 4) * 3, torch.tensor([0.9, 0.5, 0.1])
    x0, eps = d.to_x0_eps(torch.randn(3, 1, 4, 4) * 3, x_t, gamma, clip=True)
    assert x0.abs().max() <= 0.5
    torch.testing.assert_close(d.add_noise(x0, gamma, eps), x_t, atol=1e-4, rtol=1e-4)


def test_x0_skip_with_unit_sigma_data_is_v_prediction():
    """EDM's skip with sigma_data 1 is v-prediction written with an x0-shaped output F = -v / sqrt(1 - gamma):
    the same estimate and the same loss, at every noise level."""
    torch.manual_seed(0)
    dv, ds = Diffusion(pred="v"), Diffusion(pred="x0", x0_skip=1.0)
    x0, eps = torch.rand(6, 2, 4, 4) * 2 - 1, torch.randn(6, 2, 4, 4)
    gamma = torch.tensor([0.999, 0.9, 0.5, 0.2, 0.05, 0.001])
    x_t, f = ds.add_noise(x0, gamma, eps), torch.randn(6, 2, 4, 4)
    v = -f * (1 - gamma).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(ds.to_x0_eps(f, x_t, gamma)[0], dv.to_x0_eps(v, x_t, gamma)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ds.squared_error(f, x0, eps, gamma), dv.squared_error(v, x0, eps, gamma),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sd", [0.25, 1.0])
def test_x0_skip_passes_the_input_through_at_low_noise_and_the_output_at_high(sd):
    """At gamma 1 the estimate is the input whatever the network says (what the video model's
    x0 readout could not redraw, docs/video.md s21); at gamma 0 it is the network's output; in
    between, c_skip = sd^2 / (sigma^2 + sd^2) of x_t / sqrt(gamma); the loss stays finite at both ends."""
    d = Diffusion(pred="x0", x0_skip=sd, input_scale=0.5)
    x0, eps, f = torch.rand(3, 1, 4, 4) - 0.5, torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    gamma = torch.tensor([1.0, 0.0, 0.8])
    x_t = d.add_noise(x0, gamma, eps)
    est = d.to_x0_eps(f, x_t, gamma)[0]
    torch.testing.assert_close(est[0], x_t[0])
    torch.testing.assert_close(est[1], f[1])
    sd2, sigma2 = (sd * 0.5) ** 2, 0.2 / 0.8
    c = sd2 / (sigma2 + sd2)
    torch.testing.assert_close(est[2], c * x_t[2] / 0.8 ** 0.5 + (1 - c) * f[2])
    err = d.squared_error(f, x0, eps, gamma)
    assert torch.isfinite(err).all() and err[0].abs().max() < 1e-6
    # at gamma 0 the weight is 1: the squared error of F in data units
    torch.testing.assert_close(err[1], (f[1] - x0[1]) ** 2 / 0.25)
    # the target F (an oracle's output) is finite at both ends, x0 itself at gamma 0, and exact in between
    tgt = d.target(x0, eps, gamma)
    assert torch.isfinite(tgt).all()
    torch.testing.assert_close(tgt[1], x0[1])
    torch.testing.assert_close(d.to_x0_eps(tgt, x_t, gamma)[0][1:], x0[1:])


def test_x0_skip_needs_x0_prediction():
    with pytest.raises(ValueError, match="x0_skip"):
        Diffusion(pred="v", x0_skip=1.0)
    from rinkit.config import load_config
    with pytest.raises(Exception, match="x0_skip needs pred=x0"):
        load_config("video-digits", overrides=["diffusion.pred=v", "diffusion.x0_skip=1"])


class Counting(torch.nn.Module):
    """A stand-in denoiser that counts calls and records what it was given."""

    def __init__(self, m=3, d=4):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls, self.prev, self.m, self.d = 0, [], m, d

    def forward(self, x, gamma, labels=None, prev=None, context=None):
        self.calls += 1
        self.prev.append(prev)
        lat = torch.ones(x.shape[0], self.m, self.d) * self.calls + 0 * self.w  # carries a graph
        return x * self.w, lat


def test_self_cond_rate_zero_is_one_pass_and_rate_positive_is_two():
    x = torch.rand(8, 1, 4, 4) * 2 - 1
    m = Counting()
    Diffusion(self_cond_rate=0.0).loss(m, x)
    assert m.calls == 1 and m.prev == [None]
    m = Counting()
    loss = Diffusion(self_cond_rate=0.9).loss(m, x)
    assert m.calls == 2 and m.prev[0] is None and m.prev[1] is not None
    loss.backward()
    assert m.w.grad is not None


def test_masking_mode_keeps_latents_at_the_rate_and_stops_gradient():
    torch.manual_seed(0)
    m = Counting()
    Diffusion(self_cond_rate=0.7).loss(m, torch.zeros(4000, 1, 2, 2))
    prev = m.prev[1]
    kept = (prev.flatten(1).abs().sum(1) > 0).float().mean().item()
    assert 0.67 < kept < 0.73
    assert not prev.requires_grad


def test_cond_dropout_uses_null_class():
    d = Diffusion(cond_dropout=0.5, num_classes=10)
    labels = d.drop_labels(torch.zeros(10000, dtype=torch.long))
    assert set(labels.unique().tolist()) == {0, 10}
    assert 0.47 < (labels == 10).float().mean().item() < 0.53


def test_loss_mask_restricts_loss():
    d = Diffusion(self_cond_rate=0.0)
    m = Counting()
    x = torch.rand(4, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    torch.manual_seed(3)
    masked = d.loss(m, x, loss_mask=mask)
    # redo the same draws by hand: t, then eps
    torch.manual_seed(3)
    gamma = d.train_schedule(torch.rand(4))
    eps = torch.randn_like(x)
    err = (d.add_noise(x, gamma, eps) * 0.5 - eps) ** 2
    torch.testing.assert_close(masked, err[..., :2, :].mean())
    assert not torch.allclose(masked, err.mean())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_carry_latents_and_respect_steps(sampler):
    m = Counting()
    d = Diffusion(self_cond_rate=0.9)
    out = sample(m, d, (2, 1, 4, 4), steps=5, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 4, 4) and m.calls == 5
    assert m.prev[0] is None
    assert all(p[0, 0, 0].item() == i + 1 for i, p in enumerate(m.prev[1:]))  # previous step's latents
    m = Counting()
    sample(m, d, (2, 1, 4, 4), steps=3, sampler=sampler, carry_latents=False)
    assert m.prev == [None, None, None]


def test_samples_are_clipped_and_ddim_is_deterministic():
    m = Counting()
    d = Diffusion(pred="x0")
    a = sample(m, d, (3, 1, 4, 4), steps=7, sampler="ddim", generator=torch.Generator().manual_seed(1))
    b = sample(m, d, (3, 1, 4, 4), steps=7, sampler="ddim", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.abs().max() <= 1.0


def test_per_example_generators_make_samples_batch_independent():
    m = Counting()
    d = Diffusion()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    big = sample(m, d, (3, 1, 4, 4), steps=4, generator=gens([5, 6, 7]))
    one = sample(m, d, (1, 1, 4, 4), steps=4, generator=gens([6]))
    torch.testing.assert_close(big[1:2], one)


def test_guidance_zero_is_unguided_and_guidance_combines_halves():
    class LabelModel(torch.nn.Module):
        def forward(self, x, gamma, labels=None, prev=None, context=None):
            return x * 0 + labels.float().view(-1, 1, 1, 1), torch.zeros(x.shape[0], 2, 2)
    d = Diffusion(pred="eps", num_classes=10)
    x, g, lab = torch.randn(2, 1, 2, 2), torch.tensor([0.5, 0.5]), torch.tensor([2, 4])
    _, eps0, _ = denoise(LabelModel(), d, x, g, lab, guidance=0.0, clip=False)
    _, eps1, _ = denoise(LabelModel(), d, x, g, lab, guidance=1.5, clip=False)
    torch.testing.assert_close(eps0[:, 0, 0, 0], torch.tensor([2.0, 4.0]))
    # (1 + w) * cond - w * uncond with the null class index 10
    torch.testing.assert_close(eps1[:, 0, 0, 0], 2.5 * torch.tensor([2.0, 4.0]) - 1.5 * 10)
