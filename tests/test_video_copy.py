"""The video readout's copy from the last given frame (modality_options.copy_window): the hand
formula, the start, that the given frame reaches every predicted pixel through it, that train and
sample feed it the same inputs, and the diffusion target it requires."""
import math

import pytest
import torch
import torch.nn.functional as F

from rinkit.build import build_diffusion, build_model
from rinkit.config import load_config, modality_options
from rinkit.errors import RinkitError
from rinkit_plugins.video import VideoOptions
from rinkit_plugins.video.tokenizer import VideoDetokenizer

from test_video import TINY


def opts(**kw):
    base = dict(frames=6, context_frames=2, frame_size=(8, 12), channels=2, patch_size=4, time_patch=2,
                copy_window=2)
    return VideoOptions(**{**base, **kw})


class Fixed(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


def shifted(last, dy, dx):
    """last(y + dy, x + dx), borders continued (replicate)."""
    m = max(abs(dy), abs(dx))
    p = F.pad(last, (m,) * 4, mode="replicate")
    h, w = last.shape[-2:]
    return p[..., m + dy:m + dy + h, m + dx:m + dx + w]


def test_a_peaked_choice_moves_the_last_given_frame_by_that_displacement():
    o = opts()
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)  # no residual
    k = 2 * o.copy_window + 1
    (tq, hq, wq), n = det.grid, det.grid[0] * det.grid[1] * det.grid[2]
    # token (t, i, j) picks, for its frame f in 0..tp-1, the displacement given by a hand rule
    rule = lambda t, i, j, f: ((t + i + f) % k - 2, (2 * j + f) % k - 2)  # noqa: E731
    logits = torch.full((1, n, o.time_patch, k * k), -1e4)
    for t in range(tq):
        for i in range(hq):
            for j in range(wq):
                for f in range(o.time_patch):
                    dy, dx = rule(t, i, j, f)
                    logits[0, (t * hq + i) * wq + j, f, (dy + 2) * k + (dx + 2)] = 0.0
    det.copy_logits = Fixed(logits.flatten(2))  # the chosen logits, whatever the tokens
    ctx = torch.randn(1, 2, 2, 8, 12)
    out = det(torch.randn(1, n + 5, 16), ctx)
    assert out.shape == (1, 4, 2, 8, 12)
    for t in range(tq):
        for f in range(o.time_patch):
            for i in range(hq):
                for j in range(wq):
                    dy, dx = rule(t, i, j, f)
                    want = shifted(ctx[:, -1], dy, dx)[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4]
                    got = out[:, t * o.time_patch + f, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
                    torch.testing.assert_close(got, want)


def test_the_clips_kernels_move_every_token_alike_and_the_masks_choose_among_them():
    """copy_kernels J (CDNA): J displacement distributions per frame for the whole clip (the mean
    of the slot's token logits), each token's pixels a per-token softmax mix of them."""
    o = opts(copy_kernels=2)
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)
    k, (tq, hq, wq), tp = 5, det.grid, o.time_patch
    n = tq * hq * wq
    disp = lambda t, f, j: ((t + f + j) % k - 2, (2 * f + 3 * j + t) % k - 2)  # noqa: E731
    choose = lambda t, i, jj, f: (t + i + jj + f) % 2  # noqa: E731
    logits = torch.full((1, tq, 1, tp, 2, k * k), -1e4)
    masks = torch.full((1, tq, hq, wq, tp, 2), -1e4)
    for t in range(tq):
        for f in range(tp):
            for j in range(2):
                dy, dx = disp(t, f, j)
                logits[0, t, 0, f, j, (dy + 2) * k + (dx + 2)] = 0.0
            for i in range(hq):
                for jj in range(wq):
                    masks[0, t, i, jj, f, choose(t, i, jj, f)] = 0.0
    det.copy_logits, det.copy_masks = Fixed(logits[:, :, 0].reshape(1, tq, -1)), Fixed(masks.reshape(1, n, -1))
    ctx = torch.randn(1, 2, 2, 8, 12)
    out = det(torch.randn(1, n, 16), ctx)
    for t in range(tq):
        for f in range(tp):
            for i in range(hq):
                for jj in range(wq):
                    dy, dx = disp(t, f, choose(t, i, jj, f))
                    want = shifted(ctx[:, -1], dy, dx)[..., 4 * i:4 * i + 4, 4 * jj:4 * jj + 4]
                    got = out[:, t * tp + f, :, 4 * i:4 * i + 4, 4 * jj:4 * jj + 4]
                    torch.testing.assert_close(got, want)


