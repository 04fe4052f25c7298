"""model.conv_kernel_size (0 = off, as the released configs): the official depthwise-conv unit on
the interface after each write, laid on the grid the tokenizer names (rinkit.engine.rin.TokenConv)."""
import pytest
import torch

from rinkit.build import build_model
from rinkit.config import load_config
from rinkit.engine.rin import TokenConv
from rinkit.errors import RinkitError

VIDEO = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
         "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2",
         "modality_options.frames=6", "modality_options.context_frames=2", "modality_options.frame_size=16",
         "modality_options.digit_size=8", "modality_options.context_concat=false",
         "modality_options.copy_window=0", "modality_options.context_extrapolate=0", "diffusion.pred=v"]  # no other path for the given frames
IMAGE = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
         "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2"]


def _video(k: int):
    torch.manual_seed(0)
    return build_model(load_config("video-digits", None, [*VIDEO, f"model.conv_kernel_size={k}"])).eval()


def _wake(model):
    """The pointwise layer starts at ~1e-10 (identity); give it weights so its effect is visible."""
    for block in model.core.blocks:
        if block.conv is not None:
            torch.nn.init.normal_(block.conv.pw.weight, std=0.5)


@pytest.mark.parametrize("k", [0, 3])
def test_given_frames_reach_predicted_tokens_through_the_conv(k):
    model = _video(k)
    for block in model.core.blocks:  # latents that never read: only the conv can carry the given frames
        torch.nn.init.zeros_(block.read.attn.out.weight)
        torch.nn.init.zeros_(block.read.attn.out.bias)
    _wake(model)
    x, g, ctx = torch.randn(1, 4, 1, 16, 16), torch.full((1,), 0.3), torch.randn(1, 2, 1, 16, 16)
    with torch.no_grad():
        diff = (model(x, g, None, None, ctx)[0] - model(x, g, None, None, -ctx)[0]).abs()
    if k:
        assert (diff.amax((1, 2)) > 1e-5).all(), diff.amax((1, 2))
    else:
        assert diff.max() == 0  # the paper's RIN: the given frames reach predicted tokens only via the latents


def test_video_grid_is_in_time_order():
    """The grid's first time slot is the given frames (the interface's last tokens), then the
    predicted slots: so a kernel over time steps from the given frames into the prediction."""
    model = _video(3)
    tok = model.tokenizer
    sizes, order = tok.token_grid
    assert sizes == (3, 4, 4) and sorted(order.tolist()) == list(range(48))
    x, ctx = torch.randn(2, 4, 1, 16, 16), torch.randn(2, 2, 1, 16, 16)
    with torch.no_grad():
        cells = tok(x, ctx)[0].index_select(1, order)
        pos = tok.pos()
        assert torch.allclose(cells[:, :16], tok.embed_frames(ctx) + pos[:16])   # slot 0: given
        assert torch.allclose(cells[:, 16:], tok.embed_frames(x) + pos[16:])     # slots 1-2: predicted


def test_ordered_tokens_get_the_same_conv_as_the_grid_itself():
    """TokenConv with an order == the plain row-major conv of the grid, scattered back."""
    torch.manual_seed(0)
    conv = TokenConv(8, 3, 3)
    torch.nn.init.normal_(conv.pw.weight)
    cells = torch.randn(2, 3 * 4 * 4, 8)
    order = torch.cat([torch.arange(32, 48), torch.arange(32)])   # video: given cells stored last
    tokens = torch.empty_like(cells)
    tokens[:, order] = cells
    out = conv(tokens, (3, 4, 4), order)
    ref = conv(cells, (3, 4, 4), None)
    assert torch.allclose(out[:, order], ref, atol=1e-6)
    extra = torch.randn(2, 5, 8)  # tokens beyond the grid pass unchanged
    assert torch.equal(conv(torch.cat([cells, extra], 1), (3, 4, 4), None)[:, 48:], extra)


@pytest.mark.parametrize("init", ["official", "glorot"])
def test_conv_starts_as_the_identity_and_learns(init):
    torch.manual_seed(0)
    model = build_model(load_config("digits", None, [*IMAGE, "model.conv_kernel_size=3", f"model.init={init}"]))
    assert model.grid_sizes == (4, 4) and all(b.conv is not None for b in model.core.blocks)
    x, g, lab = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        with_conv = model(x, g, lab)[0]
        convs = [b.conv for b in model.core.blocks]
        for b in model.core.blocks:
            b.conv = None
        without = model(x, g, lab)[0]
    assert (with_conv - without).abs().max() < 1e-3  # pointwise weights ~3e-6 (official scale 1e-10)
    for b, c in zip(model.core.blocks, convs):
        b.conv = c
    model(x, g, lab)[0].square().mean().backward()
    assert all(c.pw.weight.grad.abs().sum() > 0 for c in convs)


def test_activation_checkpointing_passes_the_grid():
    model = _video(3)
    _wake(model)
    x, g, ctx = torch.randn(2, 4, 1, 16, 16), torch.rand(2), torch.randn(2, 2, 1, 16, 16)
    ref = model(x, g, None, None, ctx)[0]
    model.core.checkpoint_blocks = True
    with torch.enable_grad():
        assert torch.allclose(model(x, g, None, None, ctx)[0], ref, atol=1e-6)


