"""model.write_context (off by default): the write layers attend to the interface's clean
conditioning tokens (a video's given frames) beside the latents."""
import pytest
import torch

from rinkit.build import build_model
from rinkit.config import load_config

TINY = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
        "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2",
        "modality_options.frames=6", "modality_options.context_frames=2", "modality_options.frame_size=16",
        "modality_options.digit_size=8", "modality_options.context_concat=false",
        "modality_options.copy_window=0", "modality_options.context_extrapolate=0", "diffusion.pred=v"]  # no other path for the given frames


def _cut_the_read(model):
    """Latents that never read the interface: the given frames can then reach a generated token
    only through a write that sees them."""
    for block in model.core.blocks:
        torch.nn.init.zeros_(block.read.attn.out.weight)
        torch.nn.init.zeros_(block.read.attn.out.bias)


@pytest.mark.parametrize("on", [False, True])
def test_given_frames_reach_every_predicted_token_through_the_write(on):
    torch.manual_seed(0)
    model = build_model(load_config("video-digits", None, [*TINY, f"model.write_context={str(on).lower()}"])).eval()
    assert model.tokenizer.num_cond_tokens == 1 * 4 * 4  # one time slot of 4 x 4 patches, appended last
    _cut_the_read(model)
    x, g = torch.randn(1, 4, 1, 16, 16), torch.full((1,), 0.3)
    ctx = torch.randn(1, 2, 1, 16, 16)
    with torch.no_grad():
        a, _ = model(x, g, None, None, ctx)
        b, _ = model(x, g, None, None, -ctx)
    diff = (a - b).abs().view(1, 2, 2, 4, 4, 4, 4).amax((2, 4, 6))  # per predicted 2x4x4 token
    if on:
        assert (diff > 1e-5).all(), diff
    else:
        assert diff.max() == 0  # the paper's RIN: the given frames only reach tokens via the latents


def test_write_context_is_off_by_default_and_needs_conditioning_tokens():
    default = build_model(load_config("video-digits"))
    assert all(b.context_proj is None for b in default.core.blocks)
    model = build_model(load_config("video-digits", None, [*TINY, "model.write_context=true",
                                                            "modality_options.context_frames=0"]))
    with pytest.raises(ValueError, match="conditioning tokens"):
        model(torch.randn(1, 6, 1, 16, 16), torch.rand(1))