def test_the_clips_kernels_come_from_the_mean_of_each_slots_token_logits():
    o = opts(copy_kernels=2)
    det = VideoDetokenizer(o, 16)
    for lin in (det.copy_logits, det.copy_masks, det.proj):
        torch.nn.init.normal_(lin.weight), torch.nn.init.normal_(lin.bias)
    (tq, hq, wq), tp, k = det.grid, o.time_patch, 5
    tokens, ctx = torch.randn(2, tq * hq * wq + 6, 16), torch.randn(2, 2, 2, 8, 12)
    normed = det.norm(tokens[:, :tq * hq * wq])
    a = det.copy_logits(normed).view(2, tq, hq * wq, tp, 2, k * k).mean(2).softmax(-1)  # the clip's kernels
    mask = det.copy_masks(normed).view(2, tq, hq, wq, tp, 2).softmax(-1)
    want = torch.zeros(2, tq * tp, 2, 8, 12)
    for t in range(tq):
        for f in range(tp):
            for j in range(2):
                moved = sum(a[:, t, f, j, (dy + 2) * k + dx + 2, None, None, None] * shifted(ctx[:, -1], dy, dx)
                            for dy in range(-2, 3) for dx in range(-2, 3))
                w = mask[:, t, :, :, f, j].repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]
                want[:, t * tp + f] += w * moved
    plain = VideoDetokenizer(opts(copy_window=0), 16)
    plain.load_state_dict(det.state_dict(), strict=False)
    torch.testing.assert_close(det(tokens, ctx), plain(tokens, ctx) + want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernels", [0, 1, 3])
def test_at_the_start_every_displacement_is_equally_likely(kernels):
    o = opts(copy_window=1, copy_kernels=kernels)
    det = VideoDetokenizer(o, 16)
    tokens, ctx = torch.randn(3, 24, 16), torch.randn(3, 2, 2, 8, 12)
    box = F.avg_pool2d(F.pad(ctx[:, -1], (1,) * 4, mode="replicate"), 3, stride=1)  # the 3x3 mean
    plain = VideoDetokenizer(opts(copy_window=0), 16)
    plain.load_state_dict(det.state_dict(), strict=False)
    torch.testing.assert_close(det(tokens, ctx), plain(tokens, ctx) + box[:, None])


def test_the_last_given_frame_reaches_every_predicted_pixel_and_only_it():
    det = VideoDetokenizer(opts(), 16)
    tokens = torch.randn(1, 24, 16)
    ctx = torch.randn(1, 2, 2, 8, 12, requires_grad=True)
    out = det(tokens, ctx)
    for f in range(out.shape[1]):
        for c in range(out.shape[2]):
            g, = torch.autograd.grad(out[0, f, c].sum(), ctx, retain_graph=True)
            assert g[0, -1].abs().sum() > 0 and g[0, :-1].abs().sum() == 0  # only the last given frame
    # and each predicted pixel sees it: the gradient of one pixel covers its (2m+1)^2 window
    g, = torch.autograd.grad(out[0, 3, 1, 4, 6], ctx)
    assert int((g[0, -1, 1] != 0).sum()) == 25 and g[0, -1, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="given frames"):
        det(tokens, None)


def test_options_and_the_target_it_needs():
    with pytest.raises(ValueError, match="context_frames"):
        VideoOptions(frames=4, context_frames=0, copy_window=2)
    assert VideoDetokenizer(VideoOptions(frames=4, context_frames=2, copy_kernels=2), 8).m == 0  # off
    cfg = load_config("video-digits", None, [*TINY, "modality_options.copy_window=3", "diffusion.pred=v"])
    assert cfg.diffusion.pred == "v"
    with pytest.raises(RinkitError, match=r"predicts x0 \(diffusion.pred=v\); set diffusion.pred=x0"):
        build_model(cfg)
    build_model(load_config("video-digits", None, [*TINY, "modality_options.copy_window=3", "diffusion.pred=x0"]))


@pytest.mark.parametrize("guided", [False, True])
def test_training_and_sampling_feed_the_copy_the_same_given_frames(guided):
    """The loss's two passes and the sampler both call the detokenizer with the clean given
    frames; its gradient reaches the copy's logits. Guided (the preset: context dropout 0.1,
    guidance at sigma > 1), a training example's given frames are either its own or the null
    context, and a guided sampling step copies from the given frames in its conditional half
    and from the null context in the other; the unguided steps from the given frames alone."""
    cfg = load_config("video-digits", None, [*TINY, "modality_options.copy_window=2", "diffusion.pred=x0",
                                             "diffusion.self_cond_rate=0.9"]
                      + ([] if guided else ["diffusion.context_dropout=0", "sampler.guidance=0"]))
    model, diff = build_model(cfg), build_diffusion(cfg)
    seen = []
    det = model.detokenizer
    orig = det.copy
    det.copy = lambda tokens, given: (seen.append(given.detach().clone()), orig(tokens, given))[1]  # noqa: E731
    x = torch.rand(4, 8, 1, 16, 16) * 2 - 1
    from rinkit_plugins.video import condition
    target, ctx, _ = condition(x, modality_options(cfg))
    loss = diff.loss(model, target, None, ctx)
    loss.backward()
    null = torch.zeros_like(ctx[0])
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # both passes see the same given data
    assert all(torch.equal(s, c) or torch.equal(s, null) for s, c in zip(seen[0], ctx))
    assert guided or torch.equal(seen[0], ctx)
    assert det.copy_logits.weight.grad.abs().sum() > 0
    seen.clear()
    from rinkit.sampling import generate
    generate(model.eval(), cfg, 2, None, 0, "cpu", context=ctx[:2])
    assert len(seen) == cfg.sampler.steps
    # the 3-step grid's sigmas: inf, 1.7, 0.6, so guidance (sigma > 1) takes the first two
    n_guided = 2 if guided else 0
    assert all(torch.equal(s, torch.cat([ctx[:2], torch.zeros_like(ctx[:2])])) for s in seen[:n_guided])
    assert all(torch.equal(s, ctx[:2]) for s in seen[n_guided:])


@pytest.mark.parametrize("kernels", [0, 1])
def test_a_gaussian_kernel_is_a_soft_argmax_around_its_centre(kernels):
    """copy_shape gaussian: per kernel and frame a centre mu (in units of m/2 px) and a log-width;
    the weight of displacement d is proportional to exp(-|d - mu|^2 / 2 s^2)."""
    o = opts(copy_kernels=kernels, copy_shape="gaussian", copy_window=4)
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)
    (tq, hq, wq), tp, m = det.grid, o.time_patch, 4
    # at the start: a broad Gaussian (s = m / 2) at no displacement, whatever the tokens
    tokens, ctx = torch.randn(2, tq * hq * wq, 16), torch.randn(2, 2, 2, 8, 12)
    wts = {(dy, dx): math.exp(-(dy * dy + dx * dx) / (2 * (m / 2) ** 2)) for dy in range(-m, m + 1)
           for dx in range(-m, m + 1)}
    z = sum(wts.values())
    want = sum(w / z * shifted(ctx[:, -1], dy, dx) for (dy, dx), w in wts.items())
    torch.testing.assert_close(det(tokens, ctx), want[:, None].expand(-1, 4, -1, -1, -1))
    # a chosen centre and width per frame: the bias alone (weights zero) sets them for every token
    params = [(1.0, -1.0, math.log(0.25)), (0.3, 0.9, math.log(0.8))] * tq  # mu_y, mu_x in m/2 px; log s
    with torch.no_grad():
        det.copy_logits.bias.copy_(torch.tensor(params[:tp]).flatten())
    out = det(tokens, ctx)
    for f in range(4):
        my, mx, ls = params[f % tp]
        w = {(dy, dx): math.exp(-((dy - my * m / 2) ** 2 + (dx - mx * m / 2) ** 2) / (2 * math.exp(2 * ls)))
             for dy in range(-m, m + 1) for dx in range(-m, m + 1)}
        z = sum(w.values())
        torch.testing.assert_close(out[:, f], sum(v / z * shifted(ctx[:, -1], dy, dx) for (dy, dx), v in w.items()))
    assert torch.allclose(out[:, 0], shifted(ctx[:, -1], 2, -2), atol=1e-2)  # narrow at an integer: a shift


