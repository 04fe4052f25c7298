"""Tests that pin RIN's defining behaviours (docs/method.md) with the real RIN / Denoiser /
Diffusion, so a refactor cannot silently change the method. Each one was checked by breaking the
behaviour it names by hand and watching it fail."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rinkit.build import build_diffusion, build_model
from rinkit.config import load_config
from rinkit.diffusion import Diffusion, parse_schedule, sample
from rinkit.engine import RIN
from rinkit.engine.rin import LN_EPS, SelfConditioning
from rinkit.train.checkpoint import Checkpoint, save_checkpoint


class Spy(nn.Module):
    """Wraps a denoiser; records what each call was given and returned."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, gamma, labels=None, prev=None, context=None):
        out, latents = self.model(x, gamma, labels, prev, context)
        self.calls.append({"gamma": gamma, "labels": labels, "prev": prev, "latents": latents})
        return out, latents


# -- latent self-conditioning in training ----------------------------------------------------------

def test_first_self_conditioning_pass_sends_no_gradient_into_the_model(tiny_cfg):
    cfg = tiny_cfg("diffusion.self_cond_rate=1.0")
    model = build_model(cfg)
    nn.init.ones_(model.core.self_cond.norm_out.weight)  # past init, pass-1 latents reach the loss
    reached = []

    class GradSpy(Spy):  # pass 1: any gradient into the model through its latents would land here
        def forward(self, *args):
            out, latents = super().forward(*args)
            if len(self.calls) == 1 and latents.requires_grad:
                latents.register_hook(lambda g: reached.append(g.abs().max().item()))
            return out, latents
    spy = GradSpy(model)
    x, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8)
    loss = build_diffusion(cfg).loss(spy, x, y)
    loss.backward()
    assert len(spy.calls) == 2 and spy.calls[1]["prev"] is not None
    assert reached == [] or max(reached) == 0.0
    # and pass 2 does use the pass-1 latents: its self-conditioning path gets a gradient
    assert model.core.self_cond.mlp.fc2.weight.grad.abs().sum() > 0


def test_label_dropout_is_drawn_independently_in_each_pass():
    spy = Spy(lambda x, g, lab, prev, ctx: (x, torch.zeros(x.shape[0], 2, 2)))
    d = Diffusion(self_cond_rate=0.9, cond_dropout=0.5, num_classes=10)
    d.loss(spy, torch.zeros(8000, 1, 1, 1), torch.zeros(8000, dtype=torch.long))
    null1, null2 = (c["labels"] == 10 for c in spy.calls)
    assert 0.47 < null1.float().mean() < 0.53 and 0.47 < null2.float().mean() < 0.53
    assert 0.22 < (null1 & null2).float().mean() < 0.28  # independent: 1/4, shared masks: 1/2


def test_x0_loss_is_on_the_unclipped_prediction():
    """A deliberate difference (docs/method.md §9): the official x-loss clips the prediction,
    which zeroes the gradient of anything predicted outside [-b, b]."""
    w = nn.Parameter(torch.tensor(3.0))
    d = Diffusion(pred="x0", input_scale=0.5, self_cond_rate=0.0)
    loss = d.loss(lambda x, g, lab, prev, ctx: (x * 0 + w, None), torch.zeros(64, 1, 2, 2))
    loss.backward()
    assert loss.item() == pytest.approx(3.0 ** 2 / 0.5 ** 2)  # measured in data units
    assert w.grad.item() > 0


# -- the RIN core ----------------------------------------------------------------------------------

def _rw_core():
    return RIN(interface_dim=24, latent_dim=32, num_latents=6, blocks=1, layers_per_block=1,
               latent_heads=4, rw_heads=4)


