"""The engine's n-D patch layer (rinkit.engine.patch) and position codes (rinkit.engine.positions),
which every grid modality's tokenizer is built on."""
import math

import pytest
import torch
from torch import nn

from rinkit import registry
from rinkit.plugin import PatchEmbed, PatchUnembed, Positions


def _identity_pair(channels: int, patch: tuple[int, ...], grid: tuple[int, ...]):
    """A patch layer pair whose stem copies each patch's values into its token (in the readout's
    (p..., c) order) and whose readout copies them back: un-patchify must then invert patchify."""
    d = math.prod(patch) * channels
    emb = PatchEmbed(channels, d, patch, grid, "sincos", norm=False)
    out = PatchUnembed(channels, d, patch, grid)
    out.norm = nn.Identity()
    with torch.no_grad():
        w = torch.zeros(d, channels, *patch)
        for k, idx in enumerate(torch.cartesian_prod(*(torch.arange(n) for n in (*patch, channels))).reshape(d, -1)):
            w[(k, idx[-1].item(), *idx[:-1].tolist())] = 1.0
        emb.patch.weight.copy_(w)
        emb.patch.bias.zero_()
        out.proj.weight.copy_(torch.eye(d))
        out.proj.bias.zero_()
    return emb, out


@pytest.mark.parametrize("patch,grid", [((4,), (5,)), ((2, 3), (3, 2)), ((2, 1, 3), (2, 3, 2))])
def test_patch_layer_round_trip_1d_2d_3d(patch, grid):
    c = 2
    size = tuple(g * p for g, p in zip(grid, patch))
    emb, out = _identity_pair(c, patch, grid)
    x = torch.randn(3, c, *size)
    tokens = emb.embed(x)
    assert tokens.shape == (3, math.prod(grid), math.prod(patch) * c)
    assert emb(x)[0].shape == tokens.shape and emb(x)[1] is None and emb.pos().shape == tokens.shape[1:]
    # extra tokens after the grid's (e.g. conditioning) are not read out
    extra = torch.cat([tokens, torch.randn(3, 4, tokens.shape[-1])], dim=1)
    torch.testing.assert_close(out(extra, None, None), x, rtol=0, atol=1e-6)


def test_patch_layer_default_shapes_and_errors():
    for grid in [(6,), (3, 4), (2, 3, 4)]:
        emb, out = PatchEmbed(3, 8, 2, grid), PatchUnembed(3, 8, 2, grid)
        x = torch.randn(2, 3, *(2 * g for g in grid))
        tokens, state = emb(x)
        assert out(tokens, None, state).shape == x.shape
    with pytest.raises(ValueError, match="4-D"):
        PatchEmbed(1, 8, 2, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="patch"):
        PatchEmbed(1, 8, (2, 2), (4, 4, 4))


def test_positions_kinds():
    grid, dim = (3, 4), 8
    fixed = Positions(grid, dim, "sincos")()
    assert fixed.shape == (12, dim) and not list(Positions(grid, dim, "sincos").parameters())
    learned = Positions(grid, dim, "learned")
    assert learned.learned.abs().max() <= 0.04 and learned.learned.std() > 0   # official trunc-normal
    res = Positions(grid, dim, "sincos+learned")
    torch.testing.assert_close(res(), fixed)                                   # zero-init residual
    fac = Positions(grid, dim, "factorized", axes=("freq", "time"))
    assert fac.freq.shape == (3, 1, dim) and fac.time.shape == (1, 4, dim)
    assert torch.equal(fac().reshape(3, 4, dim)[1, 2], fac.freq[1, 0] + fac.time[0, 2])  # row-major
    with pytest.raises(ValueError, match="positional"):
        Positions(grid, dim, "learned+factorized")


def test_legacy_keys_load():
    """Checkpoints saved before the patch layer: the video stem and the voxel learned positions."""
    torch.manual_seed(0)
    emb = PatchEmbed(1, 8, 2, (2, 2, 2), "sincos+learned")
    sd = emb.state_dict()
    old = {("stem." + k[6:] if k.startswith("patch.") else "learned" if k == "pos.learned" else k): v
           for k, v in sd.items()}
    assert "stem.weight" in old and "learned" in old
    fresh = PatchEmbed(1, 8, 2, (2, 2, 2), "sincos+learned")
    fresh.load_state_dict(old)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())


@pytest.mark.parametrize("name", ["image", "video", "audio", "voxels"])
def test_builtin_grid_tokenizers_use_the_patch_layer(name):
    m = registry.get_modality(name)
    opts = m.options()
    assert isinstance(m.make_tokenizer(opts, 16), PatchEmbed)
    assert isinstance(m.make_detokenizer(opts, 16), PatchUnembed)


def test_pixel_head_starts_as_the_linear_readout_and_reaches_across_patch_borders():
    """`PatchUnembed(head=w)`: zero at init (the readout unchanged, also under the official init),
    trainable from there, and once trained each token reaches the pixels of its neighbours, which
    the linear readout alone never does."""
    torch.manual_seed(0)
    grid, patch, c, d = (3, 3), 4, 1, 16
    plain, headed = PatchUnembed(c, d, patch, grid), PatchUnembed(c, d, patch, grid, head=8)
    headed.norm.load_state_dict(plain.norm.state_dict())
    headed.proj.load_state_dict(plain.proj.state_dict())
    tokens = torch.randn(2, 9, d)
    torch.testing.assert_close(headed(tokens), plain(tokens), rtol=0, atol=0)
    # under init "official" every plugin Linear/Conv is re-drawn, but the head's last conv stays zero
    from rinkit.build import build_model
    from rinkit.config import load_config
    model = build_model(load_config("fashion-mnist", overrides=["model.init=official", "modality_options.head_width=8"]))
    assert model.detokenizer.head is not None and not model.detokenizer.head.conv2.weight.any()
    assert model.detokenizer.head.conv1.weight.any()
    # it learns: the zero conv gets a gradient at once
    headed(tokens).square().sum().backward()
    assert headed.head.conv2.weight.grad.abs().sum() > 0

    def border_reach(readout):
        """How much changing the centre token moves the pixels outside its own 4x4 patch."""
        t2 = tokens.clone()
        t2[:, 4] += torch.randn(d)
        diff = (readout(t2) - readout(tokens)).abs()[:, 0]
        diff[:, 4:8, 4:8] = 0
        return diff.max().item()

    with torch.no_grad():
        nn.init.normal_(headed.head.conv2.weight, std=0.1)
    assert border_reach(plain) == 0
    assert border_reach(headed) > 1e-3