def moving_blob(v, frames=6, size=16, seed=0):
    """(1, frames, 1, size, size): a random 5x5 blob on a constant background, moved by v px per frame."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, frames, 1, size, size), -1.0)
    blob = torch.rand(5, 5, generator=g) * 2 - 1
    for t in range(frames):
        y0, x0 = ((size - 5) // 2 + v[i] * (t - (frames - 1) // 2) for i in (0, 1))  # centred over the clip
        x[0, t, 0, y0:y0 + 5, x0:x0 + 5] = blob
    return x


@pytest.mark.parametrize("v", [(1, -1), (0, 2), (-2, 1)])
def test_the_cost_volume_peaks_at_the_last_displacement_of_the_given_frames(v):
    det = VideoDetokenizer(opts(copy_motion=2, frame_size=16, channels=1), 16)
    cv = det.cost_volume(moving_blob(v, frames=2))
    assert cv.shape == (1, 25)
    dy, dx = divmod(int(cv[0].argmax()), 5)
    assert (dy - 2, dx - 2) == (-v[0], -v[1])  # the offset at which the earlier frame matches
    assert 0.9 < float(cv.max()) <= 1.0 + 1e-6  # normalised: 1 for a perfect match


@pytest.mark.parametrize("kernels", [0, 1])
def test_the_measured_motion_can_be_extrapolated_into_every_predicted_frame(kernels):
    """A hand-set motion map (a Gaussian kernel centred on (f + 1) times the displacement measured
    one frame back, for predicted frame f) makes the copy alone continue a constant motion: the
    copy reads the motion per frame slot and frame, in the kernels' own layout."""
    m = 4
    o = opts(frames=6, context_frames=2, frame_size=16, channels=1, copy_window=m, copy_kernels=kernels,
             copy_motion=1, copy_shape="gaussian")
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)  # no residual
    tq, tp, per_slot = det.grid[0], o.time_patch, det.copy_logits.out_features
    with torch.no_grad():
        det.copy_logits.bias.view(-1, 3)[:, 2] = -2.0  # narrow: a peaked kernel
        for slot in range(tq):
            for fs in range(tp):
                f = slot * tp + fs
                for comp in (0, 1):  # the centre's dy, dx (units of m/2 px) from the measured dy, dx
                    det.copy_motion.weight[slot * per_slot + fs * 3 + comp, comp] = (f + 1) / (m / 2)
    for v in [(1, -1), (0, 1), (-1, 0)]:
        clip = moving_blob(v)
        out = det(torch.randn(1, det.grid[0] * 16 + 16, 16), clip[:, :2])
        torch.testing.assert_close(out, clip[:, 2:], atol=0.05, rtol=0)


