"""The sampler table: every sampler on the Bayes-optimal denoiser of Gaussian data (whose exact
answer is known), its arithmetic against the papers' update rules, and RIN's latents carried
from each network evaluation to the next."""
import math

import pytest
import torch
from test_method import S, Bayes, Spy, _c

from rinkit.build import build_diffusion, build_model
from rinkit.config import load_config
from rinkit.diffusion import SAMPLERS, Diffusion, parse_schedule, sample
from rinkit.diffusion.samplers import SIGMA_MAX

SCHEDULES = ["cosine", "sigmoid(-3,3,0.9)", "linear"]


@pytest.mark.parametrize("sampler", ["dpm++2m", "heun"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_second_order_samplers_reproduce_gaussian_data(schedule, sampler):
    d = Diffusion(sample_schedule=schedule, pred="x0", self_cond_rate=0.0)
    x = sample(Bayes(), d, (10000, 1), steps=100, sampler=sampler, clip=False,
               generator=torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(S, rel=0.02)
    assert abs(x.mean().item()) < 0.02


def _coefficient(schedule: str, sampler: str, steps: int) -> float:
    """With the linear Bayes denoiser a deterministic sampler maps its starting noise z to A z.
    A from the papers' updates in plain floats: DDIM (Song et al. eq. 12, eta = 0),
    DPM-Solver++(2M) (Lu et al. 2022, Alg. 2, alpha = sqrt(gamma), sigma = sqrt(1 - gamma),
    lambda = log(alpha / sigma)) and EDM's Heun (Karras et al. 2022, Alg. 1, on x / alpha with
    sigma_edm = sigma / alpha)."""
    g = parse_schedule(schedule)(torch.tensor([1 - k / steps for k in range(steps + 1)])).double().tolist()
    eps = lambda gk: (1 - math.sqrt(gk) * _c(gk)) / math.sqrt(1 - gk)  # noqa: E731 - eps per unit of x
    lam = lambda gk: math.log(math.sqrt(gk) / math.sqrt(1 - gk))  # noqa: E731
    a, d_prev, h_prev = 1.0, None, None
    for k in range(steps - 1):
        gt, gs = g[k], g[k + 1]
        if sampler == "ddim":
            a = math.sqrt(gs) * _c(gt) * a + math.sqrt(1 - gs) * eps(gt) * a
        elif sampler == "dpm++2m":
            h, d = lam(gs) - lam(gt), _c(gt) * a
            big_d = d if d_prev is None else (1 + h / (2 * h_prev)) * d - h / (2 * h_prev) * d_prev
            a, d_prev, h_prev = (math.sqrt(1 - gs) / math.sqrt(1 - gt) * a
                                 - math.sqrt(gs) * (math.exp(-h) - 1) * big_d), d, h
        else:
            st, ss = math.sqrt((1 - gt) / gt), math.sqrt((1 - gs) / gs)
            xt = a / math.sqrt(gt)  # x / alpha
            d_t = (xt - _c(gt) * a) / st  # dx/dsigma = (x - D) / sigma
            x_next = xt + (ss - st) * d_t
            if st <= SIGMA_MAX:
                d_s = (x_next - _c(gs) * math.sqrt(gs) * x_next) / ss
                x_next = xt + (ss - st) * (d_t + d_s) / 2
            a = math.sqrt(gs) * x_next
    return _c(g[steps - 1]) * a  # the last evaluation's x0 estimate


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "heun"])
def test_deterministic_samplers_match_the_papers_updates(schedule, sampler):
    d = Diffusion(sample_schedule=schedule, pred="x0", self_cond_rate=0.0)
    x = sample(Bayes(), d, (64, 1), steps=10, sampler=sampler, clip=False,
               generator=torch.Generator().manual_seed(0))
    z = torch.randn((64, 1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, _coefficient(schedule, sampler, 10) * z, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_second_order_samplers_are_closer_to_the_ode_than_ddim_at_few_steps(schedule):
    """The probability-flow ODE keeps Gaussian data Gaussian: the exact chain ends at the std
    c(g) sqrt(g S^2 + 1 - g) of the last x0 estimate; at 8 steps the second-order solvers land
    nearer to it than DDIM (first order) does."""
    steps, d = 8, Diffusion(sample_schedule=schedule, pred="x0", self_cond_rate=0.0)
    g = parse_schedule(schedule)(torch.tensor([1 / steps])).double().item()
    exact = _c(g) * math.sqrt(g * S ** 2 + 1 - g)
    z = torch.randn((16, 1), generator=torch.Generator().manual_seed(0))
    err = {s: abs((sample(Bayes(), d, (16, 1), steps=steps, sampler=s, clip=False,
                          generator=torch.Generator().manual_seed(0)) / z).mean().item() - exact)
           for s in ("ddim", "dpm++2m", "heun")}
    assert err["dpm++2m"] < err["ddim"] and err["heun"] < err["ddim"]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_carries_the_latents_between_evaluations(tiny_cfg, sampler):
    cfg = tiny_cfg()
    spy = Spy(build_model(cfg).eval())
    sample(spy, build_diffusion(cfg), (2, 1, 8, 8), torch.tensor([1, 2]), steps=4, sampler=sampler,
           generator=torch.Generator().manual_seed(0))
    n = {"heun": 6}.get(sampler, 4)  # heun: two a step; one out of pure noise (sigma > 80) and on the last
    assert len(spy.calls) == n and spy.calls[0]["prev"] is None
    for before, call in zip(spy.calls, spy.calls[1:]):
        assert torch.equal(call["prev"], before["latents"])
    spy.calls.clear()
    sample(spy, build_diffusion(cfg), (2, 1, 8, 8), torch.tensor([1, 2]), steps=4, sampler=sampler,
           carry_latents=False, generator=torch.Generator().manual_seed(0))
    assert all(c["prev"] is None for c in spy.calls)


def test_the_config_and_the_cli_read_the_sampler_table(tmp_path):
    from rinkit.errors import RinkitError
    for name in SAMPLERS:
        assert load_config("digits", None, [f"sampler.name={name}"]).sampler.name == name
    with pytest.raises(RinkitError, match="unknown sampler 'euler'; choose one of ddpm, ddim, dpm"):
        load_config("digits", None, ["sampler.name=euler"])


def test_guidance_works_for_a_model_without_latents():
    """Classifier-free guidance with a latent-free denoiser (the benchmarks' U-Net and PVCNN
    baselines return None for the latents): the guided prediction is (1 + w) cond - w uncond,
    and the latents stay None."""
    from rinkit.diffusion.samplers import denoise

    class NoLatents(torch.nn.Module):
        def forward(self, x, gamma, labels, prev=None, context=None):
            return x * 0 + labels.float()[:, None], None  # a label-dependent prediction

    d = Diffusion(pred="x0", num_classes=3, cond_dropout=0.1, self_cond_rate=0.0)
    x, g, labels = torch.zeros(2, 4), torch.full((2,), 0.5), torch.tensor([0, 2])
    x0, _, latents = denoise(NoLatents(), d, x, g, labels, guidance=2.0, clip=False)
    assert latents is None
    torch.testing.assert_close(x0, (3 * labels.float() - 2 * 3.0)[:, None].expand(2, 4))


@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_guidance_interval_guides_only_the_steps_whose_sigma_lies_inside(sampler):
    """Guidance in a limited interval (Kynkaanniemi et al. 2024): an evaluation is guided (the
    batch doubled with the null class) exactly when its sigma = sqrt((1 - gamma) / gamma) lies in
    (lo, hi]; outside it the model runs once, unguided. No interval guides every step."""
    class Recorder(torch.nn.Module):
        calls = []

        def forward(self, x, gamma, labels, prev=None, context=None):
            self.calls.append((len(x), float(gamma[0]), bool((labels == 3).any())))
            return x * 0.5 + labels.float()[:, None, None, None] * 0.01, None

    d = Diffusion(pred="eps", num_classes=3, cond_dropout=0.1, self_cond_rate=0.0)
    labels = torch.tensor([0, 2])

    def run(interval):
        Recorder.calls = []
        x = sample(Recorder(), d, (2, 1, 4, 4), labels, steps=12, sampler=sampler, guidance=2.0,
                   guidance_interval=interval, generator=torch.Generator().manual_seed(0))
        return x, list(Recorder.calls)

    lo, hi = 0.3, 3.0
    x_all, calls_all = run(None)
    x_in, calls = run((lo, hi))
    x_none, calls_none = run((100.0, 200.0))  # no step of the grid has sigma in there
    assert all(n == 4 and null for n, _, null in calls_all)
    assert all(n == 2 and not null for n, _, null in calls_none)
    sig = [math.sqrt((1 - g) / g) if g > 0 else math.inf for _, g, _ in calls]
    guided = [n == 4 and null for n, _, null in calls]
    assert guided == [lo < s <= hi for s in sig] and any(guided) and not all(guided)
    assert not torch.allclose(x_in, x_all) and not torch.allclose(x_in, x_none)


def test_guidance_interval_is_validated_in_the_config():
    from rinkit.errors import RinkitError
    cfg = load_config("points-shapes", None, ["sampler.guidance_interval=[0.1,2.5]"])
    assert cfg.sampler.guidance_interval == (0.1, 2.5)
    with pytest.raises(RinkitError, match="guidance_interval must be .sigma_lo, sigma_hi. with 0 <= sigma_lo < sigma_hi"):
        load_config("points-shapes", None, ["sampler.guidance_interval=[2,1]"])