@pytest.mark.parametrize("unit", ["read", "write"])
def test_read_and_write_normalise_the_query_and_only_the_query(unit):
    torch.manual_seed(0)
    layer = getattr(_rw_core().blocks[0], unit)
    nn.init.normal_(layer.norm_q.weight)  # a non-trivial LayerNorm, so the reference must use it
    nn.init.normal_(layer.norm_q.bias)
    q_dim, kv_dim = (32, 24) if unit == "read" else (24, 32)
    q, ctx = torch.randn(2, 5, q_dim), torch.randn(2, 7, kv_dim) * 3 + 1
    with torch.no_grad():
        nn.init.zeros_(layer.mlp.fc2.weight)  # isolate the attention update: out = q + MHA(LN q, ctx)
        nn.init.zeros_(layer.mlp.fc2.bias)
        got = layer(q, ctx) - q
        # hand-written reference: LayerNorm on the query, the raw context as keys and values
        a = layer.attn
        qn = F.layer_norm(q, (q_dim,), layer.norm_q.weight, layer.norm_q.bias, LN_EPS)
        wq, bq = a.q.weight, a.q.bias
        wk, wv = a.kv.weight.chunk(2)
        bk, bv = a.kv.bias.chunk(2)
        heads = lambda t: t.view(2, t.shape[1], a.heads, -1).transpose(1, 2)  # noqa: E731
        qh, kh, vh = heads(qn @ wq.T + bq), heads(ctx @ wk.T + bk), heads(ctx @ wv.T + bv)
        w = (qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1])).softmax(-1)
        want = a.out((w @ vh).transpose(1, 2).reshape(2, 5, -1))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # behaviourally: a per-token affine change of the query does not change the update ...
        torch.testing.assert_close(layer(3 * q + 2, ctx) - (3 * q + 2), got, atol=1e-4, rtol=1e-4)
        # ... while one of the context does (keys/values are not normalised)
        assert not torch.allclose(layer(q, 3 * ctx + 2) - q, got, atol=1e-3)


@pytest.mark.parametrize("built", ["from a config", "bare"])
def test_time_embedding_is_the_standardised_sinusoid_of_1000_gamma(tiny_cfg, built):
    # latent width 32 -> 32 / 4 = 8 sinusoid features
    core = (build_model(tiny_cfg()).core if built == "from a config" else
            RIN(interface_dim=32, latent_dim=32, num_latents=8, blocks=1, layers_per_block=1,
                latent_heads=2, rw_heads=2, num_classes=10))
    seen = []
    core.time_embed.mlp[0].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    gamma = torch.tensor([0.0, 0.003, 0.25, 0.9])
    core(torch.randn(4, 16, 32), gamma, torch.arange(4))
    ref = []
    for g in gamma.tolist():
        args = [1000.0 * g * 10000.0 ** (-k / 4) for k in range(4)]
        v = [math.sin(a) for a in args] + [math.cos(a) for a in args]
        mean = sum(v) / len(v)
        std = math.sqrt(sum((u - mean) ** 2 for u in v) / len(v))
        ref.append([(u - mean) / std for u in v])
    torch.testing.assert_close(seen[0], torch.tensor(ref), atol=1e-4, rtol=1e-4)


def test_the_model_is_given_gamma_not_t():
    spy = Spy(lambda x, g, lab, prev, ctx: (x, torch.zeros(x.shape[0], 2, 2)))
    d = Diffusion(train_schedule="sigmoid(-3,3,0.9)", sample_schedule="cosine", self_cond_rate=0.0)
    torch.manual_seed(5)
    d.loss(spy, torch.zeros(6, 1, 2, 2))
    torch.manual_seed(5)
    torch.testing.assert_close(spy.calls[0]["gamma"], d.train_schedule(torch.rand(6)))
    spy.calls.clear()
    sample(spy, d, (2, 1, 2, 2), steps=4)
    for k, call in enumerate(spy.calls):
        torch.testing.assert_close(call["gamma"], d.sample_schedule(torch.full((2,), 1 - k / 4)))


def test_self_conditioning_is_a_residual_mlp_under_a_zero_initialised_layernorm():
    sc = SelfConditioning(16, 2)
    assert sc.norm_out.weight.abs().sum() == 0 and sc.norm_out.bias.abs().sum() == 0
    nn.init.normal_(sc.norm_out.weight)
    nn.init.normal_(sc.norm_out.bias)
    z = torch.randn(3, 5, 16) * 2
    with torch.no_grad():
        h = F.layer_norm(z, (16,), sc.norm_in.weight, sc.norm_in.bias, LN_EPS)
        u = z + sc.mlp.fc2(F.gelu(sc.mlp.fc1(h)))  # Z' + MLP(LN Z')
        want = F.layer_norm(u, (16,), sc.norm_out.weight, sc.norm_out.bias, LN_EPS)
        torch.testing.assert_close(sc(z), want)