@pytest.mark.parametrize("v", [(1, -2), (-2, 0), (0, 1)])
def test_the_motion_features_are_each_earlier_frames_displacement_and_its_match(v):
    det = VideoDetokenizer(opts(frames=8, context_frames=4, copy_motion=3, frame_size=32, channels=1), 16)
    feats = det.motion_features(moving_blob(v, frames=4, size=32)).view(3, 3)
    for j in range(3):  # j + 1 frames back: displaced by -(j + 1) v, a perfect match
        torch.testing.assert_close(feats[j, :2], -(j + 1) * torch.tensor(v, dtype=torch.float32), atol=0.01, rtol=0)
        assert feats[j, 2] > 0.95


def test_each_earlier_given_frame_has_its_cost_volume_at_its_distance():
    det = VideoDetokenizer(opts(frames=6, context_frames=3, copy_motion=1, frame_size=16, channels=1), 16)
    cv = det.cost_volume(moving_blob((1, 0), frames=3))
    assert cv.shape == (1, 9 + 25)  # radius 1 one frame back, 2 two frames back
    assert divmod(int(cv[0, :9].argmax()), 3) == (0, 1)  # offset (-1, 0)
    assert divmod(int(cv[0, 9:].argmax()), 5) == (0, 2)  # offset (-2, 0): two frames' motion


