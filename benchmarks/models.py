"""The models the harness compares, each behind the denoiser contract of rinkit's diffusion code:
`model(x_t, gamma, labels, prev_latents, context) -> (prediction, latents)`.

* RIN: a rinkit preset (configs/*.yaml), built exactly as `rinkit train` builds it.
* ADM-style U-Nets: diffusers' UNet2DModel configured as guided-diffusion's models (the U-Nets of
  the paper's Fig. 1), wrapped so they are trained by the same `Diffusion.loss` (with
  self-conditioning rate 0: a U-Net has no latents to carry). ADM[8] and ADM[28] are the ADM
  layout scaled to 8x8 digits and 28x28 Fashion-MNIST, matched in parameters to RIN's `digits`
  and `fashion-mnist` presets, for benchmarks/quality.py (quality of both at equal wall-clock).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from rinkit.errors import RinkitError

# guided-diffusion flags (README "Model flags" / ADM paper App. table) per resolution. 32x32 is the
# DDPM CIFAR-10 U-Net (Ho et al. 2020; ADM has no 32x32 model): 128 channels, mult 1-2-2-2,
# 2 res blocks, one attention head at 16x16, dropout 0.1, plain (not scale-shift) norm, conv resampling.
ADM = {
    # Not a published model: the ADM layout (ImageNet-64's flags: 3 res blocks per level,
    # scale-shift norm, res-block up/down-sampling, 64-channel heads, attention at the lowest
    # resolutions) scaled down to 8x8x1 digits for benchmarks/quality.py. Channels 32 x (1, 2) give
    # levels at 8x8 and 4x4, attention at 4x4 (and in the middle block), dropout 0 as in the
    # digits RIN preset; 1.46M parameters with 10 classes, sized to match RIN's digits model
    # (1.35M) rather than copying a paper's width.
    8: dict(channels=32, mult=(1, 2), res_blocks=3, attn=(4,), head_channels=64, dropout=0.0,
            scale_shift=True, resblock_updown=True, source="ADM layout scaled to 8x8 (digits)"),
    # Not a published model either: the same ADM layout (scale-shift norm, res-block resampling,
    # 64-channel heads, dropout 0) for 28x28x1 Fashion-MNIST at its native size, for
    # benchmarks/quality.py. Channels 48 x (1, 2, 2) give levels at 28, 14 and 7 (no padding to
    # 32 needed), 2 res blocks per level as the DDPM CIFAR-10 U-Net, attention at 7x7 (and in the
    # middle block); 3.96M parameters with 10 classes, matched to RIN's fashion-mnist model
    # (4.6M) as ADM[8] is to digits. `--unet-width` scales the channels.
    28: dict(channels=48, mult=(1, 2, 2), res_blocks=2, attn=(7,), head_channels=64, dropout=0.0,
             scale_shift=True, resblock_updown=True, source="ADM layout scaled to 28x28 (Fashion-MNIST)"),
    32: dict(channels=128, mult=(1, 2, 2, 2), res_blocks=2, attn=(16,), head_channels=None,
             dropout=0.1, scale_shift=False, resblock_updown=False, source="DDPM CIFAR-10 U-Net (35.7M)"),
    64: dict(channels=192, mult=(1, 2, 3, 4), res_blocks=3, attn=(32, 16, 8), head_channels=64,
             dropout=0.1, scale_shift=True, resblock_updown=True, source="ADM ImageNet-64"),
    128: dict(channels=256, mult=(1, 1, 2, 3, 4), res_blocks=2, attn=(32, 16, 8), head_channels=64,
              dropout=0.0, scale_shift=True, resblock_updown=True, source="ADM ImageNet-128"),
    256: dict(channels=256, mult=(1, 1, 2, 2, 4, 4), res_blocks=2, attn=(32, 16, 8), head_channels=64,
              dropout=0.0, scale_shift=True, resblock_updown=True, source="ADM ImageNet-256 (554M)"),
}


class UNetDenoiser(nn.Module):
    """diffusers UNet2DModel under rinkit's denoiser contract. The noise level enters as the
    continuous timestep 1000 * gamma (what RIN's time token sees); labels use one extra
    embedding row as the null class, as RIN's class token does."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t, gamma, labels=None, prev_latents=None, context=None):
        out = self.unet(x_t, gamma * 1000.0, class_labels=labels).sample
        return out, None


def adm_unet(image_size: int | tuple[int, int], channels: int = 3, num_classes: int = 0, width: float = 1.0,
             depth: int | None = None, layout: dict | None = None) -> UNetDenoiser:
    """An ADM-style U-Net for `image_size` (8 (digits)/28 (Fashion-MNIST)/32/64/128/256; 512 uses
    the 256 layout with one more level as guided-diffusion does). `width` scales the channels
    (smoke tests, or a smaller baseline), `depth` sets the res blocks per level. `layout` (a dict
    shaped like the ADM entries) replaces the table, e.g. for a (height, width) spectrogram
    (benchmarks/baselines/audio.py); attention levels are then named by height."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise RinkitError("the U-Net baselines need diffusers: pip install 'rinkit[benchmarks]'") from None
    key = image_size if layout is None and image_size in ADM else None
    if layout is not None:
        cfg = layout
    elif key is None:
        if image_size == 512:
            cfg = dict(ADM[256], mult=(0.5, 1, 1, 2, 2, 4, 4), source="ADM ImageNet-512")
        else:
            raise RinkitError(f"no ADM U-Net configuration for {image_size}x{image_size}; "
                              f"available: {', '.join(map(str, [*ADM, 512]))}")
    else:
        cfg = ADM[key]
    ch = max(8, int(cfg["channels"] * width) // 8 * 8)
    out_ch = [max(8, int(ch * m) // 8 * 8) for m in cfg["mult"]]
    height = image_size if isinstance(image_size, int) else image_size[0]
    res = [height >> i for i in range(len(out_ch))]
    down = ["AttnDownBlock2D" if r in cfg["attn"] else "DownBlock2D" for r in res]
    up = ["AttnUpBlock2D" if r in cfg["attn"] else "UpBlock2D" for r in reversed(res)]
    # head width: 64 channels per head (ADM), or one head over the 16x16 level's channels (DDPM)
    level = out_ch[res.index(cfg["attn"][0])]
    head = min(cfg["head_channels"] or level, level)  # a narrowed U-Net keeps at least one head
    groups = 32 if min(out_ch) % 32 == 0 else 8
    unet = UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        down_block_types=tuple(down), up_block_types=tuple(up), block_out_channels=tuple(out_ch),
        layers_per_block=depth or cfg["res_blocks"], dropout=cfg["dropout"], attention_head_dim=head,
        norm_num_groups=groups, resnet_time_scale_shift="scale_shift" if cfg["scale_shift"] else "default",
        downsample_type="resnet" if cfg["resblock_updown"] else "conv",
        upsample_type="resnet" if cfg["resblock_updown"] else "conv",
        num_class_embeds=num_classes + 1 if num_classes else None, flip_sin_to_cos=True, freq_shift=0)
    return UNetDenoiser(unet)


@dataclass
class Entry:
    """One compared model: its name, a builder (device -> module), the rinkit Diffusion that
    trains it, and the data shape / classes it expects."""
    name: str
    kind: str  # "rin" | "unet"
    build: object
    diffusion: object
    shape: tuple
    num_classes: int
    note: str = ""


def rin_entry(preset: str, overrides: list[str] | None = None) -> Entry:
    from rinkit.build import build_diffusion, build_model, sample_shape
    from rinkit.config import load_config
    cfg = load_config(preset, None, list(overrides or []))
    return Entry(f"RIN {preset}", "rin", lambda: build_model(cfg), build_diffusion(cfg),
                 sample_shape(cfg), cfg.model.num_classes, note=" ".join(overrides or []))


def without_self_cond(diffusion):
    """The same objective, schedules and dropouts as the RIN a baseline is compared with (a copy,
    so a field Diffusion gains carries over), minus self-conditioning: a U-Net has no latents."""
    d = copy.copy(diffusion)
    d.self_cond_rate, d.self_cond_x0 = 0.0, False
    return d


def unet_entry(image_size: int, channels: int, num_classes: int, diffusion, width: float = 1.0,
               depth: int | None = None) -> Entry:
    d = without_self_cond(diffusion)
    d.num_classes = num_classes
    cfg = ADM[image_size] if image_size in ADM else {"source": f"ADM {image_size}"}
    name = f"U-Net ADM-{image_size}" + (f" (width {width:g})" if width != 1.0 or depth else "")
    return Entry(name, "unet", lambda: adm_unet(image_size, channels, num_classes, width, depth), d,
                 (channels, image_size, image_size), num_classes, note=cfg["source"])