@pytest.mark.parametrize("init", ["official", "glorot"])
def test_a_model_with_self_conditioning_equals_one_without_at_init(init):
    kw = dict(interface_dim=16, latent_dim=32, num_latents=6, blocks=2, layers_per_block=1,
              latent_heads=4, rw_heads=2, num_classes=4, init=init)
    with_sc, without = RIN(self_cond=True, **kw), RIN(self_cond=False, **kw)
    without.load_state_dict({k: v for k, v in with_sc.state_dict().items() if not k.startswith("self_cond.")})
    x, g, lab = torch.randn(2, 7, 16), torch.rand(2), torch.tensor([1, 4])
    want = without(x, g, lab)
    for prev in (None, torch.randn(2, 6, 32) * 5):
        got = with_sc(x, g, lab, prev)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    nn.init.ones_(with_sc.self_cond.norm_out.weight)
    with_sc.reset_parameters()  # re-initialising restores the identity
    assert with_sc.self_cond.norm_out.weight.abs().sum() == 0


# -- sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_sampling_carries_the_previous_steps_latents(tiny_cfg, guidance):
    cfg = tiny_cfg("diffusion.cond_dropout=0.1")
    model = build_model(cfg).eval()
    spy, labels = Spy(model), torch.tensor([1, 2, 3])
    sample(spy, build_diffusion(cfg), (3, 1, 8, 8), labels, steps=4, guidance=guidance,
           generator=torch.Generator().manual_seed(0))
    assert len(spy.calls) == 4 and spy.calls[0]["prev"] is None
    for before, call in zip(spy.calls, spy.calls[1:]):
        carried = before["latents"][:3]  # the conditional half's latents under guidance
        if guidance:
            # the halves' latents differ (different class tokens), so the check can tell them apart
            assert not torch.allclose(before["latents"][:3], before["latents"][3:])
            assert torch.equal(call["prev"][:3], carried) and torch.equal(call["prev"][3:], carried)
        else:
            assert torch.equal(call["prev"], carried)


S = 0.5  # data x0 ~ N(0, S^2)


class Bayes(nn.Module):
    """The Bayes-optimal x0 denoiser for Gaussian data: E[x0 | x_t] = c(gamma) x_t."""

    def forward(self, x, gamma, labels=None, prev=None, context=None):
        return _c(gamma.view(-1, *([1] * (x.dim() - 1)))) * x, torch.zeros(x.shape[0], 1, 1)


def _c(g):
    return g ** 0.5 * S ** 2 / (g * S ** 2 + 1 - g)