def test_motion_starts_silent_and_every_given_frame_reaches_it():
    o = opts(frames=7, context_frames=3, copy_motion=1)
    det, plain = VideoDetokenizer(o, 16), VideoDetokenizer(opts(frames=7, context_frames=3), 16)
    plain.load_state_dict(det.state_dict(), strict=False)
    tokens, ctx = torch.randn(2, 40, 16), torch.randn(2, 3, 2, 8, 12, requires_grad=True)
    torch.testing.assert_close(det(tokens, ctx), plain(tokens, ctx))  # zero-init: the s17 copy
    torch.nn.init.normal_(det.copy_motion.weight)
    g, = torch.autograd.grad(det(tokens, ctx).sum(), ctx)
    assert all(g[:, i].abs().sum() > 0 for i in range(3))
    with pytest.raises(ValueError, match="copy_motion needs"):
        VideoOptions(frames=6, context_frames=1, copy_window=2, copy_motion=1)
    # copy_window=0 alone turns the copy off, its options with it (the preset sets them)
    off = VideoOptions(frames=6, context_frames=2, copy_motion=1, copy_shape="gaussian", copy_extrapolate=True,
                       copy_composite=True)
    assert not any(n.startswith("copy") for n, _ in VideoDetokenizer(off, 16).named_parameters())


# -- constant-velocity extrapolation (copy_extrapolate, context_extrapolate; s19) ----------------

@pytest.mark.parametrize("v", [(1, -2), (-2, 0), (0, 1)])
def test_the_last_step_is_the_clips_velocity(v):
    from rinkit_plugins.video.tokenizer import last_step
    torch.testing.assert_close(last_step(moving_blob(v, frames=4, size=32), 3)[0],
                               torch.tensor(v, dtype=torch.float32), atol=0.01, rtol=0)


def test_shift_frames_moves_a_frame_by_each_displacement():
    from rinkit_plugins.video.tokenizer import shift_frames
    frame = torch.randn(2, 3, 9, 11)
    disp = torch.tensor([[[0.0, 0.0], [1.0, -2.0]], [[-3.0, 1.0], [2.0, 2.0]]])
    out = shift_frames(frame, disp)
    assert out.shape == (2, 2, 3, 9, 11)
    for b in range(2):
        for t in range(2):
            dy, dx = (int(d) for d in disp[b, t])
            # content moved by (dy, dx): out(y, x) = frame(y - dy, x - dx), borders replicated
            torch.testing.assert_close(out[b, t], shifted(frame[b:b + 1], -dy, -dx)[0])
    half = shift_frames(frame, torch.full((2, 1, 2), 0.5))[:, 0]  # bilinear between the neighbours
    torch.testing.assert_close(half[..., 1:, 1:], (frame[..., :-1, :-1] + frame[..., 1:, :-1]
                                                   + frame[..., :-1, 1:] + frame[..., 1:, 1:])[..., :, :] / 4)


