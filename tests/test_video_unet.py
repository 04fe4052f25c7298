"""The video conv baseline (benchmarks/models_video.py): a VDM-style space-time U-Net."""
import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.measure import count_flops  # noqa: E402
from benchmarks.models_video import TemporalAttention, video_unet, video_unet_entry  # noqa: E402
from rinkit.config import load_config, modality_options  # noqa: E402


def _opts(*sets):
    return modality_options(load_config("video-digits", None, list(sets)))


def test_default_baseline_matches_rin_in_size_and_reports_flops():
    o = _opts()
    m = video_unet(o)
    n = sum(p.numel() for p in m.parameters())
    assert 1.3e6 < n < 1.5e6  # sized to the RIN preset's 1.37M
    x, ctx = torch.randn(1, o.predicted_frames, 1, 32, 32), torch.randn(1, o.context_frames, 1, 32, 32)
    with torch.no_grad():
        flops = count_flops(lambda: m(x, torch.rand(1), None, None, ctx))
    # per-frame convs dominate: 8 frames of 32x32 with 32 channels; 4.0 GFLOPs measured
    assert 3.5e9 < flops < 4.5e9


def test_train_step_shapes_and_gradients():
    entry = video_unet_entry("video-digits", ["modality_options.frames=6", "modality_options.context_frames=2"],
                             width=0.25, depth=1)
    torch.manual_seed(0)
    m = entry.build()
    assert entry.diffusion.self_cond_rate == 0 and entry.shape == (4, 1, 32, 32)
    x, ctx = torch.rand(3, *entry.shape) * 2 - 1, torch.rand(3, 2, 1, 32, 32) * 2 - 1
    out, latents = m(x, torch.rand(3), None, None, ctx)
    assert out.shape == x.shape and latents is None
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = entry.diffusion.loss(m, x, None, ctx)
    loss.backward()
    assert torch.isfinite(loss)
    assert m.conv_out.weight.grad.abs().sum() > 0  # zero-initialised output: only it moves at step 1
    opt.step()
    assert m.conv_out.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="given frames"):
        m(x, torch.rand(3), None, None, None)


def test_given_frames_reach_every_predicted_frame():
    o = _opts()
    torch.manual_seed(0)
    m = video_unet(o, width=0.5, depth=1)
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)  # the zero-initialised readout would hide everything
    for t in m.modules():
        if isinstance(t, TemporalAttention):
            torch.nn.init.normal_(t.out.weight, std=0.1)
    x, g = torch.randn(1, 4, 1, 32, 32), torch.rand(1)
    ctx = torch.randn(1, 4, 1, 32, 32)
    ctx2 = ctx.clone()
    ctx2[:, 0] = torch.randn(1, 32, 32)  # change only the first given frame
    with torch.no_grad():
        a, _ = m(x, g, None, None, ctx)
        b, _ = m(x, g, None, None, ctx2)
    per_frame = (a - b).abs().flatten(2).amax(-1)[0]
    assert (per_frame > 1e-4).all(), per_frame


def test_temporal_attention_knows_frame_order_only_through_its_relative_bias():
    torch.manual_seed(0)
    att = TemporalAttention(16, 8, groups=4)
    torch.nn.init.normal_(att.out.weight, std=0.2)
    h = torch.randn(2, 16, 5, 3, 3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():  # no bias: permuting the frames permutes the output (attention is a set op)
        assert torch.allclose(att(h[:, :, perm]), att(h)[:, :, perm], atol=1e-5)
        torch.nn.init.normal_(att.rel, std=1.0)
        assert not torch.allclose(att(h[:, :, perm]), att(h)[:, :, perm], atol=1e-3)
