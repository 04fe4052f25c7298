"""Video tokenizer and detokenizer (docs/method.md §7).

Both are the engine's 3-D patch layer (rinkit.plugin.PatchEmbed / PatchUnembed).
Tokenizer: a Conv3d stem with kernel = stride = (time_patch, p, p) (a linear space-time patch
projection) -> flatten to T'·H'·W' tokens -> LayerNorm -> + positional embedding over the
(context slots + predicted slots, H', W') grid. As in the official `VideoTapeDenoiser`, the
given (clean) frames go through the same stem and are appended to the interface at their own,
earlier, time positions, so they are readable and writable like any interface token.
Each part is zero-padded at the end to a multiple of time_patch (TF 'SAME'): for 16 frames,
5 given, 2x4x4 patches on 64x64 that is (3 + 6) x 16 x 16 = 2304 tokens, as in the official
code (the paper quotes 2048 = 8 x 16 x 16, one joint clip).
Detokenizer: LayerNorm -> linear to time_patch·p·p·C -> un-patchify the predicted frames'
tokens only (they come first) -> crop the padding."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rinkit.plugin import PatchEmbed, PatchUnembed


def pair_volumes(context: torch.Tensor, r: int):
    """(B, K, C, H, W) given frames -> for each earlier given frame j steps back (j = 1..K-1),
    (j*r, its (B, 2jr+1, 2jr+1) volume): the normalised cross-correlation of the last given
    frame with it moved by each displacement of at most j*r px, the correlation layer of
    FlowNetC (Dosovitskiy et al. 2015) taken over the whole frame. Its peaks are the clip's
    displacements over 1..K-1 frames; the longer baselines pin a sub-pixel speed down that
    one frame's rounded step cannot (a 1.6 px/frame motion steps 2, 1, 2, ... px)."""
    a = context[:, -1] - context[:, -1].mean((-2, -1), keepdim=True)
    n, c, h, w = a.shape
    a_sq = a.pow(2).sum((1, 2, 3))
    for j in range(1, context.shape[1]):
        rj = j * r
        b = context[:, -1 - j] - context[:, -1 - j].mean((-2, -1), keepdim=True)
        corr = F.conv2d(F.pad(b, (rj,) * 4).reshape(1, n * c, h + 2 * rj, w + 2 * rj),
                        a.reshape(n * c, 1, h, w), groups=n * c).view(n, c, 2 * rj + 1, 2 * rj + 1).sum(1)
        yield rj, corr / (a_sq * b.pow(2).sum((1, 2, 3))).sqrt().clamp_min(1e-6)[:, None, None]