@pytest.mark.parametrize("kernels", [0, 1])
def test_an_extrapolating_copy_continues_a_constant_motion_from_the_start(kernels):
    """copy_extrapolate: at initialisation, whatever the tokens, the copy alone is the last given
    frame moved (f + 1) steps for predicted frame f, in every frame of every slot, also where that
    is farther than the kernels' window (10 px against 2 here: the source is moved, not the kernel)."""
    o = opts(frames=8, context_frames=3, frame_size=24, channels=2, copy_window=2, copy_kernels=kernels,
             copy_motion=3, copy_shape="gaussian", copy_extrapolate=True)
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)  # no residual
    for v in [(1, -1), (0, 2), (-1, 0)]:  # two channels, each its own blob
        clip = torch.cat([moving_blob(v, frames=8, size=24), moving_blob(v, frames=8, size=24, seed=1)], 2)
        out = det(torch.randn(1, det.grid[0] * 36 + 72, 16), clip[:, :3])
        # a 0.35-px Gaussian leaves 6 % of the weight on the four neighbours of the centre
        torch.testing.assert_close(out, clip[:, 3:], atol=0.1, rtol=0)
        assert (out - clip[:, 3:]).abs().mean() < 0.005


@pytest.mark.parametrize("kernels", [0, 1])
def test_what_the_extrapolation_moves_past_the_border_stays_within_the_corrections_reach(kernels):
    """copy_extrapolate moves the last given frame on a canvas with the window's margin: a blob
    the motion carries past the border (2 and 4 px here) is still there for a correction of up
    to m px, so kernels centred back on it recover the last given frame whole (a bouncing digit
    needs this; a frame margined after the move has only its replicated border there)."""
    o = opts(frames=4, context_frames=2, frame_size=16, channels=1, copy_window=4, copy_kernels=kernels,
             copy_motion=3, copy_shape="gaussian", copy_extrapolate=True)
    det = VideoDetokenizer(o, 16)
    torch.nn.init.zeros_(det.proj.weight), torch.nn.init.zeros_(det.proj.bias)  # no residual
    with torch.no_grad():  # predicted frame f (0, 1) reads (f + 1) * 2 px to the right of itself
        q = det.copy_logits.bias.view(2, 3)
        q[:, 0], q[:, 1], q[:, 2] = 0.0, torch.tensor([2.0, 4.0]) / (o.copy_window / 2), -2.0  # narrowest
    blob = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    given = torch.full((1, 2, 1, 16, 16), -1.0)
    given[0, 0, 0, 6:11, 8:13], given[0, 1, 0, 6:11, 10:15] = blob, blob  # 2 px/frame to the right
    out = det(torch.randn(1, 32, 16), given)
    # (the measured step is 1.99 px: a sub-pixel residue, against the blob's values in [0, 1])
    torch.testing.assert_close(out, given[:, 1:].expand(-1, 2, -1, -1, -1), atol=0.06, rtol=0)


def test_the_extrapolated_centre_stays_learnable():
    o = opts(frames=6, context_frames=2, frame_size=16, channels=1, copy_window=4, copy_kernels=1,
             copy_motion=1, copy_shape="gaussian", copy_extrapolate=True)
    det = VideoDetokenizer(o, 16)
    clip = moving_blob((1, 0))
    loss = (det(torch.randn(1, 40, 16), clip[:, :2]) - clip[:, 2:].roll(1, -1)).pow(2).sum()
    loss.backward()
    centre_grad = det.copy_logits.bias.grad.view(-1, 3)[:, :2]
    assert centre_grad.abs().sum() > 0 and det.copy_motion.weight.grad.abs().sum() > 0


