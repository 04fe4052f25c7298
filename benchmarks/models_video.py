"""The conv baseline for video: a space-time U-Net in the layout of Ho et al.'s Video Diffusion
Models (VDM, arXiv 2204.03458, section 3): the image diffusion U-Net with every 2-D convolution
applied per frame (a space-only 1x3x3 3-D convolution), each spatial attention block followed by a
temporal attention block (attention over frames at each pixel, with learned relative position
biases), and time-only structure left to that attention. Resolution changes are spatial only.

Frame-conditional prediction as rinkit's video plugin sets it up (k given frames -> the rest): the
U-Net sees the whole clip, the given frames clean and the predicted frames noisy, plus one mask
channel marking the given frames (the imputation-style conditioning of RaMViD / MCVD / VDM's
conditional models); only the predicted frames are read out. The temporal attention lets every
predicted frame attend to the given ones at every attention resolution.

The per-frame blocks are diffusers' ResnetBlock2D, Downsample2D, Upsample2D and (spatial)
Attention, the blocks of its UNet2DModel, which `benchmarks/models.py` uses for the image
baselines. diffusers' own UNet3DConditionModel is a text-to-video U-Net (ModelScope): it needs
cross-attention inputs and adds temporal convolutions, so it is not VDM's layout; the temporal
attention with relative positions is written here (diffusers has none).

Denoiser contract: `model(x_t, gamma, labels, prev_latents, context) -> (prediction, None)` with
x_t (B, T-k, C, H, W) and context (B, k, C, H, W), so `rinkit.diffusion` trains and samples it
exactly as it does RIN (self-conditioning rate 0: a U-Net has no latents to carry).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rinkit.errors import RinkitError

# The VDM layout scaled to 32x32 moving digits: channels 32 x (1, 1, 2) give levels at 32, 16 and
# 8 px, spatial + temporal attention at 16 and 8 (and in the middle block), 2 res blocks per level
# (DDPM/VDM), scale-shift time conditioning (ADM), 1.41M parameters for 1-channel video, sized to
# match RIN's video-digits preset (1.37M) rather than copying a paper's width (VDM's are ~1B).
VDM_DIGITS = dict(channels=32, mult=(1, 1, 2), res_blocks=2, attn=(16, 8), head_channels=32, dropout=0.0)


def _diffusers():
    try:
        from diffusers.models import attention_processor, embeddings, resnet
    except ImportError:
        raise RinkitError("the U-Net baselines need diffusers: pip install 'rinkit[benchmarks]'") from None
    return resnet, attention_processor, embeddings


def fold(h: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W): per-frame 2-D ops = space-only 1xkxk 3-D ops."""
    b, c, t, hh, ww = h.shape
    return h.transpose(1, 2).reshape(b * t, c, hh, ww)