def motion_features(context: torch.Tensor, r: int, beta: float = 10.0) -> torch.Tensor:
    """(B, K, C, H, W) -> (B, 3 (K-1)): per earlier given frame, the displacement (dy, dx) in
    px at which it best matches the last one (the cost volume's peak refined by a soft-argmax
    over its 3x3 neighbourhood, as keypoint regressors do) and the peak's correlation (how much
    to trust it). For a constant motion v the j-th displacement is -j v. A displacement is a few
    numbers a linear map turns into a Gaussian kernel's centre; the raw cost volume asked a
    softmax over (2m+1)^2 logits to learn that mapping, which collapsed onto no motion
    (docs/video.md)."""
    n, out = context.shape[0], []
    ar = torch.arange(-1, 2, device=context.device)
    for rj, cv in pair_volumes(context, r):
        w = 2 * rj + 1
        peak, idx = cv.flatten(1).max(1)
        cy, cx = (idx // w).clamp(1, w - 2), (idx % w).clamp(1, w - 2)  # a full 3x3 inside
        ys, xs = cy[:, None] + ar, cx[:, None] + ar  # (n, 3)
        nb = cv[torch.arange(n)[:, None, None], ys[:, :, None], xs[:, None, :]]  # (n, 3, 3)
        a = (beta * (nb - peak[:, None, None])).flatten(1).softmax(1).view(n, 3, 3)
        dy = (a.sum(2) * ys).sum(1) - rj
        dx = (a.sum(1) * xs).sum(1) - rj
        out.append(torch.stack([dy, dx, peak], 1))
    return torch.cat(out, 1)


def last_step(context: torch.Tensor, r: int) -> torch.Tensor:
    """(B, K, C, H, W) -> (B, 2): the clip's last measured step (dy, dx) in px per frame, the
    displacement of the last given frame against the one before (motion_features' first pair,
    negated). Constant-velocity extrapolation puts predicted frame f at (f + 1) times it: the
    classical baseline of video prediction, which on moving digits scores far above every learned
    readout (docs/video.md, s19); the last pair beats a fit over all pairs where a wall was hit."""
    return -motion_features(context[:, -2:], r)[:, :2]


def shift_frames(frame: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """frame (B, C, H, W), disp (B, T, 2) px (dy, dx) -> (B, T, C, H, W): the frame moved by each
    displacement (bilinear, border replicated, as the readout's copy pads)."""
    b, c, h, w = frame.shape
    t = disp.shape[1]
    ys = torch.arange(h, device=frame.device, dtype=frame.dtype)
    xs = torch.arange(w, device=frame.device, dtype=frame.dtype)
    # source pixel of target (y, x) is (y - dy, x - dx), in grid_sample's [-1, 1] (align_corners)
    sy, sx = torch.broadcast_tensors(ys[None, None, :, None] - disp[..., 0, None, None],
                                     xs[None, None, None, :] - disp[..., 1, None, None])
    grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(frame[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, c, h, w),
                        grid.reshape(b * t, h, w, 2), mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(b, t, c, h, w)


class VideoTokenizer(PatchEmbed):
    """The engine's 3-D patch layer over (time, H, W); its positions cover the given and the
    predicted slots, of which each part reads its own."""

    def __init__(self, opts, dim: int):
        tp, p, (h, w) = opts.time_patch, opts.patch_size, opts.size
        slots_ctx, slots_pred = opts.slots
        k = opts.context_concat_frames if opts.context_concat else 0
        m = opts.context_window
        # + the last k given frames' channels, in the stem's own patch (m = 0) or in a wider window
        in_ch = opts.channels * (1 + (k if not m else 0))
        super().__init__(in_ch, dim, (tp, p, p), (slots_ctx + slots_pred, h // p, w // p), opts.pos_emb)
        self.tp, self.p, self.slots_ctx, self.slots_pred = tp, p, slots_ctx, slots_pred
        self.per_slot = (h // p) * (w // p)
        self.concat, self.concat_frames = opts.context_concat, k
        self.extrapolate = opts.context_extrapolate  # r px/frame: the search radius of the last step
        # the window stem: each token sees the given frames in (p + 2m)^2 pixels centred on its patch
        self.window = nn.Conv2d(opts.channels * k, dim, p + 2 * m, stride=p, padding=m, bias=False) if m else None

    @property
    def num_cond_tokens(self) -> int:
        """The given frames' tokens, appended last to the interface (the engine's write_context)."""
        return self.slots_ctx * self.per_slot

    @property
    def token_grid(self) -> tuple[tuple[int, ...], torch.Tensor]:
        """(sizes, order) for model.conv_kernel_size: the (given + predicted slots, H', W') grid in
        time order, whose first cells (the given frames) are the interface's last tokens."""
        n_ctx, n_pred = self.num_cond_tokens, self.slots_pred * self.per_slot
        return self.grid, torch.cat([torch.arange(n_pred, n_pred + n_ctx), torch.arange(n_pred)])

    def embed_frames(self, v: torch.Tensor, last: torch.Tensor | None = None,
                     extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, ceil(T/tp)·H'·W', D), time-major. `last` (B, 1, k·C, H, W), the
        last k given frames, is concatenated to every frame's channels (context_concat; (B, T, k·C,
        H, W): each frame its own, moved along the measured motion, context_extrapolate); `extra`
        (B, D, 1, H', W'), the window stem's features (context_window), is added to every slot's."""
        if last is not None:  # (B, 1 or T, k·C, H, W): one for every frame, or each frame its own
            v = torch.cat([v, last.expand(-1, v.shape[1], -1, -1, -1)], dim=2)
        pad = -v.shape[1] % self.tp
        v = v.transpose(1, 2)  # B, C, T, H, W
        if pad:
            v = F.pad(v, (0, 0, 0, 0, 0, pad))
        return self.embed(v, extra)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        pos = self.pos()
        n_ctx = self.slots_ctx * self.per_slot
        if n_ctx and context is None:
            raise ValueError(f"this video model conditions on {self.slots_ctx * self.tp} given "
                             "frames but no context was passed")
        # the last k given frames as channels of one frame: (B, 1, k*C, H, W)
        last = context[:, -self.concat_frames:].flatten(1, 2)[:, None] if self.concat else None
        extra, last_pred = None, last
        if self.window is not None:  # the window stem replaces the channel concat; computed once for both parts
            extra, last, last_pred = self.window(last[:, 0])[:, :, None], None, None
        elif self.extrapolate:
            # each predicted frame's stem sees the concatenated frames moved to where a constant
            # motion puts them in that frame, so a token finds the content it should show at its
            # own pixels (a warped-frame input, as flow-based predictors such as SDC-Net take)
            f = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
            disp = f[None, :, None] * last_step(context, self.extrapolate).to(x.dtype)[:, None]
            last_pred = shift_frames(last[:, 0], disp)
        tokens = self.embed_frames(x, last_pred, extra) + pos[n_ctx:]
        if n_ctx:
            tokens = torch.cat([tokens, self.embed_frames(context, last, extra) + pos[:n_ctx]], dim=1)
        return tokens, None


class VideoDetokenizer(PatchUnembed):
    """With `copy_window` m > 0 the readout also *copies* from the last given frame: each predicted
    token gives, per frame it covers, a softmax over the (2m+1)^2 displacements d with |d_y|, |d_x|
    <= m, and its pixels get sum_d a_d * last(pixel + d) added to the linear readout, which becomes
    a residual. It is motion-compensated prediction as video models have done it since Finn et
    al.'s DNA (2016, per-pixel advection kernels) and SDC-Net (Reda et al. 2018): moving content is
    fetched from where it was instead of being redrawn from the latents at every position, the step
    RIN's interface cannot take on its own (docs/video.md). With `copy_kernels` J > 0 the
    displacement distributions are the clip's instead: J kernels per frame from the mean of the
    frame slot's tokens, mixed per token by a softmax over them (Finn et al.'s CDNA), so every
    part of a rigidly moving object is moved alike. With `copy_composite` the readout is not added
    but composited, g * copy + (1 - g) * readout, under a per-pixel mask g (CDNA's compositing
    masks). The result is an x0 estimate, so the model
    needs diffusion.pred=x0 (`output_target`, checked by rinkit.build)."""

    def __init__(self, opts, dim: int):
        p, frames = opts.patch_size, opts.predicted_frames
        grid = (math.ceil(frames / opts.time_patch), opts.size[0] // p, opts.size[1] // p)
        super().__init__(opts.channels, dim, (opts.time_patch, p, p), grid)
        self.frames, self.m, self.kernels = frames, opts.copy_window, opts.copy_kernels
        self.shape, self.r = opts.copy_shape, opts.copy_motion
        self.extrapolate = opts.copy_extrapolate
        if self.m:
            self.output_target = "x0"
            k, tp, j = 2 * self.m + 1, opts.time_patch, self.kernels
            # per token (DNA-like) or per clip, pooled over each frame slot's tokens (CDNA); a
            # free distribution has a logit per displacement, a Gaussian a centre and a width
            self.copy_logits = nn.Linear(dim, tp * max(j, 1) * (k * k if self.shape == "free" else 3))
            # the clip's motion as the kernels' second input: a linear map of the displacements
            # measured between the given frames (one set per frame slot, added to every token's)
            # (no bias: copy_logits has one)
            self.copy_motion = nn.Linear(3 * (opts.context_frames - 1), grid[0] * self.copy_logits.out_features,
                                         bias=False) if self.r else None
            # CDNA: each token's mix of the clip's j kernels
            self.copy_masks = nn.Linear(dim, tp * j) if j > 1 else None
            # the compositing mask's logit per pixel (copy_composite): a one-channel readout of its own
            self.copy_gate = PatchUnembed(1, dim, (tp, p, p), grid) if opts.copy_composite else None
            # zero: every displacement equally likely at the start (free), or a broad Gaussian at
            # no displacement, so each displacement's gradient is informative
            for lin in (self.copy_logits, self.copy_masks, self.copy_motion):
                if lin is not None:
                    nn.init.zeros_(lin.weight)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)
            if self.copy_gate is not None:
                # an even mix at the start: a mask that starts at sigmoid(2) = 0.88 scales the
                # readout's path (and its gradient) by 0.12, and in a run (s20) the network then
                # never learned to use its noisy input (x0 MSE flat at 0.07 over 1,000 steps)
                nn.init.zeros_(self.copy_gate.proj.weight)
                nn.init.zeros_(self.copy_gate.proj.bias)
            if self.shape == "gaussian":
                with torch.no_grad():  # broad, or narrow where the centre starts on the extrapolation
                    self.copy_logits.bias.view(-1, 3)[:, 2] = math.log(0.35 if self.extrapolate else self.m / 2)
                d = torch.arange(-self.m, self.m + 1, dtype=torch.float32)
                self.register_buffer("offsets", torch.cartesian_prod(d, d), persistent=False)  # (k*k, 2): dy, dx

    def pair_volumes(self, context: torch.Tensor):
        return pair_volumes(context, self.r)

    def cost_volume(self, context: torch.Tensor) -> torch.Tensor:
        """(B, K, C, H, W) -> (B, sum_j (2jr+1)^2): every pair's volume, flattened (pair_volumes)."""
        return torch.cat([v.flatten(1) for _, v in self.pair_volumes(context)], 1)

    def motion_features(self, context: torch.Tensor, beta: float = 10.0) -> torch.Tensor:
        return motion_features(context, self.r, beta)

    def kernel_logits(self, h: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """Features (..., D) -> (..., tp * J' * k * k) logits over the displacements. Gaussian: a
        centre in units of m / 2 px (a linear map of the features can then follow a velocity
        times the frame's distance) and a log-width, so the logit of d is -|d - mu|^2 / 2 s^2:
        a soft argmax whose pull reaches as far as the width (a free logit's gradient is scaled
        by the weight the softmax already gives it)."""
        out = self.copy_logits(h)
        if motion is not None:  # (B, T', ...): the slot's motion logits, shared by its tokens
            out = out + motion.view(motion.shape[0], motion.shape[1], *(1,) * (out.dim() - 3), -1)
        if self.shape == "free":
            return out
        q = out.view(*out.shape[:-1], -1, 3)
        mu, log_s = q[..., :2] * (self.m / 2), q[..., 2].clamp(-2.0, math.log(2 * self.m))
        dist2 = ((self.offsets - mu[..., None, :]) ** 2).sum(-1)  # (..., tp * J', k * k)
        return (-dist2 / (2 * torch.exp(2 * log_s))[..., None]).flatten(-2)

    def copy(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, N, D) interface tokens (predicted first), (B, k, C, H, W) given frames ->
        (B, T', C, H, W) with T' the padded predicted frames: the last given frame averaged over
        the displacements under each token's softmax (copy_kernels 0), or under the clip's
        kernels, mixed per token (copy_kernels > 0). With copy_extrapolate each predicted frame
        copies from the last given frame already moved on at its last measured step, so the
        kernels (within m px) learn the correction, not the motion."""
        (tq, hq, wq), (tp, p, _) = self.grid, self.patch_size
        last = context[:, -1]
        b, c, k, t = last.shape[0], last.shape[1], 2 * self.m + 1, tq * tp
        motion = feats = None
        if self.r:
            feats = self.motion_features(context)
            motion = self.copy_motion(feats).view(b, tq, -1)
        # the source of each predicted frame, with the kernels' m-px margin: the last given frame
        # (one for all), or where a constant motion puts it in that frame, (f + 1) steps on.
        # replicate: content that leaves the frame is continued by its border, not by black
        padded, s = F.pad(last, (self.m,) * 4, mode="replicate"), 1
        if self.extrapolate:
            # moved on the margined canvas, not margined after the move: what the motion carries
            # past the border (a digit about to bounce off it) stays within the correction's reach
            f = torch.arange(1, t + 1, device=last.device, dtype=last.dtype)
            # the last step is the first pair's displacement already measured above (last_step's
            # numbers, without a second cost volume)
            step = -feats[:, :2]
            disp = f[None, :, None] * step.to(last.dtype)[:, None]
            padded, s = shift_frames(padded, disp).flatten(0, 1), t
        normed = self.norm(tokens[:, :tq * hq * wq])
        if self.kernels:  # the clip's kernels: one conv of each source frame per kernel
            j = self.kernels
            # the mean of the slot's token logits, taken before the linear map (the same numbers,
            # hq * wq times fewer products)
            a = self.kernel_logits(normed.view(b, tq, hq * wq, -1).mean(2), motion)
            a = a.view(b, tq, tp, j, k * k).softmax(-1)
            # groups: (b, c) with t * j kernels each, or (b, t, c) with j each for per-frame sources
            kern = a.reshape(b, t // s, s, 1, j, k, k).expand(-1, -1, -1, c, -1, -1, -1)
            kern = kern.permute(0, 2, 3, 1, 4, 5, 6).reshape(b * s * c * (t // s) * j, 1, k, k)
            out = F.conv2d(padded.reshape(1, b * s * c, *padded.shape[-2:]), kern, groups=b * s * c)
            out = out.view(b, s, c, t // s, j, hq * p, wq * p).transpose(1, 2).reshape(b, c, t, j, hq * p, wq * p)
            if j == 1:
                return out[:, :, :, 0].transpose(1, 2)
            mask = self.copy_masks(normed).view(b, tq, hq, wq, tp, j).softmax(-1)
            mask = mask.permute(0, 1, 4, 5, 2, 3).reshape(b, 1, t, j, hq, 1, wq, 1)
            out = (out.view(b, c, t, j, hq, p, wq, p) * mask).sum(3)
            return out.reshape(b, c, t, hq * p, wq * p).transpose(1, 2)
        a = self.kernel_logits(normed.view(b, tq, hq, wq, -1), motion)
        a = a.view(b, tq, hq, wq, tp, k * k).softmax(-1)
        # per token, a correlation of the (p + 2m)^2 window of the source around its patch with
        # its t kernels a: one grouped conv (a group per token, channel and source frame), which
        # never builds the (2m+1)^2-fold unfolded frame (2-3x faster than unfold + bmm on this CPU)
        n, w = b * hq * wq, p + 2 * self.m
        win = F.unfold(padded, w, stride=p)  # (b s) (c w w) (i j)
        win = win.view(b, s, c, w, w, hq * wq).permute(0, 5, 2, 1, 3, 4).reshape(1, n * c * s, w, w)
        kern = a.permute(0, 2, 3, 1, 4, 5).reshape(n, 1, t, k, k).expand(-1, c, -1, -1, -1)
        out = F.conv2d(win, kern.reshape(n * c * t, 1, k, k), groups=n * c * s)  # 1, (b i j c t), p, p
        return out.view(b, hq, wq, c, t, p, p).permute(0, 4, 3, 1, 5, 2, 6).reshape(b, t, c, hq * p, wq * p)

    def forward(self, tokens: torch.Tensor, context=None, state=None) -> torch.Tensor:
        # the given frames' tokens (after the predicted ones) are not read out
        x = super().forward(tokens).transpose(1, 2)  # B, C, T, H, W -> B, T, C, H, W
        if self.m:
            if context is None:
                raise ValueError("copy_window copies from the given frames but no context was passed")
            copied = self.copy(tokens, context.to(x.dtype))
            if self.copy_gate is None:
                x = x + copied
            else:  # one mask for all channels of a pixel
                g = torch.sigmoid(self.copy_gate(tokens)).transpose(1, 2)
                x = g * copied + (1 - g) * x
        return x[:, :self.frames]