def test_extrapolated_stem_input_is_the_future_frame_under_constant_motion():
    """context_extrapolate: predicted frame f's stem sees the last given frame moved (f + 1)
    steps, i.e. for a constant motion the frame it has to predict: its tokens equal those of a
    stem that is handed the true future frame in the concatenated channels."""
    from rinkit_plugins.video.tokenizer import VideoTokenizer
    o = VideoOptions(frames=6, context_frames=2, frame_size=16, channels=1, patch_size=4, time_patch=1,
                     context_concat=True, context_extrapolate=2)
    tok = VideoTokenizer(o, 8)
    clip = moving_blob((1, -1))
    x = torch.randn(1, 4, 1, 16, 16)
    tokens, _ = tok(x, clip[:, :2])
    truth = tok.embed_frames(x, clip[:, 2:]) + tok.pos()[2 * 16:]
    # (the measured step is within 0.001 px of v: the frame border breaks the match's symmetry)
    torch.testing.assert_close(tokens[:, :4 * 16], truth, atol=0.05, rtol=0)
    plain = VideoTokenizer(VideoOptions(**{**o.model_dump(), "context_extrapolate": 0}), 8)
    plain.load_state_dict(tok.state_dict())
    assert not torch.allclose(plain(x, clip[:, :2])[0][:, :4 * 16], truth, atol=1e-3)
    torch.testing.assert_close(plain(x, clip[:, :2])[0][:, 4 * 16:], tokens[:, 4 * 16:])  # given frames as before


def test_extrapolation_options_are_validated():
    with pytest.raises(ValueError, match="copy_extrapolate needs"):
        VideoOptions(frames=6, context_frames=2, copy_window=2, copy_shape="gaussian", copy_extrapolate=True)
    with pytest.raises(ValueError, match="copy_extrapolate needs"):
        VideoOptions(frames=6, context_frames=2, copy_window=2, copy_motion=1, copy_extrapolate=True)
    with pytest.raises(ValueError, match="context_extrapolate needs"):
        VideoOptions(frames=6, context_frames=2, context_extrapolate=2)
    with pytest.raises(ValueError, match="context_extrapolate needs"):
        VideoOptions(frames=6, context_frames=1, context_concat=True, context_extrapolate=2)


@pytest.mark.parametrize("kernels", [0, 1])
def test_a_composited_copy_is_mixed_with_the_readout_under_a_per_pixel_mask(kernels):
    """copy_composite: x0 = g * copy + (1 - g) * readout, g per pixel (shared by the channels);
    a saturated mask passes the copy untouched whatever the readout says (an additive residual
    would have to output an exact zero), a closed one the readout alone; it starts at g = 0.5."""
    o = opts(copy_kernels=kernels, copy_composite=True)
    det = VideoDetokenizer(o, 16)
    plain = VideoDetokenizer(VideoOptions(**{**o.model_dump(), "copy_composite": False}), 16)
    plain.load_state_dict(det.state_dict(), strict=False)
    tokens, ctx = torch.randn(2, 24, 16), torch.randn(2, 2, 2, 8, 12)
    torch.nn.init.normal_(det.proj.weight), torch.nn.init.normal_(plain.proj.weight)
    plain.proj.load_state_dict(det.proj.state_dict())
    copied = det.copy(tokens, ctx)[:, :4]
    readout = plain(tokens, ctx) - copied  # the additive readout's residual
    assert readout.abs().mean() > 0.1
    g = 0.5
    torch.testing.assert_close(det(tokens, ctx), g * copied + (1 - g) * readout)
    with torch.no_grad():
        det.copy_gate.proj.bias.fill_(30.0)
    torch.testing.assert_close(det(tokens, ctx), copied)
    with torch.no_grad():
        det.copy_gate.proj.bias.fill_(-30.0)
    torch.testing.assert_close(det(tokens, ctx), readout)
    # one mask per pixel, read from the tokens: its gradient reaches the gate's weights
    with torch.no_grad():
        det.copy_gate.proj.bias.zero_()
    det(tokens, ctx).pow(2).sum().backward()
    assert det.copy_gate.proj.weight.grad.abs().sum() > 1e-3
    assert det.copy_gate.proj.weight.shape[0] == 2 * 4 * 4  # time_patch x patch x patch, one channel