SAMPLERS = [("ddpm", "large", 0.0), ("ddpm", "small", 0.0), ("ddim", "large", 0.0)]
SCHEDULES = ["cosine", "sigmoid(-3,3,0.9)", "linear"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler,variance,eta", SAMPLERS)
def test_samplers_reproduce_gaussian_data_with_the_bayes_optimal_denoiser(schedule, sampler, variance, eta):
    d = Diffusion(sample_schedule=schedule, pred="x0", self_cond_rate=0.0)
    x = sample(Bayes(), d, (10000, 1), steps=1000, sampler=sampler, eta=eta, ddpm_variance=variance,
               clip=False, generator=torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(S, rel=0.02)
    assert abs(x.mean().item()) < 0.02


def _exact_std(schedule: str, sampler: str, variance: str, eta: float, steps: int) -> float:
    """The std the sampler's Markov chain must produce from N(0, 1) with the Bayes denoiser, from
    the textbook forms: the DDPM posterior q(x_s | x_t, x0) (Ho et al. 2020, eq. 7) and the DDIM
    update (Song et al. 2021, eq. 12), each step x_s = a x_t + b z."""
    g = parse_schedule(schedule)(torch.tensor([1 - k / steps for k in range(steps)])).double().tolist()
    var = 1.0
    for gt, gs in zip(g, g[1:]):
        c = _c(gt)
        if sampler == "ddpm":
            alpha = gt / gs
            a = math.sqrt(gs) * (1 - alpha) / (1 - gt) * c + math.sqrt(alpha) * (1 - gs) / (1 - gt)
            b2 = 1 - alpha if variance == "large" else (1 - gs) / (1 - gt) * (1 - alpha)
        else:
            b2 = eta ** 2 * (1 - gs) / (1 - gt) * (1 - gt / gs)
            a = math.sqrt(gs) * c + math.sqrt(1 - gs - b2) * (1 - math.sqrt(gt) * c) / math.sqrt(1 - gt)
        var = a * a * var + b2
    return _c(g[-1]) * math.sqrt(var)  # the last step returns the x0 estimate


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler,variance,eta", [*SAMPLERS, ("ddim", "large", 1.0)])
def test_sampler_arithmetic_on_a_coarse_grid(schedule, sampler, variance, eta):
    """With 10 steps the chain is far from the data law, so every coefficient shows in the std."""
    d = Diffusion(sample_schedule=schedule, pred="x0", self_cond_rate=0.0)
    x = sample(Bayes(), d, (40000, 1), steps=10, sampler=sampler, eta=eta, ddpm_variance=variance,
               clip=False, generator=torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(_exact_std(schedule, sampler, variance, eta, 10), rel=0.015)


# -- checkpoints ------------------------------------------------------------------------------------

def test_load_for_sampling_returns_the_ema_weights(tiny_cfg, tmp_path):
    from rinkit.sampling import load_for_sampling
    cfg = tiny_cfg()
    online, ema = build_model(cfg), build_model(cfg)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    path = save_checkpoint(tmp_path / "step-0000001.safetensors",
                           Checkpoint(cfg.to_dict(), 1, online.state_dict(), ema.state_dict()))
    model, _, _ = load_for_sampling(path, "cpu")
    assert not model.training
    for name, p in model.state_dict().items():
        assert torch.equal(p, ema.state_dict()[name]), name


# -- the official initialisation ------------------------------------------------------------------

def _glorot(fan_in, fan_out):
    return math.sqrt(6.0 / (fan_in + fan_out))


def _check_uniform(w, bound, what):
    w = w.detach().flatten()
    assert w.abs().max() <= bound * (1 + 1e-6), f"{what}: max {w.abs().max():.4g} > bound {bound:.4g}"
    assert w.abs().max() >= 0.9 * bound, f"{what}: max {w.abs().max():.4g} << bound {bound:.4g}"
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), what


def test_official_init_matches_the_keras_initialisers_layer_by_layer():
    cfg = load_config("cifar10")
    assert cfg.model.init == "official"
    torch.manual_seed(0)
    model = build_model(cfg)
    core, m = model.core, cfg.model
    d, D, a = m.latent_dim, m.interface_dim, min(m.latent_dim, m.interface_dim)
    h, dh = m.latent_heads, m.latent_dim // m.latent_heads
    rh, rdh = m.rw_heads, a // m.rw_heads
    block = core.blocks[0]
    # Keras' 3-D attention kernels: (in, heads, head_dim) and (heads, head_dim, out)
    compute = block.compute[0].attn
    _check_uniform(compute.qkv.weight, _glorot(h * d, dh * d), "compute q|k|v")
    assert _glorot(h * d, dh * d) == pytest.approx(0.0156, abs=1e-4)  # vs 0.054 as one 2-D matrix
    _check_uniform(compute.out.weight, _glorot(h * dh, h * d), "compute out")
    _check_uniform(block.read.attn.q.weight, _glorot(rh * d, rdh * d), "read q")
    _check_uniform(block.read.attn.kv.weight, _glorot(rh * D, rdh * D), "read k|v")
    _check_uniform(block.read.attn.out.weight, _glorot(rh * rdh, rh * d), "read out")
    _check_uniform(block.write.attn.q.weight, _glorot(rh * D, rdh * D), "write q")
    _check_uniform(block.write.attn.kv.weight, _glorot(rh * d, rdh * d), "write k|v")
    _check_uniform(block.write.attn.out.weight, _glorot(rh * rdh, rh * D), "write out")
    # Dense layers: 2-D glorot
    _check_uniform(block.compute[0].mlp.fc1.weight, _glorot(d, 4 * d), "compute MLP")
    _check_uniform(core.time_embed.mlp[0].weight, _glorot(d // 4, d), "time MLP")
    # the class token: the one-hot Dense (classes x d), the null class = its zero bias
    k = m.num_classes
    _check_uniform(core.class_embed.weight[:k], _glorot(k, d), "class")
    assert core.class_embed.weight[:k].std().item() == pytest.approx(0.062, abs=0.004)
    assert core.class_embed.weight[k].abs().sum() == 0
    # stem conv and readout: Keras defaults (fans over the receptive field), zero bias
    p, c = 2, 3
    _check_uniform(model.tokenizer.patch.weight, _glorot(c * p * p, D * p * p), "stem")
    _check_uniform(model.detokenizer.proj.weight, _glorot(D, p * p * c), "readout")
    biases = [mod.bias for mod in model.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    assert all(b.abs().sum() == 0 for b in biases)
    # learned latents: truncated normal, sigma 0.02, cut at 2 sigma (TF's TruncatedNormal)
    assert core.latents.abs().max() <= 0.04 and core.latents.std().item() == pytest.approx(0.0176, rel=0.1)


def test_glorot_init_keeps_the_earlier_initialisation():
    torch.manual_seed(0)
    core = RIN(interface_dim=64, latent_dim=128, num_latents=10, blocks=1, layers_per_block=1,
               latent_heads=4, rw_heads=4, num_classes=10, init="glorot")
    _check_uniform(core.blocks[0].compute[0].attn.qkv.weight, _glorot(128, 3 * 128), "fused q|k|v")
    assert core.class_embed.weight.std().item() == pytest.approx(0.02, rel=0.15)
    with pytest.raises(ValueError, match="init"):
        RIN(16, 16, 4, 1, 1, 2, 2, init="xavier")


@pytest.mark.parametrize("preset", ["cifar10", "imagenet64", "imagenet256", "kinetics600"])
def test_paper_presets_use_the_official_init(preset):
    assert load_config(preset).model.init == "official"


# -- positions -----------------------------------------------------------------------------------

def _official_sincos_2d(h: int, w: int, dim: int, max_coord: float) -> torch.Tensor:
    """The official 2-D sin_cos code, written from its definition: per axis, coordinates
    index / (n - 1) * max; angle_i = coord / 10000^(2 (i // 2) / (dim / 2)); sin of the even i,
    then cos of the odd i; the row code in the first half of the channels, the column in the second."""
    def axis(n):
        d = dim // 2
        rows = []
        for j in range(n):
            pos = j / (n - 1) * max_coord
            ang = [pos / 10000 ** (2 * (i // 2) / d) for i in range(d)]
            rows.append([math.sin(a) for a in ang[0::2]] + [math.cos(a) for a in ang[1::2]])
        return torch.tensor(rows, dtype=torch.float64)
    y, x = axis(h), axis(w)
    return torch.cat([y[:, None].expand(h, w, -1), x[None].expand(h, w, -1)], -1).reshape(h * w, dim)


def test_image_sincos_positions_are_the_official_normalised_code():
    from rinkit_plugins.image.tokenizer import ImageTokenizer
    tok = ImageTokenizer(channels=3, image_size=(12, 8), patch_size=2, dim=16, pos_emb="sincos")
    torch.testing.assert_close(tok.pos(), _official_sincos_2d(6, 4, 16, 1000.0).float(), atol=2e-4, rtol=0)


def test_a_run_saved_before_model_init_existed_resumes(tiny_cfg, tmp_path):
    """`model.init` only shapes the weights before step 0: a checkpoint without the key (or with
    the other init) resumes instead of being refused as a different run."""
    from rinkit.train.trainer import train
    cfg = tiny_cfg("train.steps=3", "train.ckpt_every=2")
    train(cfg, run_dir=tmp_path, progress=False, max_steps=2)
    ckpt_path = tmp_path / "checkpoints" / "step-0000002.safetensors"
    from rinkit.train.checkpoint import load_checkpoint
    ckpt = load_checkpoint(ckpt_path)
    del ckpt.config["model"]["init"]  # as written before the key existed
    save_checkpoint(ckpt_path, ckpt)
    assert train(cfg, run_dir=tmp_path, progress=False).step == 3
    assert train(tiny_cfg("train.steps=4", "model.init=glorot"), run_dir=tmp_path, progress=False).step == 4


@pytest.mark.parametrize("preset", ["digits", "fashion-mnist", "video-digits", "audio-synth", "points-shapes",
                                    "points-voxels"])
def test_small_cpu_presets_keep_the_init_they_were_tuned_with(preset):
    assert load_config(preset).model.init == "glorot"  # docs/method.md §6: measured on digits