def test_off_by_default_and_refused_where_there_is_no_grid():
    assert all(b.conv is None for b in build_model(load_config("digits")).core.blocks)
    with pytest.raises(RinkitError, match=r"points.*no grid.*nor graph.*conv_kernel_size=0"):
        build_model(load_config("points-shapes", None,
                                ["modality_options.tokens=groups", "model.conv_kernel_size=3"]))
    with pytest.raises(RinkitError, match="conv_kernel_size 4 is even"):
        load_config("digits", None, ["model.conv_kernel_size=4"])


@pytest.mark.parametrize("extra", [["model.conv_kernel_size=3"], ["model.write_context=true"],
                                   ["diffusion.self_cond_rate=0.9", "diffusion.self_cond_x0=true"],
                                   ["modality_options.copy_window=3", "modality_options.copy_kernels=2",
                                    "diffusion.pred=x0"]])
def test_info_counts_every_parameter_of_the_optional_parts(extra):
    from rinkit.info import model_info
    cfg = load_config("video-digits", None, [*VIDEO, *extra])
    info = model_info(cfg)
    assert info["params"] == sum(p.numel() for p in build_model(cfg).parameters())


def test_graph_conv_mixes_each_token_with_its_nearest_tokens_only():
    """ndim 0 (a point set): token i's update is the depthwise sum over its k cells (itself and its
    k - 1 nearest, nearest first) with one weight per rank, then GN, SiLU and the pointwise layer
    as on a grid."""
    torch.manual_seed(0)
    conv = TokenConv(8, 3, 0)
    torch.nn.init.normal_(conv.pw.weight)
    torch.nn.init.normal_(conv.dw.bias)
    x = torch.randn(2, 6, 8)
    order = torch.stack([torch.tensor([[i, (i + 1) % 6, (i + 3) % 6] for i in range(6)]),
                         torch.tensor([[i, (i + 2) % 6, (i + 5) % 6] for i in range(6)])])
    w = conv.dw.weight[:, 0]                                                       # (D, k)
    h = torch.stack([torch.stack([sum(x[b, order[b, i, r]] * w[:, r] for r in range(3)) for i in range(6)])
                     for b in range(2)]) + conv.dw.bias
    ref = x + conv.pw(torch.nn.functional.silu(conv.norm(h.transpose(1, 2))).transpose(1, 2))
    out = conv(x, (), order)
    assert torch.allclose(out, ref, atol=1e-5)
    # the cells decide, not the token order: reversing each token's non-self cells changes the sum
    assert not torch.allclose(conv(x, (), order[:, :, [0, 2, 1]]), out, atol=1e-3)


def test_point_graph_conv_builds_from_the_noisy_cloud_and_keeps_the_model_equivariant():
    """On points (tokens: points) model.conv_kernel_size = k lays the interface on each cloud's
    k-nearest-neighbour graph, drawn from the noisy input at every call: the model stays
    permutation-equivariant, a point's nearest neighbours move its prediction through the conv even
    when the latents carry nothing, and the conv starts as the identity."""
    from plugins.points.tokenizer import PointTokenizer
    torch.manual_seed(0)
    cfg = load_config("points-shapes", None, ["model.conv_kernel_size=5", "model.interface_dim=32",
                                              "model.latent_dim=32", "model.num_latents=8",
                                              "modality_options.num_points=64"])
    model = build_model(cfg).eval()
    assert model.core.conv_dims == 0 and model.graph and all(b.conv.graph for b in model.core.blocks)
    x, g, lab = torch.randn(2, 64, 3), torch.tensor([0.3, 0.8]), torch.tensor([0, 3])
    idx = PointTokenizer.token_graph(x, 5)
    d = torch.cdist(x, x)
    assert idx.shape == (2, 64, 5) and torch.equal(idx[:, :, 0], torch.arange(64).expand(2, -1))
    assert torch.allclose(d.gather(2, idx), d.sort(-1).values[:, :, :5])
    with torch.no_grad():
        plain = [b.conv for b in model.core.blocks]
        ref = model(x, g, lab)[0]
        for b in model.core.blocks:
            b.conv = None
        assert (model(x, g, lab)[0] - ref).abs().max() < 1e-3  # pointwise ~1e-5: the identity at the start
        for b, c in zip(model.core.blocks, plain):
            b.conv = c
        _wake(model)
        for block in model.core.blocks:  # latents that never read: only the conv mixes points
            torch.nn.init.zeros_(block.read.attn.out.weight)
            torch.nn.init.zeros_(block.read.attn.out.bias)
        out = model(x, g, lab)[0]
        perm = torch.randperm(64)
        assert torch.allclose(model(x[:, perm], g, lab)[0], out[:, perm], atol=1e-5)
        i = 7                                       # move point i's nearest neighbour: i's prediction
        x_near = x.clone()                          # changes through the conv, and without it not at all
        x_near[0, int(idx[0, i, 1])] += 0.01
        moved = (model(x_near, g, lab)[0] - out)[0, i].abs().max()
        for b in model.core.blocks:
            b.conv = None
        unmoved = (model(x_near, g, lab)[0] - model(x, g, lab)[0])[0, i].abs().max()
    assert moved > 1e-3 and unmoved == 0, (moved, unmoved)