def unfold(h: torch.Tensor, t: int) -> torch.Tensor:
    bt, c, hh, ww = h.shape
    return h.reshape(bt // t, t, c, hh, ww).transpose(1, 2)


class TemporalAttention(nn.Module):
    """Pre-norm self-attention over the frames at each pixel, residual, with a learned relative
    position bias per head (VDM: relative position embeddings, so the frames' order is known
    without absolute frame embeddings). The output projection starts at zero (identity block)."""

    def __init__(self, channels: int, head_channels: int, groups: int, max_frames: int = 64):
        super().__init__()
        self.heads, self.max_frames = max(1, channels // head_channels), max_frames
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.rel = nn.Parameter(torch.zeros(self.heads, 2 * max_frames - 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = h.shape
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the temporal attention's {self.max_frames}")
        x = self.norm(h).permute(0, 3, 4, 2, 1).reshape(b * hh * ww, t, c)
        q, k, v = self.qkv(x).view(b * hh * ww, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        pos = torch.arange(t, device=h.device)
        bias = self.rel[:, pos[None, :] - pos[:, None] + self.max_frames - 1]  # heads, T (query), T (key)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        o = self.out(o.transpose(1, 2).reshape(b * hh * ww, t, c))
        return h + o.view(b, hh, ww, t, c).permute(0, 4, 3, 1, 2)


class SpaceTimeBlock(nn.Module):
    """A per-frame ResNet block, then (at attention resolutions) spatial and temporal attention."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float, attn: bool, head_channels: int):
        super().__init__()
        resnet, attention, _ = _diffusers()
        self.res = resnet.ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, groups=groups,
                                        dropout=dropout, time_embedding_norm="scale_shift")
        self.spatial = attention.Attention(cout, heads=max(1, cout // head_channels), dim_head=min(cout, head_channels),
                                           norm_num_groups=groups, residual_connection=True, bias=True,
                                           upcast_softmax=True, eps=1e-6, _from_deprecated_attn_block=True) if attn else None
        self.temporal = TemporalAttention(cout, head_channels, groups) if attn else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t = h.shape[2]
        x = self.res(fold(h), emb.repeat_interleave(t, 0))
        if self.spatial is not None:
            x = self.spatial(x)
        h = unfold(x, t)
        return self.temporal(h) if self.temporal is not None else h


class VideoUNet(nn.Module):
    """VDM-style space-time U-Net for frame-conditional prediction (see the module docstring)."""

    def __init__(self, channels: int, size: int, context_frames: int, base: int = 32, mult=(1, 1, 2),
                 res_blocks: int = 2, attn=(16, 8), head_channels: int = 32, dropout: float = 0.0):
        super().__init__()
        resnet, attention, embeddings = _diffusers()
        self.k, self.c = context_frames, channels
        groups = 8 if base % 32 else 32
        temb = base * 4
        self.time_proj = embeddings.Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_mlp = embeddings.TimestepEmbedding(base, temb)
        self.conv_in = nn.Conv2d(channels + 1, base, 3, padding=1)  # + the given-frame mask channel
        widths = [base * m for m in mult]
        self.down, skips, cin, res = nn.ModuleList(), [base], base, size
        for i, w in enumerate(widths):
            for _ in range(res_blocks):
                self.down.append(SpaceTimeBlock(cin, w, temb, groups, dropout, res in attn, head_channels))
                cin = w
                skips.append(cin)
            if i < len(widths) - 1:
                self.down.append(resnet.Downsample2D(cin, use_conv=True, out_channels=cin, padding=1))
                skips.append(cin)
                res //= 2
        self.mid = nn.ModuleList([SpaceTimeBlock(cin, cin, temb, groups, dropout, True, head_channels),
                                  SpaceTimeBlock(cin, cin, temb, groups, dropout, False, head_channels)])
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(res_blocks + 1):
                self.up.append(SpaceTimeBlock(cin + skips.pop(), w, temb, groups, dropout, res in attn, head_channels))
                cin = w
            if i > 0:
                self.up.append(resnet.Upsample2D(cin, use_conv=True))
                res *= 2
        self.norm_out = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _layer(self, layer, h, emb):
        if isinstance(layer, SpaceTimeBlock):
            return layer(h, emb)
        return unfold(layer(fold(h)), h.shape[2])  # spatial down/upsampling, frame by frame

    def forward(self, x_t, gamma, labels=None, prev_latents=None, context=None):
        if self.k and (context is None or context.shape[1] != self.k):
            raise ValueError(f"this video U-Net conditions on {self.k} given frames")
        clip = x_t if not self.k else torch.cat([context.to(x_t), x_t], 1)  # B, T, C, H, W
        mask = torch.zeros_like(clip[:, :, :1])
        mask[:, :self.k] = 1.0
        h = torch.cat([clip, mask], 2).transpose(1, 2)  # B, C+1, T, H, W
        t = h.shape[2]
        emb = self.time_mlp(self.time_proj(gamma.float() * 1000.0).to(h.dtype))  # what RIN's time token sees
        h = unfold(self.conv_in(fold(h)), t)
        hs = [h]
        for layer in self.down:
            h = self._layer(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], 1), emb) if isinstance(layer, SpaceTimeBlock) else self._layer(layer, h, emb)
        out = self.conv_out(F.silu(self.norm_out(fold(h))))
        return unfold(out, t).transpose(1, 2)[:, self.k:], None


def video_unet(opts, width: float = 1.0, depth: int | None = None, **overrides) -> VideoUNet:
    """The baseline for a video preset's modality options (a VideoOptions); `width` and `depth`
    shrink it for smoke tests."""
    h, w = opts.size
    if h != w:
        raise RinkitError(f"the video U-Net baseline needs square frames, got {opts.size}")
    cfg = {**VDM_DIGITS, **overrides}
    base = max(8, int(cfg["channels"] * width) // 8 * 8)
    return VideoUNet(opts.channels, h, opts.context_frames, base, cfg["mult"], depth or cfg["res_blocks"],
                     cfg["attn"], cfg["head_channels"], cfg["dropout"])


def video_unet_entry(preset="video-digits", overrides: list[str] | None = None, width: float = 1.0,
                     depth: int | None = None):
    """A benchmarks.models.Entry for a video preset's task (a preset name and overrides, or a
    config): the U-Net trained with the preset's objective, schedules and context dropout, minus
    self-conditioning."""
    from benchmarks.models import Entry, without_self_cond
    from rinkit.build import build_diffusion, resolve
    from rinkit.config import load_config
    cfg = resolve(load_config(preset, None, list(overrides or [])) if isinstance(preset, str) else preset)
    if cfg.modality != "video":
        raise RinkitError(f"preset {cfg.name!r} is not a video preset (modality {cfg.modality!r})")
    opts, diffusion = cfg.options, without_self_cond(build_diffusion(cfg))
    name = "U-Net VDM" + (f" (width {width:g})" if width != 1.0 or depth else "")
    return Entry(name, "unet", lambda: video_unet(opts, width, depth), diffusion, cfg.sample_shape, 0,
                 note="VDM space-time layout scaled to the preset")
